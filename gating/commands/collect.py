"""`gating collect`: the unprivileged half of the fork pattern.

In a `pull_request` workflow (no secrets, a read-only token), it writes the pull request's number,
head and base SHAs and the head's LLM system files (the manifest and every file it names: prompts,
datasets, tools, guardrails) into one artifact file, and runs nothing. A `workflow_run` workflow
uploads nothing back: it verifies the artifact and evaluates it (`gating check --from-artifact`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gating.check.artifact import collect, write
from gating.check.context import build_context
from gating.check.output import append_to
from gating.check.run import _remote, ensure_commit
from gating.commands.check import _event
from gating.commands.cli import UsageError
from gating.commands.common import owner_name, repo
from gating.system.manifest import MANIFEST_PATH


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collect", help="write a pull request's LLM system files for a privileged workflow_run "
                                       "to evaluate (the fork pattern); runs no code and needs no secret")
    p.add_argument("--out", required=True, metavar="DIR", type=Path, help="directory to write gating-collect.json into")
    p.add_argument("--config", default=MANIFEST_PATH, help="manifest path (default: gating.yml)")
    p.add_argument("--head", help="head revision (default: the pull request's head)")
    p.add_argument("--base", help="base revision (default: the pull request's base)")
    p.add_argument("--pr", type=int, metavar="N", help="pull request number (default: from the event)")
    p.add_argument("--repository", metavar="OWNER/NAME", type=owner_name,
                   help="the base repository (default: $GITHUB_REPOSITORY)")
    p.add_argument("--event", metavar="PATH", help="event payload (default: $GITHUB_EVENT_PATH)")
    p.add_argument("--remote", default="origin", help="remote to fetch a missing head from (default: origin)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    g = repo(args)
    ctx = build_context(env, _event(args.event or env.get("GITHUB_EVENT_PATH")), head=args.head, base=args.base,
                        repository=args.repository, pull_number=args.pr)
    if ctx.pull_number is None:
        raise UsageError("no pull request to collect: run it on a `pull_request` event or pass --pr")
    head = ensure_commit(g, ctx.head_sha, _remote(g, args.remote))
    base = g.resolve(ctx.base) if ctx.base else None
    c = collect(g, head, args.config, repository=ctx.repository, pull_number=ctx.pull_number, base_sha=base)
    path = write(c, args.out)
    print(f"gating: collected {len(c.files)} files of head {head[:12]} (pull request #{c.pull_number}) into {path}")
    if ctx.output_file:
        append_to(ctx.output_file, f"artifact={path}\n")
    return 0
