"""Live progress of an eval run, on stderr (stdout stays the report's, e.g. for `--json -`).

On a terminal (and not under CI): a bar per run, labelled `base 1a2b3c4` / `head 5d6e7f8`, with the pass/fail/error tally
and an ETA. Without one (CI logs): one plain line when a run starts, one every
GATING_PROGRESS_SECONDS (default 10) while it works, and one when it ends. 0 turns progress off.
"""

from __future__ import annotations

import math
import os
import re
import sys
import threading
from collections.abc import Mapping
from typing import IO, Any

from gating.commands.cli import UsageError
from gating.commands.common import WORKTREE
from gating.evals.progress import Progress, Tally
from gating.evals.records import CaseResult

ENV = "GATING_PROGRESS_SECONDS"
DEFAULT_SECONDS = 10.0
SHA = re.compile(r"^[0-9a-f]{40}$")


def interval(env: Mapping[str, str]) -> float:
    """Seconds between plain progress lines, from GATING_PROGRESS_SECONDS; 0 means no progress."""
    raw = env.get(ENV, "").strip()
    if not raw:
        return DEFAULT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise UsageError(f"{ENV} must be a number of seconds (0 turns progress off), got {raw!r}")
    return value


def label(role: str, rev: str | None) -> str:
    """`head 1a2b3c4`: the role and the revision, a commit id cut to 7 characters."""
    if not rev or rev == WORKTREE:
        return f"{role} working tree"
    return f"{role} {rev[:7] if SHA.match(rev) else rev}"


class Reporter:
    """Makes the Progress of one labelled run; None when progress is off."""

    def __init__(self, env: Mapping[str, str] | None = None, stream: IO[str] | None = None):
        env = os.environ if env is None else env
        self.seconds = interval(env)
        self.stream = stream or sys.stderr
        # CI logs get plain lines even where a pseudo-terminal is faked: a bar's redraws garble them
        self.terminal = _isatty(self.stream) and env.get("TERM") != "dumb" and not env.get("CI")

    def __call__(self, name: str) -> Progress | None:
        if self.seconds == 0:
            return None
        return Bar(name, self.stream) if self.terminal else Lines(name, self.stream, self.seconds)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Lines:
    """Plain lines for a log: a timer thread, so a slow case still shows the run is alive."""

    def __init__(self, name: str, stream: IO[str], seconds: float):
        self.tally = Tally(name)
        self.stream, self.seconds = stream, seconds
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def _say(self, text: str) -> None:
        try:
            print(f"gating: {text}", file=self.stream, flush=True)
        except (OSError, ValueError):  # stderr closed: progress is not worth failing the run
            pass

    def begin(self, total: int) -> None:
        self.tally = Tally(self.tally.label, total)
        self._say(f"{self.tally.label}: {total} case{'s' if total != 1 else ''} to run")
        self.thread = threading.Thread(target=self._tick, name="gating-progress", daemon=True)
        self.thread.start()

    def _tick(self) -> None:
        while not self.stop.wait(self.seconds):
            self._say(self.tally.line())

    def advance(self, result: CaseResult) -> None:
        self.tally.add(result)

    def end(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
            self._say(self.tally.line() + (" (stopped)" if self.tally.done < self.tally.total else ""))


class Bar:
    """A rich progress bar on stderr; it stays on screen when done, with the final tally."""

    def __init__(self, name: str, stream: IO[str]):
        self.tally = Tally(name)
        self.stream = stream
        self.bar: Any = None
        self.task: Any = None

    def _counts(self) -> str:
        t = self.tally
        return f"[green]pass {t.passed}[/] · [red]fail {t.failed}[/] · [yellow]error {t.errors}[/]"

    def begin(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.tally = Tally(self.tally.label, total)
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), TextColumn("ETA"),
                            TimeRemainingColumn(), console=Console(file=self.stream), transient=False)
        self.task = self.bar.add_task(self.tally.label, total=total, counts=self._counts())
        self.bar.start()

    def advance(self, result: CaseResult) -> None:
        self.tally.add(result)
        self.bar.update(self.task, advance=1, counts=self._counts())

    def end(self) -> None:
        if self.bar is not None:
            self.bar.stop()
