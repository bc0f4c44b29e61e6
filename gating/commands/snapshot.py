"""`gating snapshot [REV] [--lock PATH]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gating.commands.common import repo, snapshot_at
from gating.system.manifest import MANIFEST_PATH


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("snapshot", help="print the resolved LLM system at a revision (default: working tree)")
    p.add_argument("rev", nargs="?", help="git revision; omitted: the working tree with uncommitted edits")
    p.add_argument("--lock", metavar="PATH", help="write the snapshot to this lock file instead of printing it")
    p.add_argument("--config", default=MANIFEST_PATH, help="manifest path (default: gating.yml)")
    p.add_argument("--digest", action="store_true", help="print only the digest")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    g = repo(args)
    snap = snapshot_at(g, args.rev, args.config)
    if args.digest:
        print(snap.digest)
    elif args.lock:
        Path(args.lock).write_text(snap.to_json(pretty=True), encoding="utf-8")
        print(f"wrote {args.lock} ({len(snap.files)} files, {snap.digest})", file=sys.stderr)
    else:
        sys.stdout.write(snap.to_json(pretty=True))
    return 0
