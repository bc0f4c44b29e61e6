"""How far a run has got: what the eval runner reports while it works, and the tally a display shows.

The runner calls `begin(total)`, `advance(result)` once per case and `end()`; what is shown (a bar on
a terminal, a line every few seconds in CI logs) is the door's business (gating/commands/progress.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from gating.evals.records import CaseResult


class Progress(Protocol):
    def begin(self, total: int) -> None: ...
    def advance(self, result: CaseResult) -> None: ...
    def end(self) -> None: ...


@dataclass
class Tally:
    """Cases done so far, by outcome, and when the run started (monotonic seconds)."""

    label: str
    total: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def done(self) -> int:
        return self.passed + self.failed + self.errors

    def add(self, result: CaseResult) -> None:
        with self.lock:
            if result.error:
                self.errors += 1
            elif result.passed:
                self.passed += 1
            else:
                self.failed += 1

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left at the pace so far; None before the first case is done."""
        if not self.done:
            return None
        elapsed = (time.monotonic() if now is None else now) - self.started
        return elapsed / self.done * max(0, self.total - self.done)

    def line(self, now: float | None = None) -> str:
        """One plain line for a log: `head 1a2b3c4: 12/40 cases (pass 10, fail 1, error 1), 8 s, about 19 s left`."""
        now = time.monotonic() if now is None else now
        eta = self.eta_s(now)
        left = "" if self.done >= self.total else ", ETA unknown" if eta is None else f", about {_secs(eta)} left"
        return (f"{self.label}: {self.done}/{self.total} cases (pass {self.passed}, fail {self.failed}, "
                f"error {self.errors}), {_secs(now - self.started)}{left}")


def _secs(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s"
