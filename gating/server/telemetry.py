"""OTLP over HTTP into the monitor: POST /v1/traces, /v1/metrics and /feedback.

Fail closed, cheapest check first: no GATING_OTLP_TOKEN configured refuses everything (403); a
missing or wrong bearer token is 401 (compared in constant time against every configured token); a
content type other than application/x-protobuf or application/json is 415; a body over
GATING_OTLP_MAX_BODY_BYTES (after gzip) is 413; a body that does not decode is 400. Errors carry a
google.rpc.Status in the request's encoding (JSON when the encoding is unknown), as OTLP says.

An accepted export is merged into the roll-ups in the App's database (gating.server.rollup_store)
before it is answered, so a 200 is never lost to a restart. Spans that cannot be attributed (no
system, a repository the token may not send for, a time outside the retention window) are counted
in the answer's partial_success with the reasons, the rest are kept (gating.monitor.otlp says how
spans are read).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import time
import zlib
from typing import Any

from flask import Blueprint, Response, current_app, request
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from gating.monitor import otlp
from gating.monitor.rollup import FEEDBACK_KINDS, WHOLE_SYSTEM
from gating.server import monitoring
from gating.server.intake import Refused, read_body
from gating.server.rollup_store import RollupStore
from gating.server.settings import otlp_tokens

log = logging.getLogger("gating.app.telemetry")
bp = Blueprint("gating_telemetry", __name__)

PROTOBUF, JSON = "application/x-protobuf", "application/json"
# google.rpc.Code for each refusal's HTTP status
_RPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 413: 8, 415: 3, 503: 14}
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
_ID_BYTES = {"traceId": 16, "trace_id": 16}  # span ids: 8


# -- encodings ---------------------------------------------------------------------------------------------


def _encoding() -> str | None:
    ctype = (request.mimetype or "").lower()
    return ctype if ctype in (PROTOBUF, JSON) else None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def status_body(encoding: str | None, status: int, message: str) -> tuple[bytes, str]:
    """A google.rpc.Status (code 1, message 2) in the request's encoding; JSON for an unknown one."""
    code = _RPC_CODES.get(status, 2)
    if encoding == PROTOBUF:
        text = message.encode("utf-8")
        return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text, PROTOBUF
    return json.dumps({"code": code, "message": message}).encode(), JSON


def _refusal(encoding: str | None, e: Refused) -> Response:
    body, ctype = status_body(encoding, e.status, e.message)
    resp = Response(body, e.status, content_type=ctype)
    if e.status == 503:
        resp.headers["Retry-After"] = "1"
    return resp


