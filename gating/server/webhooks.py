"""POST /webhooks and GET /healthz.

Fail closed, cheapest check first: a body over the cap is refused (413) before it is read, the
raw bytes are verified against X-Hub-Signature-256 in constant time (401) before any parsing, bad
JSON is refused (400), and a known delivery id is acknowledged without queueing anything again.
The acknowledgement only commits a job row; the work runs later in a worker thread.

A delivery does not go through Flask's request machinery: `FastPath` sits in front of the Flask
app and answers a POST to the webhook path straight from the WSGI environ. Flask's contexts,
routing and response objects cost about as much per delivery as all the checks together. Every
other request (other methods on that path included) is Flask's, and the Flask view for the path
answers with the same `respond`.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.http import HTTP_STATUS_CODES

from gating import limits
from gating.errors import USAGE, GatingError
from gating.server.intake import Refused as _Refused
from gating.server.intake import read_body as _read_body

if TYPE_CHECKING:
    from gating.server import AppState

log = logging.getLogger("gating.app.webhooks")
bp = Blueprint("gating", __name__)

Headers = list[tuple[str, str]]


def signature(secret: str | bytes, body: bytes) -> str:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return "sha256=" + hmac.digest(key, body, "sha256").hex()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Constant-time comparison; a missing secret never verifies anything."""
    if not secret or not header:
        return False
    return hmac.compare_digest(signature(secret, body).encode(), header.strip().encode("utf-8", "replace"))


# The object each handled event carries; a delivery without it cannot be handled, so it is refused
# at the door (400) rather than queued to fail its retries one by one.
EVENT_OBJECTS = {"pull_request": ("pull_request",), "pull_request_review": ("pull_request", "review"),
                 "issue_comment": ("issue", "comment"), "check_run": ("check_run",), "check_suite": ("check_suite",),
                 "deployment_status": ("deployment_status", "deployment")}
# GitHub Enterprise Server 3.x sends deployment_status without an `action`: each one is a creation.
IMPLIED_ACTIONS = {"deployment_status": "created"}


