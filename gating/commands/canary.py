"""`gating canary analyze --canary SHA --baseline SHA --repository o/r (--app URL | --db PATH|URL)`: the
canary analysis the App serves to Argo Rollouts and Flagger, from the command line.

With --app the App answers (GET /canary/analysis, bearer GATING_CANARY_TOKEN), so the figures are the
ones a rollout tool sees; with --db the analysis reads the roll-ups of an App database directly (its
SQLite file, a copy, or the PostgreSQL URL replicas share, GATING_QUEUE_URL), which needs no token and
records nothing. Either way each
commit's telemetry is matched by its SHA and by the snapshot digest of the system at it (the App
rebuilds it through the API; --db builds it in the local clone, -C), since spans may name their
system only by `gating.snapshot`.
Exit code: 0 pass, 1 fail, 3 not enough traffic yet.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gating.commands.cli import UsageError
from gating.commands.common import app_get, owner_name
from gating.commands.extras import require

NOT_ENOUGH = 3  # not enough traffic yet: neither pass nor fail
EXIT = {"pass": 0, "fail": 1}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("canary", help="canary analysis: a canary system's production metrics against the baseline's")
    csub = p.add_subparsers(dest="canary_command", metavar="SUBCOMMAND", required=True)
    a = csub.add_parser("analyze", help="pass, fail or not enough traffic yet, with the figures "
                        "(exit 0, 1 or 3)")
    a.add_argument("--canary", required=True, metavar="SHA", help="commit SHA the canary runs")
    a.add_argument("--baseline", required=True, metavar="SHA", help="commit SHA the stable version runs")
    a.add_argument("--repository", required=True, type=owner_name, metavar="OWNER/NAME")
    where = a.add_mutually_exclusive_group(required=True)
    where.add_argument("--app", metavar="URL", help="ask the App (GET /canary/analysis)")
    where.add_argument("--db", metavar="PATH|URL", help="read the roll-ups of an App database: its SQLite file "
                       "(GATING_DB) or the postgresql:// URL its replicas share (GATING_QUEUE_URL)")
    a.add_argument("--window", default="30m", help="how far back from now to compare (default 30m)")
    a.add_argument("--until", metavar="TIME", help="with --db: the window's end, ISO 8601 UTC (default now)")
    a.add_argument("--alpha", type=float, default=0.05, help="significance (default 0.05)")
    a.add_argument("--power", type=float, default=0.8, help="power to detect --min-effect (default 0.8)")
    a.add_argument("--min-effect", type=float, default=0.01,
                   help="error-rate rise to detect, absolute (default 0.01: one percentage point)")
    a.add_argument("--token-env", default="GATING_CANARY_TOKEN", metavar="VAR",
                   help="with --app: environment variable holding the App's GATING_CANARY_TOKEN")
    a.add_argument("--json", action="store_true", help="print the analysis as JSON")
    a.set_defaults(func=analyze)


def _from_app(args: argparse.Namespace) -> dict[str, Any]:
    token = os.environ.get(args.token_env, "")
    if not token:
        raise UsageError(f"${args.token_env} is not set: the App serves /canary/analysis only with its token")
    params = {"repository": args.repository, "canary": args.canary, "baseline": args.baseline, "window": args.window,
              "alpha": args.alpha, "power": args.power, "min_effect": args.min_effect}
    status, body = app_get(args.app, "/canary/analysis", params, token, timeout=60)
    if status != 200:
        raise UsageError(f"the App answered {status}: {body.get('error', body)}")
    return body


def _from_db(args: argparse.Namespace) -> dict[str, Any]:
    from gating.monitor.canary import CanaryError, Policy, sides
    from gating.monitor.canary import analyze as run
    from gating.monitor.rules import MonitorError, minute_of, parse_duration
    from gating.server.database import POSTGRES_SCHEMES, errors_of, shown
    from gating.server.rollup_store import RollupStore

    if args.db.startswith(POSTGRES_SCHEMES):
        require("postgres", f"gating canary analyze --db {shown(args.db)}")
    elif not Path(args.db).is_file():
        raise UsageError(f"--db {args.db}: no such file")
    try:
        minutes = parse_duration(args.window)
        end = datetime.fromisoformat(args.until.replace("Z", "+00:00")) if args.until else datetime.now(UTC)
    except (MonitorError, ValueError) as e:
        raise UsageError(f"--window/--until: {e}") from None
    if end.tzinfo is None:
        raise UsageError(f"--until {args.until}: give a time zone (e.g. 2026-12-02T10:00:00Z)")
    until = minute_of(end)
    canary, baseline = args.canary.lower(), args.baseline.lower()
    c, b = [canary], [baseline]
    notes: list[str] = []
    if canary != baseline:  # the same commit twice is refused by name below
        c, b, notes = sides(canary, baseline, *_local_snapshots(args, (canary, baseline)))
    try:
        a = run(RollupStore(args.db), args.repository, c, b, until - minutes, until,
                Policy(args.alpha, args.power, args.min_effect), notes)
    except CanaryError as e:
        raise UsageError(str(e)) from None
    except errors_of(args.db) as e:
        raise UsageError(f"--db {shown(args.db)}: cannot read it: {e}") from None
    return a.to_dict()


def _local_snapshots(args: argparse.Namespace, shas: tuple[str, ...]) -> tuple[dict[str, str | None], dict[str, str]]:
    """The snapshot digest of the system at each commit, built in the local clone (-C)."""
    from gating.commands.common import repo, snapshot_at
    from gating.git.repository import GitError
    from gating.system.manifest import ManifestError

    try:
        g = repo(args)
    except GitError:
        return {}, dict.fromkeys(shas, "no git repository here to build it in: run in a clone, or pass -C")
    known: dict[str, str | None] = {}
    unknown: dict[str, str] = {}
    for sha in shas:
        try:
            known[sha] = snapshot_at(g, sha).digest
        except ManifestError:
            known[sha] = None
        except GitError:
            unknown[sha] = f"not a commit of the clone at {g.root}: fetch it"
    return known, unknown


def analyze(args: argparse.Namespace) -> int:
    body = _from_app(args) if args.app else _from_db(args)
    if args.json:
        print(json.dumps(body, indent=2, sort_keys=True))
    else:
        w = body["window"]
        print(f"{body['repository']}: canary {body['canary']['systems'][0][:12]} vs baseline "
              f"{body['baseline']['systems'][0][:12]}, {w['since']} to {w['until']} ({w['minutes']} min): "
              f"{body['verdict'].upper()}")
        print(f"  {body['reason']}")
        print(f"  requests: {body['canary']['requests']:,} canary, {body['baseline']['requests']:,} baseline; "
              f"the error-rate test needs {body['required_requests']:,} on each")
        for c in body["checks"]:
            print(f"  {c['verdict']:<22} {c['name']:<24} {c['reason']}")
        for note in body.get("notes") or []:
            print(f"  note: {note}")
    return EXIT.get(body["verdict"], NOT_ENOUGH)
