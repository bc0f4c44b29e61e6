"""Durable background work: an embedded SQLite queue (WAL) shared by every worker process.

A webhook is acknowledged as soon as its job row is committed; worker threads claim jobs with
`BEGIN IMMEDIATE` and a lease, so two gunicorn workers never run one job at once, and a job whose
worker died (its lease ran out) is picked up again. Failures retry with exponential backoff; a job
that keeps failing stays visible as `failed` until someone retries it. Jobs with the same `key`
(one pull request) run one at a time, in order.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("gating.app.jobs")

STATUSES = ("queued", "running", "done", "failed")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY,
  delivery TEXT NOT NULL,
  handler TEXT NOT NULL,
  event TEXT NOT NULL,
  action TEXT,
  key TEXT,
  payload TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'queued',
  attempts INTEGER NOT NULL DEFAULT 0,
  run_after REAL NOT NULL,
  lease_until REAL,
  owner TEXT,
  last_error TEXT,
  error_at REAL,
  coalesced_into INTEGER,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL,
  UNIQUE (delivery, handler)
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (status, run_after);
CREATE INDEX IF NOT EXISTS jobs_key ON jobs (key, status);
CREATE INDEX IF NOT EXISTS jobs_error ON jobs (error_at);
"""


class PermanentError(Exception):
    """Retrying cannot help (bad payload, missing installation): the job fails at once."""


class RetryLater(Exception):
    """Try again no sooner than `after` seconds (e.g. GitHub asked us to back off)."""

    def __init__(self, message: str, after: float):
        super().__init__(message)
        self.after = after


@dataclass(frozen=True)
class Job:
    id: int
    delivery: str
    handler: str
    event: str
    action: str | None
    key: str | None
    payload_text: str
    status: str
    attempts: int
    run_after: float
    last_error: str | None
    created_at: float
    updated_at: float
    coalesced_into: int | None = None  # done because job N ran for the same key after it was queued

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.payload_text)


_COLS = "id, delivery, handler, event, action, key, payload, status, attempts, run_after, last_error, " \
        "created_at, updated_at, coalesced_into"


