"""The vendored subset of GitHub's OpenAPI description: routing, validation, response completion.

Built once per process (`api_description()`): the openapi-core objects and the werkzeug URL map are
reused by every emulator, so validating a request costs a couple of milliseconds.
"""

from __future__ import annotations

import gzip
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_schema_validator import OAS30Validator
from werkzeug.datastructures import Headers, ImmutableMultiDict, MultiDict
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule

DATA_DIR = Path(__file__).resolve().parent / "data"
SPEC_FILE = DATA_DIR / "openapi-subset.json.gz"
SERVER_URL = "https://api.github.com"
# Path parameters that may hold slashes on GitHub (refs, file paths, branch names, base...head).
SLASHY_PARAMS = {"ref", "path", "basehead", "branch"}
MISSING: Any = object()


class NotInSubset(LookupError):
    """A request to an endpoint (or method) the vendored description does not contain."""


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    template: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class _Request:
    """What openapi-core needs to see of a request (its Request and SupportsPathPattern protocols)."""

    method: str
    path: str
    path_pattern: str
    parameters: RequestParameters
    body: bytes | None
    content_type: str
    host_url: str = SERVER_URL


@dataclass
class _Response:
    status_code: int
    data: bytes | None
    headers: Headers
    content_type: str = "application/json"


def _rule_path(template: str) -> str:
    out = template
    for part in template.split("/"):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            conv = "path:" if name in SLASHY_PARAMS else ""
            out = out.replace(part, f"<{conv}{name}>", 1)
    return out


def _schema_errors(exc: BaseException) -> list[str]:
    """Readable messages from an openapi-core exception chain (jsonschema errors when present)."""
    messages: list[str] = []
    seen: set[int] = set()

    def walk(e: BaseException | None) -> None:
        while e is not None and id(e) not in seen:
            seen.add(id(e))
            for sub in getattr(e, "errors", None) or []:
                walk(sub)
            schema_errors = getattr(e, "schema_errors", None)
            if schema_errors:
                messages.extend(_describe(se) for se in schema_errors)
                return
            if not getattr(e, "errors", None):
                nxt = e.__cause__ or e.__context__
                if nxt is None:
                    messages.append(str(e))
                e = nxt
            else:
                return

    walk(exc)
    return messages or [str(exc)]


def _describe(error: Any) -> str:
    """One jsonschema error in GitHub's words where GitHub has them; long values are shortened."""
    validator, instance = getattr(error, "validator", None), getattr(error, "instance", None)
    if validator == "maxLength" and isinstance(instance, str):
        return f"Only {error.validator_value} characters are allowed; {len(instance)} were supplied."
    if validator == "maxItems" and isinstance(instance, list):
        path = list(getattr(error, "absolute_path", []))
        what = path[-1] if path and isinstance(path[-1], str) else "items"
        return f"Only {error.validator_value} {what} are allowed per request; {len(instance)} were supplied."
    where = "/".join(str(p) for p in getattr(error, "absolute_path", [])) or "(root)"
    message = str(getattr(error, "message", error))
    if len(message) > 300:
        message = message[:160] + " ... " + message[-100:]
    return f"For '{where}', {message}"


