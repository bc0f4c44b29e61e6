"""An index of the audit log and the eval notes, so a page of a 10,000-entry timeline is one query.

The notes stay the system of record: the index remembers the tips it was built from and is rebuilt
from the notes whenever either tip moved (or on `rebuild()`), so deleting it loses nothing. One
SQLite file per repository (`:memory:` for a one-off); readers on other threads open their own
connection.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gating import limits
from gating.audit.entry import Entry, no_gc, signature_problem
from gating.audit.rotation import declared_keys
from gating.audit.verify import Report
from gating.audit.witness import CrossCheck
from gating.pages.source import Source

SCHEMA_VERSION = "3"
TREND_METRICS = ("pass_rate", "score", "latency_p95_ms", "cost_per_request_usd")

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS entries (
  seq INTEGER PRIMARY KEY, event TEXT, commit_sha TEXT, time TEXT, actor TEXT, pr INTEGER,
  snapshot_digest TEXT, verdict TEXT, signature TEXT, chain TEXT, witness TEXT, problems TEXT,
  metrics TEXT, has_snapshot INTEGER, note TEXT, html TEXT);
CREATE INDEX IF NOT EXISTS entries_event ON entries (event, seq);
CREATE INDEX IF NOT EXISTS entries_commit ON entries (commit_sha);
CREATE TABLE IF NOT EXISTS evals (
  commit_sha TEXT PRIMARY KEY, verdict TEXT, role TEXT, compared_with TEXT, pass_rate REAL, cases INTEGER);
CREATE TABLE IF NOT EXISTS log_problems (n INTEGER PRIMARY KEY, text TEXT);
"""

OK = "ok"


