"""Synthetic production traffic: weeks of minute roll-ups with a weekly shape and injected incidents.

Weekdays peak in the afternoon and are quiet at night; weekends carry 40% of a weekday's traffic.
Incidents change one thing for a stretch of minutes: the error rate, one stage's latency, or the
tokens per request.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gating.monitor.rollup import IndexedRollups, Rollup

__all__ = ["IndexedRollups"]  # the tests' RollupSource over weeks of records

REPO = "acme/support-bot"
SYSTEM = "a" * 40
COMPONENT = "answer"
# Monday 2026-11-02 00:00 UTC: week boundaries fall on midnight between Sunday and Monday.
START = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() // 60)
WEEK = 7 * 24 * 60
BASE_LATENCY = {"request": 900.0, "embedding": 40.0, "retrieval": 120.0, "llm": 700.0}
TOKENS_IN, TOKENS_OUT = 700, 200
PRICE_IN, PRICE_OUT = 2.5e-6, 10e-6  # USD per token
MODEL = "gpt-4o-2024-08-06"  # priced at PRICE_IN and PRICE_OUT in gating/evals/prices.json


@dataclass(frozen=True)
class Incident:
    kind: str  # error_spike | retrieval_latency | token_blowup | traffic_drop (30% of the usual requests)
    start: int  # unix minute
    minutes: int = 60

    def active(self, minute: int) -> bool:
        return self.start <= minute < self.start + self.minutes


def requests_at(minute: int) -> int:
    """Mean requests in a minute: a daily curve peaking at 15:00, 40% on Saturday and Sunday."""
    day = ((minute - START) // (24 * 60)) % 7  # 0 = Monday
    hour = ((minute - START) % (24 * 60)) / 60
    daily = 0.15 + 0.85 * max(0.0, math.sin(math.pi * (hour - 6) / 18)) ** 2 if hour >= 6 else 0.15
    return int(120 * daily * (0.4 if day >= 5 else 1.0))


def traffic(weeks: int = 4, incidents: Sequence[Incident] = (), seed: int = 1, system: str = SYSTEM,
            repo: str = REPO, start: int = START, stages: Sequence[str] = ("request", "retrieval", "llm"),
            minutes: int | None = None, error_rate: float | None = None, scale: float = 1.0) -> Iterator[Rollup]:
    """Minute roll-ups from `start` for `weeks` weeks (or `minutes` minutes); `error_rate` replaces the
    usual 0.4% outside incidents, `scale` multiplies the traffic (a canary's share)."""
    rng = random.Random(seed)
    for minute in range(start, start + (minutes if minutes is not None else weeks * WEEK)):
        hits = {i.kind for i in incidents if i.active(minute)}
        mean = int(requests_at(minute) * scale)
        if "traffic_drop" in hits:
            mean = int(mean * 0.3)
        n = max(0, int(rng.gauss(mean, math.sqrt(mean) if mean else 0)))
        if n == 0:
            continue
        error_p = 0.08 if "error_spike" in hits else 0.004 if error_rate is None else error_rate
        errors = sum(1 for _ in range(n) if rng.random() < error_p)
        blowup = 4.0 if "token_blowup" in hits else 1.0
        tin, tout = int(n * TOKENS_IN * blowup * rng.uniform(0.95, 1.05)), int(n * TOKENS_OUT * blowup * rng.uniform(0.95, 1.05))
        for stage in stages:
            r = Rollup(repo=repo, system=system, component=COMPONENT, stage=stage, minute=minute, requests=n)
            slow = 4.0 if stage in ("retrieval", "request") and "retrieval_latency" in hits else 1.0
            base = BASE_LATENCY[stage] * slow
            if stage == "request" and "retrieval_latency" in hits:
                base = BASE_LATENCY["request"] + 3 * BASE_LATENCY["retrieval"]
            draws = 8
            for _ in range(draws):
                r.latency.add(base * rng.lognormvariate(0, 0.35), max(1, n // draws))
            if stage == "request":
                r.errors = {"timeout": errors} if errors else {}
                r.input_tokens, r.output_tokens = tin, tout
                r.cost = tin * PRICE_IN + tout * PRICE_OUT
                neg = sum(1 for _ in range(n // 10) if rng.random() < 0.05)
                r.feedback = {"negative": neg, "positive": n // 10 - neg}
            yield r


# The rules the week-of-traffic tests and the example's monitor: section use.
MONITOR = {
    "bake_minutes": 30,
    "rules": [
        {"name": "error-rate", "metric": "error_rate", "threshold": "> 0.02", "for": "15m", "min_requests": 200,
         "action": "rollback", "severity": "critical"},
        {"name": "retrieval-p95", "metric": "latency_p95", "stage": "retrieval", "threshold": "> 300",
         "for": "10m", "min_requests": 100, "action": "notify"},
        {"name": "tokens-per-request", "metric": "tokens_per_request", "threshold": "> 2x projected", "for": "15m",
         "min_requests": 100, "action": "rollback"},
        {"name": "cost-per-day", "metric": "cost_per_day", "threshold": "> 3x projected", "for": "1h",
         "min_requests": 100, "action": "notify", "severity": "warning"},
        {"name": "negative-feedback", "metric": "negative_feedback_rate", "threshold": "> 0.05", "for": "1h",
         "min_requests": 500, "action": "notify", "severity": "warning"},
        {"name": "traffic-drop", "metric": "requests_per_minute", "anomaly": {"z": 6, "weeks": 3, "direction": "down"},
         "for": "30m", "action": "notify", "severity": "warning"},
        {"name": "request-p95-anomaly", "metric": "latency_p95", "anomaly": {"z": 6, "weeks": 3}, "for": "15m",
         "min_requests": 100, "action": "notify", "severity": "warning"},
    ],
}
