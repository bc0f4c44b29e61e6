"""POST /webhooks and GET /healthz: refusing what is not GitHub's, acknowledging the rest at once."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from app_support import app_settings, serve_in_thread, signed
from werkzeug.test import Client

from gating.server import create_app
from gating.server.handlers import Registry
from gating.server.settings import SettingsError
from gating.server.webhooks import signature, verify_signature

PR = {"action": "opened", "number": 7, "pull_request": {"number": 7}, "repository": {"full_name": "acme/bot"},
      "installation": {"id": 1}}


@pytest.fixture
def runs() -> list[str]:
    return []


@pytest.fixture
def app(tmp_path: Path, runs: list[str]):
    registry = Registry()
    done = threading.Event()

    @registry.on("pull_request", "opened", "synchronize", key=lambda p: f"{p['repository']['full_name']}#{p['number']}")
    def record(ctx):
        runs.append(ctx.job.delivery)
        done.set()

    @registry.on("issues", when=lambda p: p["issue"]["pull_request"] is not None)
    def strict(ctx):
        pass

    app = create_app(app_settings(tmp_path, GATING_MAX_BODY_BYTES=4096), registry=registry)
    yield app
    app.extensions["gating"].worker.stop()


@pytest.fixture
def client(app):
    return app.test_client()


def post(client, body: bytes, headers: dict[str, str]):
    return client.post("/webhooks", data=body, headers=headers)


def test_signature_helpers():
    sig = signature("It's a Secret to Everybody", b"Hello, World!")
    # the example from GitHub's documentation on validating deliveries
    assert sig == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert verify_signature("It's a Secret to Everybody", b"Hello, World!", sig)
    assert not verify_signature("", b"Hello, World!", sig)
    assert not verify_signature("x", b"Hello, World!", None)


def test_unsigned_delivery_is_refused(client, runs):
    body, headers = signed(PR, "pull_request")
    del headers["X-Hub-Signature-256"]
    r = post(client, body, headers)
    assert r.status_code == 401
    assert r.json == {"error": "missing X-Hub-Signature-256: deliveries must be signed with the webhook secret"}


@pytest.mark.parametrize("tamper", [
    pytest.param(lambda b, h: (b, {**h, "X-Hub-Signature-256": signature("wrong secret", b)}), id="wrong-secret"),
    pytest.param(lambda b, h: (b.replace(b'"opened"', b'"closed"'), h), id="forged-body"),
    pytest.param(lambda b, h: (b[:-10], h), id="truncated-body"),
    pytest.param(lambda b, h: (b, {**h, "X-Hub-Signature-256": "sha1=" + h["X-Hub-Signature-256"][7:]}), id="sha1"),
    pytest.param(lambda b, h: (b, {**h, "X-Hub-Signature-256": "sha256=zz"}), id="garbage"),
])
def test_bad_signature_is_refused(client, runs, tamper):
    body, headers = tamper(*signed(PR, "pull_request"))
    r = post(client, body, headers)
    assert r.status_code == 401
    assert r.json == {"error": "X-Hub-Signature-256 does not match the body"}
    assert client.get("/healthz").json["queue"]["depth"] == 0


def test_oversized_body_is_refused_before_it_is_read(client):
    body, headers = signed({"x": "a" * 5000}, "pull_request")
    r = post(client, body, headers)
    assert r.status_code == 413
    assert r.json == {"error": "body of 5009 bytes is over the limit of 4096"}


@pytest.mark.parametrize("body, message", [
    pytest.param(b'{"action": "opened"', "body is not a JSON webhook payload: Expecting ',' delimiter: "
                 "line 1 column 20 (char 19)", id="truncated-json"),
    pytest.param(b"[1, 2]", "body is not a JSON object", id="not-an-object"),
    pytest.param(b"\xff\xfe", "body is not a JSON webhook payload: 'utf-8' codec can't decode byte 0xff in "
                 "position 0: invalid start byte", id="not-utf8"),
    pytest.param(b"[" * 2000 + b"]" * 2000, "body is not a JSON webhook payload: nested too deeply",
                 id="nested-too-deeply"),
    pytest.param(json.dumps(PR).encode()[:-1] + b', "deep": ' + b"[" * 1010 + b"]" * 1010 + b"}",
                 "body is not a JSON webhook payload: nested too deeply", id="nested-past-the-stdlib-not-orjson"),
])
def test_signed_but_malformed_json_is_refused(client, body, message):
    r = post(client, *signed(body, "pull_request"))
    assert (r.status_code, r.json) == (400, {"error": message})


def test_missing_event_headers_are_refused(client):
    body, headers = signed(PR, "pull_request")
    del headers["X-GitHub-Delivery"]
    r = post(client, body, headers)
    assert (r.status_code, r.json) == (400, {"error": "missing X-GitHub-Event or X-GitHub-Delivery header"})


def test_payload_that_does_not_fit_its_event_is_refused(client):
    r = post(client, *signed({"action": "opened", "issue": {}}, "issues"))
    assert r.status_code == 400
    assert r.json == {"error": "payload does not look like an issues event: KeyError: 'pull_request'"}


@pytest.mark.parametrize("payload, error", [
    pytest.param({k: v for k, v in PR.items() if k != "pull_request"},
                 "payload does not look like a pull_request event: it has no pull_request object", id="no-object"),
    pytest.param({**PR, "pull_request": None},
                 "payload does not look like a pull_request event: it has no pull_request object", id="null-object"),
    pytest.param({**PR, "pull_request": [7]},
                 "payload does not look like a pull_request event: it has no pull_request object", id="list-object"),
])
def test_a_handled_event_without_its_object_is_refused_not_queued(app, client, runs, payload, error):
    r = post(client, *signed(payload, "pull_request"))
    assert (r.status_code, r.json) == (400, {"error": error})
    assert app.extensions["gating"].queue.list() == []


def test_a_form_without_a_payload_field_is_refused(client):
    _, headers = signed(b"zen=x", "pull_request")
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    r = post(client, b"zen=x", headers)
    assert (r.status_code, r.json) == (400, {"error": "body is not a JSON webhook payload: the form has no "
                                                      "payload field"})


def test_unhandled_events_and_actions_are_accepted_and_ignored(client):
    r = post(client, *signed({"zen": "Keep it logically awesome."}, "ping"))
    assert (r.status_code, r.json) == (202, {"status": "ignored", "event": "ping", "action": None})
    r = post(client, *signed({**PR, "action": "closed"}, "pull_request"))
    assert (r.status_code, r.json) == (202, {"status": "ignored", "event": "pull_request", "action": "closed"})


def test_handled_event_is_queued_run_once_and_a_redelivery_does_nothing_new(app, client, runs):
    body, headers = signed(PR, "pull_request", delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    r = post(client, body, headers)
    assert (r.status_code, r.json) == (202, {"status": "queued", "jobs": [1]})
    assert re.fullmatch(r"app;dur=\d+\.\d\d", r.headers["Server-Timing"])
    assert app.extensions["gating"].queue.wait_idle(5)
    r = post(client, body, headers)
    assert (r.status_code, r.json) == (200, {"status": "duplicate", "delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"})
    assert app.extensions["gating"].queue.wait_idle(5)
    assert runs == ["72d3162e-cc78-11e3-81ab-4c9367dc0958"]
    (job,) = app.extensions["gating"].queue.list()
    assert (job.handler, job.event, job.action, job.key, job.status) == (
        "test_app_webhooks.record", "pull_request", "opened", "acme/bot#7", "done")


def test_form_encoded_deliveries_are_accepted(app, client, runs):
    body = urlencode({"payload": json.dumps(PR)}).encode()
    _, headers = signed(body, "pull_request", delivery="form-1")
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    r = post(client, body, headers)
    assert (r.status_code, r.json) == (202, {"status": "queued", "jobs": [1]})
    assert app.extensions["gating"].queue.wait_idle(5)
    assert runs == ["form-1"]


def test_healthz_reports_queue_depth_and_last_error(tmp_path: Path):
    registry = Registry()

    @registry.on("pull_request")
    def broken(ctx):
        raise RuntimeError("GitHub 502 Bad Gateway")

    app = create_app(app_settings(tmp_path, GATING_MAX_ATTEMPTS=1, GATING_JOB_THREADS=0), registry=registry)
    client = app.test_client()
    assert client.get("/healthz").json["queue"] == {"depth": 0, "queued": 0, "running": 0, "done": 0, "failed": 0}
    assert client.get("/healthz").json["last_error"] is None
    post(client, *signed(PR, "pull_request"))
    post(client, *signed(PR, "pull_request"))
    assert client.get("/healthz").json["queue"]["depth"] == 2
    state = app.extensions["gating"]
    state.worker.threads = 1
    state.worker.ensure_started()
    assert state.queue.wait_idle(5)
    state.worker.stop()
    health = client.get("/healthz").json
    assert health["status"] == "ok"
    assert health["queue"] == {"depth": 0, "queued": 0, "running": 0, "done": 0, "failed": 2}
    assert health["last_error"]["error"] == "RuntimeError: GitHub 502 Bad Gateway"
    assert health["last_error"]["handler"] == "test_app_webhooks.broken"


def test_webhook_path_is_configurable_and_other_methods_are_refused(tmp_path: Path):
    app = create_app(app_settings(tmp_path, WEBHOOK_PATH="/api/github/webhooks"), registry=Registry())
    client = app.test_client()
    assert client.post("/api/github/webhooks", data=b"{}").status_code == 401
    assert client.post("/webhooks", data=b"{}").status_code == 404
    r = client.get("/api/github/webhooks")
    assert r.status_code == 405 and r.json["error"].startswith("The method is not allowed")
    app.extensions["gating"].worker.stop()


@pytest.mark.parametrize("overrides, problem", [
    pytest.param({"WEBHOOK_SECRET": ""}, "WEBHOOK_SECRET is not set; the App refuses unsigned webhooks, so it needs one",
                 id="no-secret"),
    pytest.param({"PRIVATE_KEY": "not a key"}, "PRIVATE_KEY is neither PEM text nor base64-encoded PEM", id="bad-key"),
    pytest.param({"PRIVATE_KEY": None, "PRIVATE_KEY_PATH": "/nonexistent.pem"},
                 "cannot read the private key file /nonexistent.pem: No such file or directory", id="missing-key-file"),
    pytest.param({"APP_ID": ""}, "APP_ID is not set", id="no-app-id"),
    pytest.param({"APP_ID": "gating-app"}, "APP_ID must be the GitHub App's numeric id, got 'gating-app'",
                 id="app-id-not-a-number"),
    pytest.param({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'",
                 id="unknown-log-level"),
    pytest.param({"GATING_HANDLERS": "gating.server.handlers.approvals,gating.server.handlers.nope"},
                 "GATING_HANDLERS: cannot load the handler module 'gating.server.handlers.nope': "
                 "No module named 'gating.server.handlers.nope'", id="unknown-handler-module"),
    pytest.param({"GATING_HANDLERS": "json"},
                 "GATING_HANDLERS: the handler module 'json' has no register(registry) function",
                 id="not-a-handler-module"),
    pytest.param({"GATING_DB": "{tmp}/missing/jobs.db"},
                 "GATING_DB: cannot open the job queue {tmp}/missing/jobs.db: the folder {tmp}/missing does not exist",
                 id="db-folder-missing"),
    pytest.param({"GATING_DB": "{tmp}/not-a-db"},
                 "GATING_DB: cannot open the job queue {tmp}/not-a-db: file is not a database", id="db-not-sqlite"),
    pytest.param({"GATING_AUDIT_KEY": "not a key"}, "GATING_AUDIT_KEY is neither PEM text nor base64-encoded PEM",
                 id="bad-audit-key"),
    pytest.param({"GATING_AUDIT_KEY_PATH": "/nonexistent/audit.key"},
                 "GATING_AUDIT_KEY_PATH: /nonexistent/audit.key: cannot read key file (No such file or directory)",
                 id="missing-audit-key-file"),
    pytest.param({"GATING_AUDIT_BACKEND": "git"}, "GATING_AUDIT_BACKEND must be api or push, got 'git'",
                 id="unknown-audit-backend"),
])
def test_the_app_refuses_to_start_without_what_it_needs(tmp_path: Path, overrides, problem):
    (tmp_path / "not-a-db").write_bytes(b"these are not the jobs you are looking for" * 100)
    overrides = {k: v.replace("{tmp}", str(tmp_path)) if v else v for k, v in overrides.items()}
    with pytest.raises(SettingsError) as e:
        create_app(app_settings(tmp_path, **overrides), registry=Registry())
    assert problem.replace("{tmp}", str(tmp_path)) in e.value.problems
    assert "BEGIN" not in str(e.value)


# -- under a real WSGI server -----------------------------------------------------------------------


def raw_request(url: str, head: bytes, body: bytes, close_write: bool = True) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(head + body)
        if close_write:
            s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_real_server_acknowledges_and_refuses(app, runs):
    with serve_in_thread(app) as url:
        body, headers = signed(PR, "pull_request", delivery="real-1")
        r = httpx.post(url + "/webhooks", content=body, headers=headers)
        assert (r.status_code, r.json()) == (202, {"status": "queued", "jobs": [1]})
        assert httpx.post(url + "/webhooks", content=body, headers=headers).json()["status"] == "duplicate"
        forged = httpx.post(url + "/webhooks", content=body.replace(b"7", b"8"), headers=headers)
        assert forged.status_code == 401
        assert app.extensions["gating"].queue.wait_idle(5)
        assert runs == ["real-1"]
        health = httpx.get(url + "/healthz").json()
        assert health["queue"]["done"] == 1


def test_real_server_refuses_a_delivery_cut_off_mid_body(app, runs):
    body, headers = signed(PR, "pull_request", delivery="cut-1")
    head = (f"POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    with serve_in_thread(app) as url:
        reply = raw_request(url, head, body[: len(body) // 2])
    assert reply.split(b"\r\n", 1)[0] == b"HTTP/1.1 400 BAD REQUEST"
    assert reply.endswith(b'{"error":"body ended after %d of %d bytes"}\n' % (len(body) // 2, len(body)))
    assert app.extensions["gating"].queue.counts()["queued"] == 0
    assert runs == []


def test_real_server_refuses_an_oversized_body_without_waiting_for_it(app):
    body, headers = signed({"x": "a" * 10}, "pull_request")
    head = (f"POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Length: {10 * 1024 * 1024}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    with serve_in_thread(app) as url:
        reply = raw_request(url, head, body, close_write=False)
    assert reply.startswith(b"HTTP/1.1 413")
    assert b'"error":"body of 10485760 bytes is over the limit of 4096"' in reply


def test_real_server_refuses_an_oversized_chunked_body(app):
    body, headers = signed({"x": "a" * 8000}, "pull_request")

    def chunks():
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    with serve_in_thread(app) as url:
        r = httpx.post(url + "/webhooks", content=chunks(), headers=headers)
    assert r.status_code == 413


def test_every_answer_says_how_long_the_app_took(client):
    body, headers = signed(PR, "pull_request")
    r = post(client, body, {**headers, "X-Hub-Signature-256": signature("wrong", body)})
    assert r.status_code == 401 and re.fullmatch(r"app;dur=\d+\.\d\d", r.headers["Server-Timing"])
    assert r.headers["Content-Type"] == "application/json"


def test_a_content_length_that_is_not_a_number_is_refused(client):
    r = client.post("/webhooks", data=b"{}", environ_overrides={"CONTENT_LENGTH": "ten"})
    assert (r.status_code, r.json) == (400, {"error": "Content-Length 'ten' is not a number"})


def test_a_delivery_that_cannot_be_queued_is_not_acknowledged(app, client, tmp_path: Path):
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        db.execute("DROP TABLE jobs")  # the queue's database is broken
    r = post(client, *signed(PR, "pull_request"))
    assert (r.status_code, r.json) == (500, {"error": "the delivery could not be queued; it was not acknowledged"})


def test_the_flask_view_answers_like_the_fast_path(app, client, runs):
    """POST /webhooks is answered before Flask; Flask's own view of the path gives the same answers."""
    flask_only = Client(app.wsgi_app.app)
    body, headers = signed(PR, "pull_request", delivery="via-flask")
    r = flask_only.post("/webhooks", data=body, headers=headers)
    assert (r.status_code, r.json) == (202, {"status": "queued", "jobs": [1]})
    assert re.fullmatch(r"app;dur=\d+\.\d\d", r.headers["Server-Timing"])
    assert post(client, body, headers).json == {"status": "duplicate", "delivery": "via-flask"}
    assert flask_only.post("/webhooks", data=b"{}").json == {
        "error": "missing X-Hub-Signature-256: deliveries must be signed with the webhook secret"}
    assert flask_only.get("/webhooks").status_code == client.get("/webhooks").status_code == 405
    assert app.extensions["gating"].queue.wait_idle(5)
    assert runs == ["via-flask"]


