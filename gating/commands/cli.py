"""`gating` command line: a thin door onto the core. Each subcommand lives in gating/commands/."""

from __future__ import annotations

import argparse
import importlib
import os
import select
import sys
from collections.abc import Sequence

from gating.about import version
from gating.git.repository import GitError
from gating.system.manifest import ManifestError

# Each module registers its subcommands with `register(subparsers)`.
COMMAND_MODULES = [
    "gating.commands.snapshot",
    "gating.commands.diff",
    "gating.commands.demo",
    "gating.commands.eval",
    "gating.commands.check",
    "gating.commands.collect",
    "gating.commands.audit",
    "gating.commands.rollback",
    "gating.commands.app",
    "gating.commands.reference",
    "gating.commands.init",
    "gating.commands.view",
]


class UsageError(Exception):
    """Bad arguments or input the user can fix; exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gating",
        description="Git-native gates for LLM systems: snapshot, semantic diff, evals, approvals, audit, rollback.",
    )
    parser.add_argument("--version", action="version", version=f"gating {version()}")
    parser.add_argument("-C", dest="repo", default=".", help="run as if started in this directory")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not as a complaint at interpreter exit
        return code
    except BrokenPipeError as e:  # `gating diff | head`: the reader left; say nothing, as git does
        if not _stdout_reader_gone():
            return _os_error(e)
        _silence_stdout()
        return 141
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
        return _os_error(e)
    except KeyboardInterrupt:
        return 130


def _os_error(e: OSError) -> int:
    where = f"{e.filename}: " if getattr(e, "filename", None) else ""
    print(f"gating: error: {where}{e.strerror or e}", file=sys.stderr)
    return 2


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe nobody reads any more (and not some other pipe that broke)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _fd, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the flush at exit does not raise BrokenPipeError again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # captured or replaced stdout: nothing to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
