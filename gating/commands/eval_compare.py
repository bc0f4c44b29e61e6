"""`gating eval --compare`: the current system and each candidate on the same cases, in one table.

Exit codes: 0 the table was made, 1 a run had cases that could not be evaluated (unless
--on-error neutral), 2 bad input (an unknown model, prompt or file; a bad dataset).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from gating.check.evidence import plan as evidence_plan
from gating.commands.cli import UsageError
from gating.commands.common import STDOUT, reader, repo
from gating.commands.eval import _cache_dir, _check_only, _write
from gating.commands.progress import Reporter
from gating.evals.candidates import (
    CandidateError,
    compare_candidates,
    from_manifest,
    parse_candidate,
    render_markdown,
    run_candidates,
)
from gating.evals.dataset import DatasetError
from gating.evals.records import RunResult
from gating.evals.runner import run_evals
from gating.system.snapshot import Snapshot, build_snapshot


def run_compare(args: argparse.Namespace) -> int:
    if args.base:
        raise UsageError("--compare runs candidates against the current system of one revision; drop --base")
    if args.junit:
        raise UsageError("--compare writes --json and --markdown; --junit is for one run")
    g = repo(args)
    cache = _cache_dir(args, g)
    rd = reader(g, args.rev)
    snap = build_snapshot(rd, args.config)
    ev = snap.manifest.evals
    try:
        cands = [parse_candidate(c) for c in args.compare] if args.compare else from_manifest(ev.get("candidates") or [])
    except CandidateError as e:
        raise UsageError(str(e)) from None
    if not cands:
        raise UsageError("--compare needs candidates: name them (MODEL, PROMPT=FILE) or list evals.candidates "
                         f"in {snap.manifest.source}; known models: {', '.join(sorted(snap.manifest.models)) or 'none'}")
    if args.only:
        _check_only(args.only, set(snap.manifest.prompts))
    plan = evidence_plan(None, snap, os.environ, args.replay, own=True)
    show = Reporter()
    only = set(args.only) if args.only else None
    t0 = time.monotonic()

    def one(name: str, s: Snapshot) -> RunResult:
        return run_evals(s, rd, only_prompts=only, concurrency=args.concurrency, cache_dir=cache, env=os.environ,
                         repeat=args.repeat, timeout_s=args.timeout, record=args.record, mode=plan.mode,
                         workers=args.workers, progress=show(name))

    try:
        current, runs = run_candidates(snap, rd, cands, one)
    except CandidateError as e:
        raise UsageError(str(e)) from None
    except DatasetError as e:
        raise UsageError("invalid eval dataset:\n" + str(e)) from None
    cc = compare_candidates(current, runs, ev)
    md = render_markdown(cc)
    if args.json != STDOUT:
        sys.stdout.write(md)
    for m in plan.messages:
        print(f"gating: warning: {m}", file=sys.stderr)
    requests = sum(r.run.stats.get("requests", 0) for r in cc.rows)
    replayed = sum(r.run.stats.get("replayed", 0) for r in cc.rows)
    print(f"gating: {len(cc.rows)} runs of {len(current.cases)} cases in {time.monotonic() - t0:.1f} s "
          f"({current.config['mode']}): {requests} requests, {replayed} replayed", file=sys.stderr)
    if args.json:
        _write("--json", args.json, json.dumps(cc.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n")
    if args.markdown:
        _write("--markdown", args.markdown, md)
    if cc.broken:
        relaxed = args.on_error == "neutral"
        print(f"gating: {'warning: not blocking (--on-error neutral)' if relaxed else 'error'}: "
              + "\n  ".join(cc.broken), file=sys.stderr)
        return 0 if relaxed else 1
    return 0
