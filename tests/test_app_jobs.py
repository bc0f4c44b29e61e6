"""The durable job queue: de-duplication, leases, retries with backoff, failures kept visible,
several processes claiming from one database, and a restart picking up where it stopped; each on
both engines, the SQLite file and PostgreSQL (tests/postgres_support.py)."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from gating.server.jobs import JobQueue, PermanentError, RetryLater, Worker


class Clock:
    def __init__(self, t: float = 1_700_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(queue_location: str, clock: Clock) -> JobQueue:
    return JobQueue(queue_location, max_attempts=3, lease_seconds=30, retry_base=5, retry_max=60,
                    clock=clock)


def put(q: JobQueue, delivery: str = "d1", handlers=(("h", None),)) -> list[int]:
    return q.enqueue(delivery, "pull_request", "opened", '{"n": 1}', list(handlers))


def test_the_database_is_in_wal_mode(tmp_path: Path):
    queue = JobQueue(str(tmp_path / "jobs.db"))
    assert sqlite3.connect(queue.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_redelivered_delivery_queues_nothing_new(queue: JobQueue):
    (first,) = put(queue)
    assert put(queue) == []
    (other,) = put(queue, handlers=(("h", None), ("other", None)))  # a new handler for a known delivery
    assert queue.get(other).handler == "other" and other > first
    assert queue.counts()["queued"] == 2


def test_claim_complete(queue: JobQueue):
    put(queue)
    job = queue.claim("w1")
    assert (job.status, job.attempts, job.payload) == ("running", 1, {"n": 1})
    assert queue.claim("w2") is None
    queue.complete(job, "w1")
    assert queue.counts() == {"queued": 0, "running": 0, "done": 1, "failed": 0}


def test_failures_back_off_then_stay_failed_and_visible(queue: JobQueue, clock: Clock):
    put(queue)
    job = queue.claim("w")
    assert queue.fail(job, "w", "RuntimeError: GitHub 502") == "queued"
    assert queue.get(job.id).run_after == clock.t + 5
    assert queue.claim("w") is None  # not due yet
    clock.t += 5
    job = queue.claim("w")
    assert job.attempts == 2
    assert queue.fail(job, "w", "boom 2") == "queued"
    assert queue.get(job.id).run_after == clock.t + 10  # doubled
    clock.t += 10
    job = queue.claim("w")
    assert queue.fail(job, "w", "boom 3") == "failed"
    failed = queue.list("failed")
    assert [(j.id, j.attempts, j.last_error) for j in failed] == [(1, 3, "boom 3")]
    assert queue.last_error() == {"job": 1, "handler": "h", "error": "boom 3", "at": "2023-11-14T22:13:35Z"}
    assert queue.retry() == 1
    job = queue.claim("w")
    assert (job.status, job.attempts) == ("running", 1)


def test_retry_after_is_honoured(queue: JobQueue, clock: Clock):
    put(queue)
    job = queue.claim("w")
    queue.fail(job, "w", "rate limited", after=45)
    assert queue.get(job.id).run_after == clock.t + 45


def test_permanent_failure_does_not_retry(queue: JobQueue):
    put(queue)
    job = queue.claim("w")
    assert queue.fail(job, "w", "no installation", permanent=True) == "failed"


def test_expired_lease_is_picked_up_again_and_the_late_owner_cannot_finish_it(queue: JobQueue, clock: Clock):
    put(queue)
    job = queue.claim("dead-worker")
    clock.t += 29
    assert queue.claim("w2") is None
    clock.t += 2
    again = queue.claim("w2")
    assert (again.id, again.attempts) == (job.id, 2)
    queue.complete(job, "dead-worker")  # too late: no longer its job
    assert queue.get(job.id).status == "running"
    queue.complete(again, "w2")
    assert queue.get(job.id).status == "done"


def test_heartbeat_keeps_a_long_job_leased(queue: JobQueue, clock: Clock):
    put(queue)
    queue.claim("w1")
    for _ in range(4):
        clock.t += 20
        queue.heartbeat(["w1"])
        assert queue.claim("w2") is None


def test_a_job_that_keeps_killing_its_worker_ends_up_failed(queue: JobQueue, clock: Clock):
    put(queue)
    for _ in range(3):
        assert queue.claim("w") is not None
        clock.t += 31
    assert queue.claim("w") is None
    (job,) = queue.list("failed")
    assert job.last_error == "worker stopped while running it (3 attempts)"


def test_jobs_of_one_pull_request_run_one_at_a_time_in_order(queue: JobQueue):
    put(queue, "d1", (("h", "acme/x#1"),))
    put(queue, "d2", (("h", "acme/x#1"),))
    put(queue, "d3", (("h", "acme/x#2"),))
    first = queue.claim("a")
    other = queue.claim("b")
    assert (first.delivery, other.delivery) == ("d1", "d3")
    assert queue.claim("c") is None
    queue.complete(first, "a")
    assert queue.claim("c").delivery == "d2"


def test_a_run_covers_the_queued_jobs_of_its_handler_and_key(queue: JobQueue):
    put(queue, "d1", (("approvals", "acme/x#1"),))
    put(queue, "d2", (("approvals", "acme/x#1"),))
    put(queue, "d3", (("audit", "acme/x#1"),))  # another handler: not covered
    put(queue, "d4", (("approvals", "acme/x#2"),))  # another pull request: not covered
    job = queue.claim("w", coalesce=lambda j: j.handler == "approvals")
    assert job.delivery == "d1"
    assert [(j.delivery, j.status, j.coalesced_into) for j in queue.list()] == [
        ("d4", "queued", None), ("d3", "queued", None), ("d2", "done", 1), ("d1", "running", None)]
    assert queue.claim("w2", coalesce=lambda j: False).delivery == "d4"


def test_jobs_are_not_coalesced_unless_the_handler_says_so(queue: JobQueue):
    put(queue, "d1", (("h", "k"),))
    put(queue, "d2", (("h", "k"),))
    queue.complete(queue.claim("w"), "w")
    assert queue.claim("w").delivery == "d2"


def test_jobs_survive_a_restart(queue_location: str, clock: Clock):
    path = queue_location
    q1 = JobQueue(path, clock=clock)
    put(q1)
    del q1
    q2 = JobQueue(path, clock=clock)
    assert q2.claim("w").delivery == "d1"


def test_a_command_runs_once_whatever_delivery_brings_it_even_after_a_restart_and_a_purge(queue_location: str,
                                                                                           clock: Clock):
    path = queue_location
    q1 = JobQueue(path, clock=clock, keep_done_seconds=1)
    put(q1, "d1")
    first = q1.claim("w")
    assert q1.first_run("rollback comment 7", first)
    assert q1.first_run("rollback comment 7", first)  # the same job run again (a retry) still acts
    q1.complete(first, "w")
    del q1
    clock.t += 10
    q2 = JobQueue(path, clock=clock, keep_done_seconds=1)  # a restart
    put(q2, "d2")
    q2.complete(q2.claim("w"), "w")  # its first completion purges old finished jobs: d1's row is gone
    assert q2.get(first.id) is None
    put(q2, "d3")  # the same comment, redelivered under a new delivery id
    replay = q2.claim("w")
    assert not q2.first_run("rollback comment 7", replay)
    assert q2.first_run("rollback comment 8", replay)


def _claim_all(path: str, name: str, out: str) -> None:
    q = JobQueue(path, lease_seconds=600)
    got = []
    while (job := q.claim(name)) is not None:
        got.append(job.id)
        q.complete(job, name)
    Path(out).write_text("\n".join(map(str, got)))


def test_several_processes_never_run_one_job_twice(tmp_path: Path, queue_location: str):
    path = queue_location
    q = JobQueue(path)
    for i in range(300):
        q.enqueue(f"d{i}", "e", None, "{}", [("h", None)])
    # spawn, not fork: a child forked from this many-threaded test process can inherit a lock another
    # thread held at the fork (logging, sqlite) and hang for ever
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_claim_all, args=(path, f"p{i}", str(tmp_path / f"out{i}"))) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)  # the joins are a bound for a hang, not a speed target
        assert p.exitcode == 0
    claimed = [int(x) for i in range(4) for x in (tmp_path / f"out{i}").read_text().split()]
    assert sorted(claimed) == list(range(1, 301))
    assert q.counts()["done"] == 300


def test_worker_threads_run_retry_and_fail_jobs(queue_location: str):
    q = JobQueue(queue_location, max_attempts=2, retry_base=0.01, retry_max=0.01)
    seen: list[tuple[str, int]] = []
    done = threading.Event()

    def run(job):
        seen.append((job.delivery, job.attempts))
        if job.delivery == "flaky" and job.attempts == 1:
            raise RuntimeError("GitHub 502")
        if job.delivery == "bad":
            raise PermanentError("payload names no installation")
        if job.delivery == "later":
            raise RetryLater("secondary rate limit", after=0.01)
        if len(seen) >= 5:
            done.set()

    w = Worker(q, run, threads=2, poll=0.05)
    w.ensure_started()
    for d in ("ok", "flaky", "bad", "later"):
        q.enqueue(d, "e", None, "{}", [("h", None)])
        w.wake()
    assert q.wait_idle(5)
    w.stop()
    assert sorted(seen) == [("bad", 1), ("flaky", 1), ("flaky", 2), ("later", 1), ("later", 2), ("ok", 1)]
    assert {j.delivery: j.status for j in q.list()} == {"ok": "done", "flaky": "done", "bad": "failed",
                                                        "later": "failed"}
    assert q.get(3).last_error == "PermanentError: payload names no installation"


def test_bad_input_fails_a_job_at_once_and_a_service_failure_is_retried(queue_location: str):
    # a manifest that does not read reads no better a minute later: one attempt, the error kept as said;
    # GitHub failing may pass, so that job is tried again
    from gating.github import GitHubError
    from gating.system.manifest import ManifestError

    q = JobQueue(queue_location, max_attempts=3, retry_base=0.01, retry_max=0.01)
    seen: list[tuple[str, int]] = []

    def run(job):
        seen.append((job.delivery, job.attempts))
        if job.delivery == "manifest":
            raise ManifestError(["gating.yml:4:10: components.models.bot: unknown provider 'nope'"])
        if job.delivery == "github" and job.attempts == 1:
            raise GitHubError(502, "Bad Gateway", "GET", "/repos/acme/bot")

    w = Worker(q, run, threads=1, poll=0.05)
    w.ensure_started()
    for d in ("manifest", "github"):
        q.enqueue(d, "e", None, "{}", [("h", None)])
        w.wake()
    assert q.wait_idle(5)
    w.stop()
    assert sorted(seen) == [("github", 1), ("github", 2), ("manifest", 1)]
    jobs = {j.delivery: j for j in q.list()}
    assert (jobs["manifest"].status, jobs["github"].status) == ("failed", "done")
    assert jobs["manifest"].last_error == "ManifestError: gating.yml:4:10: components.models.bot: unknown provider 'nope'"


def _wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_jobs_wait_for_a_lull_in_requests(queue_location: str):
    q = JobQueue(queue_location)
    started: list[float] = []
    w = Worker(q, lambda job: started.append(time.monotonic()), threads=1, poll=0.05, yield_seconds=10)
    w.request_started()  # a delivery is being acknowledged
    w.ensure_started()
    put(q)
    w.wake()
    time.sleep(0.2)
    assert started == []
    finished = time.monotonic()
    w.request_finished()
    assert q.wait_idle(5)
    w.stop()
    assert started[0] - finished >= Worker.QUIET


def test_jobs_wait_for_requests_no_longer_than_yield_seconds(queue_location: str):
    q = JobQueue(queue_location)
    started: list[float] = []
    w = Worker(q, lambda job: started.append(time.monotonic()), threads=1, poll=0.05, yield_seconds=0.3)
    w.request_started()  # and never finished: endless load
    t0 = time.monotonic()
    w.ensure_started()
    put(q)
    w.wake()
    assert q.wait_idle(5)
    w.stop()
    assert 0.3 <= started[0] - t0 < 2


def _fill(q: JobQueue, n: int = 400) -> None:
    for i in range(n):  # ~8 KB each: a few WAL pages per delivery
        q.enqueue(f"d{i}", "pull_request", "opened", json.dumps({"x": "y" * 8000}), [("h", None)])


def test_commits_checkpoint_the_wal_unless_a_worker_does(tmp_path: Path):
    plain = JobQueue(str(tmp_path / "plain.db"))
    _fill(plain)
    assert os.path.getsize(plain.path) > 2_000_000  # SQLite's own checkpoints copied the WAL in
    quiet = JobQueue(str(tmp_path / "worker.db"), checkpoint_on_commit=False)
    _fill(quiet)
    assert os.path.getsize(quiet.path) < 100_000  # everything is still in the WAL only
    assert quiet.counts()["queued"] == 400
    w = Worker(quiet, lambda job: None, threads=1, poll=0.05)
    w.request_started()
    w.request_finished()
    w.ensure_started()  # its background thread checkpoints once requests have paused
    assert _wait_until(lambda: os.path.getsize(quiet.path) > 2_000_000)
    w.stop()


def test_a_job_whose_result_cannot_be_written_runs_again_and_its_thread_keeps_working(tmp_path: Path):
    """The database locked past the write wait as a job ends: the job is run again once its lease runs
    out, and the thread that ran it goes on with other jobs instead of dying with the error."""
    q = JobQueue(str(tmp_path / "jobs.db"), lease_seconds=0.5)
    q.WRITE_WAIT_SECONDS = 0.2
    release, running = threading.Event(), threading.Event()
    seen: list[tuple[str, int]] = []

    def run(job):
        seen.append((job.delivery, job.attempts))
        if job.attempts == 1 and job.delivery == "first":
            running.set()
            release.wait(5)

    w = Worker(q, run, threads=1, poll=0.05)
    w.ensure_started()
    put(q, "first")
    w.wake()
    assert running.wait(5)
    lock = sqlite3.connect(q.path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    release.set()  # the job ends while nothing can be written
    time.sleep(0.5)
    lock.execute("ROLLBACK")
    lock.close()
    put(q, "second")
    w.wake()
    assert _wait_until(lambda: q.counts()["done"] == 2)
    w.stop()
    assert sorted(seen) == [("first", 1), ("first", 2), ("second", 1)]


def test_a_restarted_process_with_the_same_host_and_pid_does_not_keep_a_dead_job_leased(queue_location: str):
    """After a container restart, the host name and a worker's pid are often the same as before the
    crash: the new process's heartbeats must not keep alive the lease of the job the old one died in."""
    q = JobQueue(queue_location, lease_seconds=0.3)
    release = threading.Event()
    started: list[str] = []

    def run(job):
        started.append(job.delivery)
        release.wait(10)

    before = Worker(q, run, threads=1, poll=0.05)  # the process that dies mid-job
    before.ensure_started()
    put(q, "cut-off")
    before.wake()
    assert _wait_until(lambda: started == ["cut-off"])
    before.stop()  # no more heartbeats: as good as killed
    after = Worker(q, run, threads=2, poll=0.05)  # the same host and pid, busy with long jobs
    after.ensure_started()
    put(q, "long-1")
    put(q, "long-2")
    after.wake(2)
    try:
        assert _wait_until(lambda: sorted(started) == ["cut-off", "long-1", "long-2"])
        again: list = []
        assert _wait_until(lambda: again.append(q.claim("probe")) or again[-1] is not None, timeout=3)
        assert again[-1].delivery == "cut-off"
    finally:
        release.set()
        after.stop()


