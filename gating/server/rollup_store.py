"""The monitor's roll-ups in the App's database: one row per minute per (repository, system,
component, stage), merged in place.

A write is one transaction of upserts whose conflict clause merges the new minute into the stored
one inside the database (counts add; the latency sketch and the error and feedback counts merge
through SQL functions: Python on each SQLite connection, SQL functions in PostgreSQL), so writers in
any thread, gunicorn process or App replica never lose each other's counts and a batch is stored
whole or not at all. With a shared queue (GATING_QUEUE_URL) the roll-ups live beside it, so every
replica's monitor sees the telemetry any replica received. Rows are written before the export is
answered, so whatever was acknowledged survives a restart. `traces` remembers which system and
component each root span belonged to, so `POST /feedback` can name just a trace id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from gating.monitor.rollup import LatencySketch, Rollup
from gating.server.database import SqlFunction, open_database

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
  cost DOUBLE PRECISION NOT NULL,
  latency TEXT NOT NULL,
  feedback TEXT NOT NULL,
  PRIMARY KEY (repo, minute, system, component, stage)
) {compact};
CREATE INDEX IF NOT EXISTS monitor_minutes_age ON monitor_minutes (minute);
CREATE TABLE IF NOT EXISTS monitor_traces (
  trace_id {bytes} PRIMARY KEY,
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
  requests = monitor_minutes.requests + excluded.requests,
  errors = gating_add_counts(monitor_minutes.errors, excluded.errors),
  input_tokens = monitor_minutes.input_tokens + excluded.input_tokens,
  output_tokens = monitor_minutes.output_tokens + excluded.output_tokens,
  cost = monitor_minutes.cost + excluded.cost,
  latency = gating_add_sketch(monitor_minutes.latency, excluded.latency),
  feedback = gating_add_counts(monitor_minutes.feedback, excluded.feedback)
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


# The same merges in PostgreSQL: text in, text out, as the columns hold JSON text.
_PG_ADD_COUNTS = (
    "SELECT CASE WHEN $2 = '{}' THEN $1 WHEN $1 = '{}' THEN $2 ELSE (SELECT COALESCE(jsonb_object_agg(k, n), "
    "'{}'::jsonb)::text FROM (SELECT k, SUM(v::numeric) AS n FROM (SELECT key AS k, value AS v FROM "
    "jsonb_each_text($1::jsonb) UNION ALL SELECT key, value FROM jsonb_each_text($2::jsonb)) AS pairs GROUP BY k) "
    "AS sums) END")
_PG_ADD_SKETCH = (
    "SELECT ($1::jsonb || jsonb_build_object('buckets', gating_add_counts(COALESCE($1::jsonb -> 'buckets', "
    "'{}'::jsonb)::text, COALESCE($2::jsonb -> 'buckets', '{}'::jsonb)::text)::jsonb, 'zero', "
    "COALESCE(($1::jsonb ->> 'zero')::numeric, 0) + COALESCE(($2::jsonb ->> 'zero')::numeric, 0)))::text")
FUNCTIONS = (SqlFunction("gating_add_counts", 2, _add_counts, _PG_ADD_COUNTS),
             SqlFunction("gating_add_sketch", 2, _add_sketch, _PG_ADD_SKETCH))


class RollupStore:
    """A RollupSource over the App's database (a SQLite file or a `postgresql://` URL), and the write
    path of the OTLP endpoints."""

    WRITE_WAIT_SECONDS = 10.0  # an exporter retries a 503; a held-up write is better answered than kept

    def __init__(self, path: str, *, checkpoint_on_commit: bool = True) -> None:
        # checkpoint_on_commit=False: the App's Worker checkpoints (as the job queue's)
        self.db = open_database(path, checkpoint_on_commit=checkpoint_on_commit, functions=FUNCTIONS)
        self.path = self.db.location
        self.errors = self.db.errors  # what a write raises when the database is busy past its wait, or gone
        self.db.create(_SCHEMA)

    def write(self, rollups: Iterable[Rollup], traces: Iterable[tuple[str, str, str, str, int]] = ()) -> None:
        """Merge `rollups` into their stored minutes and remember `traces` (trace id, repo, system,
        component, minute), all in one transaction."""
        # In key order: two writers upserting the same minutes take their row locks in the same order.
        rows = sorted((r.repo, r.minute, r.system, r.component, r.stage, r.requests, _dumps(r.errors), r.input_tokens,
                       r.output_tokens, r.cost, _dumps(r.latency.to_dict()), _dumps(r.feedback)) for r in rollups)
        ids = sorted((bytes.fromhex(t), repo, system, component, minute)
                     for t, repo, system, component, minute in traces)
        if not rows and not ids:
            return
        self.db.write_many([(_UPSERT, rows), ("INSERT INTO monitor_traces VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                                              ids)], self.WRITE_WAIT_SECONDS)

    def rollups(self, repo: str, *, since: int, until: int, system: str | None = None,
                component: str | None = None, stage: str | None = None) -> Iterator[Rollup]:
        sql, args = f"SELECT {_COLUMNS} FROM monitor_minutes WHERE repo = ? AND minute >= ? AND minute < ?", \
            [repo, since, until]
        for column, wanted in (("system", system), ("component", component), ("stage", stage)):
            if wanted is not None:
                sql += f" AND {column} = ?"
                args.append(wanted)
        rows = self.db.read(sql + " ORDER BY minute", args)
        for (repo_, minute, system_, component_, stage_, requests, errors, tin, tout, cost, latency,
             feedback) in rows:
            yield Rollup(repo_, system_, component_, stage_, minute, requests, json.loads(errors), tin, tout, cost,
                         LatencySketch.from_dict(json.loads(latency)), json.loads(feedback))

    def trace(self, trace_id: str) -> tuple[str, str, str] | None:
        """(repo, system, component) of a trace whose root span arrived, or None."""
        rows = self.db.read("SELECT repo, system, component FROM monitor_traces WHERE trace_id = ?",
                            (bytes.fromhex(trace_id),))
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def prune(self, before_minute: int) -> int:
        """Drop the minutes (and remembered traces) older than `before_minute`; how many minute rows went."""
        n = self.db.write("DELETE FROM monitor_minutes WHERE minute < ?", (before_minute,)).rowcount
        self.db.write("DELETE FROM monitor_traces WHERE minute < ?", (before_minute,))
        return int(n)
