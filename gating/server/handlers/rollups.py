"""Retention of the monitor's roll-ups: an hourly timed job drops the minutes (and the trace ids
feedback may name) older than GATING_MONITOR_RETENTION_DAYS."""

from __future__ import annotations

import time

from gating.server.handlers import JobContext, Registry
from gating.server.rollup_store import RollupStore

PRUNE_SECONDS = 3600.0


def register(registry: Registry) -> None:
    registry.every("monitor_retention", lambda _settings: PRUNE_SECONDS)(prune)


def prune(ctx: JobContext) -> None:
    store = ctx.rollups if isinstance(ctx.rollups, RollupStore) else RollupStore(ctx.settings.queue_location)
    before = int((time.time() - ctx.settings.monitor_retention_days * 86400) // 60)
    n = store.prune(before)
    ctx.log.info("monitor retention: %d minute roll-up%s older than %.4g days dropped", n, "" if n == 1 else "s",
                 ctx.settings.monitor_retention_days)
