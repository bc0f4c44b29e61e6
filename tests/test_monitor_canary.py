"""Canary analysis on synthetic traffic: a healthy canary passes once enough traffic arrived, an
error regression of one percentage point at a 2% baseline is caught at the stated power, equal
systems rarely fail, and too little traffic answers "not enough traffic yet"."""

from __future__ import annotations

import statistics

import pytest

from gating.monitor.canary import (
    FAIL,
    PASS,
    WAIT,
    CanaryError,
    Policy,
    analyze,
    mann_whitney,
    sample_size,
    two_proportion,
)
from gating.monitor.rollup import LatencySketch, MemoryRollups
from tests.monitor_traffic import REPO, START, Incident, traffic

CANARY, BASELINE = "c" * 40, "b" * 40
AFTERNOON = START + 14 * 60  # Monday 14:00 UTC: about 115 requests a minute
RUNS = 200


def window(seed: int, canary_rate: float, minutes: int, *, baseline_rate: float = 0.02, scale: float = 1.0,
           incidents: tuple[Incident, ...] = ()) -> MemoryRollups:
    return MemoryRollups([
        *traffic(minutes=minutes, start=AFTERNOON, seed=seed, system=BASELINE, error_rate=baseline_rate),
        *traffic(minutes=minutes, start=AFTERNOON, seed=100_000 + seed, system=CANARY, error_rate=canary_rate,
                 scale=scale, incidents=incidents)])


def run(source: MemoryRollups, minutes: int, policy: Policy | None = None):
    return analyze(source, REPO, [CANARY], [BASELINE], AFTERNOON, AFTERNOON + minutes, policy)


def test_sample_size_for_one_point_at_two_percent():
    # one-sided alpha 0.05, power 0.8: the textbook figure for 2% -> 3% is about 3,000 per group
    assert sample_size(0.02, 0.01, 0.05, 0.8) == 3013
    assert sample_size(0.02, 0.01, 0.01, 0.9) > sample_size(0.02, 0.01, 0.05, 0.8)
    assert sample_size(0.02, 0.02) < sample_size(0.02, 0.01)


def test_too_little_traffic_answers_not_enough_traffic_yet_with_the_figures():
    a = run(window(1, 0.02, 5), 5)
    assert a.verdict == WAIT
    assert a.requests[0] < a.required_requests
    assert a.reason.startswith("not enough traffic yet: error rate")
    assert f"needs {a.required_requests:,} requests on each" in a.reason
    assert a.to_dict()["verdict"] == "not enough traffic yet" and a.to_dict()["pass"] is False


def test_a_healthy_canary_passes_once_enough_traffic_arrived():
    early = run(window(2, 0.004, 5, baseline_rate=0.004), 5)
    later = run(window(2, 0.004, 90, baseline_rate=0.004), 90)
    assert early.verdict == WAIT
    assert later.verdict == PASS, later.reason
    assert later.requests[0] >= later.required_requests
    assert {c.name for c in later.checks} >= {"error_rate", "latency:request", "latency:retrieval", "latency:llm",
                                              "tokens_per_request", "cost_per_request", "negative_feedback_rate"}
    assert later.reason.startswith("no regression in")


def test_one_point_regression_at_two_percent_is_caught_at_the_stated_power():
    """At about the minimum sample the analysis asks for, the detection rate is at least the stated
    power (0.8), less a margin for 200 runs (standard error 0.03)."""
    policy = Policy(alpha=0.05, power=0.8, min_effect=0.01)
    verdicts, sizes = [], []
    for seed in range(RUNS):
        a = run(window(seed, 0.03, 32), 32, policy)
        verdicts.append(a.verdict)
        sizes.append(a.requests[0] / a.required_requests)
    assert 1.0 <= statistics.median(sizes) <= 1.3  # measured near the minimum sample, not far above it
    detected = verdicts.count(FAIL) / RUNS
    assert detected >= policy.power - 0.07, detected


def test_equal_systems_fail_at_most_alpha_of_the_time():
    policy = Policy(alpha=0.05)
    false_alarms = sum(run(window(seed, 0.02, 40), 40, policy).verdict == FAIL for seed in range(RUNS)) / RUNS
    assert false_alarms <= policy.alpha + 0.04, false_alarms