class ApiDescription:
    """Routing and validation against one OpenAPI document."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.openapi = OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))  # type: ignore[arg-type]  # None skips validation (openapi-core checks for it) but its annotation omits None
        rules = []
        for template, item in spec["paths"].items():
            methods = [m.upper() for m in item if m != "parameters"]
            rules.append(Rule(_rule_path(template), endpoint=template, methods=methods))
        self.url_map = Map(rules, merge_slashes=False, strict_slashes=False)
        self._adapter = self.url_map.bind("api.github.com")
        self._lock = threading.Lock()
        self._webhook_validators: dict[str, Any] = {}

    # -- routing ----------------------------------------------------------------------------------

    def match(self, method: str, path: str) -> Operation:
        try:
            with self._lock:
                template, params = self._adapter.match(path, method=method.upper())
        except (NotFound, MethodNotAllowed) as e:
            raise NotInSubset(f"{method.upper()} {path}") from e
        op = self.spec["paths"][template][method.lower()]
        return Operation(op["operationId"], method.lower(), template, dict(params))

    def operations(self) -> list[tuple[str, str, str]]:
        return [(m, t, op["operationId"]) for t, item in self.spec["paths"].items()
                for m, op in item.items() if m != "parameters"]

    # -- validation -------------------------------------------------------------------------------

    def _request(self, op: Operation, path: str, query: MultiDict[str, str], headers: Headers,
                 body: bytes | None, content_type: str) -> _Request:
        params = RequestParameters(query=query, header=headers, cookie=ImmutableMultiDict(), path=op.params)
        return _Request(op.method, path, op.template, params, body or None, content_type or "application/json")

    def validate_request(self, op: Operation, path: str, query: MultiDict[str, str], headers: Headers,
                         body: bytes | None, content_type: str) -> list[str]:
        req = self._request(op, path, query, headers, body, content_type)
        errors: list[str] = []
        for err in self.openapi.iter_apicall_request_errors(req):
            errors.extend(_schema_errors(err))
        return errors

    def validate_response(self, op: Operation, path: str, status: int, body: bytes | None,
                          headers: Headers) -> list[str]:
        req = self._request(op, path, ImmutableMultiDict(), Headers(), None, "application/json")
        resp = _Response(status, body, headers, headers.get("Content-Type", "application/json"))
        errors: list[str] = []
        for err in self.openapi.iter_apicall_response_errors(req, resp):
            errors.extend(_schema_errors(err))
        return errors

    def webhook_schema(self, name: str) -> dict[str, Any] | None:
        hook = self.spec.get("x-webhooks", {}).get(name)
        return hook["post"]["requestBody"]["content"]["application/json"]["schema"] if hook else None

    def webhook_errors(self, name: str, payload: dict[str, Any]) -> list[str]:
        """Where a webhook payload departs from GitHub's documented schema for it (x-webhooks)."""
        with self._lock:
            validator = self._webhook_validators.get(name)
            if validator is None:
                if name not in self.spec.get("x-webhooks", {}):
                    return [f"no payload schema for webhook {name}"]
                pointer = f"#/x-webhooks/{name}/post/requestBody/content/application~1json/schema"
                validator = OAS30Validator({"$ref": pointer, "components": self.spec["components"],
                                            "x-webhooks": self.spec["x-webhooks"]})
                self._webhook_validators[name] = validator
        return [_describe(e) for e in validator.iter_errors(payload)]

    def documents_status(self, op: Operation, status: int) -> bool:
        responses = self.spec["paths"][op.template][op.method]["responses"]
        return str(status) in responses or "default" in responses

    # -- response completion ----------------------------------------------------------------------

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema:
            _h, _c, kind, name = schema["$ref"].split("/", 3)
            schema = self.spec["components"][kind][name]
            seen += 1
            if seen > 50:
                raise ValueError("reference loop")
        return schema

    def response_schema(self, op: Operation, status: int) -> dict[str, Any] | None:
        responses = self.spec["paths"][op.template][op.method]["responses"]
        resp = responses.get(str(status)) or responses.get("default")
        if resp is None:
            return None
        resp = self.resolve(resp)
        content = resp.get("content", {}).get("application/json")
        return content.get("schema") if content else None

    def _merged(self, schema: dict[str, Any]) -> dict[str, Any]:
        schema = self.resolve(schema)
        if "allOf" not in schema:
            return schema
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        props: dict[str, Any] = dict(merged.get("properties", {}))
        required: list[str] = list(merged.get("required", []))
        for part in schema["allOf"]:
            part = self._merged(part)
            for k, v in part.items():
                if k == "properties":
                    props.update(v)
                elif k == "required":
                    required.extend(x for x in v if x not in required)
                elif k not in merged:
                    merged[k] = v
        merged["properties"] = props
        merged["required"] = required
        return merged

    def _pick(self, alternatives: list[dict[str, Any]], value: Any) -> dict[str, Any]:
        resolved = [self._merged(a) for a in alternatives]
        if isinstance(value, dict):
            for alt in resolved:
                props = alt.get("properties", {})
                enums_ok = all(value[k] in self.resolve(p).get("enum", [value[k]])
                               for k, p in props.items() if k in value and not isinstance(value[k], dict | list))
                if alt.get("type", "object") == "object" and enums_ok and \
                        all(k in value for k in alt.get("required", []) if k in ("type", "sha", "id")):
                    return alt
        if isinstance(value, list):
            for alt in resolved:
                if alt.get("type") == "array":
                    return alt
        for alt in resolved:
            if not alt.get("nullable") and alt.get("type") != "null":
                return alt
        return resolved[0]

    def complete(self, value: Any, schema: dict[str, Any] | None, url_base: str, name: str = "",
                 depth: int = 0) -> Any:
        """Fill every required field the emulator left out with a value of the right type.

        Builders set the fields that mean something (ids, SHAs, users, states, URLs a client follows);
        the long tail GitHub always sends (`followers_url`, `node_id`, ...) is filled here from the
        description itself, so responses are complete without hand-written boilerplate."""
        if schema is None or depth > 40:
            return value
        schema = self._merged(schema)
        alternatives = schema.get("oneOf") or schema.get("anyOf")
        if value is MISSING:
            if schema.get("nullable"):
                return None
            if "enum" in schema:
                return schema["enum"][0]
            if alternatives:
                return self.complete(MISSING, self._pick(alternatives, None), url_base, name, depth + 1)
            kind = schema.get("type") or ("object" if "properties" in schema else None)
            if kind == "object":
                value = {}
            elif kind == "array":
                return []
            elif kind == "string":
                return _default_string(name, schema.get("format"), url_base)
            elif kind in ("integer", "number"):
                return 0
            elif kind == "boolean":
                return False
            else:
                return None
        if alternatives and value is not None:
            disc = schema.get("discriminator")
            if disc and isinstance(value, dict):
                mapping = disc.get("mapping", {})
                key = value.setdefault(disc["propertyName"], next(iter(mapping), None))
                if key in mapping:
                    return self.complete(value, {"$ref": mapping[key]}, url_base, name, depth + 1)
            return self.complete(value, self._pick(alternatives, value), url_base, name, depth + 1)
        if isinstance(value, dict):
            props = schema.get("properties", {})
            for key in schema.get("required", []):
                if key not in value:
                    value[key] = self.complete(MISSING, props.get(key, {}), url_base, key, depth + 1)
            for key, sub in list(value.items()):
                if key in props and sub is not None:
                    value[key] = self.complete(sub, props[key], url_base, key, depth + 1)
        elif isinstance(value, list) and "items" in schema:
            return [self.complete(v, schema["items"], url_base, name, depth + 1) for v in value]
        return value


def _default_string(name: str, fmt: str | None, url_base: str) -> str:
    if fmt == "date-time":
        return datetime(2024, 1, 1, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if fmt == "uri" or name == "url" or name.endswith("_url"):
        return f"{url_base}/{name or 'url'}"
    if fmt == "email":
        return "noreply@example.invalid"
    return ""


_lock = threading.Lock()
_cached: ApiDescription | None = None


def load_spec(path: Path = SPEC_FILE) -> dict[str, Any]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return cast(dict[str, Any], json.load(f))


def api_description() -> ApiDescription:
    """The process-wide description (built on first use, then shared)."""
    global _cached
    with _lock:
        if _cached is None:
            _cached = ApiDescription(load_spec())
        return _cached

