"""Statistics a reader can trust: what a suite can detect, repeats, the family of metrics, one test per
metric, what a pass says held, and error rates shown by seeded simulation."""

from __future__ import annotations

import random

import pytest

from gating.check.output import CheckResult, title
from gating.check.run import conclude
from gating.evals.compare import compare
from gating.evals.metrics import compute_metrics
from gating.evals.records import AssertionResult, CaseResult, RunResult
from gating.evals.report import render_eval_markdown


def case(cid: str, passed: bool, *, scores: dict[str, float] | None = None, error: str | None = None,
         repeats: list[bool] | None = None) -> CaseResult:
    scores = {"contains": 1.0 if passed else 0.0} if scores is None else scores
    asserts = [] if error else [AssertionResult(k, v >= 0.5, v, "ok" if v >= 0.5 else "low", k) for k, v in scores.items()]
    c = CaseResult(cid, "answer", passed, 0.0 if error else sum(scores.values()) / max(1, len(scores)),
                   {} if error else dict(scores), asserts, "out", error, "boom" if error else "",
                   {"llm": 100.0, "total": 100.0}, 10, 5, 0.0001)
    if repeats:
        c.repeats, c.repeat_passed = len(repeats), list(repeats)
    return c


def run(cases: list[CaseResult], rev: str = "head") -> RunResult:
    return RunResult(rev, f"sha256:{rev}", "sha256:data", cases, compute_metrics(cases))


REG = {"regression": {"max_drop": 0.02, "alpha": 0.05}}


def test_a_small_suite_says_what_it_can_detect_and_does_not_wave_a_real_drop_through() -> None:
    """14 cases, 5 go pass → fail (1.00 → 0.64): McNemar exact p = 0.0625. Not significant, but the
    suite could not have confirmed anything smaller than 6 of 14, and more repeats would not help."""
    base = run([case(f"c{i:02}", True) for i in range(14)], "base")
    head = run([case(f"c{i:02}", i >= 5) for i in range(14)])
    cmp = compare(base, head, REG)
    assert cmp.verdict == "inconclusive"
    assert cmp.reasons == [
        "pass rate fell by 0.357 on 14 paired cases (more than max_drop 0.02); McNemar exact p = 0.0625 "
        "(5 pass→fail, 0 fail→pass) ≥ alpha 0.05: not confirmed; with 14 paired cases the smallest drop this "
        "suite can confirm at alpha 0.05 is 0.429 (6 cases worse, none better); add cases (repeats make each "
        "case surer, but the test counts cases)"]
    assert "repeats" not in cmp.reasons[0].split("add cases")[0]
    # the gate does not wave it through: fail-on regression (the default) blocks; fail-on threshold relaxes
    assert conclude("inconclusive", False, "regression") == "failure"
    assert conclude("inconclusive", False, "threshold") == "neutral"
    r = CheckResult("inconclusive", "failure", cmp.reasons, "h" * 40, "b" * 40, comparison=cmp)
    assert title(r).startswith("Inconclusive (blocking: a drop it could not confirm needs a person or more cases): "
                               "pass rate fell by 0.357")


def test_a_suite_too_small_to_confirm_anything_says_so() -> None:
    base = run([case(f"c{i}", True) for i in range(4)], "base")
    head = run([case(f"c{i}", False) for i in range(4)])
    cmp = compare(base, head, REG)
    assert cmp.verdict == "inconclusive"
    assert cmp.reasons[0].endswith("not confirmed; 4 paired cases cannot confirm any drop at alpha 0.05: that "
                                   "takes at least 6 cases getting worse; add cases (repeats do not help: the "
                                   "test counts cases)")


def test_repeats_are_tested_as_per_case_pass_rates() -> None:
    """Each of 12 cases passes 3 of 3 repeats at base and 2 of 3 at head: every case still passes by
    majority, so case outcomes show no flip at all; the per-case pass rates show the drop."""
    base = run([case(f"c{i}", True, repeats=[True, True, True]) for i in range(12)], "base")
    head = run([case(f"c{i}", True, repeats=[True, False, True]) for i in range(12)])
    assert head.metrics["pass_rate"] == 2 / 3  # the mean of the cases' pass rates, not of their majorities
    cmp = compare(base, head, {"regression": {"max_drop": 0.05, "alpha": 0.05}})
    assert cmp.verdict == "fail"
    assert cmp.reasons[0].startswith("pass rate fell by 0.333 on 12 paired cases (more than max_drop 0.05); "
                                     "sign-flip exact p = 0.000488 (12 cases worse, 0 better) < alpha 0.05")
    assert cmp.mcnemar["b"] == 0  # case outcomes did not flip


