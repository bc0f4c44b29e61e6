"""`gating app serve | jobs | retry`: run the GitHub App and look after its job queue.

This is the App's door on the command line, so it is the one place in gating/ that reaches into app/,
lazily and never into Flask: `serve` hands over to gunicorn, `jobs` and `retry` only open the SQLite
queue the running App shares.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from gating.commands.cli import UsageError
from gating.commands.extras import require

WORKERS, THREADS = 2, 1
ACK_WORKER = "gating.server.gunicorn_worker.AckWorker"


def gunicorn_argv(bind: str, workers: int = WORKERS, threads: int = THREADS) -> list[str]:
    """The server `gating app serve` runs (bench/webhook_ack.py measures the same one).

    One request at a time per process (gating.server.gunicorn_worker: gunicorn's sync worker, with a
    stall timeout per connection), two processes for two cores; `threads` > 1 runs gunicorn's
    threaded worker (gthread) instead. gthread hands each connection from thread to thread, makes
    requests wait for the GIL, and closes connections on its accepting thread, which waits there for
    each client to close its end. bench/webhook_ack.py, 1000 deliveries over 100 connections, three
    runs of each, alternated, on 2 cores shared with other work (load average 1.9-3.4): 2 sync workers
    p99 35-37 ms at 3020-3390 acks/s with approvals jobs (p50 29-32), 40-59 ms with noop jobs, 450-570
    us of CPU per delivery; 2 x 2 gthread p99 77-84 ms (p50 25-36) and 64-92 ms, 510-680 us. The App's
    own p99 (Server-Timing) 1.3-4 ms against 6-8 ms: queued connections wait their turn in the
    kernel, not for the GIL. Three sync workers on two cores made the tail unfair again (at load 5-6:
    p99 240-330 ms, p50 70-80 ms).
    Keep-alive is off: GitHub sends each delivery on a new connection.
    """
    kind = ["--worker-class", ACK_WORKER] if threads <= 1 else ["--threads", str(threads), "--worker-class", "gthread"]
    return [sys.executable, "-m", "gunicorn", "gating.server.wsgi:app", "--bind", bind, "--workers", str(workers),
            *kind, "--keep-alive", "0", "--backlog", "2048"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="run the GitHub App and manage its background jobs")
    app_sub = p.add_subparsers(dest="app_command", metavar="ACTION", required=True)

    s = app_sub.add_parser("serve", help="serve the App with gunicorn (settings from the environment)")
    default_bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '3000')}"
    s.add_argument("--bind", default=default_bind, help=f"address:port (default {default_bind}, from HOST and PORT)")
    s.add_argument("--workers", type=int, default=WORKERS, help=f"gunicorn worker processes (default {WORKERS})")
    s.add_argument("--threads", type=int, default=THREADS, help=f"request threads per worker (default {THREADS}: "
                   "one request at a time; more runs gunicorn's threaded worker)")
    s.add_argument("--check", action="store_true", help="check what the first event needs (GitHub accepts the "
                   "key, the audit key, a writable queue), print the settings and each handler's permissions, exit")
    s.add_argument("--env-file", default=".env", help="variables to read first, if the file exists; the "
                   "environment wins (default .env, as `gating app register` writes it)")
    s.add_argument("--no-audit", action="store_true", help="start without an audit signing key (GATING_NO_AUDIT=1): "
                   "merges, deployments and rollbacks go unaudited; without it the App refuses to start keyless")
    s.set_defaults(func=serve)

    from gating.commands import app_register

    app_register.add_parser(app_sub)

    j = app_sub.add_parser("jobs", help="list jobs (failed ones by default)")
    j.add_argument("--status", default="failed", choices=["failed", "queued", "running", "done", "all"])
    j.add_argument("--limit", type=int, default=50)
    j.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    j.add_argument("--db", help="job queue file (default: $GATING_DB or gating-app.sqlite3)")
    j.set_defaults(func=jobs)

    r = app_sub.add_parser("retry", help="queue failed jobs again")
    r.add_argument("ids", nargs="*", type=int, help="job ids (see `gating app jobs`)")
    r.add_argument("--all-failed", action="store_true", help="every failed job")
    r.add_argument("--db", help="job queue file (default: $GATING_DB or gating-app.sqlite3)")
    r.set_defaults(func=retry)


def read_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines (comments, blank lines and `export ` skipped; one pair of quotes stripped)."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, eq, value = line.removeprefix("export ").partition("=")
            if not eq or not key.strip().isidentifier():
                raise UsageError(f"{path}:{n}: expected KEY=VALUE")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            out[key.strip()] = value
    return out


def _settings(args: argparse.Namespace | None = None) -> Any:
    from gating.server.settings import Settings, SettingsError

    env_file = getattr(args, "env_file", None) if args is not None else None
    environ = {**read_env_file(env_file), **os.environ} if env_file and os.path.isfile(env_file) else None
    try:
        overrides = {"GATING_DB": args.db} if args is not None and getattr(args, "db", None) else None
        return Settings.load(overrides, environ)
    except SettingsError as e:
        raise UsageError("; ".join(e.problems)) from None


def _queue(args: argparse.Namespace) -> Any:
    from gating.server import open_queue

    settings = _settings(args)
    if not settings.queue_url and not os.path.exists(settings.db_path):
        raise UsageError(f"no job queue at {settings.db_path} (set GATING_DB or pass --db)")
    return open_queue(settings)


def serve(args: argparse.Namespace) -> int:
    require("app", "gating app serve")  # the App is Flask under gunicorn; `jobs` and `retry` need neither
    from dataclasses import fields

    from gating.server.settings import SettingsError

    if args.no_audit:  # in the environment, so the gunicorn workers it hands over to see it too
        os.environ["GATING_NO_AUDIT"] = "1"
    settings = _settings(args)
    try:
        settings.check()
    except SettingsError as e:
        raise UsageError("the App cannot start: " + "; ".join(e.problems)) from None
    if args.check:
        from gating.server import preflight

        report = preflight.check(settings)
        for line in report.lines:
            print(line)
        if report.problems:
            raise UsageError("the App would fail at its first event: " + "; ".join(report.problems))
        for f in fields(settings):  # a field kept out of repr is a secret: say whether it is set, never what
            value = getattr(settings, f.name)
            shown = ("(set)" if value else "(not set)") if not f.repr else value
            print(f"{f.metadata['env']}={','.join(shown) if isinstance(shown, tuple) else shown}")
        return 0
    argv = gunicorn_argv(args.bind, args.workers, args.threads) + ["--access-logfile", "-"]
    sys.stdout.flush()
    os.execv(sys.executable, argv)
    return 0  # not reached


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def jobs(args: argparse.Namespace) -> int:
    q = _queue(args)
    listed = q.list(None if args.status == "all" else args.status, args.limit)
    now = time.time()
    if args.json:
        for j in listed:
            print(json.dumps({"id": j.id, "status": j.status, "attempts": j.attempts, "event": j.event,
                              "action": j.action, "handler": j.handler, "delivery": j.delivery, "key": j.key,
                              "updated": _when(j.updated_at), "last_error": j.last_error,
                              "coalesced_into": j.coalesced_into, "cut_off": j.cut_off(now)}))
        return 0
    if not listed:
        print(f"no {'' if args.status == 'all' else args.status + ' '}jobs")
        return 0
    print(f"{'id':>5}  {'status':<8} {'tries':>5}  {'event':<28} {'handler':<26} {'updated (UTC)':<19}  last error")
    for j in listed:
        event = f"{j.event}.{j.action}" if j.action else j.event
        err = (j.last_error or "").replace("\n", " ")
        if j.coalesced_into:
            err = f"(covered by job {j.coalesced_into})"
        elif j.cut_off(now):  # `running` in the file, but no live worker holds its lease
            err = ("(its worker stopped mid-run: the App runs it again)" if j.attempts < q.max_attempts else
                   f"(its worker stopped on all {j.attempts} attempts: the App marks it failed)")
        print(f"{j.id:>5}  {j.status:<8} {j.attempts:>5}  {event:<28} {j.handler:<26} {_when(j.updated_at):<19}  "
              f"{err[:100]}")
    counts = q.counts()
    cut = sum(j.cut_off(now) for j in q.list("running", counts["running"])) if counts["running"] else 0
    running = f"{counts['running']} running" + (f" ({cut} cut off)" if cut else "")
    print(f"queue: {counts['queued']} queued, {running}, {counts['failed']} failed, {counts['done']} done")
    return 0


def retry(args: argparse.Namespace) -> int:
    if not args.ids and not args.all_failed:
        raise UsageError("name the job ids to retry, or pass --all-failed")
    q = _queue(args)
    if args.all_failed:
        n = q.retry()
        print(f"queued {n} failed job{'s' if n != 1 else ''} again")
        return 0
    problems = []
    for i in args.ids:
        job = q.get(i)
        if job is None:
            problems.append(f"job {i} does not exist")
        elif job.status != "failed":
            problems.append(f"job {i} is {job.status}, not failed")
    if problems:
        raise UsageError("; ".join(problems))
    n = q.retry(args.ids)
    print(f"queued {n} failed job{'s' if n != 1 else ''} again: {', '.join(map(str, args.ids))}")
    return 0
