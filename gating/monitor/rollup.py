"""Minute roll-ups: the one record the monitor's store keeps and its rules read.

Rules work on rates over windows ("error rate > 2% over 15 minutes, at least 500 requests"), so the
store keeps one record per minute per (repository, system, component, stage) instead of spans: a week
of traffic stays small enough to query in milliseconds, and records merge exactly (counts add,
latency sketches merge), so a window is the merge of its minutes and a restart loses nothing that was
written. Latency is kept as a log-bucketed sketch (relative accuracy 1%, the DDSketch construction)
because percentiles of a window cannot be computed from per-minute percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

# What a failed request was, from OpenTelemetry's `error.type` and the provider's status.
ERROR_CATEGORIES = ("rate_limit", "content_filter", "timeout", "parse", "other")
# Quality signals from span events or POST /feedback.
FEEDBACK_KINDS = ("positive", "negative", "edited", "followup", "completed")
# Where in a request the time went; "request" is the whole request (the root span).
STAGES = ("request", "embedding", "retrieval", "llm", "post")
WHOLE_SYSTEM = ""  # the component of a roll-up over every prompt/component


class LatencySketch:
    """Mergeable latency distribution in milliseconds; quantiles within `ACCURACY` relative error."""

    ACCURACY = 0.01
    _GAMMA = (1 + ACCURACY) / (1 - ACCURACY)
    _LOG_GAMMA = math.log(_GAMMA)
    _MIN_MS = 0.001  # values at or below this count in the zero bucket

    def __init__(self, buckets: dict[int, int] | None = None, zero: int = 0) -> None:
        self.buckets: dict[int, int] = dict(buckets or {})
        self.zero = zero

    @property
    def count(self) -> int:
        return self.zero + sum(self.buckets.values())

    def add(self, ms: float, n: int = 1) -> None:
        if ms <= self._MIN_MS:
            self.zero += n
            return
        key = math.ceil(math.log(ms) / self._LOG_GAMMA)
        self.buckets[key] = self.buckets.get(key, 0) + n

    def merge(self, other: LatencySketch) -> None:
        self.zero += other.zero
        for key, n in other.buckets.items():
            self.buckets[key] = self.buckets.get(key, 0) + n

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1) in ms, or None for an empty sketch."""
        total = self.count
        if total == 0:
            return None
        rank = q * (total - 1)
        seen = self.zero
        if rank < seen:
            return 0.0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if rank < seen:
                return 2 * self._GAMMA**key / (self._GAMMA + 1)  # the bucket's midpoint in relative terms
        return 2 * self._GAMMA ** max(self.buckets) / (self._GAMMA + 1)

    def values(self) -> Iterator[tuple[float, int]]:
        """(a bucket's representative value in ms, its count), smallest first: to re-bucket a sketch
        into a fixed histogram (Prometheus `le` buckets)."""
        if self.zero:
            yield 0.0, self.zero
        for key in sorted(self.buckets):
            yield 2 * self._GAMMA**key / (self._GAMMA + 1), self.buckets[key]

    def to_dict(self) -> dict[str, Any]:
        return {"zero": self.zero, "buckets": {str(k): n for k, n in sorted(self.buckets.items())}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencySketch:
        return cls({int(k): int(n) for k, n in data.get("buckets", {}).items()}, int(data.get("zero", 0)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LatencySketch) and (self.zero, self.buckets) == (other.zero, other.buckets)

    def __repr__(self) -> str:
        return f"LatencySketch(count={self.count}, p50={self.quantile(0.5)}, p99={self.quantile(0.99)})"


@dataclass
class Rollup:
    """One minute of one system's traffic, for one component and stage."""

    repo: str  # owner/name
    system: str  # the deployed system: commit SHA or snapshot digest the requests were attributed to
    component: str  # prompt/component name from gating.yml; WHOLE_SYSTEM for all of them
    stage: str  # one of STAGES
    minute: int  # unix time // 60
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # ERROR_CATEGORIES -> count
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0  # from the price table, in the table's currency
    latency: LatencySketch = field(default_factory=LatencySketch)
    feedback: dict[str, int] = field(default_factory=dict)  # FEEDBACK_KINDS -> count

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def merge(self, other: Rollup) -> None:
        """Add another roll-up's counts into this one (same key or a window total)."""
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost += other.cost
        self.latency.merge(other.latency)
        for mine, theirs in ((self.errors, other.errors), (self.feedback, other.feedback)):
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo, "system": self.system, "component": self.component, "stage": self.stage,
            "minute": self.minute, "requests": self.requests, "errors": dict(sorted(self.errors.items())),
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "cost": self.cost,
            "latency": self.latency.to_dict(), "feedback": dict(sorted(self.feedback.items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rollup:
        return cls(
            repo=data["repo"], system=data["system"], component=data["component"], stage=data["stage"],
            minute=int(data["minute"]), requests=int(data.get("requests", 0)),
            errors={k: int(v) for k, v in data.get("errors", {}).items()},
            input_tokens=int(data.get("input_tokens", 0)), output_tokens=int(data.get("output_tokens", 0)),
            cost=float(data.get("cost", 0.0)), latency=LatencySketch.from_dict(data.get("latency", {})),
            feedback={k: int(v) for k, v in data.get("feedback", {}).items()},
        )


def total(rollups: Iterable[Rollup], *, repo: str = "", system: str = "", component: str = WHOLE_SYSTEM,
          stage: str = "request", minute: int = 0) -> Rollup:
    """The merge of many roll-ups: a window's figures."""
    out = Rollup(repo=repo, system=system, component=component, stage=stage, minute=minute)
    for r in rollups:
        out.merge(r)
    return out


class RollupSource(Protocol):
    """What rules and canary analysis read: the roll-ups of a window [since, until) in unix minutes."""

    def rollups(self, repo: str, *, since: int, until: int, system: str | None = None,
                component: str | None = None, stage: str | None = None) -> Iterator[Rollup]: ...


class MemoryRollups:
    """A RollupSource over a list: for tests, bench scripts and evaluating recorded series."""

    def __init__(self, rollups: Iterable[Rollup] = ()) -> None:
        self.items: list[Rollup] = list(rollups)

    def add(self, rollup: Rollup) -> None:
        self.items.append(rollup)

    def rollups(self, repo: str, *, since: int, until: int, system: str | None = None,
                component: str | None = None, stage: str | None = None) -> Iterator[Rollup]:
        for r in self.items:
            if (r.repo == repo and since <= r.minute < until and (system is None or r.system == system)
                    and (component is None or r.component == component) and (stage is None or r.stage == stage)):
                yield r


class IndexedRollups:
    """A RollupSource over records indexed by (repository, minute): a window query reads only its
    minutes, so evaluating rules at every minute of weeks of records stays fast (tests, bench)."""

    def __init__(self, rollups: Iterable[Rollup] = ()) -> None:
        self.by_minute: dict[tuple[str, int], list[Rollup]] = {}
        for r in rollups:
            self.add(r)

    def add(self, rollup: Rollup) -> None:
        self.by_minute.setdefault((rollup.repo, rollup.minute), []).append(rollup)

    def rollups(self, repo: str, *, since: int, until: int, system: str | None = None,
                component: str | None = None, stage: str | None = None) -> Iterator[Rollup]:
        for minute in range(since, until):
            for r in self.by_minute.get((repo, minute), ()):
                if ((system is None or r.system == system) and (component is None or r.component == component)
                        and (stage is None or r.stage == stage)):
                    yield r

