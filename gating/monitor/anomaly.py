"""Anomaly detection that knows the week: a robust z-score against the same time of past weeks.

LLM traffic has a weekly shape (quiet nights, quieter weekends, a Monday-morning peak), so a static
threshold on volume, latency or tokens either fires every weekend or misses a real drop on Tuesday
noon. Comparing a window with the same window one, two, ... weeks earlier takes the shape out; the
median and the median absolute deviation (MAD) of those past values, instead of the mean and the
standard deviation, keep one bad week in the history (last week's incident) from hiding this week's.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

WEEK_MINUTES = 7 * 24 * 60
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation
RELATIVE_FLOOR = 0.05  # a spread of at least 5% of the median: a flat history does not make noise an anomaly
ABSOLUTE_FLOOR = 1e-9


@dataclass(frozen=True)
class Baseline:
    """What the past weeks say about a value: their median, their robust spread, and how many there were."""

    median: float
    spread: float  # MAD scaled to a standard deviation, at least the floors above
    weeks: int
    values: tuple[float, ...]

    def z(self, value: float) -> float:
        return (value - self.median) / self.spread

    def to_dict(self) -> dict[str, object]:
        return {"median": self.median, "spread": self.spread, "weeks": self.weeks, "values": list(self.values)}


def baseline(values: Sequence[float]) -> Baseline | None:
    """The robust baseline of past values; None when there are none."""
    if not values:
        return None
    med = statistics.median(values)
    mad = statistics.median(abs(v - med) for v in values)
    spread = max(MAD_TO_SIGMA * mad, RELATIVE_FLOOR * abs(med), ABSOLUTE_FLOOR)
    return Baseline(med, spread, len(values), tuple(values))


def is_anomalous(z: float, limit: float, direction: str) -> bool:
    """Whether a z-score is past `limit` in the watched direction (up, down or both)."""
    if direction == "up":
        return z > limit
    if direction == "down":
        return z < -limit
    return abs(z) > limit
