"""App replicas on one PostgreSQL queue (GATING_QUEUE_URL): two gunicorn Apps, each with its own data
folder, share deliveries, de-duplication and leases; a host killed with SIGKILL loses nothing, and
what it was running is done by the other, once."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from app_support import SECRET, Gunicorn, private_key_pem, signed

from gating.server import create_app
from gating.server.jobs import JobQueue
from gating.server.settings import Settings, SettingsError

pytestmark = pytest.mark.timeout(300)

HOST_THREADS = 4  # 2 gunicorn workers x GATING_JOB_THREADS=2: how many jobs one host runs at once


def host_env(tmp_path: Path, name: str, queue_url: str) -> dict[str, object]:
    local = tmp_path / name
    local.mkdir()
    return {"APP_ID": "1", "PRIVATE_KEY": private_key_pem(), "WEBHOOK_SECRET": SECRET,
            "GATING_DB": local / "app.sqlite3", "GATING_QUEUE_URL": queue_url, "GATING_HANDLERS": "app_support",
            "APP_TEST_RUNS": local / "runs", "APP_TEST_HANG": local / "hang", "GATING_JOB_THREADS": "2",
            "GATING_POLL_SECONDS": "0.05", "GATING_LEASE_SECONDS": "2", "GITHUB_API_URL": "http://127.0.0.1:9",
            "LOG_LEVEL": "WARNING"}


def runs(path: Path) -> list[tuple[str, str]]:
    """(start|done, delivery) for each line the host's handler wrote."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [(w[0], w[1]) for w in (line.split() for line in lines) if len(w) == 3]


def post(url: str, deliveries: list[str]) -> list[int]:
    """Deliver `ping` webhooks to one host over one keep-alive connection; their status codes."""
    codes = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for d in deliveries:
            body, headers = signed({"zen": "Keep it logically awesome.", "hook_id": 1}, "ping", d)
            codes.append(client.post("/webhooks", content=body, headers=headers).status_code)
    return codes