def _hex_ids_to_base64(node: Any) -> None:
    """OTLP/JSON writes trace and span ids in hex; protobuf's JSON mapping reads bytes as base64."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in _ID_KEYS and isinstance(v, str):
                size = _ID_BYTES.get(k, 8)
                try:
                    raw = bytes.fromhex(v)
                except ValueError:
                    raise Refused(400, f"{k} {v[:40]!r} is not hex") from None
                if raw and len(raw) != size:
                    raise Refused(400, f"{k} {v[:40]!r} is not {size} bytes of hex")
                node[k] = base64.b64encode(raw).decode()
            else:
                _hex_ids_to_base64(v)
    elif isinstance(node, list):
        for v in node:
            _hex_ids_to_base64(v)


def decode(body: bytes, encoding: str, message: Message) -> None:
    """Parse the body into `message` (OTLP/JSON: hex ids, int64 as strings or numbers, unknown
    fields ignored); raises Refused(400) saying what is wrong."""
    if encoding == PROTOBUF:
        try:
            message.ParseFromString(body)
        except (DecodeError, RecursionError) as e:
            raise Refused(400, f"body is not a protobuf {message.DESCRIPTOR.name}: {e}") from None
        return
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise Refused(400, f"body is not JSON: {e}") from None
    except RecursionError:
        raise Refused(400, "body is not JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise Refused(400, f"body must be a JSON object (an OTLP {message.DESCRIPTOR.name})")
    _hex_ids_to_base64(doc)
    try:
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as e:
        raise Refused(400, f"body is not an OTLP/JSON {message.DESCRIPTOR.name}: {e}") from None


def encode(message: Message, encoding: str) -> Response:
    if encoding == PROTOBUF:
        return Response(message.SerializeToString(), 200, content_type=PROTOBUF)
    return Response(json_format.MessageToJson(message, indent=None), 200, content_type=JSON)


# -- the checks ----------------------------------------------------------------------------------------------


def authorize(configured: str, header: str) -> str | None:
    """The repository the caller's token is bound to (None: any); raises Refused when it is refused."""
    tokens = otlp_tokens(configured)
    if not tokens:
        raise Refused(403, "telemetry is not accepted: the App has no GATING_OTLP_TOKEN")
    scheme, _, given = header.partition(" ")
    given_b = given.strip().encode("utf-8", "replace")
    found: tuple[str | None, str] | None = None
    for repo, token in tokens:  # every token compared, so the time taken says nothing about which matched
        if hmac.compare_digest(given_b, token.encode("utf-8")) and found is None:
            found = (repo, token)
    if scheme.lower() != "bearer" or found is None:
        raise Refused(401, "missing or wrong bearer token (Authorization: Bearer <GATING_OTLP_TOKEN>)")
    return found[0]


def _body(limit: int) -> bytes:
    try:
        body = read_body(request.environ, limit)
    except Refused as e:
        if e.status != 413:
            raise
        raise Refused(413, f"{e.message} (GATING_OTLP_MAX_BODY_BYTES)") from None
    coding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
    if coding == "identity":
        return body
    if coding != "gzip":
        raise Refused(415, f"Content-Encoding {coding!r} is not supported; send gzip or none")
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise Refused(400, f"body is not valid gzip: {e}") from None
    if len(out) > limit:
        raise Refused(413, f"body is over the limit of {limit} bytes once decompressed (GATING_OTLP_MAX_BODY_BYTES)")
    if not d.eof:
        raise Refused(400, "body is not valid gzip: it ends early")
    return out


def _store() -> RollupStore:
    store = current_app.extensions["gating"].rollups
    if not isinstance(store, RollupStore):
        raise Refused(503, "the App has no roll-up store")
    return store


def _oldest_minute(now: float) -> int:
    return int((now - current_app.extensions["gating"].settings.monitor_retention_days * 86400) // 60)


def _write(store: RollupStore, ingest: otlp.Ingest) -> None:
    try:
        store.write(ingest.rollups.values(), ingest.traces)
    except store.errors as e:  # busy past the wait, disk full: not acknowledged, the exporter retries
        log.error("telemetry not stored: %s", e)
        raise Refused(503, f"the telemetry could not be stored; it was not accepted: {e}") from None


# -- the endpoints -------------------------------------------------------------------------------------------


def _export(request_type: type[Message], response_type: type[Message], read: Any, field: str) -> Response:
    t0 = time.perf_counter()
    encoding = _encoding()
    try:
        settings = current_app.extensions["gating"].settings
        bound = authorize(settings.otlp_token, request.headers.get("Authorization", ""))
        if encoding is None:
            raise Refused(415, f"Content-Type must be {PROTOBUF} or {JSON}, not {request.mimetype or 'none'!r}")
        msg = request_type()
        decode(_body(settings.otlp_max_body_bytes), encoding, msg)
        now = time.time()
        queue = current_app.extensions["gating"].queue
        ingest = read(msg, bound_repo=bound, now=now, oldest_minute=_oldest_minute(now),
                      prices=lambda repo: monitoring.price_book(queue, repo))
        _write(_store(), ingest)
    except Refused as e:
        if e.status >= 500:
            log.warning("%s refused: %s", request.path, e.message)
        return _refusal(encoding, e)
    resp = response_type()
    if ingest.rejected or ingest.warnings:
        setattr(resp.partial_success, field, ingest.rejected_count)  # type: ignore[attr-defined]
        resp.partial_success.error_message = ingest.message()  # type: ignore[attr-defined]
        log.info("%s: %d accepted, %s", request.path, ingest.accepted, ingest.message())
    out = encode(resp, encoding)
    out.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - t0) * 1000:.2f}"
    return out


