"""The deployments the App's monitor watches, kept in the App's database beside the job queue.

A successful production deployment of a repository whose default branch has `monitor:` rules is
recorded as `deployed` (not yet known-good) and watched here; the monitor's timed job
(gating.server.handlers.monitor) bakes it, marks it known-good, or rolls it back. One row per
repository and environment: a newer deployment replaces the row, so the table is what runs now.
The latest evaluation is stored on the row, so GET /monitor/status answers without calling GitHub.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from gating.evals.dataset import DatasetError
from gating.evals.metrics import price_table
from gating.github import ApiRevision, BlobCache, Repo
from gating.monitor.otlp import PriceBook, default_book
from gating.monitor.rules import MonitorConfig, parse_monitor
from gating.server.jobs import JobQueue
from gating.server.rollbacks import Config
from gating.server.settings import Settings

MONITOR_MODULE = "gating.server.handlers.monitor"
clock = time.time  # the monitor's now (tests move it forward instead of waiting out a bake)
STATES = ("baking", "known_good", "unhealthy")
_TABLES = (
    """CREATE TABLE IF NOT EXISTS monitor_watch (
      repo TEXT NOT NULL,
      environment TEXT NOT NULL,
      commit_sha TEXT NOT NULL,
      installation BIGINT NOT NULL,
      deployment TEXT NOT NULL,
      deployed_at DOUBLE PRECISION NOT NULL,
      bake_until DOUBLE PRECISION NOT NULL,
      state TEXT NOT NULL,
      status TEXT NOT NULL DEFAULT '{}',
      evaluated_at DOUBLE PRECISION,
      PRIMARY KEY (repo, environment))""",
    """CREATE TABLE IF NOT EXISTS monitor_incidents (
      repo TEXT NOT NULL,
      commit_sha TEXT NOT NULL,
      rule TEXT NOT NULL,
      since DOUBLE PRECISION NOT NULL,
      PRIMARY KEY (repo, commit_sha, rule))""",
    """CREATE TABLE IF NOT EXISTS monitor_prices (
      repo TEXT PRIMARY KEY,
      prices TEXT NOT NULL)""",
)
_ready: set[str] = set()


def _tables(queue: JobQueue) -> JobQueue:
    if queue.path not in _ready:
        queue.create(";".join(_TABLES))
        _ready.add(queue.path)
    return queue


def config_of(cfg: Config) -> MonitorConfig:
    return parse_monitor(cfg.monitor, cfg.name)


def active(settings: Settings, cfg: Config) -> bool:
    """Whether a deployment must bake before it is known-good: the App runs the monitor and the
    default branch has rules. Otherwise a successful deployment is known-good at once, as before."""
    return MONITOR_MODULE in settings.handler_modules and bool(config_of(cfg).rules)


@dataclass(frozen=True)
class Watch:
    repo: str
    environment: str
    commit: str
    installation: int
    deployment: dict[str, Any]
    deployed_at: float
    bake_until: float
    state: str
    status: dict[str, Any]
    evaluated_at: float | None


_COLS = "repo, environment, commit_sha, installation, deployment, deployed_at, bake_until, state, status, evaluated_at"


def _row(r: tuple[Any, ...]) -> Watch:
    return Watch(r[0], r[1], r[2], int(r[3]), json.loads(r[4]), float(r[5]), float(r[6]), r[7], json.loads(r[8] or "{}"),
                 r[9])


def watch(queue: JobQueue, repo: str, environment: str, commit: str, installation: int,
          deployment: dict[str, Any], now: float, bake_minutes: int) -> None:
    """Start baking a deployment; the same deployment delivered again changes nothing."""
    _tables(queue).execute(
        f"INSERT INTO monitor_watch ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, 'baking', '{{}}', NULL) "
        "ON CONFLICT (repo, environment) DO UPDATE SET commit_sha = excluded.commit_sha, "
        "installation = excluded.installation, deployment = excluded.deployment, deployed_at = excluded.deployed_at, "
        "bake_until = excluded.bake_until, state = 'baking', status = '{}', evaluated_at = NULL "
        "WHERE monitor_watch.deployment != excluded.deployment",
        (repo, environment, commit, installation, json.dumps(deployment, sort_keys=True), now, now + 60 * bake_minutes))


def watches(queue: JobQueue, repo: str | None = None) -> list[Watch]:
    where, args = ("WHERE repo = ?", (repo,)) if repo else ("", ())
    return [_row(r) for r in _tables(queue).query(f"SELECT {_COLS} FROM monitor_watch {where} ORDER BY repo, "
                                                  "environment", args)]


def update(queue: JobQueue, w: Watch, state: str, status: dict[str, Any], now: float) -> None:
    """The state and latest evaluation of the deployment `w` watched (a newer deployment's row is left alone)."""
    _tables(queue).execute("UPDATE monitor_watch SET state = ?, status = ?, evaluated_at = ? WHERE repo = ? AND "
                           "environment = ? AND deployment = ?",
                           (state, json.dumps(status, sort_keys=True), now, w.repo, w.environment,
                            json.dumps(w.deployment, sort_keys=True)))


def forget(queue: JobQueue, w: Watch) -> None:
    _tables(queue).execute("DELETE FROM monitor_watch WHERE repo = ? AND environment = ? AND deployment = ?",
                           (w.repo, w.environment, json.dumps(w.deployment, sort_keys=True)))


def incident_since(queue: JobQueue, repo: str, commit: str, rule: str, now: float, firing: bool) -> float | None:
    """When the rule's current incident began (it fires now), or None after closing it (it does not).
    The start names the incident: every tick and every replica that sees it firing agrees on it."""
    _tables(queue)
    if not firing:
        queue.execute("DELETE FROM monitor_incidents WHERE repo = ? AND commit_sha = ? AND rule = ?", (repo, commit, rule))
        return None
    queue.execute("INSERT INTO monitor_incidents (repo, commit_sha, rule, since) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT DO NOTHING",
                  (repo, commit, rule, now))
    return float(queue.query("SELECT since FROM monitor_incidents WHERE repo = ? AND commit_sha = ? AND rule = ?",
                             (repo, commit, rule))[0][0])


# -- the prices telemetry costs at -------------------------------------------------------------------

_books: dict[tuple[str, str], tuple[str, PriceBook]] = {}  # (database, repo) -> (stored table, its book)


def record_prices(queue: JobQueue, repo: Repo, blobs: BlobCache, cfg: Config, log: logging.Logger) -> None:
    """Keep the default branch's price table (`evals.prices` over the defaults, as its evals price a run)
    for the telemetry of `repo`; a table that cannot be read keeps the one kept before, and says why."""
    try:
        table = price_table(ApiRevision(repo, cfg.tip, blobs), {"prices": cfg.prices})
    except DatasetError as e:
        log.warning("%s: telemetry keeps its earlier prices: %s", repo.full_name, "; ".join(e.problems))
        return
    _tables(queue).execute("INSERT INTO monitor_prices (repo, prices) VALUES (?, ?) ON CONFLICT (repo) DO UPDATE "
                           "SET prices = excluded.prices", (repo.full_name, json.dumps(table, sort_keys=True)))


def price_book(queue: JobQueue, repo: str) -> PriceBook:
    """The prices `repo`'s telemetry costs at: as record_prices last kept them, else the defaults."""
    rows = _tables(queue).query("SELECT prices FROM monitor_prices WHERE repo = ?", (repo,))
    if not rows:
        return default_book()
    text = rows[0][0]
    kept = _books.get((queue.path, repo))
    if kept is None or kept[0] != text:
        kept = (text, PriceBook(json.loads(text)))
        _books[(queue.path, repo)] = kept
    return kept[1]