class JobQueue:
    """The queue in one SQLite file; each thread (and each forked process) gets its own connection."""

    def __init__(self, path: str, *, max_attempts: int = 5, lease_seconds: float = 60.0,
                 retry_base: float = 5.0, retry_max: float = 600.0, keep_done_seconds: float = 7 * 86400,
                 clock: Callable[[], float] = time.time):
        self.path = path
        self.max_attempts, self.lease_seconds = max_attempts, lease_seconds
        self.retry_base, self.retry_max, self.keep_done_seconds = retry_base, retry_max, keep_done_seconds
        self.clock = clock
        self._local = threading.local()
        self._write_lock = threading.Lock()  # one writer per process: no busy-waiting among our threads
        self._completed = 0
        with self._tx() as c:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            # timeout=0: SQLite's own busy handler sleeps 1, 2, 5, 10... ms; _retry waits far less.
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
            _retry(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes, fast commits
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _tx(self) -> _Tx:
        return _Tx(self._conn(), self._write_lock)

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self._conn()
        return _retry(lambda: conn.execute(sql, args).fetchall())

    # -- producing ---------------------------------------------------------------------------------

    def enqueue(self, delivery: str, event: str, action: str | None, payload_text: str,
                handlers: Sequence[tuple[str, str | None]]) -> list[int]:
        """One job per (handler, key); returns the new ids, or [] when the delivery was seen before."""
        now = self.clock()
        ids = []
        with self._tx() as c:
            for handler, key in handlers:
                cur = c.execute(
                    "INSERT OR IGNORE INTO jobs (delivery, handler, event, action, key, payload, run_after, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (delivery, handler, event, action, key, payload_text, now, now, now))
                if cur.rowcount:
                    ids.append(int(cur.lastrowid or 0))
        return ids

    # -- consuming ---------------------------------------------------------------------------------

    def claim(self, owner: str, coalesce: Callable[[Job], bool] | None = None) -> Job | None:
        """The next due job, now leased to `owner`; jobs whose lease ran out count as due. When
        `coalesce(job)` is true, the queued jobs of its handler and key are done as part of it."""
        now = self.clock()
        if not self._read("SELECT 1 FROM jobs WHERE (status = 'queued' AND run_after <= ?) OR "
                          "(status = 'running' AND lease_until < ?) LIMIT 1", (now, now)):
            return None  # nothing due: no write lock taken
        with self._tx() as c:
            while True:
                row = c.execute(
                    f"SELECT {_COLS} FROM jobs WHERE "
                    "((status = 'queued' AND run_after <= ?) OR (status = 'running' AND lease_until < ?)) "
                    "AND (key IS NULL OR key NOT IN (SELECT key FROM jobs WHERE status = 'running' "
                    "AND lease_until >= ? AND key IS NOT NULL)) ORDER BY run_after, id LIMIT 1",
                    (now, now, now)).fetchone()
                if row is None:
                    return None
                job = Job(*row)
                if job.status == "running" and job.attempts >= self.max_attempts:
                    c.execute("UPDATE jobs SET status = 'failed', owner = NULL, lease_until = NULL, "
                              "last_error = ?, error_at = ?, updated_at = ? WHERE id = ?",
                              (f"worker stopped while running it ({job.attempts} attempts)", now, now, job.id))
                    continue
                c.execute("UPDATE jobs SET status = 'running', owner = ?, lease_until = ?, attempts = attempts + 1, "
                          "updated_at = ? WHERE id = ?", (owner, now + self.lease_seconds, now, job.id))
                if job.key is not None and coalesce is not None and coalesce(job):
                    c.execute("UPDATE jobs SET status = 'done', coalesced_into = ?, updated_at = ? "
                              "WHERE status = 'queued' AND key = ? AND handler = ? AND id != ?",
                              (job.id, now, job.key, job.handler, job.id))
                return Job(*row[:7], "running", job.attempts + 1, *row[9:])

    def heartbeat(self, owners: Iterable[str]) -> None:
        owners = list(owners)
        if not owners:
            return
        now = self.clock()
        with self._tx() as c:
            c.execute(f"UPDATE jobs SET lease_until = ? WHERE status = 'running' AND owner IN "
                      f"({','.join('?' * len(owners))})", (now + self.lease_seconds, *owners))

    def complete(self, job: Job, owner: str) -> None:
        now = self.clock()
        with self._tx() as c:
            c.execute("UPDATE jobs SET status = 'done', owner = NULL, lease_until = NULL, updated_at = ? "
                      "WHERE id = ? AND owner = ? AND status = 'running'", (now, job.id, owner))
            self._completed += 1
            if self._completed % 500 == 1:  # now and then, forget old finished jobs (and their delivery ids)
                c.execute("DELETE FROM jobs WHERE status = 'done' AND updated_at < ?", (now - self.keep_done_seconds,))

    def fail(self, job: Job, owner: str, error: str, permanent: bool = False, after: float | None = None) -> str:
        """Record a failure; the job is queued again after a backoff, or kept as failed. Returns its status."""
        now = self.clock()
        final = permanent or job.attempts >= self.max_attempts
        delay = min(self.retry_base * 2 ** (job.attempts - 1), self.retry_max)
        if after is not None:
            delay = max(delay, after)
        status = "failed" if final else "queued"
        with self._tx() as c:
            c.execute("UPDATE jobs SET status = ?, owner = NULL, lease_until = NULL, last_error = ?, error_at = ?, "
                      "run_after = ?, updated_at = ? WHERE id = ? AND owner = ? AND status = 'running'",
                      (status, error[:2000], now, now + (0 if final else delay), now, job.id, owner))
        return status

    # -- looking and fixing ------------------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        rows = self._read(f"SELECT {_COLS} FROM jobs WHERE id = ?", (job_id,))
        return Job(*rows[0]) if rows else None

    def list(self, status: str | None = None, limit: int = 50) -> list[Job]:
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        rows = self._read(f"SELECT {_COLS} FROM jobs {where} ORDER BY id DESC LIMIT ?", (*args, limit))
        return [Job(*r) for r in rows]

    def retry(self, ids: Sequence[int] | None = None) -> int:
        """Queue failed jobs again (all of them when `ids` is None), with a fresh attempt count."""
        now = self.clock()
        with self._tx() as c:
            if ids is None:
                cur = c.execute("UPDATE jobs SET status = 'queued', attempts = 0, run_after = ?, updated_at = ? "
                                "WHERE status = 'failed'", (now, now))
            else:
                marks = ",".join("?" * len(ids))
                cur = c.execute(f"UPDATE jobs SET status = 'queued', attempts = 0, run_after = ?, updated_at = ? "
                                f"WHERE status = 'failed' AND id IN ({marks})", (now, now, *ids))
            return cur.rowcount

    def counts(self) -> dict[str, int]:
        rows = self._read("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {s: 0 for s in STATUSES} | dict(rows)

    def last_error(self) -> dict[str, Any] | None:
        rows = self._read("SELECT id, handler, last_error, error_at FROM jobs WHERE error_at IS NOT NULL "
                          "ORDER BY error_at DESC LIMIT 1")
        if not rows:
            return None
        row = rows[0]
        return {"job": row[0], "handler": row[1], "error": row[2],
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row[3]))}

    def wait_idle(self, timeout: float = 10.0, interval: float = 0.02) -> bool:
        """True once nothing is queued or running (tests and the benchmark)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.counts()
            if c["queued"] == 0 and c["running"] == 0:
                return True
            time.sleep(interval)
        return False


class _Tx:
    """`BEGIN IMMEDIATE` ... COMMIT: takes the write lock up front, so claims never race."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock):
        self.conn, self.lock = conn, lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            _retry(lambda: self.conn.execute("BEGIN IMMEDIATE"))
        except BaseException:
            self.lock.release()
            raise
        return self.conn

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            if exc_type:
                self.conn.execute("ROLLBACK")
            else:
                _retry(lambda: self.conn.execute("COMMIT"))
        finally:
            self.lock.release()


def _retry(fn: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Run `fn`, waiting out another process's write lock in short, jittered steps (0.1 ms to 5 ms)."""
    deadline = time.monotonic() + timeout
    delay = 0.0001
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as e:
            msg = str(e)
            if ("locked" not in msg and "busy" not in msg) or time.monotonic() > deadline:
                raise
        time.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 0.005)


class Worker:
    """Background threads in one process that run due jobs; `wake()` skips the poll wait.

    Acknowledging webhooks comes first: before taking its next job, a job thread waits until this
    process has had no request in flight for `QUIET` seconds (but never longer than `yield_seconds`),
    so a burst of deliveries is acknowledged at full speed and worked off right after.
    """

    QUIET = 0.005

    def __init__(self, queue: JobQueue, run: Callable[[Job], None], threads: int = 2, poll: float = 1.0,
                 yield_seconds: float = 0.1, coalesce: Callable[[Job], bool] | None = None):
        self.queue, self.run, self.threads, self.poll = queue, run, threads, poll
        self.coalesce = coalesce
        self.yield_seconds = yield_seconds
        self._requests = 0
        self._last_request = 0.0
        self._quiet = threading.Condition()
        self._pid: int | None = None
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._pending_wakes = 0
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._busy_lock = threading.Lock()

    def ensure_started(self) -> None:
        """Start the threads in this process (again after a fork: threads do not survive one)."""
        if self.threads <= 0 or self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._stop = threading.Event()
            self._busy = set()
            base = f"{socket.gethostname()}:{os.getpid()}"
            for i in range(self.threads):
                threading.Thread(target=self._loop, args=(f"{base}:{i}",), name=f"gating-job-{i}", daemon=True).start()
            threading.Thread(target=self._beat, name="gating-job-heartbeat", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.wake(self.threads)

    def wake(self, n: int = 1) -> None:
        with self._wake:
            self._pending_wakes += n
            self._wake.notify(n)

    def request_started(self) -> None:
        with self._quiet:
            self._requests += 1

    def request_finished(self) -> None:
        with self._quiet:
            self._requests = max(0, self._requests - 1)
            self._last_request = time.monotonic()

    def _yield_to_requests(self) -> None:
        deadline = time.monotonic() + self.yield_seconds
        with self._quiet:
            while (self._requests or time.monotonic() - self._last_request < self.QUIET) \
                    and time.monotonic() < deadline:
                self._quiet.wait(self.QUIET)

    def _wait(self) -> None:
        with self._wake:
            if self._pending_wakes == 0:
                self._wake.wait(self.poll)
            self._pending_wakes = max(0, self._pending_wakes - 1)

    def _beat(self) -> None:
        while not self._stop.wait(max(0.05, self.queue.lease_seconds / 3)):
            try:
                with self._busy_lock:
                    owners = list(self._busy)
                self.queue.heartbeat(owners)
            except sqlite3.Error:
                log.exception("heartbeat failed")

    def _loop(self, owner: str) -> None:
        while not self._stop.is_set():
            self._yield_to_requests()
            try:
                job = self.queue.claim(owner, self.coalesce)
            except sqlite3.Error:
                log.exception("claiming a job failed")
                self._stop.wait(self.poll)
                continue
            if job is None:
                self._wait()
                continue
            with self._busy_lock:
                self._busy.add(owner)
            try:
                self.run_one(job, owner)
            finally:
                with self._busy_lock:
                    self._busy.discard(owner)

    def run_one(self, job: Job, owner: str) -> None:
        t0 = time.monotonic()
        try:
            self.run(job)
        except PermanentError as e:
            self.queue.fail(job, owner, f"{type(e).__name__}: {e}", permanent=True)
            log.warning("job %d (%s) failed for good: %s", job.id, job.handler, e)
        except RetryLater as e:
            status = self.queue.fail(job, owner, f"{type(e).__name__}: {e}", after=e.after)
            log.warning("job %d (%s): %s; %s", job.id, job.handler, e, status)
        except Exception as e:  # any handler bug must not kill the worker thread
            status = self.queue.fail(job, owner, f"{type(e).__name__}: {e}")
            log.warning("job %d (%s) attempt %d failed: %s; %s", job.id, job.handler, job.attempts, e, status,
                        exc_info=status == "failed")
        else:
            self.queue.complete(job, owner)
            log.info("job %d (%s %s.%s) done in %.0f ms", job.id, job.handler, job.event, job.action,
                     (time.monotonic() - t0) * 1000)