@bp.post("/v1/traces")
def traces() -> Response:
    return _export(ExportTraceServiceRequest, ExportTraceServiceResponse, otlp.read_traces, "rejected_spans")


@bp.post("/v1/metrics")
def metrics() -> Response:
    return _export(ExportMetricsServiceRequest, ExportMetricsServiceResponse, otlp.read_metrics,
                   "rejected_data_points")


@bp.post("/feedback")
def feedback() -> Response:
    """{"trace_id": HEX, "kind": KIND} or {"repository"?, "system", "component"?, "kind"}: one quality
    signal, counted in the request stage at the minute it arrives."""
    try:
        settings = current_app.extensions["gating"].settings
        bound = authorize(settings.otlp_token, request.headers.get("Authorization", ""))
        if _encoding() != JSON:
            raise Refused(415, f"Content-Type must be {JSON}, not {request.mimetype or 'none'!r}")
        doc = _feedback_doc(_body(settings.otlp_max_body_bytes))
        store = _store()
        repo, system, component = _feedback_target(store, doc, bound)
        ingest = otlp.Ingest()
        otlp.add_feedback(ingest, repo, system, component, doc["kind"], int(time.time() // 60))
        _write(store, ingest)
    except Refused as e:
        return _refusal(JSON, e)
    return Response(json.dumps({"status": "recorded", "repository": repo, "system": system,
                                "component": component, "kind": doc["kind"]}), 200, content_type=JSON)


def _feedback_doc(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise Refused(400, f"body is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise Refused(400, "body must be a JSON object: {\"trace_id\": ..., \"kind\": ...}")
    if doc.get("kind") not in FEEDBACK_KINDS:
        raise Refused(400, f"kind must be one of {', '.join(FEEDBACK_KINDS)}, not {str(doc.get('kind'))[:40]!r}")
    for key in ("trace_id", "repository", "system", "component"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise Refused(400, f"{key} must be a string")
    return doc


def _feedback_target(store: RollupStore, doc: dict[str, Any], bound: str | None) -> tuple[str, str, str]:
    if doc.get("trace_id"):
        trace_id = doc["trace_id"].lower()
        try:
            if len(bytes.fromhex(trace_id)) != 16:
                raise ValueError
        except ValueError:
            raise Refused(400, f"trace_id must be 32 hex digits, got {trace_id[:40]!r}") from None
        found = store.trace(trace_id)
        if found is None:
            raise Refused(404, f"trace {trace_id} is unknown: its root span has not arrived (yet) or is older than "
                               "GATING_MONITOR_RETENTION_DAYS; retry later, or name system and component instead")
        repo, system, component = found
        if bound and repo.lower() != bound.lower():
            raise Refused(403, f"trace {trace_id} belongs to {repo}, not to this token's repository {bound}")
        try:
            return repo, system, otlp.component_of({"gating.component": doc.get("component")}) or component
        except otlp.Rejected as e:
            raise Refused(400, str(e)) from None
    if not doc.get("system"):
        raise Refused(400, "name the request: trace_id, or system (and component)")
    try:
        repo, system = otlp.attribution({"gating.repository": doc.get("repository"), "gating.snapshot": doc["system"]},
                                        bound)
        component = otlp.component_of({"gating.component": doc.get("component")})
    except otlp.Rejected as e:
        raise Refused(403 if "not the repository" in str(e) else 400, str(e)) from None
    return repo, system, component or WHOLE_SYSTEM
