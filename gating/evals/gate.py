"""RequestGate: the one state every process of a run consults before it sends a request to a model.

A run's requests may leave from several worker processes (gating/evals/fanout.py), yet the manifest's
`evals.concurrency` bounds the requests in flight for the whole run, and a provider's 429 with
`Retry-After` is an answer to the run, not to the one request that saw it. So the gate holds, in
memory the processes share (a fork-inherited `multiprocessing.RawArray` under one lock):

- `limit`: requests allowed in flight across all processes (the concurrency; an adaptive pacer may
  lower and raise it while the run goes on: `set_limit`);
- `inflight`: requests sent and not yet answered, in every process;
- `paused_until`: a `time.monotonic()` instant (the clock is system-wide, so processes agree) before
  which no process sends anything: set by `pause(seconds)` when any process is told to back off;
- `peak`: the most requests that were in flight at once (what a report or a test can check).

`ClientPool.post` calls `acquire()` before each request and `release()` after it; the retry loops call
`pause()` with the wait a 429's Retry-After asked for. A single-process run uses the same gate with
process-local state (`RequestGate(n)`), so both behave alike. The critical sections are a few loads and
stores, short enough to take a process lock from inside an event loop. Waiting (a pause, or a limit
lowered below what is in flight) sleeps on the event loop, polling at POLL_S.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from typing import Any

POLL_S = 0.005  # how often a request waiting for a free slot looks again
_LIMIT, _INFLIGHT, _PAUSED_UNTIL, _PEAK = range(4)


class RequestGate:
    """The run-wide in-flight budget and rate-limit pause; `shared=True` before forking worker processes."""

    def __init__(self, limit: int, *, shared: bool = False) -> None:
        if limit < 1:
            raise ValueError(f"a request gate needs a limit of at least 1, not {limit}")
        self.shared = shared
        if shared:
            ctx = multiprocessing.get_context("fork")
            self._v: Any = ctx.RawArray("d", 4)
            self._lock: Any = ctx.Lock()
        else:
            self._v = [0.0] * 4
            self._lock = threading.Lock()
        self._v[_LIMIT] = float(limit)
        self._v[_PAUSED_UNTIL] = 0.0

    @property
    def limit(self) -> int:
        return int(self._v[_LIMIT])

    @property
    def inflight(self) -> int:
        return int(self._v[_INFLIGHT])

    @property
    def peak(self) -> int:
        return int(self._v[_PEAK])

    @property
    def paused_until(self) -> float:
        return float(self._v[_PAUSED_UNTIL])

    def try_acquire(self) -> float:
        """Take a slot and return 0, or return how long to wait before asking again (nothing taken)."""
        with self._lock:
            v = self._v
            wait = float(v[_PAUSED_UNTIL]) - time.monotonic()
            if wait > 0:
                return wait
            if v[_INFLIGHT] >= v[_LIMIT]:
                return POLL_S
            v[_INFLIGHT] += 1
            if v[_INFLIGHT] > v[_PEAK]:
                v[_PEAK] = v[_INFLIGHT]
            return 0.0

    async def acquire(self) -> None:
        """Wait for a slot: no pause in force and fewer than `limit` requests in flight anywhere."""
        while (wait := self.try_acquire()) > 0:
            await asyncio.sleep(wait)

    def release(self) -> None:
        with self._lock:
            self._v[_INFLIGHT] = max(0.0, self._v[_INFLIGHT] - 1)

    def pause(self, seconds: float) -> None:
        """No process sends a request for `seconds` from now (an earlier, longer pause stands)."""
        with self._lock:
            self._v[_PAUSED_UNTIL] = max(self._v[_PAUSED_UNTIL], time.monotonic() + max(0.0, seconds))

    def set_limit(self, limit: int) -> None:
        """A new run-wide bound (at least 1); requests already in flight finish, new ones wait below it."""
        with self._lock:
            self._v[_LIMIT] = float(max(1, limit))
