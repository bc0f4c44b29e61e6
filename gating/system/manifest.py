"""Load and validate gating.yml, and resolve the files its components name.

Pure: takes bytes and a listing of the revision's files; errors carry file:line:column so a user
can jump straight to the bad key.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache, cached_property, lru_cache
from typing import TYPE_CHECKING, Any, cast

from gating import limits
from gating.errors import InputError, count
from gating.system.schema import MANIFEST_SCHEMA, PROVIDER_SETTINGS

if TYPE_CHECKING:  # jsonschema and ruamel are imported when a manifest is parsed (a quick start for the CLI)
    import jsonschema
    from ruamel.yaml import YAML

MANIFEST_PATH = "gating.yml"
MAX_MANIFEST_BYTES = limits.MANIFEST.max_bytes
MAX_FILE_BYTES = limits.DEFAULT.max_bytes


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the manifest, at a place in a file (1-based line and column)."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class ManifestError(InputError):
    """The manifest cannot be used; `problems` lists every reason found, each at its file:line:column."""

    def __init__(self, problems: Sequence[Problem]):
        super().__init__("\n".join(str(p) for p in problems), problems)
        self.message = f"{count(len(self.problems), 'problem')} in the LLM system manifest"


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: plain data, plus where each key was written (found lazily, on error)."""

    data: dict[str, Any]
    source: str = MANIFEST_PATH
    text: str = field(default="", repr=False, compare=False)

    @cached_property
    def positions(self) -> dict[tuple[str | int, ...], tuple[int, int]]:
        """Key -> (line, column); the slower round-trip parse runs only when a message needs it."""
        if not self.text:
            return {}
        positions: dict[tuple[str | int, ...], tuple[int, int]] = {}
        _plain(_rt_yaml().load(io.StringIO(self.text)), (), positions)
        return positions

    @property
    def name(self) -> str:
        return cast(str, self.data["name"])  # the schema requires a string

    @property
    def components(self) -> dict[str, Any]:
        return self.data.get("components") or {}

    @property
    def models(self) -> dict[str, dict[str, Any]]:
        return self.components.get("models") or {}

    @property
    def prompts(self) -> dict[str, dict[str, Any]]:
        return self.components.get("prompts") or {}

    @property
    def evals(self) -> dict[str, Any]:
        return self.data.get("evals") or {}

    @property
    def approvals(self) -> list[dict[str, Any]]:
        return self.data.get("approvals") or []

    @property
    def rollback(self) -> dict[str, Any]:
        return self.data.get("rollback") or {}

    @property
    def monitor(self) -> dict[str, Any]:
        return self.data.get("monitor") or {}

    @property
    def deploy(self) -> dict[str, Any]:
        return self.data.get("deploy") or {}

    def position(self, path: Sequence[str | int]) -> tuple[int, int]:
        """1-based (line, column) of the deepest known prefix of `path`."""
        key = tuple(path)
        while key:
            if key in self.positions:
                return self.positions[key]
            key = key[:-1]
        return (1, 1)

    def problem(self, path: Sequence[str | int], message: str) -> Problem:
        line, col = self.position(path)
        return Problem(self.source, line, col, message)


