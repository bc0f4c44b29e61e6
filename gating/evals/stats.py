"""Statistics for paired eval runs and judge calibration. Pure functions, no numpy needed.

- exact McNemar test on discordant pass/fail pairs (two-sided binomial test with p = 1/2);
- paired bootstrap percentile interval of a mean difference, with a fixed seed so a rerun of the
  same results gives the same interval;
- agreement statistics: exact, within-one, Cohen's quadratic weighted kappa, confusion matrix.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def binom_cdf(k: int, n: int, p: float = 0.5) -> float:
    """P(X <= k), X ~ Binomial(n, p). For p = 1/2 (McNemar) exactly, in integers: floats overflow
    (C(n, i)) and underflow (2^-n) beyond about a thousand discordant pairs."""
    if p == 0.5:
        total, term = 0, 1
        for i in range(k + 1):
            total += term
            term = term * (n - i) // (i + 1)
        return total / (1 << n)  # = 2**n, but an int to the type checker (int ** int may be a float)
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


@dataclass(frozen=True)
class McNemar:
    b: int  # pass -> fail (regressions)
    c: int  # fail -> pass (fixes)
    p_value: float

    def to_dict(self) -> dict[str, float]:
        return {"b": self.b, "c": self.c, "p_value": self.p_value}


def mcnemar_exact(b: int, c: int) -> McNemar:
    """Two-sided exact McNemar: p = min(1, 2 * P(X <= min(b, c))), X ~ Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return McNemar(b, c, 1.0)
    return McNemar(b, c, min(1.0, 2 * binom_cdf(min(b, c), n)))


def mcnemar_from_pairs(before: Sequence[bool], after: Sequence[bool]) -> McNemar:
    b = sum(1 for x, y in zip(before, after, strict=True) if x and not y)
    c = sum(1 for x, y in zip(before, after, strict=True) if not x and y)
    return mcnemar_exact(b, c)


@dataclass(frozen=True)
class Interval:
    delta: float  # observed mean(head - base)
    low: float
    high: float
    level: float = 0.95


def paired_bootstrap(base: Sequence[float], head: Sequence[float], *, resamples: int = 2000,
                     level: float = 0.95, seed: int = 20240601) -> Interval:
    """Percentile interval of mean(head - base) over resampled case pairs (fixed seed)."""
    if len(base) != len(head):
        raise ValueError("paired bootstrap needs equally long samples")
    n = len(base)
    if n == 0:
        return Interval(0.0, 0.0, 0.0, level)
    diffs = [h - b for b, h in zip(base, head, strict=True)]
    delta = sum(diffs) / n
    if all(d == diffs[0] for d in diffs):
        return Interval(delta, delta, delta, level)
    rng = random.Random(seed)
    idx = range(n)
    means = sorted(sum(map(diffs.__getitem__, rng.choices(idx, k=n))) / n for _ in range(resamples))
    alpha = (1 - level) / 2
    return Interval(delta, percentile(means, 100 * alpha) or 0.0, percentile(means, 100 * (1 - alpha)) or 0.0, level)


# -- agreement -----------------------------------------------------------------------------------


def confusion_matrix(a: Sequence[int], b: Sequence[int], labels: Sequence[int]) -> list[list[int]]:
    """rows = a (e.g. human), columns = b (e.g. judge)."""
    pos = {lab: i for i, lab in enumerate(labels)}
    m = [[0] * len(labels) for _ in labels]
    for x, y in zip(a, b, strict=True):
        m[pos[x]][pos[y]] += 1
    return m


def exact_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a) if a else 0.0


def within_one_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    return sum(abs(x - y) <= 1 for x, y in zip(a, b, strict=True)) / len(a) if a else 0.0


def quadratic_weighted_kappa(a: Sequence[int], b: Sequence[int], labels: Sequence[int]) -> float:
    """Cohen's kappa with quadratic weights w_ij = (i - j)^2 / (k - 1)^2 (as sklearn's cohen_kappa_score)."""
    k = len(labels)
    n = len(a)
    if n == 0 or k < 2:
        return 0.0
    obs = confusion_matrix(a, b, labels)
    rows = [sum(r) for r in obs]
    cols = [sum(obs[i][j] for i in range(k)) for j in range(k)]
    num = den = 0.0
    for i in range(k):
        for j in range(k):
            w = (i - j) ** 2 / (k - 1) ** 2
            num += w * obs[i][j]
            den += w * rows[i] * cols[j] / n
    return 1.0 - num / den if den else 1.0