def test_a_token_blowup_fails_on_tokens_and_cost_with_figures():
    src = window(3, 0.004, 60, baseline_rate=0.004, incidents=(Incident("token_blowup", AFTERNOON, 60),))
    a = run(src, 60)
    assert a.verdict == FAIL
    assert {c.name for c in a.failed} == {"tokens_per_request", "cost_per_request"}
    assert "tokens per request 3,6" in a.reason and "+29" in a.reason


def test_a_retrieval_slowdown_fails_that_stage():
    src = window(4, 0.004, 60, baseline_rate=0.004, incidents=(Incident("retrieval_latency", AFTERNOON, 60),))
    a = run(src, 60)
    assert a.verdict == FAIL
    assert "latency:retrieval" in {c.name for c in a.failed}
    assert "retrieval latency p" in a.reason and "Mann-Whitney" in a.reason


def test_statistics_on_their_own():
    assert two_proportion(30, 1000, 20, 1000) < 0.1 < two_proportion(20, 1000, 30, 1000)
    assert two_proportion(0, 0, 1, 10) == 1.0
    slow, fast = LatencySketch(), LatencySketch()
    slow.add(200.0, 500)
    fast.add(100.0, 500)
    assert mann_whitney(slow, fast) < 1e-6 and mann_whitney(fast, slow) > 0.99
    mixed = LatencySketch()
    mixed.add(100.0, 250)
    mixed.add(200.0, 250)
    assert mann_whitney(mixed, mixed) == pytest.approx(0.5)
    assert mann_whitney(fast, fast) == 1.0  # every value tied: nothing to tell apart


def test_bad_questions_are_refused_by_name():
    src = MemoryRollups()
    with pytest.raises(CanaryError, match="same system"):
        analyze(src, REPO, [CANARY], [CANARY], 0, 10)
    with pytest.raises(CanaryError, match="window is empty"):
        analyze(src, REPO, [CANARY], [BASELINE], 10, 10)
    with pytest.raises(CanaryError, match="alpha must be between 0 and 1"):
        analyze(src, REPO, [CANARY], [BASELINE], 0, 10, Policy(alpha=1.5))


def test_each_side_is_matched_by_its_sha_and_its_snapshot_digest():
    """Telemetry names its system by commit SHA or by snapshot digest: both count for a side, unless
    both commits have the same system (then the digest tells nothing apart and is left out)."""
    from gating.monitor.canary import analyze, sides

    canary, stable, d1, d2 = "c" * 40, "b" * 40, "sha256:" + "1" * 64, "sha256:" + "2" * 64
    assert sides(canary, stable, {canary: d2, stable: d1}) == ([canary, d2], [stable, d1], [])
    c, b, notes = sides(canary, stable, {canary: d1, stable: d1})
    assert (c, b) == ([canary], [stable])
    assert notes == [f"the canary and the baseline have the same system (snapshot {d1[:19]}): telemetry is matched by "
                     "commit SHA only, so spans naming only gating.snapshot count on neither side"]
    c, b, notes = sides(canary, stable, {stable: d1, canary: None}, {})
    assert (c, b, notes) == ([canary], [stable, d1], ["the canary's snapshot is not known (no valid gating.yml there): "
                                                      "its telemetry is matched by commit SHA only"])

    source = MemoryRollups()  # the stable side sent by SHA for half the window, by digest after
    source.items += traffic(weeks=0, minutes=30, start=START, seed=1, system=stable, error_rate=0.004)
    source.items += traffic(weeks=0, minutes=30, start=START + 30, seed=2, system=d1, error_rate=0.004)
    source.items += traffic(weeks=0, minutes=60, start=START, seed=3, system=d2, error_rate=0.004)
    c, b, _ = sides(canary, stable, {canary: d2, stable: d1})
    a = analyze(source, REPO, c, b, START, START + 60)
    by_sha = analyze(source, REPO, [canary], [stable], START, START + 60)
    assert a.requests[1] == by_sha.requests[1] + analyze(source, REPO, [canary], [d1], START, START + 60).requests[1]
    assert a.requests[0] > 0 == by_sha.requests[0] and a.to_dict()["canary"]["systems"] == [canary, d2]
