"""Statistics against known values: hand-computed McNemar tables, kappa from a reference implementation."""

from __future__ import annotations

import pytest

from gating.evals.stats import (
    confusion_matrix,
    exact_agreement,
    mcnemar_exact,
    mcnemar_from_pairs,
    paired_bootstrap,
    percentile,
    quadratic_weighted_kappa,
    within_one_agreement,
)


@pytest.mark.parametrize(("b", "c", "p"), [
    # two-sided exact McNemar = min(1, 2 * P(X <= min(b, c))), X ~ Bin(b + c, 1/2):
    (1, 7, 18 / 256),  # 2 * (C(8,0) + C(8,1)) / 2^8
    (0, 5, 2 / 32),  # 2 * 1 / 2^5
    (2, 10, 158 / 4096),  # 2 * (1 + 12 + 66) / 2^12 (scipy.stats.binomtest(2, 12): 0.03857421875)
    (3, 3, 1.0),  # 2 * 42/64 > 1, capped
    (0, 0, 1.0),  # no discordant pairs: no evidence
], ids=["1-7", "0-5", "2-10", "3-3", "none"])
def test_mcnemar_exact_hand_computed(b: int, c: int, p: float) -> None:
    assert mcnemar_exact(b, c).p_value == pytest.approx(p, abs=1e-12)


def test_mcnemar_exact_on_thousands_of_discordant_pairs() -> None:
    """A 10,000-case dataset can flip more than 1,074 cases: 2^-n is below the smallest float there."""
    assert mcnemar_exact(600, 600).p_value == 1.0
    # the normal approximation with continuity correction: z = (1000.5 - 1050) / sqrt(2100 / 4) = -2.1603
    assert mcnemar_exact(1000, 1100).p_value == pytest.approx(0.03075, abs=0.001)
    assert mcnemar_exact(1100, 1000).p_value == mcnemar_exact(1000, 1100).p_value
    assert 0.0 <= mcnemar_exact(5000, 0).p_value < 1e-300


def test_mcnemar_counts_flips_from_pairs() -> None:
    before = [True, True, True, False, False, True]
    after = [False, True, False, True, False, True]
    t = mcnemar_from_pairs(before, after)
    assert (t.b, t.c, t.p_value) == (2, 1, 1.0)


# Reference values from scikit-learn's cohen_kappa_score (weights="quadratic" / None / "linear").
HUMAN = [1, 2, 3, 4, 5, 3, 4, 2, 5, 1, 3, 4]
JUDGE = [1, 2, 3, 5, 5, 2, 4, 3, 4, 1, 3, 3]


def test_quadratic_weighted_kappa_matches_the_reference_implementation() -> None:
    assert quadratic_weighted_kappa(HUMAN, JUDGE, [1, 2, 3, 4, 5]) == pytest.approx(0.8780487804878049, abs=1e-12)
    h = [4, 5, 2, 2, 2, 5, 4, 1, 1, 4, 3, 5, 5, 5, 5, 1, 2, 5, 4, 1]
    j = [4, 5, 2, 3, 3, 5, 4, 1, 2, 4, 3, 5, 5, 5, 5, 1, 1, 5, 4, 1]
    assert quadratic_weighted_kappa(h, j, [1, 2, 3, 4, 5]) == pytest.approx(0.9588477366255144, abs=1e-12)


def test_kappa_worked_example() -> None:
    # Two raters, two categories, 50 items: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no (the classic
    # example of Cohen's kappa): p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = 0.4. With two
    # categories the quadratic weights are those of unweighted kappa.
    a = [1] * 25 + [0] * 25
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert quadratic_weighted_kappa(a, b, [0, 1]) == pytest.approx(0.4)


def test_agreement_and_confusion() -> None:
    assert exact_agreement(HUMAN, JUDGE) == pytest.approx(7 / 12)
    assert within_one_agreement(HUMAN, JUDGE) == 1.0
    m = confusion_matrix(HUMAN, JUDGE, [1, 2, 3, 4, 5])
    assert m == [[2, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 1, 2, 0, 0], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]]
    assert quadratic_weighted_kappa([3, 3], [3, 3], [1, 2, 3, 4, 5]) is None  # undefined: nothing varies


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([1, 2, 3, 4, 10], 95, 8.8), ([5, 1, 3], 50, 3.0), ([1, 2, 3, 4], 25, 1.75), ([7], 95, 7.0), ([], 50, None),
])  # numpy.percentile's default (linear) method
def test_percentile_matches_numpy(values: list[float], q: float, expected: float | None) -> None:
    got = percentile(values, q)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_paired_bootstrap_is_deterministic_and_covers_the_delta() -> None:
    base = [0.5, 0.6, 0.7, 0.8, 0.9, 0.4, 0.55, 0.65, 0.75, 0.85] * 3
    head = [b - 0.1 + (0.05 if i % 3 == 0 else 0.0) for i, b in enumerate(base)]
    one = paired_bootstrap(base, head)
    two = paired_bootstrap(base, head)
    assert one == two  # fixed seed
    assert one.delta == pytest.approx(-0.1 + 0.05 / 3)  # every third case drops 0.05 only
    assert one.low <= one.delta <= one.high < 0
    assert paired_bootstrap(base, head, seed=1) != one
    same = paired_bootstrap([1.0, 0.0], [1.0, 0.0])
    assert (same.delta, same.low, same.high) == (0.0, 0.0, 0.0)
