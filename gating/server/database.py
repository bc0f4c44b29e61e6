"""Where the App keeps its jobs and records: one seam, two engines.

The job queue (gating.server.jobs) and the records beside it (overrides, the monitor's watches, the
once-only acts) speak one SQL that SQLite and PostgreSQL both run: `?` placeholders, `INSERT ...
ON CONFLICT DO NOTHING`, `BIGINT` and `DOUBLE PRECISION` columns; in DDL, `{id}` for an id column the
engine numbers, `{bytes}` for a bytes column and `{compact}` after a table whose primary key is all
it needs (SQLite's WITHOUT ROWID). What the engines do differently sits behind `Database`: opening
connections, numbering inserted rows, waiting out a busy engine, the SQL functions a store defines
(`SqlFunction`: Python for SQLite, SQL for PostgreSQL), and `take`, the one step of a claim that must
be atomic across every process that shares the queue.

SQLite (the default) is one file on one disk: every gunicorn worker of one host shares it. A
`postgresql://` location puts the same tables in a PostgreSQL database that several hosts share
(gating.server.postgres).
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class SqlFunction:
    """A scalar function the shared SQL calls, in both engines' terms: SQLite calls `python` (registered
    on each connection), PostgreSQL runs `postgres`, one SELECT over the arguments $1, $2, ... (created
    with the tables). Both must give the same answer."""

    name: str
    args: int
    python: Callable[..., Any]
    postgres: str  # e.g. "SELECT $1 || $2" (text arguments, text result; no `;`)


@dataclass(frozen=True)
class Written:
    """What one write changed: the rows it touched."""

    rowcount: int


class Database(Protocol):
    """One engine holding the App's tables; safe to share between threads and forked processes."""

    location: str  # the file or the URL (with no password): names the database in messages
    errors: tuple[type[Exception], ...]  # what its driver raises when the engine is busy, gone or refuses

    def create(self, schema: str) -> None:
        """Run `;`-separated DDL (`CREATE ... IF NOT EXISTS`), `{id}` standing for a numbered id column."""

    def write(self, sql: str, args: Sequence[Any] = (), wait: float = 30.0) -> Written:
        """One statement as its own transaction; waits up to `wait` seconds for a busy engine."""

    def insert(self, sql: str, args: Sequence[Any], rows: int, wait: float) -> list[int]:
        """An `INSERT ... ON CONFLICT DO NOTHING` of `rows` rows into a table with an `{id}` column: the
        ids of the rows it added, ascending."""

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def write_many(self, batches: Sequence[tuple[str, Sequence[Sequence[Any]]]], wait: float) -> None:
        """Each (statement, rows) run for every row, all in one transaction: stored whole or not at all."""

    def take(self, pick: str, pick_args: Sequence[Any], update: str, update_args: Callable[[int], Sequence[Any]],
             wait: float) -> int | None:
        """Claim one row: `pick` selects a candidate's (id, group); `update` (given the id) takes it if it
        still qualifies, and touches one row when it does. Of the processes taking at once, each gets a
        different row, and two rows of one (non-NULL) group are never taken at once. None: nothing to take."""

    def checkpoint(self) -> None:
        """Housekeeping a background thread may do off the requests' time (SQLite's WAL checkpoint)."""

    def clock(self) -> float:
        """Seconds since the epoch by the clock every process using the database shares (leases are
        compared by all of them): the host's for a SQLite file, the server's for PostgreSQL."""


def errors_of(location: str) -> tuple[type[Exception], ...]:
    """What the engine at `location` raises when it is busy past a wait, gone, or refuses."""
    if location.startswith(POSTGRES_SCHEMES):
        from gating.server.postgres import PostgresDatabase

        return PostgresDatabase.errors
    return SqliteDatabase.errors


def shown(location: str) -> str:
    """`location` as a message may show it: a URL's password replaced by ***."""
    parts = urlsplit(location)
    if not location.startswith(POSTGRES_SCHEMES) or parts.password is None:
        return location
    netloc = f"{parts.username}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def open_database(location: str, *, checkpoint_on_commit: bool = True,
                  functions: Sequence[SqlFunction] = ()) -> Database:
    """A `postgresql://` URL opens PostgreSQL; anything else is a SQLite file."""
    if location.startswith(POSTGRES_SCHEMES):
        from gating.server.postgres import PostgresDatabase

        return PostgresDatabase(location, functions=functions)
    return SqliteDatabase(location, checkpoint_on_commit=checkpoint_on_commit, functions=functions)


