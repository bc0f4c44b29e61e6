"""`gating diff [BASE [HEAD]] [--json]`: the semantic diff of the LLM system."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gating.commands.common import WORKTREE, default_base, readers, repo
from gating.diff.changes import ChangeSet
from gating.diff.render import render_diff_markdown, short_rev
from gating.diff.semantic import diff_revisions
from gating.git.repository import Git
from gating.git.snapshot_store import DiskSnapshotCache
from gating.system.manifest import MANIFEST_PATH

SYMBOLIC = ("last-good", "previous")  # resolved from the audit log as `/rollback` resolves them


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diff", help="semantic diff of the LLM system between two revisions")
    p.add_argument("base", nargs="?", help="base revision (default: merge-base of HEAD and the default branch), "
                   "or last-good / previous: the state `/rollback` would restore")
    p.add_argument("head", nargs="?", default="HEAD", help=f"head revision (default HEAD; {WORKTREE} for the work tree)")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    p.add_argument("--config", default=MANIFEST_PATH, help="manifest path (default: gating.yml)")
    p.add_argument("--key", action="append", metavar="PUB.pem", help="for last-good/previous: trusted public key "
                   "of the audit log (default: .gating/audit.pub at HEAD)")
    p.add_argument("--remote", default="origin", help="for last-good/previous: remote to fetch the audit log from")
    p.add_argument("--no-fetch", action="store_true", help="for last-good/previous: use the local audit log as it is")
    p.set_defaults(func=run)


def compute(g: Git, base: str, head: str, manifest_path: str = MANIFEST_PATH) -> ChangeSet:
    """Diff two revisions (or the working tree); a base without a manifest counts as an empty system."""
    base_reader, head_reader = readers(g, [base, head])
    return diff_revisions(base_reader, head_reader, base, head, manifest_path, DiskSnapshotCache.for_repo(g))


def compared(g: Git, base_arg: str | None, base: str, head: str) -> dict[str, Any]:
    """Which base and head were compared, as names and commits, so a reader knows what the diff is of."""
    def side(rev: str, how: str = "") -> dict[str, Any]:
        sha = None if rev == WORKTREE else g.resolve(rev)
        return {"rev": rev, "sha": sha, "how": how}

    if base_arg:
        b = side(base_arg, "given")
        b_text = f"`{short_rev(base_arg)}`" + (f" ({b['sha'][:7]})" if b["sha"] and not b["sha"].startswith(base_arg) else "")
    else:
        branch = g.default_branch() or "the default branch"
        b = {"rev": branch, "sha": base, "how": f"merge-base of HEAD and {branch}"}
        b_text = f"`{branch}@{base[:7]}` ({b['how']})"
    h = side(head)
    h_text = "the work tree" if head == WORKTREE else f"`{short_rev(head)}`" + (
        f" ({h['sha'][:7]})" if h["sha"] and not h["sha"].startswith(head) else "")
    return {"base": b, "head": h, "text": f"Compared {b_text} with {h_text}."}


def run(args: argparse.Namespace) -> int:
    g = repo(args)
    symbolic: dict[str, tuple[str, str]] = {}
    for name in ("base", "head"):
        word = getattr(args, name)
        if word in SYMBOLIC:
            from gating.commands.rollback import resolve_symbolic

            sha, how = resolve_symbolic(g, args, word)
            symbolic[name] = (word, how)
            setattr(args, name, sha)
    base = args.base or default_base(g)
    cs = compute(g, base, args.head, args.config)
    about = compared(g, args.base, base, args.head)
    for name, (word, how) in symbolic.items():
        sha = getattr(args, name)
        about[name]["how"] = f"{word}: {how}"
        about["text"] = about["text"].replace(f"`{short_rev(sha)}`", f"`{word}` ({sha[:7]}, {how})", 1)
    if args.json:
        json.dump({**cs.to_dict(), "compared": about}, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(about["text"] + "\n\n" + render_diff_markdown(cs))
    if cs.has_errors:
        print("gating: policy error: " + "; ".join(c.summary for c in cs.changes if c.risk == "error"),
              file=sys.stderr)
        return 1
    return 0
