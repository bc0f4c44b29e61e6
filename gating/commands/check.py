"""`gating check`: the `gating / eval` check for a pull request, in GitHub Actions or locally.

In Actions everything comes from GITHUB_EVENT_PATH and the GITHUB_* variables; locally, flags say
which commits to compare and GitHub is left alone unless a repository and token are given.
Exit codes: 0 the check concluded success or neutral, 1 failure (cases that could not be evaluated
included, unless --on-error neutral) or the job was cancelled, 2 bad input (manifest, dataset, flags,
a commit that is not in the clone).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gating.check.artifact import DEFAULT_MAX_BYTES
from gating.check.context import (
    BASELINES,
    FAIL_ON,
    NOTES_MODES,
    ON_ERROR,
    ContextError,
    Settings,
    build_context,
)
from gating.check.fork import evaluate_artifact, refuse
from gating.check.output import append_to, step_outputs, summary_markdown, title
from gating.check.run import run_check
from gating.commands.cli import UsageError
from gating.commands.common import STDOUT, owner_name, repo
from gating.commands.progress import Reporter
from gating.evals.dataset import DatasetError
from gating.system.manifest import MANIFEST_PATH


def _bool(text: str) -> bool:
    v = text.strip().lower()
    if v in ("true", "yes", "1", "on"):
        return True
    if v in ("false", "no", "0", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _opt_int(text: str) -> int | None:
    if not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _shard(text: str) -> tuple[int, int]:
    from gating.check.shard import parse_spec

    try:
        return parse_spec(text)
    except ContextError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="the `gating / eval` check: diff, affected evals, verdict, check run, notes")
    p.add_argument("--config", default=MANIFEST_PATH, help="manifest path (default: gating.yml)")
    p.add_argument("--base", help="base revision (default: the pull request's base, else the default branch); "
                                  "the merge-base with head is used")
    p.add_argument("--head", help="head revision (default: the pull request's head, else GITHUB_SHA, else HEAD)")
    p.add_argument("--event", metavar="PATH", help="event payload (default: $GITHUB_EVENT_PATH)")
    p.add_argument("--repository", metavar="OWNER/NAME", type=owner_name,
                   help="repository to post to (default: $GITHUB_REPOSITORY)")
    p.add_argument("--pr", type=int, metavar="N", help="pull request number (default: from the event)")
    p.add_argument("--api-url", help="GitHub API URL (default: $GITHUB_API_URL or https://api.github.com)")
    p.add_argument("--baseline", choices=BASELINES, default="notes",
                   help="notes: the eval note on the base commit, else re-run base (default); "
                        "rerun: always re-run base; none: thresholds only")
    p.add_argument("--fail-on", choices=FAIL_ON, default="regression",
                   help="regression: thresholds, a significant regression or an unconfirmed drop beyond "
                        "max_drop fail the check (default); threshold: only thresholds; never: report only")
    p.add_argument("--on-error", choices=ON_ERROR, default="fail",
                   help="fail: cases that could not be evaluated (no key, a wrong base URL, 401/403/404, "
                        "provider errors) fail the check (default); neutral: report them without blocking")
    p.add_argument("--concurrency", type=_opt_int, metavar="N", help="requests in flight (default: evals.concurrency or 16)")
    p.add_argument("--comment", type=_bool, nargs="?", const=True, default=False, metavar="BOOL",
                   help="also keep one summary comment on the pull request (needs pull-requests: write)")
    p.add_argument("--no-post", action="store_true", help="do not talk to GitHub (no check run, no comment)")
    p.add_argument("--notes", choices=NOTES_MODES, default="auto",
                   help="store results in refs/notes/gating/evals: auto (push in Actions when the token may "
                        "write; default), push, local, off")
    p.add_argument("--remote", default="origin", help="remote for notes and missing commits (default: origin)")
    p.add_argument("--cache-dir", help="response cache, outside the work tree (default: $GATING_CACHE_DIR, else "
                                       ".git/gating/responses)")
    p.add_argument("--replay", type=_bool, nargs="?", const=True, default=False, metavar="BOOL",
                   help="replay the cassettes for base and head (default: as the base's evals.mode says)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")
    p.add_argument("--json", metavar="PATH", help="write the report as JSON (`-`: to stdout, and nothing else there)")
    p.add_argument("--junit", metavar="PATH", help="write JUnit XML (one testcase per eval case)")
    p.add_argument("--quiet", action="store_true", help="print only the title, not the summary")
    p.add_argument("--post-wait", type=float, default=300.0, metavar="SECONDS",
                   help="how long posting may wait out GitHub's rate limits in all (default: 300); a check run "
                        "that still cannot be completed fails the job")
    p.add_argument("--from-artifact", metavar="PATH", type=Path,
                   help="in a `workflow_run` run: verify and evaluate a fork's pull request collected by "
                        "`gating collect` (the artifact's directory or file), with this checkout's config")
    p.add_argument("--shard", metavar="I/N", type=_shard,
                   help="evaluate only slice I of N of the cases (a matrix job) and write a partial report; "
                        "nothing is posted: `--merge` makes the check")
    p.add_argument("--shard-out", metavar="PATH", help="where --shard writes its partial report "
                                                        "(default: gating-shard-I-of-N.json)")
    p.add_argument("--merge", metavar="DIR", help="combine the partial reports in DIR (every shard of one matrix) into "
                                                  "the check an unsharded run makes: same verdict, report and notes")
    p.add_argument("--max-artifact-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="N",
                   help=f"refuse a larger artifact (default: {DEFAULT_MAX_BYTES})")
    p.set_defaults(func=run)


def _event(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise UsageError(f"cannot read the event payload {path}: {e.strerror}") from None
    except ValueError as e:
        raise UsageError(f"the event payload {path} is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"the event payload {path} is not a JSON object")
    return data


@contextmanager
def _term_as_interrupt() -> Iterator[None]:
    """A cancelled Actions job gets SIGTERM: turn it into KeyboardInterrupt so the check run completes."""
    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _refused(env: dict[str, str], message: str) -> UsageError:
    """An input refused before the check could run still reaches the workflow: its step outputs say
    `error` and its job summary says why, instead of being empty."""
    if env.get("GITHUB_OUTPUT"):
        append_to(env["GITHUB_OUTPUT"], step_outputs("error", "failure"))
    if env.get("GITHUB_STEP_SUMMARY"):
        append_to(env["GITHUB_STEP_SUMMARY"], f"## gating / eval: error\n\nThe check did not run: {message}\n")
    return UsageError(message)


def run(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    g = repo(args)
    try:
        settings = Settings(config=args.config, baseline=args.baseline, fail_on=args.fail_on, on_error=args.on_error,
                            concurrency=args.concurrency, comment=args.comment,
                            post=not args.no_post and args.shard is None, notes=args.notes, remote=args.remote,
                            cache_dir="" if args.no_cache else args.cache_dir, replay=args.replay,
                            json_path=args.json, junit_path=args.junit, post_wait=args.post_wait,
                            shard=args.shard, shard_out=args.shard_out, merge=args.merge, progress=Reporter(env))
        event = _event(args.event or env.get("GITHUB_EVENT_PATH"))
        ctx = build_context(env, event, head=args.head, base=args.base,
                            repository=args.repository, pull_number=args.pr, api_url=args.api_url)
    except ContextError as e:
        raise _refused(env, str(e)) from None
    except UsageError as e:
        raise _refused(env, str(e)) from None
    from gating.commands.check_github import GitHub

    github = GitHub()
    if ctx.untrusted and not args.from_artifact:  # a fork's head under a privileged event: never run it
        refuse(ctx, settings, ctx.untrusted, github=github)
        raise UsageError(ctx.untrusted)
    try:
        with _term_as_interrupt():
            if args.from_artifact:
                done = evaluate_artifact(ctx, settings, g, env, event, args.from_artifact, args.max_artifact_bytes,
                                         github=github)
            else:
                done = run_check(ctx, settings, g, env, github=github)
    except DatasetError as e:
        raise UsageError("bad eval dataset:\n  " + "\n  ".join(e.problems)) from None
    except KeyboardInterrupt:
        print("gating: cancelled; the check run was completed as cancelled", file=sys.stderr)
        return 130
    r = done.result
    if settings.shard is not None:  # a slice: no verdict of its own
        print(f"gating / eval: {r.reasons[0]}")
        return 0
    if args.json == STDOUT:  # stdout carries the JSON report alone
        print(f"gating / eval: {title(r)}", file=sys.stderr)
    else:
        print(f"gating / eval: {title(r)}")
        if not args.quiet:
            print()
            print(summary_markdown(r))
    if done.read_only_reason and ctx.in_actions:
        print(f"gating: nothing posted: {done.read_only_reason}", file=sys.stderr)
    for m in r.messages:
        if m != done.unfinished:
            print(f"gating: warning: {m}", file=sys.stderr)
    if done.unfinished:
        print(f"gating: error: {done.unfinished}", file=sys.stderr)
        return max(r.exit_code, 1)
    return r.exit_code
