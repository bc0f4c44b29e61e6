"""The monitor's roll-ups in the App's SQLite database: one row per minute per (repository, system,
component, stage), merged in place.

A write is one transaction of upserts whose conflict clause merges the new minute into the stored
one inside SQLite (counts add; the latency sketch and the error and feedback counts merge through
SQL functions this connection defines), so writers in any thread or gunicorn process never lose
each other's counts and a batch is stored whole or not at all. Rows are written before the export is
answered, so whatever was acknowledged survives a restart. `traces` remembers which system and
component each root span belonged to, so `POST /feedback` can name just a trace id.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from gating.monitor.rollup import LatencySketch, Rollup
from gating.server.jobs import JobQueue, _retry

_SCHEMA = """
CREATE TABLE IF NOT EXISTS monitor_minutes (
  repo TEXT NOT NULL,
  minute INTEGER NOT NULL,
  system TEXT NOT NULL,
  component TEXT NOT NULL,
  stage TEXT NOT NULL,
  requests INTEGER NOT NULL,
  errors TEXT NOT NULL,
  input_tokens INTEGER NOT NULL,
  output_tokens INTEGER NOT NULL,
  cost REAL NOT NULL,
  latency TEXT NOT NULL,
  feedback TEXT NOT NULL,
  PRIMARY KEY (repo, minute, system, component, stage)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS monitor_minutes_age ON monitor_minutes (minute);
CREATE TABLE IF NOT EXISTS monitor_traces (
  trace_id BLOB PRIMARY KEY,
  repo TEXT NOT NULL,
  system TEXT NOT NULL,
  component TEXT NOT NULL,
  minute INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS monitor_traces_age ON monitor_traces (minute);
"""

_UPSERT = """
INSERT INTO monitor_minutes (repo, minute, system, component, stage, requests, errors, input_tokens,
                             output_tokens, cost, latency, feedback)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (repo, minute, system, component, stage) DO UPDATE SET
  requests = requests + excluded.requests,
  errors = gating_add_counts(errors, excluded.errors),
  input_tokens = input_tokens + excluded.input_tokens,
  output_tokens = output_tokens + excluded.output_tokens,
  cost = cost + excluded.cost,
  latency = gating_add_sketch(latency, excluded.latency),
  feedback = gating_add_counts(feedback, excluded.feedback)
"""

_COLUMNS = "repo, minute, system, component, stage, requests, errors, input_tokens, output_tokens, cost, " \
           "latency, feedback"
_EMPTY = "{}"


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _add_counts(a: str, b: str) -> str:
    if b == _EMPTY:
        return a
    if a == _EMPTY:
        return b
    out = json.loads(a)
    for k, n in json.loads(b).items():
        out[k] = out.get(k, 0) + n
    return _dumps(out)


def _add_sketch(a: str, b: str) -> str:
    """LatencySketch.merge on the stored form (LatencySketch.to_dict), without building sketches: a
    minute's sketch holds hundreds of buckets and every export touching that minute merges into it."""
    mine, theirs = json.loads(a), json.loads(b)
    buckets = mine.setdefault("buckets", {})
    for k, n in theirs.get("buckets", {}).items():
        buckets[k] = buckets.get(k, 0) + n
    mine["zero"] = mine.get("zero", 0) + theirs.get("zero", 0)
    return json.dumps(mine, separators=(",", ":"))


class RollupStore:
    """A RollupSource over the App's database, and the write path of the OTLP endpoints."""

    WRITE_WAIT_SECONDS = 10.0  # an exporter retries a 503; a held-up write is better answered than kept

    def __init__(self, path: str, *, checkpoint_on_commit: bool = True) -> None:
        self.path = path
        self.checkpoint_on_commit = checkpoint_on_commit  # False: the App's Worker checkpoints (as JobQueue)
        self._local = threading.local()
        conn = self._conn()
        _retry(lambda: conn.executescript(_SCHEMA))

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
            _retry(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute("PRAGMA synchronous=NORMAL")  # as the job queue: a commit survives a killed process
            if not self.checkpoint_on_commit:  # an export's commit does not pay for a checkpoint
                conn.execute(f"PRAGMA wal_autocheckpoint={JobQueue.SAFETY_CHECKPOINT_PAGES}")
                conn.execute(f"PRAGMA journal_size_limit={64 << 20}")
            conn.create_function("gating_add_counts", 2, _add_counts, deterministic=True)
            conn.create_function("gating_add_sketch", 2, _add_sketch, deterministic=True)
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def write(self, rollups: Iterable[Rollup], traces: Iterable[tuple[str, str, str, str, int]] = ()) -> None:
        """Merge `rollups` into their stored minutes and remember `traces` (trace id, repo, system,
        component, minute), all in one transaction."""
        rows = [(r.repo, r.minute, r.system, r.component, r.stage, r.requests, _dumps(r.errors), r.input_tokens,
                 r.output_tokens, r.cost, _dumps(r.latency.to_dict()), _dumps(r.feedback)) for r in rollups]
        ids = [(bytes.fromhex(t), repo, system, component, minute) for t, repo, system, component, minute in traces]
        if not rows and not ids:
            return
        conn = self._conn()

        def transaction() -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_UPSERT, rows)
                conn.executemany("INSERT OR IGNORE INTO monitor_traces VALUES (?, ?, ?, ?, ?)", ids)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        _retry(transaction, self.WRITE_WAIT_SECONDS)

    def rollups(self, repo: str, *, since: int, until: int, system: str | None = None,
                component: str | None = None, stage: str | None = None) -> Iterator[Rollup]:
        sql, args = f"SELECT {_COLUMNS} FROM monitor_minutes WHERE repo = ? AND minute >= ? AND minute < ?", \
            [repo, since, until]
        for column, wanted in (("system", system), ("component", component), ("stage", stage)):
            if wanted is not None:
                sql += f" AND {column} = ?"
                args.append(wanted)
        conn = self._conn()
        rows = _retry(lambda: conn.execute(sql + " ORDER BY minute", args).fetchall())
        for (repo_, minute, system_, component_, stage_, requests, errors, tin, tout, cost, latency,
             feedback) in rows:
            yield Rollup(repo_, system_, component_, stage_, minute, requests, json.loads(errors), tin, tout, cost,
                         LatencySketch.from_dict(json.loads(latency)), json.loads(feedback))

    def trace(self, trace_id: str) -> tuple[str, str, str] | None:
        """(repo, system, component) of a trace whose root span arrived, or None."""
        conn = self._conn()
        row = _retry(lambda: conn.execute("SELECT repo, system, component FROM monitor_traces WHERE trace_id = ?",
                                          (bytes.fromhex(trace_id),)).fetchone())
        return tuple(row) if row else None

    def prune(self, before_minute: int) -> int:
        """Drop the minutes (and remembered traces) older than `before_minute`; how many minute rows went."""
        conn = self._conn()
        n = _retry(lambda: conn.execute("DELETE FROM monitor_minutes WHERE minute < ?", (before_minute,)).rowcount)
        _retry(lambda: conn.execute("DELETE FROM monitor_traces WHERE minute < ?", (before_minute,)))
        return int(n)