def test_a_delivery_starts_the_background_threads_as_any_request_does(tmp_path: Path):
    """After a gunicorn fork (--preload) no thread is running; the first request starts them, and the
    first request is usually a delivery, which does not pass through Flask."""
    registry = Registry()
    registry.every("tidy", lambda settings: 60.0)(lambda ctx: None)
    app = create_app(app_settings(tmp_path, GATING_JOB_THREADS=0), registry=registry)
    state = app.extensions["gating"]
    assert state.scheduler._thread is None
    assert post(app.test_client(), *signed(PR, "pull_request")).status_code == 202
    assert state.scheduler._thread.is_alive()
    state.scheduler.stop()


def test_handler_modules_can_add_http_endpoints(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("APP_TEST_RUNS", str(tmp_path / "runs"))
    app = create_app(app_settings(tmp_path, GATING_HANDLERS="app_support"))
    client = app.test_client()
    r = client.post("/support-ping/from-elsewhere")
    assert (r.status_code, r.json) == (202, {"jobs": [1]})
    assert app.extensions["gating"].queue.wait_idle(5)
    app.extensions["gating"].worker.stop()
    assert (tmp_path / "runs").read_text().split()[:2] == ["start", "from-elsewhere"]


def test_a_locked_queue_is_answered_before_github_gives_up_and_nothing_is_recorded(app, client, runs,
                                                                                  tmp_path: Path):
    """GitHub waits 10 s for an answer: a database locked by another connection for longer is a refusal
    within that time, not an acknowledgement GitHub never sees; once the lock is gone a redelivery queues."""
    lock = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    body, headers = signed(PR, "pull_request", delivery="while-locked")
    try:
        t0 = time.monotonic()
        r = post(client, body, headers)
        waited = time.monotonic() - t0
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert (r.status_code, r.json) == (500, {"error": "the delivery could not be queued; it was not acknowledged"})
    assert 4 < waited < 8
    assert app.extensions["gating"].queue.list() == []
    r = post(client, body, headers)
    assert (r.status_code, r.json["status"]) == (202, "queued")


@pytest.mark.parametrize(("event", "payload"), [
    ("schedule", {"action": "audit_reconcile", "period": 1, "every_seconds": 1.0}),
    ("schedule", {"action": "drill", "period": 1, "every_seconds": 1.0}),
    ("canary", {"action": "failed", "repository": "acme/bot"}),
    ("alertmanager", {"action": "firing", "key": "k"}),
])
def test_a_signed_delivery_of_an_internal_job_kind_is_refused(tmp_path: Path, event: str, payload: dict):
    """Timed jobs, canary failures and alerts are queued by the App itself; a delivery that names
    their event is not GitHub's, signed or not."""
    app = create_app(app_settings(tmp_path))
    try:
        body, headers = signed(payload, event)
        r = post(app.test_client(), body, headers)
        assert r.status_code == 400
        assert r.json == {"error": f"X-GitHub-Event {event!r} is not a GitHub event: the App queues these "
                                   "jobs itself, never from a webhook"}
        assert app.extensions["gating"].queue.counts()["queued"] == 0
    finally:
        app.extensions["gating"].worker.stop()


def test_a_payload_is_read_as_the_stdlib_reads_it_whichever_parser_runs(app, client, runs):
    """orjson parses payloads when installed; what it would read differently is read by the stdlib: an
    integer past 64 bits stays an integer in the job's key, NaN is a number, a byte order mark is bad JSON."""
    body = json.dumps({**PR, "number": 123456789012345678901234, "score": float("nan")}).encode()
    r = post(client, *signed(body, "pull_request", delivery="big-1"))
    assert (r.status_code, r.json) == (202, {"status": "queued", "jobs": [1]})
    assert app.extensions["gating"].queue.wait_idle(5)
    (job,) = app.extensions["gating"].queue.list()
    assert job.key == "acme/bot#123456789012345678901234"
    r = post(client, *signed(b"\xef\xbb\xbf" + json.dumps(PR).encode(), "pull_request", delivery="bom-1"))
    assert (r.status_code, r.json) == (400, {"error": "body is not a JSON webhook payload: Unexpected UTF-8 BOM "
                                                      "(decode using utf-8-sig): line 1 column 1 (char 0)"})
