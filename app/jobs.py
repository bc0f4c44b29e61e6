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

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.payload_text)


_COLS = "id, delivery, handler, event, action, key, payload, status, attempts, run_after, last_error, " \
        "created_at, updated_at"


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
        with self._conn() as c:
            c.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes, fast commits
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _tx(self) -> _Tx:
        return _Tx(self._conn())

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

    def claim(self, owner: str) -> Job | None:
        """The next due job, now leased to `owner`; jobs whose lease ran out count as due."""
        now = self.clock()
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
        row = self._conn().execute(f"SELECT {_COLS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job(*row) if row else None

    def list(self, status: str | None = None, limit: int = 50) -> list[Job]:
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        rows = self._conn().execute(f"SELECT {_COLS} FROM jobs {where} ORDER BY id DESC LIMIT ?",
                                    (*args, limit)).fetchall()
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
        rows = self._conn().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {s: 0 for s in STATUSES} | dict(rows)

    def last_error(self) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT id, handler, last_error, error_at FROM jobs WHERE error_at IS NOT NULL "
                                   "ORDER BY error_at DESC LIMIT 1").fetchone()
        if not row:
            return None
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

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


class Worker:
    """Background threads in one process that run due jobs; `wake()` skips the poll wait."""

    def __init__(self, queue: JobQueue, run: Callable[[Job], None], threads: int = 2, poll: float = 1.0):
        self.queue, self.run, self.threads, self.poll = queue, run, threads, poll
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
            try:
                job = self.queue.claim(owner)
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