def test_gating_app_jobs_says_a_job_that_killed_every_worker_will_fail(tmp_path: Path, clock: Clock, capsys):
    from gating.commands.cli import main

    q = JobQueue(str(tmp_path / "jobs.db"), max_attempts=5, lease_seconds=30, clock=clock)
    put(q)
    for _ in range(5):
        assert q.claim("w") is not None
        clock.t += 31
    assert main(["app", "jobs", "--status", "running", "--db", q.path]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:3] == ["1", "running", "5"]
    assert out[1].endswith("(its worker stopped on all 5 attempts: the App marks it failed)")
    assert out[2] == "queue: 0 queued, 1 running (1 cut off), 0 failed, 0 done"


def test_claims_at_the_same_moment_take_different_jobs_and_never_two_of_one_key(queue_location: str):
    """Eight claimers (each with its own connection, as replicas have) race for the same jobs, round
    after round: each job goes to one of them, and of jobs sharing a key only one runs at a time."""
    queues = [JobQueue(queue_location, lease_seconds=600) for _ in range(8)]
    for i in range(12):  # the key's jobs first: every claimer's first candidate is one of them
        queues[0].enqueue(f"pull-{i}", "e", None, "{}", [("h", "acme/x#1")])
    for i in range(24):
        queues[0].enqueue(f"free-{i}", "e", None, "{}", [("h", None)])
    got: list[list] = [[] for _ in queues]
    for _ in range(3):
        barrier = threading.Barrier(len(queues))

        def claim(n: int, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            job = queues[n].claim(f"w{n}")
            if job is not None:
                got[n].append(job)

        threads = [threading.Thread(target=claim, args=(n,)) for n in range(len(queues))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        running = queues[0].list("running", limit=100)
        assert len([j for j in running if j.key == "acme/x#1"]) == 1, [j.delivery for j in running]
    claimed = [j.id for jobs in got for j in jobs]
    assert len(claimed) == len(set(claimed)) == 3 * len(queues)  # no claimer went without, none took one twice
    assert [j.delivery for jobs in got for j in jobs if j.key] == ["pull-0"]


def test_the_apps_other_records_keep_their_rules_on_either_engine(queue_location: str):
    """Overrides (once per comment, voided by an edit, outdated by a push), the monitor's watches and
    incidents: the same answers from SQLite and PostgreSQL, GitHub's 64-bit comment ids included."""
    from gating.server import monitoring
    from gating.server.overrides import OverrideStore, Seen

    q = JobQueue(queue_location)
    put(q, "d1")
    job = q.claim("w")
    store = OverrideStore(q)
    seen = Seen("Acme/X", 7, 2_900_000_001, "mona", "hotfix", "2026-12-02T10:00:00Z", "https://x/c")
    assert store.record_created(seen, "write", "a" * 40, job)
    assert not store.record_created(seen, "write", "a" * 40, job.__class__(**{**job.__dict__, "delivery": "d2"}))
    store.record_push("acme/x", 7, "b" * 40, job)
    store.record_push("acme/x", 7, "b" * 40, job)
    (act,) = store.acts("acme/x", 7)
    assert (act.login, act.void, act.pushed_after) == ("mona", "", True)
    assert store.void(seen, "the comment was edited", "", job) and not store.void(seen, "again", "", job)
    assert store.acts("acme/x", 7)[0].void == "the comment was edited"

    monitoring.watch(q, "acme/x", "production", "c" * 40, 123, {"id": 1}, 1000.5, 10)
    monitoring.watch(q, "acme/x", "production", "c" * 40, 123, {"id": 1}, 2000.0, 10)  # redelivered: no change
    (w,) = monitoring.watches(q, "acme/x")
    assert (w.state, w.deployed_at, w.bake_until) == ("baking", 1000.5, 1600.5)
    monitoring.update(q, w, "known_good", {"ok": True}, 1700.25)
    assert monitoring.watches(q)[0].status == {"ok": True}
    assert monitoring.incident_since(q, "acme/x", "c" * 40, "errors", 1800.125, True) == 1800.125
    assert monitoring.incident_since(q, "acme/x", "c" * 40, "errors", 1900.0, True) == 1800.125
    assert monitoring.incident_since(q, "acme/x", "c" * 40, "errors", 2000.0, False) is None


def test_an_enqueue_held_up_past_its_wait_raises_instead_of_hanging(queue_location: str):
    """Another connection is inserting the same delivery and has not committed: the acknowledgement
    gives up after ENQUEUE_WAIT_SECONDS with the engine's error (the webhook answers 500, GitHub retries)."""
    q = JobQueue(queue_location)
    q.ENQUEUE_WAIT_SECONDS = 0.3
    if queue_location.startswith("postgresql://"):
        import psycopg

        other = psycopg.connect(queue_location)
        other.execute("INSERT INTO jobs (delivery, handler, event, payload, run_after, created_at, updated_at) "
                      "VALUES ('d1', 'h', 'e', '{}', 0, 0, 0)")
    else:
        other = sqlite3.connect(queue_location, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(q.errors):
            put(q)
    finally:
        other.rollback()
        other.close()
    assert put(q) != []  # the other insert was rolled back: this delivery is new after all


def test_a_claim_walks_the_due_index_instead_of_sorting_the_queue(tmp_path: Path):
    # with a backlog every claim sorted every due job (8.7 ms a claim at 40,000 queued); each pick now
    # stops at its first free row of the (status, run_after) index, so SQLite plans no sort
    from gating.server.jobs import _PICK_EXPIRED, _PICK_QUEUED

    q = JobQueue(str(tmp_path / "jobs.db"))
    for pick, args in ((_PICK_EXPIRED, (0.0, 5, 0.0, 0.0, 0.0, 5)), (_PICK_QUEUED, (0.0, 0.0))):
        plan = q.db.read(f"EXPLAIN QUERY PLAN {pick}", args)
        steps = " | ".join(str(row[-1]) for row in plan)
        assert "USING INDEX jobs_due (status=?" in steps and "TEMP B-TREE" not in steps, steps