def test_a_pass_fail_assertion_gets_one_test_the_pass_rates() -> None:
    """The assertion's score is the pass/fail of its case: its bootstrap interval lay below zero and
    failed the pull request that McNemar on the same flips called not significant."""
    base = run([case(f"c{i:02}", True) for i in range(14)], "base")
    head = run([case(f"c{i:02}", i >= 5) for i in range(14)])
    cmp = compare(base, head, REG)
    assert cmp.verdict == "inconclusive" and not any("score:contains" in r for r in cmp.reasons)
    assert [t["metric"] for t in cmp.tests] == ["pass_rate"]
    assert cmp.row("score:contains").note == "the pass rate's flips (tested once, as pass_rate)"
    # a binary assertion that is not its case's whole verdict is tested by McNemar on its own flips
    b2 = run([case(f"c{i:02}", True, scores={"a": 1.0, "b": 1.0}) for i in range(14)], "base")
    h2 = run([case(f"c{i:02}", i >= 5, scores={"a": 1.0 if i >= 5 else 0.0, "b": 1.0 if i >= 3 else 0.0})
              for i in range(14)])
    cmp2 = compare(b2, h2, REG)
    assert {t["metric"]: t["method"] for t in cmp2.tests} == {"pass_rate": "McNemar exact", "score:b": "McNemar exact"}
    assert cmp2.verdict == "inconclusive"


def test_ten_score_metrics_share_alpha_and_the_report_says_so() -> None:
    names = [f"m{k}" for k in range(10)]
    rng = random.Random(7)
    base = run([case(f"c{i}", True, scores={n: rng.choice([0.5, 0.75, 1.0]) for n in names}) for i in range(30)], "base")
    head = run([case(f"c{i}", True, scores={n: (0.25 if n == "m0" else rng.choice([0.5, 0.75, 1.0])) for n in names})
                for i in range(30)])
    cmp = compare(base, head, REG)
    assert cmp.verdict == "fail"
    assert cmp.reasons[0].startswith("mean score:m0 fell by ")
    assert "Holm-adjusted across 10 metrics p = " in cmp.reasons[0]
    md = render_eval_markdown(cmp)
    assert "Paired tests, two-sided, Holm-adjusted across the 10 metrics tested (alpha 0.05):" in md


def test_nothing_changed_false_fail_rate_with_ten_score_metrics_stays_at_nominal() -> None:
    """2,000 seeded runs where head and base are draws of the same system, ten score metrics each:
    without a correction about 1 in 4 failed; Holm keeps a false `fail` at about alpha / 2."""
    rng = random.Random(20260101)
    grades = [0.0, 0.25, 0.5, 0.75, 1.0]
    names = [f"m{k}" for k in range(10)]
    fails, runs = 0, 2000
    for _ in range(runs):
        n = 12
        sides = []
        for side in ("base", "head"):
            cases = [CaseResult(f"c{i}", "p", True, 1.0, {m: rng.choice(grades) for m in names}) for i in range(n)]
            sides.append(RunResult(side, side, "d", cases, {"pass_rate": 1.0}))
        if compare(sides[0], sides[1], {"regression": {"max_drop": 0.0, "alpha": 0.05}}).verdict == "fail":
            fails += 1
    assert fails / runs <= 0.025 + 0.01, fails / runs


def test_a_pass_says_what_held() -> None:
    # a drop a test confirms, under max_drop: not "no significant regression"
    base = run([case(f"c{i:03}", True) for i in range(400)], "base")
    head = run([case(f"c{i:03}", i >= 8) for i in range(400)])
    cmp = compare(base, head, {"regression": {"max_drop": 0.05, "alpha": 0.05}})
    assert (cmp.verdict, cmp.reasons) == ("pass", [
        "no thresholds set; 400 paired cases, no metric fell by more than max_drop 0.05; pass rate fell by 0.02, "
        "confirmed (p = 0.00781) but within max_drop 0.05"])
    # nothing paired
    cmp = compare(run([case("a", True)], "base"), run([case("b", True)]), {})
    assert cmp.reasons == ["no thresholds set; no case paired with the base, so no regression test ran"]
    # every head case errored (as failures of the case: a template that did not render)
    errs = run([case(f"c{i}", False, error="render") for i in range(5)])
    cmp = compare(run([case(f"c{i}", False, error="render") for i in range(5)], "base"), errs, {})
    assert (cmp.verdict, cmp.reasons) == ("error", [
        "every one of the 5 cases errored at head (render: 5): no answer was graded"])
    assert "no significant regression" not in render_eval_markdown(cmp)