def _plain(node: Any, path: tuple[str | int, ...], positions: dict) -> Any:
    """ruamel nodes -> plain dicts/lists, recording each key's and item's position on the way."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, CommentedMap):
        out = {}
        for k, v in node.items():
            try:
                line, col = (
                    node.lc.value(k) if not isinstance(v, (CommentedMap, CommentedSeq)) else node.lc.key(k)
                )
                kline, kcol = node.lc.key(k)
            except (KeyError, TypeError):
                line, col = kline, kcol = (0, 0)
            positions[(*path, str(k), "<key>")] = (kline + 1, kcol + 1)
            positions[(*path, str(k))] = (line + 1, col + 1)
            out[str(k)] = _plain(v, (*path, str(k)), positions)
        return out
    if isinstance(node, CommentedSeq):
        out_list = []
        for i, v in enumerate(node):
            try:
                line, col = node.lc.item(i)
                positions[(*path, i)] = (line + 1, col + 1)
            except (KeyError, TypeError):
                pass
            out_list.append(_plain(v, (*path, i), positions))
        return out_list
    if node is None or isinstance(node, (bool, int, float)):
        return node
    if isinstance(node, str):
        return str(node)
    return str(node)


def _fmt_path(path: Sequence[str | int]) -> str:
    parts: list[str] = []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else ("." + p if parts else p))
    return "".join(parts) or "(top level)"


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing",
}


_SHOWN_CHARS = 60  # of a wrong value, in a message


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if value is None:
        return "nothing"
    if isinstance(value, (int, float)):
        return f"{value!r} (a number)"
    text = str(value)
    if len(text) > _SHOWN_CHARS:  # a whole file read as one scalar: name it, do not print it
        return f"{text[:_SHOWN_CHARS] + '...'!r} (a string of {len(text):,} characters)"
    return f"{value!r} (a string)"


def _schema_problem(m: Manifest, err: jsonschema.ValidationError) -> Problem:
    path = list(err.absolute_path)
    where = _fmt_path(path)
    v = err.validator
    if v == "additionalProperties":
        allowed = sorted((err.schema.get("properties") or {}).keys()) if isinstance(err.schema, Mapping) else []
        extra = [k for k in err.instance if k not in allowed] if isinstance(err.instance, dict) else []
        key = extra[0] if extra else "?"
        hint = difflib.get_close_matches(key, allowed, n=1)
        msg = f"unknown key {key!r} in {where}"
        msg += (
            f" (did you mean {hint[0]!r}?)"
            if hint
            else (f"; allowed: {', '.join(allowed)}" if allowed else "")
        )
        return m.problem([*path, key, "<key>"], msg)
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return m.problem(path, f"{where}: missing required key {missing!r}")
    if v == "type":
        want: Any = err.validator_value  # the schema's own "type" value: a name or a list of names
        wants = [want] if isinstance(want, str) else list(want)
        return m.problem(
            path,
            f"{where}: expected {' or '.join(_TYPE_NAMES.get(w, w) for w in wants)}, got {_describe(err.instance)}",
        )
    if v == "uniqueItems" and isinstance(err.instance, list):
        twice = next((x for i, x in enumerate(err.instance) if x in err.instance[:i]), None)
        return m.problem(path, f"{where}: lists {twice!r} more than once")
    if v == "enum":
        options = [str(o) for o in cast(list[Any], err.validator_value)]
        hint = difflib.get_close_matches(str(err.instance), options, n=1)
        msg = f"{where}: {err.instance!r} is not one of: {', '.join(options)}"
        return m.problem(path, msg + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    if v == "const":
        return m.problem(path, f"{where}: must be {err.validator_value!r}, got {err.instance!r}")
    if v == "pattern" and path[:1] == ["monitor"] and path[-1:] == ["threshold"]:
        return m.problem(path, f"{where}: {err.instance!r} is not a threshold like '> 0.02', '<= 800' or "
                         "'> 1.5x projected'")
    if v == "pattern" and path[:1] == ["monitor"] and path[-1:] == ["for"]:
        return m.problem(path, f"{where}: {err.instance!r} is not a duration like '15m', '1h' or '1d'")
    if v == "pattern" and path and path[-2:-1] == ["thresholds"]:
        return m.problem(path, f"{where}: {err.instance!r} is not a threshold like '>= 0.9' or '<= 3000'")
    if v == "anyOf" and path[:2] == ["monitor", "rules"]:
        return m.problem(path, f"{where}: needs a `threshold`, an `anomaly`, or both")
    if v == "propertyNames":
        bad = err.instance
        return m.problem(
            [*path[:-1]] if path else [], f"{where}: name {bad!r} may only use letters, digits, _ . -"
        )
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return m.problem(path, f"{where}: {err.message}")
    if v in ("minItems", "minLength"):
        return m.problem(path, f"{where}: must not be empty")
    return m.problem(path, f"{where}: {err.message}")


def parse_manifest(data: bytes, source: str = MANIFEST_PATH) -> Manifest:
    """Parse and schema-check manifest bytes; raises ManifestError with positions.

    The same bytes give the same manifest, so base and head of a pull request that leaves
    gating.yml alone share one parse.
    """
    return _parse_manifest_cached(hashlib.sha256(data).digest(), source, data)


@lru_cache(maxsize=16)
def _parse_manifest_cached(_digest: bytes, source: str, data: bytes) -> Manifest:
    return _parse_manifest(data, source)


def _parse_manifest(data: bytes, source: str) -> Manifest:
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            [
                Problem(
                    source,
                    1,
                    1,
                    f"file is {len(data):,} bytes; a manifest may be at most {MAX_MANIFEST_BYTES:,}",
                )
            ]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ManifestError([Problem(source, line, col, "file is not UTF-8 text")]) from None
    if "\x00" in text:
        raise ManifestError([Problem(source, 1, 1, "file is binary (contains NUL bytes), not YAML")])
    if not text.strip():
        raise ManifestError(
            [Problem(source, 1, 1, "file is empty; expected a mapping with version, name and components")]
        )
    try:
        limits.check_yaml(text, source, limits.MANIFEST)
    except limits.LimitError as e:
        raise ManifestError([Problem(source, e.line, e.column, e.message)]) from None
    from ruamel.yaml.error import YAMLError

    try:
        node = _fast_yaml().load(text)
    except YAMLError:
        node = _rt_parse(text, source)  # slower, but its messages and marks are the ones users see
    if node is None:
        raise ManifestError(
            [Problem(source, 1, 1, "file has no content (only comments); expected a mapping with version, name and components")]
        )
    if not isinstance(node, dict):
        raise ManifestError([Problem(source, 1, 1, f"expected a mapping at the top level, got {_describe(node)}")])
    m = Manifest(jsonable(node), source, text)
    plain = m.data
    errors = sorted(_validator().iter_errors(plain), key=lambda e: m.position(list(e.absolute_path)))
    if errors:
        raise ManifestError([_schema_problem(m, _leaf(e)) for e in errors])
    problems = _reference_problems(m)
    if problems:
        raise ManifestError(problems)
    return m


@cache
def _validator() -> jsonschema.Draft202012Validator:
    import jsonschema

    return jsonschema.Draft202012Validator(MANIFEST_SCHEMA)


def _rt_yaml() -> YAML:
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def _fast_yaml() -> YAML:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=False)  # libyaml when ruamel.yaml.clib is present
    yaml.allow_duplicate_keys = False
    return yaml


def jsonable(node: Any) -> Any:
    """Plain JSON-like data: YAML dates and other scalars become strings, keys become strings."""
    if isinstance(node, dict):
        return {str(k): jsonable(v) for k, v in node.items()}
    if isinstance(node, list):
        return [jsonable(v) for v in node]
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, (date, datetime)):
        return node.isoformat()
    return str(node)


def _rt_parse(text: str, source: str) -> Any:
    """Parse with the round-trip loader; raise ManifestError with its position on bad YAML."""
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        return _rt_yaml().load(io.StringIO(text))
    except DuplicateKeyError as e:
        mark = e.problem_mark
        key = str(e.problem).split('"')[1] if '"' in str(e.problem) else "?"
        raise ManifestError(
            [Problem(source, mark.line + 1, mark.column + 1, f"duplicate key {key!r} (each name may appear once)")]
        ) from None
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = (e.problem or e.context or "invalid YAML").strip()
        raise ManifestError([Problem(source, line, col, f"invalid YAML: {what}")]) from None
    except YAMLError as e:
        raise ManifestError([Problem(source, 1, 1, f"invalid YAML: {e}")]) from None


def _leaf(err: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For anyOf/oneOf-style errors, report the most specific cause."""
    if err.validator == "anyOf" and list(err.absolute_path)[:2] == ["monitor", "rules"]:
        return err  # a rule needs one of two keys: say so, not which one best matched
    if err.context:
        import jsonschema

        return cast(jsonschema.ValidationError, jsonschema.exceptions.best_match(err.context))
    return err


