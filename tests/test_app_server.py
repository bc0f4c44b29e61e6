"""The App as deployed: `gunicorn gating.server.wsgi:app` in a subprocess, configured by environment variables.

Kills it with SIGKILL between acknowledging a delivery and finishing its job, restarts it, and
checks the job completes; runs several workers at once and checks no job runs twice.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from app_support import ROOT, SECRET, Gunicorn, private_key_pem, signed

from gating.policy import APPROVAL_CHECK
from gating.server.jobs import JobQueue
from gating.testing.pytest_plugin import EXAMPLE

pytestmark = pytest.mark.timeout(90)


def env(tmp_path: Path, **extra) -> dict[str, object]:
    return {"APP_ID": "1", "PRIVATE_KEY": private_key_pem(), "WEBHOOK_SECRET": SECRET,
            "GATING_DB": tmp_path / "jobs.db", "GATING_HANDLERS": "app_support", "APP_TEST_RUNS": tmp_path / "runs",
            "GATING_POLL_SECONDS": "0.05", "GITHUB_API_URL": "http://127.0.0.1:9", "LOG_LEVEL": "WARNING", **extra}


def runs(tmp_path: Path) -> list[tuple[str, str, str]]:
    path = tmp_path / "runs"
    return [tuple(line.split()) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def ping(url: str, delivery: str, **kw) -> httpx.Response:
    body, headers = signed({"zen": "Anything added dilutes everything else.", "hook_id": 1}, "ping", delivery)
    return httpx.post(url + "/webhooks", content=body, headers=headers, timeout=10, **kw)


def test_gunicorn_refuses_what_is_not_github_and_acknowledges_the_rest(tmp_path: Path):
    server = Gunicorn(env(tmp_path, GATING_MAX_BODY_BYTES="4096"), log=tmp_path / "gunicorn.log").start()
    try:
        assert ping(server.url, "d-1").json() == {"status": "queued", "jobs": [1]}
        assert ping(server.url, "d-1").json() == {"status": "duplicate", "delivery": "d-1"}
        body, headers = signed({"zen": "x"}, "ping", "d-2")
        assert httpx.post(server.url + "/webhooks", content=body + b" ", headers=headers).status_code == 401
        unsigned = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
        assert httpx.post(server.url + "/webhooks", content=body, headers=unsigned).status_code == 401
        big, big_headers = signed({"x": "y" * 5000}, "ping", "d-3")
        r = httpx.post(server.url + "/webhooks", content=big, headers=big_headers)
        assert (r.status_code, r.json()) == (413, {"error": "body of 5009 bytes is over the limit of 4096"})
        head = (f"POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(head + body[:5])
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := s.recv(4096):  # the head and the body may come in separate segments
                reply += chunk
        assert reply.split(b"\r\n", 1)[0] == b"HTTP/1.1 400 BAD REQUEST"
        assert reply.endswith(b'{"error":"body ended after 5 of %d bytes"}\n' % len(body))
        wait_for(lambda: [r[0] for r in runs(tmp_path)] == ["start", "done"])
        health = httpx.get(server.url + "/healthz").json()
        assert health["queue"] == {"depth": 0, "queued": 0, "running": 0, "done": 1, "failed": 0}
    finally:
        server.stop()
    assert [r[1] for r in runs(tmp_path)] == ["d-1", "d-1"]


def start_a_hanging_job(tmp_path: Path) -> tuple[Path, dict[str, Any], Gunicorn]:
    """The App under gunicorn with one delivery whose job has started and hangs while `hang` exists."""
    hang = tmp_path / "hang"
    hang.touch()
    e = env(tmp_path, APP_TEST_HANG=hang, GATING_LEASE_SECONDS="1")
    server = Gunicorn(e, log=tmp_path / "gunicorn.log").start()
    try:
        assert ping(server.url, "cut-1").status_code == 202
        wait_for(lambda: len(runs(tmp_path)) == 1)
    except BaseException:
        server.kill()
        raise
    return hang, e, server


def test_a_job_cut_off_by_a_kill_is_completed_after_a_restart(tmp_path: Path):
    hang, e, server = start_a_hanging_job(tmp_path)
    server.kill()
    (start,) = runs(tmp_path)
    hang.unlink()
    server = Gunicorn(e, log=tmp_path / "gunicorn.log").start()
    try:
        wait_for(lambda: any(r[0] == "done" for r in runs(tmp_path)))
        health = httpx.get(server.url + "/healthz").json()
        assert health["queue"]["done"] == 1 and health["queue"]["depth"] == 0
    finally:
        server.stop()
    first, again, done = runs(tmp_path)
    assert first == start and again[:2] == ("start", "cut-1") and done[:2] == ("done", "cut-1")
    assert again[2] != first[2]  # a different process picked it up


def test_a_client_that_stops_sending_is_dropped_and_the_worker_serves_on(tmp_path: Path):
    """`gating app serve`'s worker serves one connection at a time: one that stalls mid-request is answered
    408 and cut off (here after 2 s, a third of --timeout) before gunicorn's master would kill the worker for it."""
    server = Gunicorn(env(tmp_path), workers=1, args=("--timeout", "6"), log=tmp_path / "gunicorn.log").start()
    try:
        pid = httpx.get(server.url + "/healthz").json()["worker"]["pid"]
        with socket.create_connection(("127.0.0.1", server.port)) as stalled:
            stalled.sendall(b"POST /webhooks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
            stalled.settimeout(30)
            answer = b""
            while more := stalled.recv(65536):  # to the end of the connection
                answer += more
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert answer.endswith(b'\r\n\r\n{"error":"the body stopped arriving before its end"}\n')
        assert ping(server.url, "after-the-stall").json() == {"status": "queued", "jobs": [1]}
        assert httpx.get(server.url + "/healthz").json()["worker"]["pid"] == pid  # the same worker, not a new one
    finally:
        server.stop()


def test_several_workers_run_every_job_exactly_once(tmp_path: Path):
    server = Gunicorn(env(tmp_path), workers=3, threads=4, log=tmp_path / "gunicorn.log").start()
    try:
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(lambda i: ping(server.url, f"many-{i}").status_code, range(120)))
        assert codes == [202] * 120
        wait_for(lambda: sum(1 for r in runs(tmp_path) if r[0] == "done") >= 120, timeout=30)
    finally:
        server.stop()
    started = [r[1] for r in runs(tmp_path) if r[0] == "start"]
    assert sorted(started) == sorted(f"many-{i}" for i in range(120))
    assert len({r[2] for r in runs(tmp_path)}) > 1  # more than one worker process did the work


