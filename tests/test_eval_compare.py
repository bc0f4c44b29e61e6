"""Base vs head verdicts: thresholds, the regression rule, infrastructure errors, cost per day."""

from __future__ import annotations

import json

import pytest

from gating.evals.compare import compare
from gating.evals.metrics import compute_metrics, cost_usd, default_prices
from gating.evals.records import AssertionResult, CaseResult, Comparison, RunResult


def case(cid: str, passed: bool, *, score: float | None = None, error: str | None = None, tin: int = 100,
         tout: int = 20, cost: float | None = 0.0005, ms: float = 400.0, name: str = "contains") -> CaseResult:
    s = (1.0 if passed else 0.0) if score is None else score
    asserts = [] if error else [AssertionResult(name, passed, s, "ok" if passed else f"missing {cid!r}", name)]
    return CaseResult(cid, "answer", passed, s, {name: s} if not error else {}, asserts, "out", error,
                      "boom" if error else "", {"llm": ms, "total": ms}, tin, tout, cost)


def run(cases: list[CaseResult], rev: str = "head") -> RunResult:
    return RunResult(rev, f"sha256:{rev}", "sha256:data", cases, compute_metrics(cases))


CFG = {"thresholds": {"pass_rate": ">= 0.8"}, "regression": {"max_drop": 0.05, "alpha": 0.05},
       "traffic": {"requests_per_day": 1000}}


def test_threshold_failure_names_the_metric_and_the_cases() -> None:
    head = run([case(f"c{i}", i >= 3) for i in range(10)])
    cmp = compare(None, head, CFG)
    assert cmp.verdict == "fail"
    assert cmp.reasons == ["pass_rate is 0.7, threshold >= 0.8; failing cases: c0, c1, c2"]
    assert cmp.row("pass_rate").status == "fail" and cmp.failing == ["c0", "c1", "c2"]


def test_significant_drop_fails_with_mcnemar() -> None:
    base = run([case(f"c{i}", True) for i in range(20)], "base")
    head = run([case(f"c{i}", i >= 6) for i in range(20)])
    cmp = compare(base, head, {"regression": {"max_drop": 0.05, "alpha": 0.05}})
    assert cmp.verdict == "fail"
    assert cmp.mcnemar == {"b": 6, "c": 0, "p_value": 0.03125, "n": 20}
    assert cmp.reasons[0] == ("pass rate fell by 0.3 on 20 paired cases (more than max_drop 0.05); McNemar exact "
                              "p = 0.0312 (6 pass→fail, 0 fail→pass) < alpha 0.05; regressed: c0, c1, c2, c3, c4, c5")
    assert [f.id for f in cmp.flipped] == ["c0", "c1", "c2", "c3", "c4", "c5"]
    assert (cmp.flipped[0].before, cmp.flipped[0].after, cmp.flipped[0].reason) == \
        ("pass", "fail", "contains: missing 'c0'")
    assert cmp.row("pass_rate").status == "regressed"
    lo, hi = cmp.row("pass_rate").interval
    assert lo <= -0.3 <= hi < 0


def test_small_drop_that_is_not_significant_is_inconclusive() -> None:
    base = run([case(f"c{i}", True) for i in range(10)], "base")
    head = run([case(f"c{i}", i >= 2) for i in range(10)])
    cmp = compare(base, head, {"regression": {"max_drop": 0.05, "alpha": 0.05}})
    assert cmp.verdict == "inconclusive"
    assert cmp.reasons[0].endswith("p = 0.5 (2 pass→fail, 0 fail→pass) ≥ alpha 0.05: not confirmed; with 10 "
                                   "paired cases the smallest drop this suite can confirm at alpha 0.05 is 0.6 (6 "
                                   "cases worse, none better); add cases (repeats make each case surer, but the "
                                   "test counts cases)")


def test_unchanged_results_pass() -> None:
    cases = [case(f"c{i}", i != 0) for i in range(10)]
    cmp = compare(run(cases, "base"), run(cases), CFG)
    assert cmp.verdict == "pass"
    assert cmp.reasons == ["the 1 threshold met; 10 paired cases, no significant regression"]
    assert cmp.flipped == [] and cmp.paired == 10


@pytest.mark.parametrize(("thresholds", "reason"), [
    ({}, "no thresholds set; no baseline"),
    ({"pass_rate": ">= 0.5"}, "the 1 threshold met; no baseline"),
    ({"pass_rate": ">= 0.5", "errors": "<= 0", "score:contains": ">= 0.9"}, "all 3 thresholds met; no baseline"),
], ids=["none", "one", "three"])
def test_a_pass_counts_its_thresholds_in_words(thresholds: dict, reason: str) -> None:
    cmp = compare(None, run([case(f"c{i}", True) for i in range(3)]), {"thresholds": thresholds})
    assert (cmp.verdict, cmp.reasons) == ("pass", [reason])


