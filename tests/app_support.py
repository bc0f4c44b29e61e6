"""Helpers for the App's tests: settings with a fresh key, signing, real WSGI servers on loopback, and
waiting until the App and the emulator have settled.

Also a handler module (GATING_HANDLERS=app_support) for the App running under gunicorn in a
subprocess: its `ping` handler records each run in a file and can be told to hang, so a test can
kill the server in the middle of a job.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Blueprint, current_app
from werkzeug.serving import make_server

from gating.commands.app import THREADS, WORKERS, gunicorn_argv
from gating.server.webhooks import signature

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cret-for-tests"


@functools.cache
def private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def app_settings(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return {"APP_ID": "1", "PRIVATE_KEY": private_key_pem(), "WEBHOOK_SECRET": SECRET,
            "GATING_DB": str(tmp_path / "jobs.db"), "GATING_POLL_SECONDS": 0.05, "GATING_RETRY_BASE_SECONDS": 0.05,
            "GITHUB_API_URL": "http://127.0.0.1:9", **overrides}


def signed(payload: dict[str, Any] | bytes, event: str = "ping", delivery: str | None = None,
           secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return body, {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
                  "X-Hub-Signature-256": signature(secret, body), "Content-Type": "application/json"}


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """werkzeug's threaded server on a free loopback port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        t.join(5)


def wait_settled(emu: Any, queue: Any, timeout: float) -> None:
    """Until every webhook is delivered and every job done (jobs cause webhooks and vice versa); a
    failed job fails the test with its error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        emu.wait_for_deliveries(timeout=deadline - time.monotonic())
        assert queue.wait_idle(max(0.1, deadline - time.monotonic()))
        if emu.wait_for_deliveries(timeout=0.05) and queue.counts()["queued"] == 0:
            failed = queue.list("failed")
            assert not failed, [j.last_error for j in failed]
            return
    raise AssertionError("the App did not settle")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """`gunicorn gating.server.wsgi:app` in a subprocess, configured only through its environment."""

    def __init__(self, env: dict[str, Any], workers: int = WORKERS, threads: int = THREADS, log: Path | None = None,
                 args: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **{k: str(v) for k, v in env.items()},
                    "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
        self.workers, self.threads, self.args = workers, threads, args
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Gunicorn:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*gunicorn_argv(f"127.0.0.1:{self.port}", self.workers, self.threads), "--graceful-timeout", "2", *self.args],
            env=self.env, cwd=ROOT, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("gunicorn did not become healthy")

    def kill(self) -> None:
        """SIGKILL the master and its workers: no graceful shutdown, jobs in flight are cut off."""
        if self.proc and self.proc.poll() is None:
            children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
            self.proc.kill()
            for pid in children.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


# -- a handler module for subprocess tests ----------------------------------------------------------

blueprint = Blueprint("app_support", __name__)


def register(registry: Any) -> None:
    """GATING_HANDLERS=app_support: `ping` deliveries run `record_ping`."""
    registry.on("ping")(record_ping)


@blueprint.post("/support-ping/<delivery>")
def support_ping(delivery: str) -> tuple[Any, int]:
    """An HTTP endpoint of a handler module that queues work without a GitHub webhook."""
    state = current_app.extensions["gating"]
    ids = state.queue.enqueue(delivery, "ping", None, "{}", [("app_support.record_ping", None)])
    state.worker.wake(len(ids))
    return {"jobs": ids}, 202


def record_ping(ctx: Any) -> None:
    """Appends "<delivery> <pid>" to $APP_TEST_RUNS; while $APP_TEST_HANG names an existing file, hangs."""
    runs = Path(os.environ["APP_TEST_RUNS"])
    with open(runs, "a") as f:
        f.write(f"start {ctx.job.delivery} {os.getpid()}\n")
    hang = os.environ.get("APP_TEST_HANG")
    while hang and Path(hang).exists():
        time.sleep(0.05)
    with open(runs, "a") as f:
        f.write(f"done {ctx.job.delivery} {os.getpid()}\n")