def test_approval_job_acknowledged_before_a_kill_completes_after_a_restart(github, github_repo, tmp_path: Path):
    emu = github
    e = {"APP_ID": emu.app.app_id, "PRIVATE_KEY": emu.app.private_key_pem, "WEBHOOK_SECRET": emu.app.webhook_secret,
         "GITHUB_API_URL": emu.api_url, "GATING_DB": tmp_path / "jobs.db", "GATING_POLL_SECONDS": "0.05",
         "LOG_LEVEL": "WARNING"}
    text = (EXAMPLE / "gating.yml").read_text().replace("gpt-4o-2024-08-06", "gpt-4o-2024-11-20")
    emu.push(github_repo, "bump", {"gating.yml": text}, "Bump the model", user="alice")
    pr = emu.create_pull(github_repo, "bump", "main", "Bump the model", "alice")
    opened = emu.webhook("pull_request", "opened", github_repo, number=pr["number"])
    server = Gunicorn({**e, "GATING_JOB_THREADS": "0"}, log=tmp_path / "gunicorn.log").start()
    try:
        r = emu.deliver(server.url + "/webhooks", opened)
        assert (r.status_code, r.json()) == (202, {"status": "queued", "jobs": [1]})
    finally:
        server.kill()
    assert [c for c in emu.list_check_runs(github_repo) if c["name"] == APPROVAL_CHECK] == []
    server = Gunicorn(e, log=tmp_path / "gunicorn.log").start()
    try:
        wait_for(lambda: httpx.get(server.url + "/healthz").json()["queue"]["done"] == 1)
        assert emu.deliver(server.url + "/webhooks", opened).json()["status"] == "duplicate"
    finally:
        server.stop()
    (run,) = [c for c in emu.list_check_runs(github_repo) if c["name"] == APPROVAL_CHECK]
    assert run["head_sha"] == pr["head"]["sha"] and run["status"] == "in_progress"
    assert run["output"]["title"].startswith("Pending: model-owners: has 0 of 1 approvals")
    assert json.loads(opened.body_bytes)["pull_request"]["number"] == pr["number"]