def test_cases_that_could_not_be_evaluated_make_an_error_verdict_not_a_pass_or_a_fail() -> None:
    cases = [case(f"c{i}", True) for i in range(7)] + [case(f"t{i}", False, error="timeout") for i in range(3)]
    cmp = compare(None, run(cases), CFG)
    assert cmp.verdict == "error"
    assert cmp.reasons == ["boom (3 of 10 cases at head could not be evaluated)"]
    assert cmp.errors["head"] == {"timeout": 3}
    assert (cmp.rows[0].status, cmp.rows[0].note) == ("inconclusive", "3 cases not evaluated; 1 if they pass")
    assert [(e.side, e.id, e.category) for e in cmp.errored] == [("head", f"t{i}", "timeout") for i in range(3)]
    # even when every threshold is met without them, and on the base side too
    base = run([case(f"c{i}", True) for i in range(9)] + [case("x", False, error="setup")], "base")
    head = run([case(f"c{i}", True) for i in range(9)] + [case("x", True)])
    cmp = compare(base, head, CFG)
    assert (cmp.verdict, cmp.reasons) == ("error", ["boom (1 of 10 cases at base could not be evaluated)"])
    # a parse error of the judge is not infrastructure: it counts against the change
    parse = [case(f"c{i}", True) for i in range(7)] + [case(f"p{i}", False, error="parse") for i in range(3)]
    assert compare(None, run(parse), CFG).verdict == "fail"


def test_score_regression_needs_enough_pairs() -> None:
    base = run([case(f"c{i}", True, score=0.9, name="factuality") for i in range(12)], "base")
    head = run([case(f"c{i}", True, score=0.6, name="factuality") for i in range(12)])
    cmp = compare(base, head, {"regression": {"max_drop": 0.05}})
    assert cmp.verdict == "fail"
    assert cmp.reasons == ["mean score:factuality fell by 0.3 on 12 paired cases (more than max_drop 0.05); "
                           "sign-flip exact p = 0.000488 (12 cases worse, 0 better) < alpha 0.05"]
    few = compare(run(base.cases[:3], "base"), run(head.cases[:3]), {"regression": {"max_drop": 0.05}})
    assert few.verdict == "inconclusive"
    assert few.reasons[0].endswith("3 paired cases cannot confirm any drop at alpha 0.05: that takes at least 6 "
                                   "cases getting worse; add cases (repeats do not help: the test counts cases)")


def test_cost_per_day_from_token_deltas() -> None:
    prices = default_prices()
    b = cost_usd("openai", "gpt-4o-2024-08-06", 1000, 100, prices)
    h = cost_usd("openai", "gpt-4o-2024-08-06", 1200, 150, prices)
    assert (b, h) == (pytest.approx(0.0035), pytest.approx(0.0045))  # $2.50 / $10 per million tokens
    base = run([case(f"c{i}", True, tin=1000, tout=100, cost=b) for i in range(4)], "base")
    head = run([case(f"c{i}", True, tin=1200, tout=150, cost=h) for i in range(4)])
    c = compare(base, head, CFG).cost
    assert c["delta_tokens_per_request"] == 250
    assert c["projected_delta_tokens_per_day"] == 250_000
    assert c["delta_per_request_usd"] == pytest.approx(0.001)
    assert c["projected_delta_per_day_usd"] == pytest.approx(1.0)
    assert c["head_per_day_usd"] == pytest.approx(4.5)


def test_unknown_price_is_unknown_never_zero() -> None:
    assert cost_usd("openai", "my-finetune-v3", 1000, 100, default_prices()) is None
    head = run([case("a", True, cost=None), case("b", True, cost=0.001)])
    assert head.metrics["cost_per_request_usd"] is None
    cmp = compare(None, head, {"thresholds": {"cost_per_request_usd": "<= 0.01"}})
    assert cmp.verdict == "error"
    assert cmp.reasons == ["threshold cost_per_request_usd <= 0.01 cannot be checked: cost_per_request_usd is "
                           "unknown in this run (a model has no price: add it to evals.prices)"]
    assert cmp.cost["head_per_request_usd"] is None


def test_a_threshold_on_a_metric_not_measured_is_an_error() -> None:
    cmp = compare(None, run([case("a", True)]), {"thresholds": {"score:factuality": ">= 0.9"}})
    assert cmp.verdict == "error"
    assert cmp.reasons == ["threshold score:factuality >= 0.9 cannot be checked: score:factuality is not measured "
                           "in this run (is the metric name right?)"]


def test_several_causes_lead_with_the_most_serious() -> None:
    cases = [case("r1", False, error="rate_limit"), case("r2", False, error="rate_limit"),
             case("s1", False, error="setup"), case("ok", True)]
    cases[2].error_message = "no API key for openai: set OPENAI_API_KEY"
    cmp = compare(None, run(cases), CFG)
    assert cmp.reasons == ["no API key for openai: set OPENAI_API_KEY (3 of 4 cases at head could not be evaluated)",
                           "boom (2 cases)"]


def test_no_cases_is_an_error() -> None:
    cmp = compare(None, run([]), {})
    assert (cmp.verdict, cmp.reasons) == ("error", ["no eval cases were run at head: the datasets hold no cases "
                                                    "for this run"])


def test_added_removed_and_latency_per_stage() -> None:
    base = run([case("a", True, ms=100), case("b", True, ms=300)], "base")
    head = run([case("a", True, ms=200), case("c", True, ms=400)])
    cmp = compare(base, head, {})
    assert (cmp.paired, cmp.added, cmp.removed) == (1, ["c"], ["b"])
    assert cmp.latency["total"] == {"base_p50": 200.0, "base_p95": 290.0, "head_p50": 300.0, "head_p95": 390.0}
    assert set(cmp.latency) == {"total", "llm"}


def test_comparison_round_trips_through_json() -> None:
    base = run([case(f"c{i}", True) for i in range(10)], "base")
    head = run([case(f"c{i}", i >= 4) for i in range(10)])
    cmp = compare(base, head, CFG)
    again = Comparison.from_dict(json.loads(json.dumps(cmp.to_dict())))
    assert again == cmp
    assert cmp.to_dict()["schema"] == "gating.eval.comparison/1"