def _reference_problems(m: Manifest) -> list[Problem]:
    """Names that point at other components must exist."""
    problems = []
    models, prompts = m.models, m.prompts
    for name, model in models.items():
        for k in sorted(set(model) & set(PROVIDER_SETTINGS)):
            if PROVIDER_SETTINGS[k] != model["provider"]:
                problems.append(m.problem(["components", "models", name, k], f"`{k}` is a setting of provider "
                                          f"{PROVIDER_SETTINGS[k]}, not of {model['provider']}"))
    for name, p in prompts.items():
        if "model" in p and p["model"] not in models:
            problems.append(
                m.problem(["components", "prompts", name, "model"], _unknown("model", p["model"], models))
            )
        if "system" in p and p["system"] not in prompts:
            problems.append(
                m.problem(["components", "prompts", name, "system"], _unknown("prompt", p["system"], prompts))
            )
    orchestration = m.components.get("orchestration") or {}
    for i, name in enumerate(orchestration.get("fallback") or []):
        if name not in models and name not in prompts:
            problems.append(
                m.problem(["components", "orchestration", "fallback", i],
                          _unknown("model or prompt", name, set(models) | set(prompts)))
            )
    target = m.evals.get("target") or {}
    if target.get("type") == "command" and "code" not in target:
        problems.append(m.problem(["evals", "target"], "a command target must name the files its pipeline runs "
                                  "in `code:` (globs such as [\"app/**/*.py\"], or [] when none are in this "
                                  "repository), so that a change to them is a change to the LLM system"))
    for key in ("judge", "embedding"):
        named = m.evals.get(key)
        if named and named not in models:
            problems.append(m.problem(["evals", key], _unknown("model", named, models)))
    seen: dict[str, int] = {}
    for i, rule in enumerate(m.approvals):
        if rule["name"] in seen:
            problems.append(
                m.problem(["approvals", i, "name"], f"duplicate approval rule name {rule['name']!r}")
            )
        seen[rule["name"]] = i
    problems += _monitor_problems(m)
    return problems


