"""`gating app serve | jobs | retry` as an operator uses them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from app_support import ROOT, SECRET, free_port, private_key_pem

from gating.commands.cli import main
from gating.server.jobs import JobQueue


@pytest.fixture
def queue(tmp_path: Path, monkeypatch) -> JobQueue:
    q = JobQueue(str(tmp_path / "jobs.db"), max_attempts=1)
    q.enqueue("d-ok", "pull_request", "opened", "{}", [("approvals.on_pull_event", "acme/bot#1")])
    q.enqueue("d-bad", "check_run", "completed", "{}", [("approvals.on_check_run", None)])
    q.complete(q.claim("w"), "w")
    q.fail(q.claim("w"), "w", "GitHubError: GitHub 502 (GET /repos/acme/bot/pulls/1): Bad Gateway")
    monkeypatch.setenv("GATING_DB", q.path)
    return q


def test_jobs_lists_failed_jobs_by_default(queue, capsys):
    assert main(["app", "jobs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["id", "status", "tries", "event", "handler", "updated", "(UTC)", "last", "error"]
    assert out[1].split()[:5] == ["2", "failed", "1", "check_run.completed", "approvals.on_check_run"]
    assert out[1].endswith("GitHubError: GitHub 502 (GET /repos/acme/bot/pulls/1): Bad Gateway")
    assert out[2] == "queue: 0 queued, 0 running, 1 failed, 1 done"


def test_jobs_json_and_other_statuses(queue, capsys):
    assert main(["app", "jobs", "--status", "all", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["id"], r["status"], r["key"]) for r in rows] == [(2, "failed", None), (1, "done", "acme/bot#1")]
    assert main(["app", "jobs", "--status", "queued"]) == 0
    assert capsys.readouterr().out == "no queued jobs\n"


def test_retry_named_jobs_or_all_failed(queue, capsys):
    assert main(["app", "retry", "2"]) == 0
    assert capsys.readouterr().out == "queued 1 failed job again: 2\n"
    assert queue.get(2).status == "queued" and queue.get(2).attempts == 0
    queue.fail(queue.claim("w"), "w", "again")
    assert main(["app", "retry", "--all-failed"]) == 0
    assert capsys.readouterr().out == "queued 1 failed job again\n"


@pytest.mark.parametrize("argv, message", [
    pytest.param(["app", "retry"], "gating: error: name the job ids to retry, or pass --all-failed", id="nothing"),
    pytest.param(["app", "retry", "1", "9"], "gating: error: job 1 is done, not failed; job 9 does not exist",
                 id="not-failed"),
])
def test_retry_refuses_what_it_cannot_do(queue, capsys, argv, message):
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == message


def test_jobs_without_a_queue_says_where_it_looked(tmp_path, capsys):
    assert main(["app", "jobs", "--db", str(tmp_path / "none.db")]) == 2
    assert capsys.readouterr().err.strip() == (f"gating: error: no job queue at {tmp_path / 'none.db'} "
                                                "(set GATING_DB or pass --db)")


def app_env(tmp_path: Path) -> dict[str, str]:
    return {"APP_ID": "42", "PRIVATE_KEY": private_key_pem(), "WEBHOOK_SECRET": SECRET,
            "GATING_DB": str(tmp_path / "jobs.db")}


def test_serve_check_prints_settings_without_secrets(github, tmp_path, monkeypatch, capsys):
    from gating.audit.keys import write_keypair

    write_keypair(tmp_path / "audit.pem", tmp_path / "audit.pem.pub")
    env = app_env(tmp_path) | {"APP_ID": str(github.app.app_id), "PRIVATE_KEY": github.app.private_key_pem,
                               "GITHUB_API_URL": github.api_url, "GATING_AUDIT_KEY_PATH": str(tmp_path / "audit.pem")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(["app", "serve", "--check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"APP_ID={github.app.app_id}" in out and "PRIVATE_KEY=(set)" in out and "WEBHOOK_SECRET=(set)" in out
    assert "WEBHOOK_PATH=/webhooks" in out
    assert next(x for x in out if x.startswith("GATING_HANDLERS=")).startswith("GATING_HANDLERS=gating.server.handlers.approvals,")
    assert not any("BEGIN" in line or SECRET in line for line in out)


def test_serve_refuses_to_start_without_a_webhook_secret(tmp_path, monkeypatch, capsys):
    for k, v in app_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("WEBHOOK_SECRET")
    assert main(["app", "serve"]) == 2
    assert capsys.readouterr().err.strip() == ("gating: error: the App cannot start: WEBHOOK_SECRET is not set; "
                                                "the App refuses unsigned webhooks, so it needs one")


def test_serve_runs_gunicorn(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gating", "app", "serve", "--bind", f"127.0.0.1:{port}",
                             "--workers", "1"], env={**os.environ, **app_env(tmp_path)}, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert r.json()["status"] == "ok" and r.json()["queue"]["depth"] == 0
        assert r.headers["Connection"] == "close"  # no keep-alive: GitHub opens a connection per delivery
    finally:
        proc.terminate()
        proc.wait(10)
