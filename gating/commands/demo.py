"""`gating demo`: the road on the bundled example, offline, in a throwaway repository."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from gating.commands.diff import compute
from gating.example import apply_demo_change, make_example_repo
from gating.git import commit_all
from gating.report import render_diff_markdown


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run gating on the bundled example repository, offline")
    p.add_argument("--keep", metavar="DIR", help="build the demo repository here and keep it")
    p.set_defaults(func=run)


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    if args.keep:
        return _run(Path(args.keep))
    with tempfile.TemporaryDirectory(prefix="gating-demo-") as tmp:
        return _run(Path(tmp) / "support-bot")


def _run(root: Path) -> int:
    say(f"building the example repository in {root}")
    g = make_example_repo(root)
    base = g.rev_parse("HEAD")
    g.run("checkout", "--quiet", "-b", "tune-answers")
    apply_demo_change(root)
    head = commit_all(g, "Tune answers: friendlier prompt, newer model, more context")
    say(f"pull request tune-answers: {base[:7]}..{head[:7]}")
    cs = compute(g, base, head)
    sys.stdout.write(render_diff_markdown(cs))
    return 0
