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
                     level: float = 0.95, seed: int = 20240601, weights: Sequence[float] | None = None) -> Interval:
    """Percentile interval of mean(head - base) over resampled case pairs (fixed seed); with case
    weights, of the weighted mean (a pair is resampled with its weight)."""
    if len(base) != len(head) or (weights is not None and len(weights) != len(base)):
        raise ValueError("paired bootstrap needs equally long samples")
    n = len(base)
    if n == 0:
        return Interval(0.0, 0.0, 0.0, level)
    w = list(weights) if weights is not None else [1.0] * n
    diffs = [h - b for b, h in zip(base, head, strict=True)]
    delta = sum(d * x for d, x in zip(diffs, w, strict=True)) / sum(w)
    if all(d == diffs[0] for d in diffs):
        return Interval(delta, delta, delta, level)
    rng = random.Random(seed)
    idx = range(n)
    wd = [d * x for d, x in zip(diffs, w, strict=True)]

    def resample() -> float:
        pick = rng.choices(idx, k=n)
        return sum(map(wd.__getitem__, pick)) / sum(map(w.__getitem__, pick))

    means = sorted(resample() for _ in range(resamples))
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


def quadratic_weighted_kappa(a: Sequence[int], b: Sequence[int | None], labels: Sequence[int]) -> float | None:
    """Cohen's kappa with quadratic weights w_ij = (i - j)^2 / (k - 1)^2 (as sklearn's cohen_kappa_score).
    None in `b` (a judge reply with no score) is a category of its own at the greatest distance (w = 1)
    from every label, so it counts as disagreement and never drops out. None when kappa is undefined:
    no chance disagreement to correct for (constant ratings on both sides, one example)."""
    k = len(labels)
    n = len(a)
    if n == 0 or k < 2:
        return None
    pos = {lab: i for i, lab in enumerate(labels)}
    cols_of = [*labels, None]
    obs = [[0] * (k + 1) for _ in range(k)]
    for x, y in zip(a, b, strict=True):
        obs[pos[x]][k if y is None else pos[y]] += 1
    rows = [sum(r) for r in obs]
    cols = [sum(obs[i][j] for i in range(k)) for j in range(k + 1)]
    num = den = 0.0
    for i in range(k):
        for j in range(k + 1):
            w = 1.0 if cols_of[j] is None else (i - j) ** 2 / (k - 1) ** 2
            num += w * obs[i][j]
            den += w * rows[i] * cols[j] / n
    return 1.0 - num / den if den else None


# -- paired tests on per-case values, and the family of metrics one run tests ----------------------

GRID = 120  # differences are compared in steps of 1/120: exact for halves, thirds, quarters, fifths, sixths, eighths
EXACT_LIMIT = 2_000_000  # bits of the generating function; beyond it the normal approximation is used


@dataclass(frozen=True)
class PairedTest:
    """A two-sided paired test of head against base on one metric's per-case values."""

    n: int  # paired cases
    worse: int  # cases whose value fell
    better: int  # cases whose value rose
    delta: float  # mean(head - base)
    p_value: float
    method: str  # "McNemar exact" | "sign-flip exact" | "sign-flip (normal approximation)", "weighted " before either


def sign_flip_p(diffs: Sequence[float], grid: int = GRID) -> tuple[float, str]:
    """Two-sided p of the paired sign-flip (permutation) test on sum(diffs): under no change each
    case's difference is as likely to have either sign. Exact, by counting the 2^k sign patterns of
    the k non-zero differences through a generating function held in one integer (each coefficient
    in k + 1 bits); the normal approximation beyond EXACT_LIMIT. On differences of -1, 0 and 1 it is
    the exact McNemar test."""
    a = [abs(round(d * grid)) for d in diffs]
    r = [round(d * grid) for d in diffs]
    a = [x for x in a if x]
    k, total, observed = len(a), sum(a), abs(sum(r))
    if k == 0 or observed == 0:
        return 1.0, "sign-flip exact"
    bits = k + 1
    if total * bits > EXACT_LIMIT:
        sd = math.sqrt(sum(x * x for x in a))
        z = (observed - 1) / sd  # continuity: the sum moves in steps of at least 2
        return min(1.0, math.erfc(z / math.sqrt(2))), "sign-flip (normal approximation)"
    poly = 1
    for x in a:
        poly += poly << (x * bits)  # * (1 + t^x): sign patterns by the sum of the positive part
    at_least = (total + observed) // 2  # the positive part of a sum at least as far from 0
    tail = (poly >> (at_least * bits)) % ((1 << bits) - 1)  # the sum of the coefficients from there
    return min(1.0, 2 * tail / (1 << k)), "sign-flip exact"


def paired_test(base: Sequence[float], head: Sequence[float], weights: Sequence[float] | None = None) -> PairedTest:
    """The one test of a metric: exact McNemar when every value is pass (1) or fail (0), the exact
    sign-flip test on per-case differences otherwise (scores, or pass rates over repeats).

    With case weights that are not all equal, the sign-flip test on the weighted differences w_i * d_i:
    under no change each case's difference is as likely to have either sign whatever its weight, so
    the test stays exact; McNemar counts flips and cannot weigh them (nor can repeating a case w
    times: the copies are not independent). The weights are rescaled to a mean of 1 (the test does
    not depend on their scale) before the differences go onto the 1/GRID grid."""
    if len(base) != len(head) or (weights is not None and len(weights) != len(base)):
        raise ValueError("a paired test needs equally long samples")
    diffs = [h - b for b, h in zip(base, head, strict=True)]
    n = len(diffs)
    worse, better = sum(d < 0 for d in diffs), sum(d > 0 for d in diffs)
    if weights is not None and n and any(w != weights[0] for w in weights):
        scale = n / sum(weights)
        wd = [d * w * scale for d, w in zip(diffs, weights, strict=True)]
        p, method = sign_flip_p(wd)
        return PairedTest(n, worse, better, sum(wd) / n, p, "weighted " + method)
    delta = sum(diffs) / n if n else 0.0
    if all(v in (0.0, 1.0) for v in (*base, *head)):
        return PairedTest(n, worse, better, delta, mcnemar_exact(worse, better).p_value, "McNemar exact")
    p, method = sign_flip_p(diffs)
    return PairedTest(n, worse, better, delta, p, method)


def min_detectable(n: int, alpha: float) -> int | None:
    """The fewest of n paired cases that must get worse, with none getting better, for a two-sided
    paired test to reach p < alpha: 2 * 2^-k < alpha. More repeats per case cannot lower it: the
    tests count cases. None when even all n would not do."""
    k = 1
    while 2.0 ** (1 - k) >= alpha:
        k += 1
    return k if k <= n else None


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment: rejecting where the adjusted p < alpha keeps the chance of any
    false rejection among the family at most alpha, whatever the dependence between the tests."""
    order = sorted(p_values, key=lambda k: (p_values[k], k))
    m, out, running = len(order), {}, 0.0
    for i, name in enumerate(order):
        running = max(running, min(1.0, (m - i) * p_values[name]))
        out[name] = running
    return out
