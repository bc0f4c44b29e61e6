"""`gating` command line: a thin door onto the core. Each subcommand lives in gating/commands/."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gating.git import GitError
from gating.manifest import ManifestError

# Each module registers its subcommands with `register(subparsers)`.
COMMAND_MODULES = [
    "gating.commands.snapshot",
    "gating.commands.diff",
    "gating.commands.demo",
    "gating.commands.eval",
    "gating.commands.check",
    "gating.commands.audit",
    "gating.commands.rollback",
    "gating.commands.app",
]


class UsageError(Exception):
    """Bad arguments or input the user can fix; exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gating",
        description="Git-native gates for LLM systems: snapshot, semantic diff, evals, approvals, audit, rollback.",
    )
    parser.add_argument("-C", dest="repo", default=".", help="run as if started in this directory")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ManifestError as e:
        for p in e.problems:
            print(f"{p}", file=sys.stderr)
        n = len(e.problems)
        print(f"gating: {n} problem{'s' if n != 1 else ''} in the LLM system manifest", file=sys.stderr)
        return 2
    except (GitError, UsageError) as e:
        print(f"gating: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the user named cannot be read or written
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"gating: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
