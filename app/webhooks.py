"""POST /webhooks and GET /healthz.

Fail closed, cheapest check first: a body over the cap is refused (413) before it is read, the
raw bytes are verified against X-Hub-Signature-256 in constant time (401) before any parsing, bad
JSON is refused (400), and a known delivery id is acknowledged without queueing anything again.
The acknowledgement only commits a job row; the work runs later in a worker thread.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sqlite3
import time
from typing import Any
from urllib.parse import parse_qs

from flask import Blueprint, Response, current_app, jsonify, request

log = logging.getLogger("gating.app.webhooks")
bp = Blueprint("gating", __name__)


def signature(secret: str | bytes, body: bytes) -> str:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Constant-time comparison; a missing secret never verifies anything."""
    if not secret or not header:
        return False
    return hmac.compare_digest(signature(secret, body).encode(), header.strip().encode("utf-8", "replace"))


def _error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": message, **extra}), status


def _parse(body: bytes, content_type: str) -> tuple[Any, str]:
    """(payload, its JSON text): GitHub sends JSON, or a form whose `payload` field holds the JSON."""
    text = body.decode("utf-8")
    if content_type.startswith("application/x-www-form-urlencoded"):
        text = parse_qs(text, strict_parsing=True)["payload"][0]
    return json.loads(text), text


def _read_body(limit: int) -> bytes | None:
    """The raw body, or None when a body without Content-Length (chunked) runs past `limit`."""
    if request.content_length is not None:
        return request.get_data(cache=False)
    if not request.environ.get("wsgi.input_terminated"):
        return b""  # no length and a server that does not delimit the stream: nothing is safe to read
    stream, buf = request.environ["wsgi.input"], bytearray()
    while chunk := stream.read(65536):
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)


def receive() -> tuple[Response, int]:
    """The webhook endpoint; `Server-Timing: app;dur=<ms>` says how long the App itself took."""
    t0 = time.perf_counter()
    resp, status = _receive(t0)
    resp.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - t0) * 1000:.2f}"
    return resp, status


def _receive(t0: float) -> tuple[Response, int]:
    state = current_app.extensions["gating"]
    if request.content_length is not None and request.content_length > state.settings.max_body_bytes:
        return _error(413, f"body of {request.content_length} bytes is over the limit of "
                      f"{state.settings.max_body_bytes}")
    body = _read_body(state.settings.max_body_bytes)
    if body is None:
        return _error(413, f"body is over the limit of {state.settings.max_body_bytes} bytes")
    header = request.headers.get("X-Hub-Signature-256")
    if not header:
        return _error(401, "missing X-Hub-Signature-256: deliveries must be signed with the webhook secret")
    if not verify_signature(state.settings.webhook_secret, body, header):
        return _error(401, "X-Hub-Signature-256 does not match the body")
    event = request.headers.get("X-GitHub-Event")
    delivery = request.headers.get("X-GitHub-Delivery")
    if not event or not delivery:
        return _error(400, "missing X-GitHub-Event or X-GitHub-Delivery header")
    try:
        payload, text = _parse(body, request.content_type or "")
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        return _error(400, f"body is not a JSON webhook payload: {e}")
    if not isinstance(payload, dict):
        return _error(400, "body is not a JSON object")
    action = payload.get("action") if isinstance(payload.get("action"), str) else None
    try:
        handlers = [(h.name, h.key(payload)) for h in state.registry.match(event, payload)]
    except (KeyError, TypeError, AttributeError) as e:
        return _error(400, f"payload does not look like a {event} event: {type(e).__name__}: {e}")
    what = f"{event}.{action}" if action else event
    if not handlers:
        log.info("delivery %s %s: not handled", delivery, what)
        return jsonify({"status": "ignored", "event": event, "action": action}), 202
    ids = state.queue.enqueue(delivery, event, action, text, handlers)
    ms = (time.perf_counter() - t0) * 1000
    if not ids:
        log.info("delivery %s %s: already received, nothing new (%.1f ms)", delivery, what, ms)
        return jsonify({"status": "duplicate", "delivery": delivery}), 200
    state.worker.wake(len(ids))
    log.info("delivery %s %s: queued job%s %s (%.1f ms)", delivery, what, "s" if len(ids) > 1 else "",
             ", ".join(map(str, ids)), ms)
    return jsonify({"status": "queued", "jobs": ids}), 202


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    state = current_app.extensions["gating"]
    try:
        counts = state.queue.counts()
        last_error = state.queue.last_error()
    except sqlite3.Error as e:
        return jsonify({"status": "error", "error": f"job queue unavailable: {e}"}), 503
    return jsonify({
        "status": "ok",
        "queue": {"depth": counts["queued"] + counts["running"], **counts},
        "last_error": last_error,
        "worker": {"pid": os.getpid(), "threads": state.settings.job_threads},
    }), 200