def _monitor_problems(m: Manifest) -> list[Problem]:
    """Rule names are unique, a component is a prompt of this manifest, and each option fits its metric."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, rule in enumerate(m.monitor.get("rules") or []):
        at: list[str | int] = ["monitor", "rules", i]
        if rule["name"] in seen:
            problems.append(m.problem([*at, "name"], f"duplicate monitor rule name {rule['name']!r}"))
        seen.add(rule["name"])
        if "component" in rule and rule["component"] not in m.prompts:
            problems.append(m.problem([*at, "component"], _unknown("prompt", rule["component"], m.prompts)))
        if "category" in rule and rule["metric"] != "error_rate":
            problems.append(m.problem([*at, "category"], f"monitor.rules[{i}].category applies to metric "
                                      f"error_rate only, not {rule['metric']}"))
        if "stage" in rule and not rule["metric"].startswith("latency_"):
            problems.append(m.problem([*at, "stage"], f"monitor.rules[{i}].stage applies to latency metrics "
                                      f"only, not {rule['metric']}"))
        if "projected" in rule.get("threshold", "") and rule["metric"] not in ("tokens_per_request", "cost_per_day"):
            problems.append(m.problem([*at, "threshold"], f"monitor.rules[{i}].threshold: only tokens_per_request "
                                      "and cost_per_day have an eval projection to compare with"))
        anomaly = rule.get("anomaly") or {}
        if anomaly.get("min_weeks", 1) > anomaly.get("weeks", 4):
            problems.append(m.problem([*at, "anomaly", "min_weeks"], f"monitor.rules[{i}].anomaly.min_weeks "
                                      "is more than the weeks it looks back"))
    return problems


def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    hint = difflib.get_close_matches(name, known, n=1)
    msg = f"unknown {kind} {name!r}"
    if hint:
        return msg + f" (did you mean {hint[0]!r}?)"
    return msg + (f"; defined: {', '.join(known)}" if known else f"; no {kind}s are defined")


# -- resolving files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRef:
    """One file of the system, with the component that names it."""

    path: str
    category: str  # prompt, tool, guardrail, retrieval, orchestration, evals, code, cassette, python, evalfile
    component: str  # e.g. "answer" for a prompt, the glob for tools
    key: tuple[str | int, ...]  # manifest path of the reference, for error positions


def _glob(pattern: str, files: Sequence[str]) -> list[str]:
    if not any(c in pattern for c in "*?["):
        return [pattern] if pattern in files else []
    return sorted(f for f in files if fnmatch.fnmatchcase(f, pattern) and _same_depth_ok(pattern, f))


def _same_depth_ok(pattern: str, path: str) -> bool:
    """`*` does not cross `/`, `**` does, as in gitignore-style globs."""
    if "**" in pattern:
        return True
    return pattern.count("/") == path.count("/")


def file_refs(m: Manifest) -> list[tuple[str, str, str, tuple[str | int, ...]]]:
    """(pattern, category, component, key) for every file reference in the manifest."""
    refs: list[tuple[str, str, str, tuple[str | int, ...]]] = []
    for name, p in m.prompts.items():
        refs.append((p["file"], "prompt", name, ("components", "prompts", name, "file")))
    comps = m.components
    for cat, section in (("tool", "tools"), ("guardrail", "guardrails")):
        for i, pat in enumerate((comps.get(section) or {}).get("files", [])):
            refs.append((pat, cat, section, ("components", section, "files", i)))
    for cat, section in (("retrieval", "retrieval"), ("orchestration", "orchestration")):
        for i, pat in enumerate((comps.get(section) or {}).get("files", []) or []):
            refs.append((pat, cat, section, ("components", section, "files", i)))
    for i, pat in enumerate(m.evals.get("datasets", [])):
        refs.append((pat, "evals", "datasets", ("evals", "datasets", i)))
    for i, pat in enumerate((m.evals.get("target") or {}).get("code") or []):
        refs.append((pat, "code", "target", ("evals", "target", "code", i)))
    for i, pat in enumerate(m.evals.get("python") or []):
        refs.append((pat, "python", "evals", ("evals", "python", i)))
    for i, pat in enumerate(m.evals.get("files") or []):
        refs.append((pat, "evalfile", "evals", ("evals", "files", i)))
    return refs


def resolve_files(m: Manifest, files: Sequence[str] | set[str], submodules: Sequence[str] = ()) -> list[FileRef]:
    """Expand every reference against the revision's file list; missing files are errors, and a file
    under one of `submodules` (whose files another repository holds) is named as such."""
    listing = sorted(files)
    fileset = set(listing)
    out: list[FileRef] = []
    problems: list[Problem] = []
    for pattern, cat, comp, key in file_refs(m):
        if pattern.startswith("/") or ".." in pattern.split("/"):
            problems.append(m.problem(key, f"{pattern!r} must be a path inside the repository"))
            continue
        matched = (
            _glob(pattern, listing)
            if any(c in pattern for c in "*?[")
            else ([pattern] if pattern in fileset else [])
        )
        if not matched:
            sub = next((d for d in submodules if pattern.startswith(d.rstrip("/") + "/")), None)
            if sub is not None:
                problems.append(m.problem(key, f"{_fmt_path(key)}: {pattern!r} is inside the git submodule "
                                               f"{sub.rstrip('/')!r}, whose files are not part of this "
                                               "repository's revisions: copy the file into the repository"))
            elif any(c in pattern for c in "*?["):
                problems.append(m.problem(key, f"{_fmt_path(key)}: glob {pattern!r} matches no file"))
            elif any(f.startswith(pattern.rstrip("/") + "/") for f in listing):
                problems.append(m.problem(key, f"{_fmt_path(key)}: {pattern!r} is a directory, not a file "
                                               f"(to name the files in it, use '{pattern.rstrip('/')}/*')"))
            else:
                hint = difflib.get_close_matches(pattern, listing, n=1)
                msg = f"{_fmt_path(key)}: file {pattern!r} does not exist"
                problems.append(m.problem(key, msg + (f" (did you mean {hint[0]!r}?)" if hint else "")))
            continue
        for path in matched:
            out.append(FileRef(path, cat, comp, key))
    if problems:
        raise ManifestError(problems)
    return out
