"""`gating` command line: a thin door onto the core. Each subcommand lives in gating/commands/."""

from __future__ import annotations

import argparse
import importlib
import os
import select
import sys
from collections.abc import Sequence

from gating.about import version
from gating.errors import GatingError

# Every subcommand: its name, the module that registers it with `register(subparsers)`, and its summary
# for `gating --help`. Only the module of the subcommand being run is imported (a command module pulls
# in what its command needs, often much), so `gating --help` and a quick command start in a fraction
# of a second; tests/test_startup.py checks the summaries agree with what the modules register.
COMMANDS: list[tuple[str, str, str]] = [
    ("snapshot", "gating.commands.snapshot", "print the resolved LLM system at a revision (default: working tree)"),
    ("diff", "gating.commands.diff", "semantic diff of the LLM system between two revisions"),
    ("demo", "gating.commands.demo", "run gating on the bundled example repository, offline"),
    ("eval", "gating.commands.eval", "run the eval cases of a revision (default: the working tree)"),
    ("calibrate", "gating.commands.eval", "measure the judge model's agreement with human ratings"),
    ("check", "gating.commands.check", "the `gating / eval` check: diff, affected evals, verdict, check run, notes"),
    ("collect", "gating.commands.collect", "write a pull request's LLM system files for a privileged workflow_run "
     "to evaluate (the fork pattern); runs no code and needs no secret"),
    ("audit", "gating.commands.audit", "the signed audit trail in refs/notes/gating/audit"),
    ("keygen", "gating.commands.audit", "write an Ed25519 key pair for signing audit entries"),
    ("rollback", "gating.commands.rollback", "restore the LLM system of the last known-good state as a new branch"),
    ("app", "gating.commands.app", "run the GitHub App and manage its background jobs"),
    ("reference", "gating.commands.reference", "print the reference of every file format and setting "
     "(docs/reference.md)"),
    ("init", "gating.commands.init", "write gating.yml, a starter dataset and the workflow for this repository"),
    ("import", "gating.commands.init", "convert another tool's eval config to gating's"),
    ("monitor", "gating.commands.monitor", "production monitoring: rule status, Prometheus rules"),
    ("canary", "gating.commands.canary", "canary analysis: a canary system's production metrics against the "
     "baseline's"),
    ("view", "gating.commands.view", "serve the audit timeline and eval reports of this clone on loopback"),
]


class UsageError(GatingError):
    """Bad arguments or input the user can fix; exit code 2."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (given `command`) one whose other subcommands are only a name and a summary.

    The subcommands a module registers come as a group (`audit` with `keygen`), so a module is asked to
    register when any of its subcommands runs; the others stay placeholders that parse nothing.
    """
    parser = argparse.ArgumentParser(
        prog="gating",
        description="Git-native gates for LLM systems: snapshot, semantic diff, evals, approvals, audit, rollback.",
    )
    parser.add_argument("--version", action="version", version=f"gating {version()}")
    parser.add_argument("-C", dest="repo", default=".", help="run as if started in this directory")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = {module for name, module, _help in COMMANDS if command is None or name == command}
    registered: set[str] = set()
    for name, module, summary in COMMANDS:
        if module not in wanted:
            sub.add_parser(name, help=summary, add_help=False)
        elif module not in registered:
            registered.add(module)
            importlib.import_module(module).register(sub)
    return parser


def command_named(argv: Sequence[str]) -> str | None:
    """The subcommand in `argv`: the first word that is not an option of `gating` itself or -C's value."""
    words = iter(argv)
    for word in words:
        if word == "-C":
            next(words, None)
        elif word == "--":
            return next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_named(argv) or "")
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
    except GatingError as e:  # expected: say what failed; anything else is a bug, and its traceback says so
        _report(e)
        return e.exit_code
    except OSError as e:  # a path the user named cannot be read or written
        return _os_error(e)
    except KeyboardInterrupt:
        return 130


def _report(e: GatingError) -> None:
    """Each problem on its line, then their summary, as a compiler does; else the one error line."""
    for p in e.problems:
        print(p, file=sys.stderr)
    print(f"gating: {e.message}" if e.problems else f"gating: error: {e}", file=sys.stderr)


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