def test_gunicorn_with_bad_settings_stops_with_one_line_naming_them(tmp_path: Path):
    server = Gunicorn(env(tmp_path, APP_ID="gating-app", GATING_HANDLERS="app_support,gating.server.handlers.nope"))
    proc = subprocess.run(  # one worker: when two fail at once, gunicorn's master itself may print a traceback
        [sys.executable, "-m", "gunicorn", "gating.server.wsgi:app", "-b", f"127.0.0.1:{server.port}", "-w", "1",
         "-k", "gthread"], env=server.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4  # gunicorn's "App failed to load": no worker is booted again
    assert "Traceback" not in proc.stderr
    problem = ("gating app: cannot start: APP_ID must be the GitHub App's numeric id, got 'gating-app'; "
               "GATING_HANDLERS: cannot load the handler module 'gating.server.handlers.nope': "
               "No module named 'gating.server.handlers.nope'")
    assert problem in proc.stderr.splitlines()
    assert not (tmp_path / "jobs.db").exists()


def test_gating_app_jobs_tells_a_job_cut_off_by_a_kill_from_one_running(tmp_path: Path, capsys, monkeypatch):
    """After the App is killed mid-job and before it is back, the job is `running` in the queue, but
    nothing runs it: the listing says so, and the App runs it again once it is back."""
    from gating.commands.cli import main

    hang, e, server = start_a_hanging_job(tmp_path)
    try:
        assert main(["app", "jobs", "--status", "running", "--db", str(tmp_path / "jobs.db")]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[1].split()[:3] == ["1", "running", "1"] and len(out[1].split()) == 7  # no note: it runs
        assert out[2] == "queue: 0 queued, 1 running, 0 failed, 0 done"
    finally:
        server.kill()
    monkeypatch.setenv("GATING_LEASE_SECONDS", "1")

    def listed() -> list[str]:
        assert main(["app", "jobs", "--status", "running", "--db", str(tmp_path / "jobs.db")]) == 0
        return capsys.readouterr().out.splitlines()

    wait_for(lambda: "worker stopped" in listed()[1])  # once its lease has run out
    out = listed()
    assert out[1].split()[:3] == ["1", "running", "1"]
    assert out[1].endswith("(its worker stopped mid-run: the App runs it again)")
    assert out[2] == "queue: 0 queued, 1 running (1 cut off), 0 failed, 0 done"
    assert main(["app", "jobs", "--status", "all", "--json", "--db", str(tmp_path / "jobs.db")]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["status"], row["cut_off"]) == ("running", True)
    hang.unlink()
    server = Gunicorn(e, log=tmp_path / "gunicorn.log").start()
    try:
        wait_for(lambda: any(r[0] == "done" for r in runs(tmp_path)))
    finally:
        server.stop()
    assert listed() == ["no running jobs"]


def test_an_approval_job_killed_while_github_creates_its_check_run_leaves_one_check_run(github, github_repo,
                                                                                       tmp_path: Path):
    """GitHub goes on with a request whose client died: after the restart the job runs again and finds
    the check run the cut-off attempt created, instead of creating a second one."""
    emu = github
    e = {"APP_ID": emu.app.app_id, "PRIVATE_KEY": emu.app.private_key_pem, "WEBHOOK_SECRET": emu.app.webhook_secret,
         "GITHUB_API_URL": emu.api_url, "GATING_DB": tmp_path / "jobs.db", "GATING_POLL_SECONDS": "0.05",
         "GATING_LEASE_SECONDS": "3", "LOG_LEVEL": "WARNING"}  # room for heartbeats on a loaded runner
    text = (EXAMPLE / "gating.yml").read_text().replace("gpt-4o-2024-08-06", "gpt-4o-2024-11-20")
    emu.push(github_repo, "bump", {"gating.yml": text}, "Bump the model", user="alice")
    pr = emu.create_pull(github_repo, "bump", "main", "Bump the model", "alice")
    slow = emu.faults.add(method="POST", path=r"/check-runs$", kind="latency", delay=1.5, times=1)
    server = Gunicorn(e, log=tmp_path / "gunicorn.log").start()
    try:
        r = emu.deliver(server.url + "/webhooks", emu.webhook("pull_request", "opened", github_repo,
                                                              number=pr["number"]))
        assert r.status_code == 202
        wait_for(lambda: slow.hits == 1)  # the job is waiting on GitHub's answer
    finally:
        server.kill()
    wait_for(lambda: any(c["name"] == APPROVAL_CHECK for c in emu.list_check_runs(github_repo)))
    server = Gunicorn(e, log=tmp_path / "gunicorn.log").start()
    try:
        wait_for(lambda: httpx.get(server.url + "/healthz").json()["queue"]["done"] == 1)
        health = httpx.get(server.url + "/healthz").json()
    finally:
        server.stop()
    assert health["queue"]["failed"] == 0 and health["queue"]["running"] == 0
    assert JobQueue(str(tmp_path / "jobs.db")).get(1).attempts == 2  # it did run again
    (run,) = [c for c in emu.list_check_runs(github_repo) if c["name"] == APPROVAL_CHECK]
    assert run["output"]["title"].startswith("Pending: model-owners: has 0 of 1 approvals")