@dataclass(frozen=True)
class Row:
    """One entry as the timeline shows it. signature/chain/witness: "ok", a problem, or for the
    witness "not witnessed" / "not checked"."""

    seq: int
    event: str
    commit: str
    time: str
    actor: str
    pull_request: int | None
    snapshot_digest: str | None
    verdict: str | None
    signature: str
    chain: str
    witness: str
    problems: tuple[str, ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    has_snapshot: bool = False
    note: str = ""  # what else the timeline says: the environment, the rollback target, the override's reason

    @property
    def verified(self) -> bool:
        return self.signature == OK and self.chain == OK and not self.witness_failed

    @property
    def witness_failed(self) -> bool:
        return self.witness not in (OK, "not witnessed", "not checked")


@dataclass(frozen=True)
class EvalRow:
    commit: str
    verdict: str | None
    role: str | None
    compared_with: str | None
    pass_rate: float | None
    cases: int | None


class RowRenderer(Protocol):
    @property
    def key(self) -> str: ...  # changes when the HTML would (the page's prefix, the links' base)

    def render(self, row: Row) -> str: ...


def _row(r: Sequence[Any]) -> Row:
    return Row(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
               tuple(json.loads(r[11])) if r[11] else (), json.loads(r[12]) if r[12] else {}, bool(r[13]), r[14] or "")


_COLS = ("seq, event, commit_sha, time, actor, pr, snapshot_digest, verdict, signature, chain, witness, "
         "problems, metrics, has_snapshot, note")


class Index:
    def __init__(self, path: str = ":memory:"):
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._memory = sqlite3.connect(":memory:", check_same_thread=False) if path == ":memory:" else None
        self._db().executescript(_DDL)

    def _db(self) -> sqlite3.Connection:
        if self._memory is not None:
            return self._memory
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
        return db

    # -- building ------------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._db().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def tips(self, source: Source) -> dict[str, str]:
        return {"audit_tip": source.audit.tip() or "", "evals_tip": source.evals.tip() or "",
                "keys": ",".join(sorted(source.keys)), "schema": SCHEMA_VERSION}

    def refresh(self, source: Source, rows: RowRenderer | None = None) -> bool:
        """Rebuild when a notes tip (or the trusted key) changed since the last build; True if it did.

        `rows` renders a timeline row to HTML once, at build time, so a page of the timeline is a
        concatenation of stored fragments (rendered again when the renderer's key changes)."""
        with self._lock:
            tips = self.tips(source)
            if not all(self.meta(k) == v for k, v in tips.items()):
                self._build(source, tips, rows)
                return True
            if rows is not None and self.meta("rows_key") != rows.key:
                self._render(rows)
            return False

    def rebuild(self, source: Source, rows: RowRenderer | None = None) -> None:
        with self._lock:
            self._build(source, self.tips(source), rows)

    def _render(self, rows: RowRenderer | None) -> None:
        if rows is None:
            return
        db = self._db()
        done = [(rows.render(_row(r)), r[0]) for r in db.execute(f"SELECT {_COLS} FROM entries")]
        with db:
            db.executemany("UPDATE entries SET html = ? WHERE seq = ?", done)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('rows_key', ?)", (rows.key,))

    def _build(self, source: Source, tips: dict[str, str], renderer: RowRenderer | None) -> None:
        """Everything in one transaction, rows rendered included: a reader sees the old index or the new."""
        report = source.verify(source.keys) if tips["audit_tip"] else Report(entries=[], findings=[])
        cross = source.witnesses(report.entries) if source.witnesses and report.entries else None
        rows = [(*r, renderer.render(_row(r)) if renderer else None) for r in entry_rows(report, source.keys, cross)]
        seqs = {r[0] for r in rows}
        loose = [str(f) for f in report.findings if f.seq is None or f.seq not in seqs]
        evals = list(eval_rows(source.evals)) if tips["evals_tip"] else []
        db = self._db()
        with db:
            db.execute("DELETE FROM entries")
            db.execute("DELETE FROM evals")
            db.execute("DELETE FROM log_problems")
            db.executemany(f"INSERT INTO entries ({_COLS}, html) VALUES ({', '.join('?' * 16)})", rows)
            db.executemany("INSERT OR REPLACE INTO evals VALUES (?, ?, ?, ?, ?, ?)", evals)
            db.executemany("INSERT INTO log_problems (text) VALUES (?)", [(t,) for t in loose])
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                           [*tips.items(), ("key_source", source.key_source), ("rows_key", renderer.key if renderer else ""),
                            ("witness_app", cross.app_text if cross else "")])

    # -- reading -------------------------------------------------------------------------------------

    def count(self, event: str | None = None) -> int:
        if event:
            return int(self._db().execute("SELECT count(*) FROM entries WHERE event = ?", (event,)).fetchone()[0])
        return int(self._db().execute("SELECT count(*) FROM entries").fetchone()[0])

    def page(self, offset: int, limit: int, event: str | None = None) -> list[Row]:
        """Newest first."""
        where, args = ("WHERE event = ?", [event]) if event else ("", [])
        cur = self._db().execute(f"SELECT {_COLS} FROM entries {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                                 [*args, limit, offset])
        return [_row(r) for r in cur]

    def page_html(self, offset: int, limit: int, event: str | None = None) -> list[str]:
        """The stored HTML of a page of rows, newest first (see `refresh(rows=...)`)."""
        where, args = ("WHERE event = ?", [event]) if event else ("", [])
        cur = self._db().execute(f"SELECT html FROM entries {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                                 [*args, limit, offset])
        return [r[0] or "" for r in cur]

    def entry(self, seq: int) -> Row | None:
        r = self._db().execute(f"SELECT {_COLS} FROM entries WHERE seq = ?", (seq,)).fetchone()
        return _row(r) if r else None

    def entries_on(self, commit: str) -> list[Row]:
        return [_row(r) for r in self._db().execute(
            f"SELECT {_COLS} FROM entries WHERE commit_sha = ? ORDER BY seq", (commit,))]

    def previous_with_snapshot(self, seq: int) -> Row | None:
        r = self._db().execute(f"SELECT {_COLS} FROM entries WHERE seq < ? AND has_snapshot = 1 "
                               "ORDER BY seq DESC LIMIT 1", (seq,)).fetchone()
        return _row(r) if r else None

    def at_or_before(self, time: str) -> Row | None:
        """The newest entry with a snapshot written at or before `time` (ISO 8601, UTC)."""
        r = self._db().execute(f"SELECT {_COLS} FROM entries WHERE time <= ? AND has_snapshot = 1 "
                               "ORDER BY seq DESC LIMIT 1", (time,)).fetchone()
        return _row(r) if r else None

    def newest_with_snapshot(self) -> Row | None:
        r = self._db().execute(f"SELECT {_COLS} FROM entries WHERE has_snapshot = 1 ORDER BY seq DESC LIMIT 1"
                               ).fetchone()
        return _row(r) if r else None

    def merges(self, limit: int, up_to_seq: int | None = None) -> list[Row]:
        """The newest `limit` merged entries (oldest first), for trends."""
        cur = self._db().execute(f"SELECT {_COLS} FROM entries WHERE event = 'merged' AND seq <= ? "
                                 "ORDER BY seq DESC LIMIT ?", (up_to_seq if up_to_seq is not None else 1 << 62, limit))
        return [_row(r) for r in cur][::-1]

    def eval_of(self, commit: str) -> EvalRow | None:
        r = self._db().execute("SELECT * FROM evals WHERE commit_sha = ?", (commit,)).fetchone()
        return EvalRow(*r) if r else None

    def find_eval(self, prefix: str) -> str | None:
        r = self._db().execute("SELECT commit_sha FROM evals WHERE commit_sha >= ? AND commit_sha < ? LIMIT 2",
                               (prefix, prefix + "g")).fetchall()
        return r[0][0] if len(r) == 1 else None

    def log_problems(self) -> list[str]:
        return [r[0] for r in self._db().execute("SELECT text FROM log_problems ORDER BY n")]


WITNESS_DEPTH = 20  # the witnesses are read for the newest entries only, as `gating audit verify` reads them


def entry_rows(report: Report, keys: Mapping[str, Ed25519PublicKey], cross: CrossCheck | None
               ) -> Iterable[tuple[Any, ...]]:
    """One row per parsed entry: its own signature, what else the verification found at its seq,
    and what the App's witnesses say of it (older entries than the newest WITNESS_DEPTH, whose
    witnesses were not read, are "not checked" unless a witness of theirs turned up)."""
    declared, _bad = declared_keys(report.entries)
    every = {**declared, **keys}
    by_seq: dict[int, list[str]] = {}
    for f in report.findings:
        if f.seq is not None:
            by_seq.setdefault(f.seq, []).append(f.message)
    witnessed = {w.seq for w in cross.counted} if cross else set()
    newest = {e.seq for e in report.entries[-WITNESS_DEPTH:]}
    witness_problems: dict[int, str] = {}
    for f in cross.findings if cross else []:
        if f.seq is not None:
            witness_problems.setdefault(f.seq, f.message)
    with no_gc():
        for e in report.entries:
            found = by_seq.get(e.seq, [])
            # verify_log checked every signature: only an entry with findings needs its own look
            sig = (signature_problem(e, every) if found else None) if every else "no trusted key to check it against"
            chain = next((m for m in found if m != sig), OK)
            if e.seq in witness_problems:
                witness = witness_problems[e.seq]
            elif e.seq in witnessed:
                witness = OK
            elif cross is None or e.seq not in newest:
                witness = "not checked"
            else:
                witness = "not witnessed"
            yield _entry_values(e, sig or OK, chain, witness, found)


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _entry_values(e: Entry, sig: str, chain: str, witness: str, found: list[str]) -> tuple[Any, ...]:
    p = e.predicate
    evals = _dict(p.get("evals"))
    metrics = _dict(evals.get("metrics"))
    kept = {k: v for k, v in metrics.items() if k in TREND_METRICS or k.startswith("score:")}
    pr = p.get("pull_request")
    return (e.seq, e.event, e.commit, str(p.get("timestamp") or ""), str(p.get("actor") or ""),
            pr if isinstance(pr, int) else None, p.get("snapshot_digest"), evals.get("verdict"), sig, chain,
            witness, json.dumps(found) if found else None, json.dumps(kept, sort_keys=True) if kept else None,
            1 if isinstance(p.get("snapshot"), dict) else 0, _note(p))


def _note(p: Mapping[str, Any]) -> str:
    dep, rb = _dict(p.get("deployment")), _dict(p.get("rollback"))
    parts = []
    if dep.get("environment"):
        parts.append(f"{dep['environment']}")
    if isinstance(rb.get("target"), str):
        parts.append(f"to {rb['target'][:7]} ({rb.get('target_ref') or '?'}, {rb.get('trigger') or '?'})")
        if rb.get("trigger") == "alert":
            parts.append("monitor alert")
    for o in p.get("overrides") or []:
        if isinstance(o, dict):
            parts.append(f"override of {o.get('scope')}: {o.get('reason')}")
    if p.get("backfilled"):
        parts.append("backfilled")
    return "; ".join(str(x) for x in parts)[:300]


def eval_rows(store: Any) -> Iterable[tuple[Any, ...]]:
    tip = store.tip()
    if not tip:
        return
    for commit, data in store.all_notes(tip).items():
        try:
            doc = limits.load_json(data, "eval note", limits.NOTE)
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        m = _dict(doc.get("metrics"))
        rate, cases = m.get("pass_rate"), m.get("cases")
        yield (commit, doc.get("verdict"), doc.get("role"), doc.get("compared_with"),
               rate if isinstance(rate, int | float) else None, cases if isinstance(cases, int) else None)