def _parse(body: bytes, content_type: str) -> tuple[Any, str]:
    """(payload, its JSON text): GitHub sends JSON, or a form whose `payload` field holds the JSON."""
    text = body.decode("utf-8")
    if content_type.startswith("application/x-www-form-urlencoded"):
        fields = parse_qs(text, strict_parsing=True) if text else {}
        if "payload" not in fields:
            raise ValueError("the form has no payload field")
        text = fields["payload"][0]
    try:
        return limits.loads(text), text
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _an(word: str) -> str:
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def handle(state: AppState, environ: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Check one delivery and queue its jobs: (status, JSON document)."""
    try:
        return _handle(state, environ)
    except _Refused as e:
        return e.status, {"error": e.message}
    except GatingError as e:  # expected: answered with what failed; anything else is a 500 with a traceback
        return 400 if e.exit_code == USAGE else 500, {"error": str(e)}


def _handle(state: AppState, environ: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    t0 = time.perf_counter()
    body = _read_body(environ, state.settings.max_body_bytes)
    header = environ.get("HTTP_X_HUB_SIGNATURE_256")
    if not header:
        return 401, {"error": "missing X-Hub-Signature-256: deliveries must be signed with the webhook secret"}
    if not verify_signature(state.settings.webhook_secret, body, header):
        return 401, {"error": "X-Hub-Signature-256 does not match the body"}
    event = environ.get("HTTP_X_GITHUB_EVENT")
    delivery = environ.get("HTTP_X_GITHUB_DELIVERY")
    if not event or not delivery:
        return 400, {"error": "missing X-GitHub-Event or X-GitHub-Delivery header"}
    if event in state.registry.internal:  # timed jobs, alerts, canary failures: queued by the App alone
        return 400, {"error": f"X-GitHub-Event {event!r} is not a GitHub event: the App queues these jobs itself, "
                              "never from a webhook"}
    try:
        payload, text = _parse(body, environ.get("CONTENT_TYPE") or "")
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        return 400, {"error": f"body is not a JSON webhook payload: {e}"}
    if not isinstance(payload, dict):
        return 400, {"error": "body is not a JSON object"}
    if event in IMPLIED_ACTIONS and "action" not in payload:
        payload["action"] = IMPLIED_ACTIONS[event]
    action = payload.get("action") if isinstance(payload.get("action"), str) else None
    try:
        handlers = [(h.name, h.key(payload)) for h in state.registry.match(event, payload)]
    except (KeyError, TypeError, AttributeError) as e:
        return 400, {"error": f"payload does not look like {_an(event)} event: {type(e).__name__}: {e}"}
    missing = next((k for k in EVENT_OBJECTS.get(event, ()) if not isinstance(payload.get(k), dict)), None)
    if handlers and missing:
        return 400, {"error": f"payload does not look like {_an(event)} event: it has no {missing} object"}
    what = f"{event}.{action}" if action else event
    if not handlers:
        log.info("delivery %s %s: not handled", delivery, what)
        return 202, {"status": "ignored", "event": event, "action": action}
    ids = state.queue.enqueue(delivery, event, action, text, handlers)  # committed when it returns
    ms = (time.perf_counter() - t0) * 1000
    if not ids:
        log.info("delivery %s %s: already received, nothing new (%.1f ms)", delivery, what, ms)
        return 200, {"status": "duplicate", "delivery": delivery}
    state.worker.wake(len(ids))
    log.info("delivery %s %s: queued job%s %s (%.1f ms)", delivery, what, "s" if len(ids) > 1 else "",
             ", ".join(map(str, ids)), ms)
    return 202, {"status": "queued", "jobs": ids}


def respond(state: AppState, environ: dict[str, Any]) -> tuple[int, Headers, bytes]:
    """The whole HTTP answer to a delivery, with `Server-Timing: app;dur=<ms>` (the App's own time)."""
    t0 = time.perf_counter()
    try:
        status, doc = handle(state, environ)
    except Exception:  # e.g. the queue's database is unavailable: not acknowledged, GitHub shows a failure
        log.exception("delivery %s could not be queued", environ.get("HTTP_X_GITHUB_DELIVERY"))
        status, doc = 500, {"error": "the delivery could not be queued; it was not acknowledged"}
    body = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode() + b"\n"  # as Flask's jsonify
    return status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                    ("Server-Timing", f"app;dur={(time.perf_counter() - t0) * 1000:.2f}")], body


_STATUS_LINES = {code: f"{code} {HTTP_STATUS_CODES[code].upper()}" for code in HTTP_STATUS_CODES}


class FastPath:
    """WSGI middleware: POST <webhook path> is answered here, anything else goes to `app`."""

    def __init__(self, app: Callable[..., Iterable[bytes]], state: AppState):
        self.app, self.state, self.path = app, state, state.settings.webhook_path

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") != self.path:
            return self.app(environ, start_response)
        self.state.ensure_started()  # after a gunicorn fork, threads start on the first request
        worker = self.state.worker
        worker.request_started()
        try:
            status, headers, body = respond(self.state, environ)
        finally:
            worker.request_finished()
        start_response(_STATUS_LINES[status], headers)
        return [body]


def receive() -> Response:
    """The Flask view of the webhook path: the same answer, for a request that did not pass FastPath."""
    status, headers, body = respond(current_app.extensions["gating"], request.environ)
    return Response(body, status, headers)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    state = current_app.extensions["gating"]
    try:
        counts = state.queue.counts()
        last_error = state.queue.last_error()
    except state.queue.errors as e:
        return jsonify({"status": "error", "error": f"job queue unavailable: {e}"}), 503
    return jsonify({
        "status": "ok",
        "queue": {"depth": counts["queued"] + counts["running"], **counts},
        "last_error": last_error,
        "worker": {"pid": os.getpid(), "threads": state.settings.job_threads},
    }), 200
