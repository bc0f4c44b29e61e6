"""Timed jobs: each `registry.every(...)` handler is queued once per period, with no webhook.

The delivery id names the period (`schedule:<name>:<period>`), and the queue ignores a delivery it
has already seen, so however many gunicorn workers or App replicas share the queue, one job is queued
per period. A process queues only periods that began after it started, so a restart does not run a
timed job at once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from gating.server.handlers import SCHEDULE, Registry
from gating.server.jobs import JobQueue
from gating.server.settings import Settings


class Scheduler:
    def __init__(self, queue: JobQueue, registry: Registry, settings: Settings, wake: Callable[[], None],
                 clock: Callable[[], float] | None = None):
        # the queue's clock (the shared database's): replicas agree on when a period begins
        self.queue, self.registry, self.settings, self.wake = queue, registry, settings, wake
        self.clock = clock or queue.clock
        self.started_at = self.clock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def tick(self) -> list[int]:
        """Queue the timed jobs whose current period has begun since this process started."""
        now, ids = self.clock(), []
        for s in self.registry.schedules:
            every = float(s.seconds(self.settings) or 0)
            if every <= 0:
                continue
            period = int(now // every)
            if period * every < self.started_at:
                continue
            payload = {"action": s.name, "period": period, "every_seconds": every}
            handlers = [(h.name, h.key(payload)) for h in self.registry.match(SCHEDULE, payload)]
            ids += self.queue.enqueue(f"{SCHEDULE}:{s.name}:{period}", SCHEDULE, s.name, json.dumps(payload),
                                      handlers)
        if ids:
            self.wake()
        return ids

    def interval(self) -> float:
        periods = [float(s.seconds(self.settings) or 0) for s in self.registry.schedules]
        periods = [p for p in periods if p > 0]
        return max(0.05, min([*periods, 60.0]) / 4) if periods else 0.0

    def ensure_started(self) -> None:
        """Start the ticking thread in this process (again after a fork), if anything is timed."""
        if (self._thread and self._thread.is_alive()) or not self.interval():
            return
        self._thread = threading.Thread(target=self._loop, name="gating-schedule", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval()):
            try:
                self.tick()
            except Exception:  # a locked or missing queue file: try again next tick
                continue
