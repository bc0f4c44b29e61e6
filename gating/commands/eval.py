"""`gating eval` and `gating calibrate`: run the golden cases of a revision, calibrate the judge.

Exit codes: 0 pass, 1 the verdict is fail or error (cases that could not be evaluated: no key, a wrong
base URL, provider errors; unless --on-error neutral) or inconclusive (a drop beyond max_drop the suite
could not confirm; under --fail-on regression, the default, as `gating check` concludes) / the judge
is not calibrated, 2 bad input (dataset, manifest, options). --fail-on threshold or never report a
significant regression or an inconclusive drop with a warning and exit 0, as the check does.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from gating.check.context import FAIL_ON
from gating.check.evidence import plan as evidence_plan
from gating.check.evidence import response_cache
from gating.check.run import conclude
from gating.commands.cli import UsageError
from gating.commands.common import STDOUT, WORKTREE, reader, repo
from gating.commands.progress import Reporter, label
from gating.evals.calibrate import calibrate
from gating.evals.compare import compare
from gating.evals.dataset import DatasetError
from gating.evals.pacing import describe
from gating.evals.records import RunResult
from gating.evals.report import eval_to_json, render_calibration_markdown, render_eval_markdown, render_junit
from gating.evals.runner import run_evals
from gating.git.repository import Git
from gating.system.manifest import MANIFEST_PATH
from gating.system.snapshot import build_snapshot

REPORT_SCHEMA = "gating.eval.report/1"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="run the eval cases of a revision (default: the working tree)")
    p.add_argument("--rev", help=f"revision to evaluate without checking it out (default: {WORKTREE})")
    p.add_argument("--base", help="also evaluate this revision and compare (paired by case id)")
    p.add_argument("--concurrency", type=int, metavar="N", help="requests in flight (default: evals.concurrency or 16)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="processes that send the requests (default: GATING_EVAL_WORKERS, evals.workers, else one per "
                        "core for large live runs)")
    p.add_argument("--repeat", type=int, metavar="N", help="run each case N times (majority pass, mean score)")
    p.add_argument("--timeout", type=float, metavar="S", help="per-request timeout in seconds (default 60)")
    p.add_argument("--only", metavar="PROMPT", action="append", help="only cases of this prompt (repeatable)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")
    p.add_argument("--record", action="store_true", help="call live providers and write cassettes beside the datasets")
    p.add_argument("--replay", action="store_true",
                   help="replay the cassettes (default: as evals.mode of the judging revision, --base if given)")
    p.add_argument("--json", metavar="PATH", help="write the full report as JSON (`-`: to stdout, and nothing else there)")
    p.add_argument("--junit", metavar="PATH", help="write JUnit XML (one testcase per eval case)")
    p.add_argument("--markdown", metavar="PATH", help="also write the Markdown summary to this file")
    p.add_argument("--config", default=MANIFEST_PATH, help="manifest path (default: gating.yml)")
    p.add_argument("--on-error", choices=("fail", "neutral"), default="fail",
                   help="fail: cases that could not be evaluated exit 1 (default); neutral: warn and exit 0")
    p.add_argument("--fail-on", choices=FAIL_ON, default="regression",
                   help="regression: a missed threshold, a significant regression or an inconclusive drop exit 1 "
                        "(default, as `gating check`); threshold: only a missed threshold does; never: warn, exit 0")
    p.add_argument("--compare", nargs="*", metavar="CANDIDATE",
                   help="run the same cases on other models or prompt variants and compare them with the current "
                        "system: MODEL, PROVIDER:MODEL, PROMPT=FILE or PROMPT=OTHER_PROMPT, joined by + to combine "
                        "(no names: evals.candidates)")
    p.set_defaults(func=run)

    c = sub.add_parser("calibrate", help="measure the judge model's agreement with human ratings")
    c.add_argument("--ratings", metavar="PATH", help="human ratings JSONL (default: evals.calibration.ratings)")
    c.add_argument("--rev", help=f"revision to read (default: {WORKTREE})")
    c.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")
    c.add_argument("--record", action="store_true", help="call the live judge and write its cassette")
    c.add_argument("--json", metavar="PATH", help="write the calibration report as JSON")
    c.add_argument("--config", default=MANIFEST_PATH, help="manifest path (default: gating.yml)")
    c.set_defaults(func=run_calibrate)


def _cache_dir(args: argparse.Namespace, g: Git) -> Path | None:
    """The response cache, outside the work tree (a directory inside it is refused, with a warning)."""
    cache, warning = response_cache("" if args.no_cache else None, os.environ, g)
    if warning:
        print(f"gating: warning: {warning}", file=sys.stderr)
    return cache


def _check(args: argparse.Namespace) -> None:
    for name in ("concurrency", "repeat", "workers"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise UsageError(f"--{name} must be at least 1, got {v}")
    if getattr(args, "timeout", None) is not None and not 0 < args.timeout < float("inf"):
        raise UsageError(f"--timeout must be a positive, finite number of seconds, got {args.timeout:g}")
    if args.record and args.rev not in (None, WORKTREE):
        raise UsageError("--record writes cassettes into the working tree; it cannot be combined with --rev")
    if args.record and getattr(args, "replay", False):
        raise UsageError("--record calls the models live; it cannot be combined with --replay")
    for flag in ("json", "junit", "markdown"):
        if getattr(args, flag, None) and not (flag == "json" and args.json == STDOUT):
            _check_output(f"--{flag}", getattr(args, flag))


def _check_output(flag: str, path: str) -> None:
    """A report path must be writable before the eval spends its calls, not found out after."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{flag} {path}: is a directory, not a file")
    parent = p.parent
    if not parent.exists():
        raise UsageError(f"{flag} {path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UsageError(f"{flag} {path}: permission denied")


def _check_only(only: list[str], prompts: set[str]) -> None:
    for name in dict.fromkeys(only):
        if name not in prompts:
            hint = difflib.get_close_matches(name, sorted(prompts), n=1)
            raise UsageError(f"--only {name}: unknown prompt {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                             + f"; known prompts: {', '.join(sorted(prompts)) or 'none'}")


def _write(flag: str, path: str, text: str) -> None:
    if path == STDOUT:
        sys.stdout.write(text)
        return
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot write: {e.strerror or e}") from None


def run(args: argparse.Namespace) -> int:
    _check(args)
    if args.compare is not None:
        from gating.commands.eval_compare import run_compare

        return run_compare(args)
    g = repo(args)
    cache = _cache_dir(args, g)
    only = set(args.only) if args.only else None
    show = Reporter()
    common: dict[str, Any] = dict(only_prompts=only, concurrency=args.concurrency, cache_dir=cache, env=os.environ,
                                  repeat=args.repeat, timeout_s=args.timeout, workers=args.workers)
    t0 = time.monotonic()
    try:
        head_reader = reader(g, args.rev)
        snap = build_snapshot(head_reader, args.config)
        base_reader = reader(g, args.base) if args.base else None
        base_snap = build_snapshot(base_reader, args.config) if base_reader else None
        if args.only:  # a prompt of either revision: one may have added or removed it
            _check_only(args.only, set(snap.manifest.prompts) | set(base_snap.manifest.prompts if base_snap else ()))
        plan = evidence_plan(base_snap if base_snap and base_snap.manifest.evals else None, snap, os.environ,
                             args.replay, "the --base revision's", own=base_snap is None)
        common.update(mode=plan.mode, trusted_cassettes=plan.trusted)
        head = run_evals(snap, head_reader, record=args.record, progress=show(label("head", args.rev)), **common)
        base = run_evals(base_snap, base_reader, progress=show(label("base", args.base)), **common) \
            if base_snap and base_reader else None
    except DatasetError as e:
        raise UsageError("invalid eval dataset:\n" + str(e)) from None
    cmp = compare(base, head, snap.manifest.evals)
    plan.after(head)
    cmp.verdict, cmp.reasons = plan.judge(base, head, cmp.verdict, cmp.reasons)
    md = render_eval_markdown(cmp) + _failing(head)
    if args.json != STDOUT:  # with `--json -`, stdout carries the JSON report alone
        sys.stdout.write(md)
    for m in plan.messages:
        print(f"gating: warning: {m}", file=sys.stderr)
    s = head.stats
    print(f"gating: {len(head.cases)} cases in {time.monotonic() - t0:.1f} s ({head.config['mode']}): "
          f"{s['requests']} requests, {s['cache_hits']} cache hits, {s['replayed']} replayed"
          + (f", cassettes written: {', '.join(s['cassettes_written'])}" if s.get("cassettes_written") else ""),
          file=sys.stderr)
    if s.get("rate_limit"):
        print(f"gating: {describe(s['rate_limit'], sum(s.get('retries', {}).values()))}", file=sys.stderr)
    if args.json:
        doc = {"schema": REPORT_SCHEMA, "head": head.to_dict(), "base": base.to_dict() if base else None,
               "comparison": cmp.to_dict()}
        _write("--json", args.json, json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n")
    if args.junit:
        _write("--junit", args.junit, render_junit(head))
    if args.markdown:
        _write("--markdown", args.markdown, md)
    if cmp.verdict == "error":
        relaxed = args.on_error == "neutral"
        print(f"gating: {'warning: not blocking (--on-error neutral)' if relaxed else 'error'}: "
              + "\n  ".join(cmp.reasons), file=sys.stderr)
        return 0 if relaxed else 1
    missed = any(r.status == "fail" for r in cmp.rows)
    blocking = conclude(cmp.verdict, missed, args.fail_on) == "failure"
    if cmp.verdict == "inconclusive":  # as the check concludes: a drop too few cases can confirm is not waved through
        how = ("error: the verdict is inconclusive (blocking under fail-on regression: a drop the suite could not "
               "confirm needs a person or more cases)" if blocking
               else f"warning: the verdict is inconclusive (not blocking: fail-on {args.fail_on})")
        print(f"gating: {how}: " + "; ".join(cmp.reasons), file=sys.stderr)
    elif cmp.verdict == "fail" and not blocking:
        print(f"gating: warning: the verdict is fail (not blocking: fail-on {args.fail_on}): " + "; ".join(cmp.reasons),
              file=sys.stderr)
    return 1 if blocking else 0


def _failing(run: RunResult) -> str:
    bad = [c for c in run.cases if not c.passed]
    if not bad:
        return ""
    lines = ["", f"#### Failing cases at head ({len(bad)})", "", "| Case | Prompt | Why |", "|---|---|---|"]
    for c in bad[:50]:
        why = f"{c.error}: {c.error_message}" if c.error else next(
            (f"{a.type}: {a.reason}" for a in c.assertions if not a.passed), "")
        lines.append(f"| `{c.id}` | {c.prompt or ''} | {why.replace('|', '/')[:300]} |")
    return "\n".join(lines) + "\n"


def run_calibrate(args: argparse.Namespace) -> int:
    _check(args)
    g = repo(args)
    rd = reader(g, args.rev)
    snap = build_snapshot(rd, args.config)
    path = args.ratings or (snap.manifest.evals.get("calibration") or {}).get("ratings")
    if not path:
        raise UsageError("no ratings file: pass --ratings PATH or set evals.calibration.ratings in gating.yml")
    root = g.root.resolve()
    p = Path(path)
    if p.is_absolute():
        try:
            path = p.resolve().relative_to(root).as_posix()
        except ValueError:
            raise UsageError(f"--ratings {path}: the ratings file must be inside the repository") from None
    try:
        cal = calibrate(snap, rd, path, env=os.environ, cache_dir=_cache_dir(args, g), record=args.record)
    except DatasetError as e:
        raise UsageError("invalid ratings:\n" + str(e)) from None
    sys.stdout.write(render_calibration_markdown(cal))
    if args.json:
        _write("--json", args.json, eval_to_json(cal))
    if not cal.calibrated:
        print(f"gating: the judge is not calibrated: {cal.why}", file=sys.stderr)
        return 1
    return 0
