"""Timed jobs: one job per period however many processes tick, none for periods before a start."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from gating.server.handlers import Registry
from gating.server.jobs import JobQueue
from gating.server.schedule import Scheduler


def registry() -> Registry:
    reg = Registry()
    reg.every("tidy", lambda settings: settings.tidy_seconds)(lambda ctx: None)
    return reg


def test_two_processes_queue_one_job_per_period(queue_location: str) -> None:
    """Two processes, or two App replicas sharing a PostgreSQL queue: each opens the queue itself."""
    queue = JobQueue(queue_location)
    settings = SimpleNamespace(tidy_seconds=60.0)
    now = [6010.0]
    a = Scheduler(queue, registry(), settings, wake=lambda: None, clock=lambda: now[0])
    b = Scheduler(JobQueue(queue_location), registry(), settings, wake=lambda: None, clock=lambda: now[0])
    assert a.tick() == [] and b.tick() == []  # the period 6000..6060 began before they started
    now[0] = 6061.0
    first = a.tick()
    assert len(first) == 1 and b.tick() == [] and a.tick() == []
    now[0] = 6125.0
    assert len(b.tick()) == 1 and a.tick() == []
    jobs = [j for j in queue.list() if j.event == "schedule"]
    assert sorted(j.delivery for j in jobs) == ["schedule:tidy:101", "schedule:tidy:102"]


def test_a_period_of_zero_turns_the_timer_off(tmp_path: Path) -> None:
    queue = JobQueue(str(tmp_path / "jobs.db"))
    s = Scheduler(queue, registry(), SimpleNamespace(tidy_seconds=0), wake=lambda: None, clock=lambda: 10**9)
    assert s.interval() == 0.0 and s.tick() == []


def test_timed_jobs_are_not_webhook_events_of_the_app_manifest() -> None:
    assert "schedule" not in registry().events()