class SqliteDatabase:
    """One SQLite file in WAL mode; each thread (and each forked process) gets its own connection.

    Every write is one SQL statement in its own transaction. SQLite then holds its write lock only
    inside that one call, which runs without the GIL; with BEGIN ... COMMIT it would also hold it while
    the thread waits for the GIL between statements, and a busy process would stretch every other
    writer's wait. `take` reads the candidate, then takes it with an UPDATE that checks it still
    qualifies; if another worker was faster, it reads again.
    """

    # When a Worker checkpoints, a commit still does past this many pages (~200 MB of WAL: more than a
    # burst of deliveries adds between two checkpoints), and the WAL file is cut back to 64 MB after.
    SAFETY_CHECKPOINT_PAGES = 50000
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    clock = staticmethod(time.time)  # one host: its own clock

    def __init__(self, path: str, *, checkpoint_on_commit: bool = True, functions: Sequence[SqlFunction] = ()):
        self.location = path
        self.checkpoint_on_commit = checkpoint_on_commit
        self.functions = tuple(functions)
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            # timeout=0: SQLite's own busy handler sleeps 1, 2, 5, 10... ms; _retry waits far less.
            conn = sqlite3.connect(self.location, timeout=0, isolation_level=None, check_same_thread=False)
            _retry(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            # NORMAL: a commit is in the WAL (the OS's page cache) when it returns, so it survives a killed
            # process; only a power cut can lose the last commits. FULL would fsync every acknowledgement.
            conn.execute("PRAGMA synchronous=NORMAL")
            # A checkpoint (copying the WAL into the database file, with an fsync) takes milliseconds. By
            # default SQLite runs one in whichever commit passes 1000 pages: a request's. A process with
            # a Worker leaves them to its background thread (Worker.CHECKPOINT_SECONDS) instead.
            if not self.checkpoint_on_commit:
                conn.execute(f"PRAGMA wal_autocheckpoint={self.SAFETY_CHECKPOINT_PAGES}")
                conn.execute(f"PRAGMA journal_size_limit={64 << 20}")
            for f in self.functions:
                conn.create_function(f.name, f.args, f.python, deterministic=True)
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def create(self, schema: str) -> None:
        ddl = schema.replace("{id}", "INTEGER PRIMARY KEY").replace("{bytes}", "BLOB").replace("{compact}", "WITHOUT ROWID")
        for stmt in ddl.split(";"):
            if stmt.strip():
                self.write(stmt)

    def write(self, sql: str, args: Sequence[Any] = (), wait: float = 30.0) -> Written:
        """Autocommit, without RETURNING: SQLite then holds the write lock only inside this one call,
        which does not need the GIL. No lock of our own: a thread holding one while it waits for the
        GIL would hold up every other writer."""
        conn = self._conn()
        return Written(_retry(lambda: conn.execute(sql, args), wait).rowcount)

    def insert(self, sql: str, args: Sequence[Any], rows: int, wait: float) -> list[int]:
        conn = self._conn()
        if rows == 1:  # the usual case: without RETURNING the statement is done in one call
            cur = _retry(lambda: conn.execute(sql, args), wait)
            return [int(cur.lastrowid or 0)] if cur.rowcount == 1 else []
        return sorted(int(r[0]) for r in _retry(lambda: conn.execute(sql + " RETURNING id", args).fetchall(), wait))

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self._conn()
        return _retry(lambda: conn.execute(sql, args).fetchall())

    def write_many(self, batches: Sequence[tuple[str, Sequence[Sequence[Any]]]], wait: float) -> None:
        conn = self._conn()

        def transaction() -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in batches:
                    conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        _retry(transaction, wait)

    def take(self, pick: str, pick_args: Sequence[Any], update: str, update_args: Callable[[int], Sequence[Any]],
             wait: float) -> int | None:
        # One writer at a time (SQLite's write lock) and `update` re-checking the group: no two of a group.
        for _ in range(100):  # another thread or process may take the candidate first: pick again
            rows = self.read(pick, pick_args)
            if not rows:
                return None  # nothing due: no write lock taken
            row_id = int(rows[0][0])
            if self.write(update, update_args(row_id), wait).rowcount == 1:
                return row_id
        return None

    def checkpoint(self) -> None:
        """Copy committed WAL pages into the database file. PASSIVE: it waits for no reader or writer,
        so it runs while requests commit, and the GIL is released while it copies."""
        try:
            self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.OperationalError:
            pass


_T = TypeVar("_T")


def _retry(fn: Callable[[], _T], timeout: float = 30.0) -> _T:
    """Run `fn`, waiting out another writer's lock in short, jittered steps (0.1 ms to 5 ms): a write
    holds it for a fraction of a millisecond."""
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