def post_both(a: str, b: str, deliveries: list[str]) -> list[int]:
    """Half the deliveries to each host, at the same time (a load balancer in front of both)."""
    out: dict[str, list[int]] = {}
    threads = [threading.Thread(target=lambda u=u, ds=ds: out.__setitem__(u, post(u, ds)))
               for u, ds in ((a, deliveries[0::2]), (b, deliveries[1::2]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out[a] + out[b]


def wait_for(predicate: Any, what: str, timeout: float = 120.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def in_flight(path: Path) -> set[str]:
    """Deliveries the host started and has not finished."""
    started = Counter(d for what, d in runs(path) if what == "start")
    done = Counter(d for what, d in runs(path) if what == "done")
    return {d for d, n in started.items() if n > done[d]}


def test_two_hosts_do_a_thousand_deliveries_exactly_once_though_one_is_killed_midway(tmp_path: Path,
                                                                                       postgres_url: str):
    a_env, b_env = host_env(tmp_path, "a", postgres_url), host_env(tmp_path, "b", postgres_url)
    a_runs, b_runs = Path(str(a_env["APP_TEST_RUNS"])), Path(str(b_env["APP_TEST_RUNS"]))
    a_hang, b_hang = Path(str(a_env["APP_TEST_HANG"])), Path(str(b_env["APP_TEST_HANG"]))
    a = Gunicorn(a_env, workers=2, threads=4, log=tmp_path / "a.log").start()
    b = Gunicorn(b_env, workers=2, threads=4, log=tmp_path / "b.log").start()
    queue = JobQueue(postgres_url)
    deliveries = [f"delivery-{i:04d}" for i in range(1000)]
    try:
        assert set(post_both(a.url, b.url, deliveries[:400])) == {202}
        # Both hosts now hold every job thread in a job that waits for its hang file to go: host a's
        # four jobs are cut off mid-run by the kill, with none between its side effect and its commit.
        a_hang.touch()
        b_hang.touch()
        assert set(post_both(a.url, b.url, deliveries[400:600])) == {202}
        wait_for(lambda: len(in_flight(a_runs)) == HOST_THREADS and len(in_flight(b_runs)) == HOST_THREADS,
                 "every job thread of both hosts to be inside a job")
        cut_off = in_flight(a_runs)
        a.kill()
        b_hang.unlink()
        assert set(post(b.url, deliveries[600:])) == {202}
        redelivered = post(b.url, deliveries[:50:5] + sorted(cut_off))  # GitHub's redelivery: same ids
        assert set(redelivered) == {200}, "a redelivery is acknowledged as a duplicate and queues nothing"
        wait_for(lambda: queue.counts()["done"] == 1000, "all 1,000 jobs to be done")
    finally:
        a.kill()
        b.stop()
    done = Counter(d for path in (a_runs, b_runs) for what, d in runs(path) if what == "done")
    assert sorted(done) == deliveries, "no delivery lost"
    assert set(done.values()) == {1}, [d for d, n in done.items() if n != 1]
    b_done = {d for what, d in runs(b_runs) if what == "done"}
    assert cut_off <= b_done, "the killed host's jobs were done by the other host"
    assert {d for what, d in runs(a_runs) if what == "done"} & cut_off == set()
    assert queue.counts() == {"queued": 0, "running": 0, "done": 1000, "failed": 0}
    assert [j.attempts for j in queue.list("done", limit=2000) if j.delivery in cut_off] == [2] * HOST_THREADS


def test_a_queue_url_that_is_not_postgresql_is_refused_by_name(tmp_path: Path):
    with pytest.raises(SettingsError) as e:
        Settings.load({"APP_ID": "1", "PRIVATE_KEY": private_key_pem(), "WEBHOOK_SECRET": SECRET,
                       "GATING_DB": str(tmp_path / "app.sqlite3"), "GATING_QUEUE_URL": "redis://127.0.0.1/0"}).check()
    assert "GATING_QUEUE_URL must be a postgresql:// URL" in str(e.value)


def test_an_unreachable_queue_stops_the_app_at_start_naming_it_without_its_password(tmp_path: Path):
    from app_support import free_port

    url = f"postgresql://gating:hunter2@127.0.0.1:{free_port()}/gating"
    with pytest.raises(SettingsError) as e:
        create_app({"APP_ID": "1", "PRIVATE_KEY": private_key_pem(), "WEBHOOK_SECRET": SECRET,
                    "GATING_DB": str(tmp_path / "app.sqlite3"), "GATING_QUEUE_URL": url, "GATING_JOB_THREADS": 0})
    message = str(e.value)
    assert message.startswith("GATING_QUEUE_URL: cannot open the job queue postgresql://gating:***@127.0.0.1:")
    assert "hunter2" not in message


def test_gating_app_jobs_and_retry_work_on_the_shared_queue(postgres_url: str, monkeypatch, capsys):
    from gating.commands.cli import main

    q = JobQueue(postgres_url, max_attempts=1)
    q.enqueue("d1", "pull_request", "opened", "{}", [("approvals", "acme/x#1")])
    q.fail(q.claim("w"), "w", "GitHubError: 502")
    monkeypatch.setenv("GATING_QUEUE_URL", postgres_url)
    monkeypatch.setenv("GATING_DB", "/nonexistent/app.sqlite3")  # not used: the queue is in PostgreSQL
    assert main(["app", "jobs"]) == 0
    out = capsys.readouterr().out
    assert "GitHubError: 502" in out and "1 failed" in out
    assert main(["app", "retry", "--all-failed"]) == 0
    assert q.counts()["queued"] == 1


def test_the_preflight_names_a_shared_queue_it_cannot_reach(tmp_path: Path):
    from app_support import free_port

    from gating.server.preflight import queue_problem

    url = f"postgresql://gating:hunter2@127.0.0.1:{free_port()}/gating"
    settings = Settings.load({"APP_ID": "1", "PRIVATE_KEY": private_key_pem(), "WEBHOOK_SECRET": SECRET,
                              "GATING_DB": str(tmp_path / "app.sqlite3"), "GATING_QUEUE_URL": url})
    problem = queue_problem(settings) or ""
    assert problem.startswith("GATING_QUEUE_URL: cannot use the job queue postgresql://gating:***@127.0.0.1:")
    assert "hunter2" not in problem


def test_telemetry_one_replica_received_is_what_every_replicas_monitor_reads(tmp_path: Path, postgres_url: str):
    from gating.monitor.rollup import Rollup

    states = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        app = create_app({"APP_ID": "1", "PRIVATE_KEY": private_key_pem(), "WEBHOOK_SECRET": SECRET,
                          "GATING_DB": str(tmp_path / name / "app.sqlite3"), "GATING_QUEUE_URL": postgres_url,
                          "GATING_JOB_THREADS": 0})
        states.append(app.extensions["gating"])
    a, b = states
    a.rollups.write([Rollup("acme/bot", "abc", "answer", "llm", 1000, requests=3)])
    b.rollups.write([Rollup("acme/bot", "abc", "answer", "llm", 1000, requests=4)])
    assert [r.requests for r in b.rollups.rollups("acme/bot", since=1000, until=1001)] == [7]
    assert [r.requests for r in a.rollups.rollups("acme/bot", since=1000, until=1001)] == [7]


def test_leases_are_timed_by_the_databases_clock_so_hosts_with_skewed_clocks_agree(postgres_url: str, monkeypatch):
    # host b's clock runs 5 minutes ahead of a's: were leases timed by each host's clock, b would take a
    # job a is running (its lease would look expired) and run it twice; by the server's clock neither
    # host's skew counts, and a job whose lease really ran out is still picked up
    import time as real_time

    from gating.server import postgres

    skew = {"a": 0.0, "b": 300.0}
    host = {"now": "a"}
    monkeypatch.setattr(postgres, "host_clock", lambda: real_time.time() + skew[host["now"]])
    a, b = JobQueue(postgres_url, lease_seconds=60), JobQueue(postgres_url, lease_seconds=60)
    a.enqueue("d-1", "push", None, "{}", [("h", None)])
    job = a.claim("host-a/1")
    assert job is not None
    host["now"] = "b"
    assert b.claim("host-b/1") is None  # a's lease is alive by the server's clock
    assert abs(a.db.clock() - b.db.clock()) < 1.0  # both read the server's time, 300 s of skew apart
    b.db.write("UPDATE jobs SET lease_until = lease_until - 120")  # a dies: its lease runs out
    again = b.claim("host-b/1")
    assert again is not None and again.id == job.id and again.attempts == 2