def test_infrastructure_errors_are_not_scores_of_zero() -> None:
    """A judge that timed out gave no grade: the score metric is over the cases that were graded, and
    the verdict is `error` (fail closed), never a drop of the mean towards 0."""
    graded = [case(f"c{i}", True, scores={"factuality": 1.0}) for i in range(9)]
    timed_out = case("t", False, scores={"factuality": 0.0}, error="timeout")
    head = run([*graded, timed_out])
    assert head.metrics["score:factuality"] == 1.0 and head.metrics["score"] == 1.0
    cmp = compare(None, head, {"thresholds": {"score:factuality": ">= 0.95"}})
    assert cmp.verdict == "error" and cmp.row("score:factuality").status == "ok"


def test_a_tie_between_repeats_is_not_a_failure() -> None:
    from gating.evals.dataset import Case
    from gating.evals.runner import _Run
    from gating.evals.targets import TargetOutput

    ok = AssertionResult("equals", True, 1.0, "ok", "equals")
    bad = AssertionResult("equals", False, 0.0, "no", "equals")
    one = Case("c", "p", {}, None, ({"type": "equals", "value": "x"},), (), "d.jsonl", 1)
    agg = _Run(None, None, {}, None, 2)._aggregate(
        one, [(TargetOutput("x"), [ok], None, "", 0.0), (TargetOutput("y"), [bad], None, "", 0.0)])
    assert (agg.passed, agg.pass_rate, agg.repeat_passed) == (True, 0.5, [True, False])
    assert compute_metrics([agg])["pass_rate"] == 0.5


def test_latency_percentiles_are_over_requests_not_per_case_means() -> None:
    """One case of three repeats took 100, 100 and 1000 ms: its mean (400) hides the slow request."""
    c = case("a", True, repeats=[True, True, True])
    c.latency_ms = {"total": 400.0}
    c.repeat_latency_ms = [{"total": 100.0}, {"total": 100.0}, {"total": 1000.0}]
    m = compute_metrics([c])
    assert (m["latency_p50_ms"], m["latency_p95_ms"]) == (100.0, pytest.approx(910.0))
    cmp = compare(None, run([c]), {})
    assert cmp.latency["total"]["head_p95"] == pytest.approx(910.0)


def test_the_bootstrap_interval_is_withheld_on_small_suites_and_labelled_where_shown() -> None:
    small = compare(run([case(f"c{i}", True, scores={"s": 0.9}) for i in range(8)], "base"),
                    run([case(f"c{i}", True, scores={"s": 0.5 + 0.05 * i}) for i in range(8)]), REG)
    assert small.row("score:s").interval is None
    assert "Interval:" not in render_eval_markdown(small)
    big = compare(run([case(f"c{i}", True, scores={"s": 0.9}) for i in range(20)], "base"),
                  run([case(f"c{i}", True, scores={"s": 0.5 + 0.02 * i}) for i in range(20)]), REG)
    assert big.row("score:s").interval is not None and big.row("score:s").interval_level == 0.95
    assert ("Interval: paired bootstrap percentile interval of Δ at level 95%, for reading only (the tests "
            "decide); withheld below 20 paired cases, where it is too narrow.") in render_eval_markdown(big)


def test_small_suites_false_alarm_at_no_more_than_nominal() -> None:
    """At 8 paired cases the bootstrap interval lay below zero in 4-6% of no-change runs for a nominal
    2.5%; the exact sign-flip test that decides now keeps a false drop at or under alpha / 2."""
    rng = random.Random(8)
    fails, runs = 0, 2000
    for _ in range(runs):
        sides = [RunResult(s, s, "d", [CaseResult(f"c{i}", "p", True, 1.0, {"s": rng.random()}) for i in range(8)],
                           {"pass_rate": 1.0}) for s in ("base", "head")]
        fails += compare(sides[0], sides[1], {"regression": {"max_drop": 0.0, "alpha": 0.05}}).verdict == "fail"
    assert fails / runs <= 0.025 + 0.005, fails / runs
