"""Per-case weights: parsed and checked by the dataset, carried into the results, used by the metrics
and by the paired test (the weighted sign-flip test: McNemar counts flips, which weights do not)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_support import a, fast_retries, llm, load, write_repo  # noqa: F401

from gating.evals.compare import compare
from gating.evals.dataset import DatasetError, csv_rows, load_cases
from gating.evals.metrics import compute_metrics
from gating.evals.records import AssertionResult, CaseResult, RunResult
from gating.evals.report import render_eval_markdown
from gating.evals.runner import run_evals
from gating.evals.stats import paired_bootstrap, paired_test
from gating.testing.llm_server import LLMServer

PROMPTS = {"p": {}}


def cases_of(text: str, path: str = "evals/c.jsonl") -> list:
    return load_cases(path, text.encode(), PROMPTS)


def test_a_case_weight_is_parsed_and_defaults_to_one() -> None:
    got = cases_of('{"id": "a", "prompt": "p", "weight": 3}\n{"id": "b", "prompt": "p", "weight": 0.5}\n'
                   '{"id": "c", "prompt": "p"}\n')
    assert [c.weight for c in got] == [3.0, 0.5, 1.0]


@pytest.mark.parametrize("weight", [0, -1, "heavy", True, None, float("inf")], ids=str)
def test_a_bad_case_weight_is_a_dataset_error_naming_the_case(weight: object) -> None:
    line = json.dumps({"id": "refund-window", "prompt": "p", "weight": weight}).replace("Infinity", "1e999")
    with pytest.raises(DatasetError) as e:
        cases_of(line + "\n")
    assert e.value.problems == [f"evals/c.jsonl:1: case 'refund-window': `weight` must be a positive number (how much "
                                f"the case counts in the pass rate, scores and the paired test), got {weight!r}"]


def test_csv_weight_column() -> None:
    rows = csv_rows("d.csv", "id,__weight,q\nc1,2.5,x\nc2,,y\n")
    assert [r[1].get("weight") for r in rows] == [2.5, None]
    [(_, bad)] = csv_rows("d.csv", "id,__weight,q\nc1,lots,x\n")
    assert bad.problem == "d.csv:2: __weight 'lots' is not a number"


def test_the_weight_reaches_the_results(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    cases = [{"id": "heavy", "prompt": "p", "vars": {"q": a("yes")}, "weight": 4,
              "assert": [{"type": "equals", "value": "yes"}]},
             {"id": "light", "prompt": "p", "vars": {"q": a("no")}, "assert": [{"type": "equals", "value": "yes"}]}]
    snap, reader = load(write_repo(tmp_path, cases))
    got = run_evals(snap, reader, env=llm.env(), cache_dir=None, retry=fast_retries())
    assert [(c.id, c.weight) for c in got.cases] == [("heavy", 4.0), ("light", 1.0)]
    assert got.metrics["pass_rate"] == pytest.approx(0.8)  # 4 of 5 by weight, not 1 of 2
    assert CaseResult.from_dict(got.cases[0].to_dict()).weight == 4.0


def case(cid: str, passed: bool, weight: float = 1.0, tags: tuple[str, ...] = ()) -> CaseResult:
    s = 1.0 if passed else 0.0
    return CaseResult(cid, "answer", passed, s, {"contains": s},
                      [AssertionResult("contains", passed, s, "ok" if passed else "missing", "contains")], "out",
                      latency_ms={"total": 10.0}, tokens_in=1, tokens_out=1, cost_usd=0.0, tags=list(tags),
                      weight=weight)


def run(cases: list[CaseResult], rev: str) -> RunResult:
    return RunResult(rev, f"sha256:{rev}", "sha256:data", cases, compute_metrics(cases))


def test_weighted_metrics() -> None:
    m = compute_metrics([case("a", True, 3, ("t",)), case("b", False, 1, ("t",)), case("c", False, 0.5)])
    assert m["pass_rate"] == pytest.approx(3 / 4.5)
    assert m["score:contains"] == pytest.approx(3 / 4.5) and m["score"] == pytest.approx(3 / 4.5)
    assert m["pass_rate:tag:t"] == pytest.approx(0.75)
    assert m["passed"] == 1 and m["cases"] == 3  # counts stay counts


CFG = {"regression": {"max_drop": 0.05, "alpha": 0.05}}


def test_many_light_regressions_outweighed_by_a_heavy_fix_pass_where_the_unweighted_test_fails() -> None:
    base = [case(f"l{i}", True) for i in range(8)] + [case("h", False)]
    head = [case(f"l{i}", False) for i in range(8)] + [case("h", True)]
    plain = compare(run(base, "b"), run(head, "h"), CFG)
    assert plain.verdict == "fail" and "McNemar exact p = 0.0391" in plain.reasons[0]
    for c in (*base, *head):
        c.weight = 0.1 if c.id.startswith("l") else 10.0
    weighted = compare(run(base, "b"), run(head, "h"), CFG)
    assert weighted.verdict == "pass"
    t = next(t for t in weighted.tests if t["metric"] == "pass_rate")
    assert t["method"] == "weighted sign-flip exact" and t["delta"] == pytest.approx((10 - 0.8) / 10.8)


def test_heavy_regressions_fail_where_the_unweighted_flips_balance() -> None:
    base = [case(f"h{i}", True, 10) for i in range(7)] + [case(f"l{i}", False, 1) for i in range(7)]
    head = [case(f"h{i}", False, 10) for i in range(7)] + [case(f"l{i}", True, 1) for i in range(7)]
    weighted = compare(run(base, "b"), run(head, "h"), CFG)
    assert weighted.verdict == "fail"
    assert weighted.reasons[0].startswith(
        "pass rate fell by 0.818 on 14 paired cases (more than max_drop 0.05); weighted sign-flip exact p = 0.0156 "
        "(7 cases worse, 7 better) < alpha 0.05")
    for c in (*base, *head):
        c.weight = 1.0
    assert compare(run(base, "b"), run(head, "h"), CFG).verdict == "pass"  # 7 pass→fail, 7 fail→pass: p = 1
    md = render_eval_markdown(weighted)
    assert ("- `pass_rate`: weighted sign-flip exact on 14 cases (7 worse, 7 better), p = 0.0156 (case weights: the "
            "paired sign-flip test on weighted per-case differences; McNemar counts flips and cannot weigh them)") in md


def test_the_base_weights_decide_the_paired_test() -> None:
    """A pull request cannot make a regressed case count less for its own verdict."""
    base = [case(f"c{i}", True, 1) for i in range(12)]
    head = [case(f"c{i}", i >= 6, 0.01 if i < 6 else 1) for i in range(12)]
    got = compare(run(base, "b"), run(head, "h"), CFG)
    t = next(t for t in got.tests if t["metric"] == "pass_rate")
    assert t["method"] == "McNemar exact" and t["delta"] == pytest.approx(-0.5) and got.verdict == "fail"


def test_the_weighted_test_is_scale_free_and_mcnemar_when_the_weights_are_equal() -> None:
    b, h = [1.0] * 6 + [0.0], [0.0] * 6 + [1.0]
    plain = paired_test(b, h)
    assert plain.method == "McNemar exact"
    same = paired_test(b, h, weights=[2.0] * 7)
    assert (same.method, same.p_value) == ("McNemar exact", plain.p_value)
    w = [1, 2, 3, 1, 2, 3, 5]
    scaled = paired_test(b, h, weights=[x * 7.5 for x in w])
    assert paired_test(b, h, weights=w).p_value == pytest.approx(scaled.p_value)


def test_a_weighted_bootstrap_interval() -> None:
    iv = paired_bootstrap([1.0, 1.0, 0.0, 1.0] * 6, [0.0, 1.0, 1.0, 1.0] * 6, weights=[3.0, 1.0, 1.0, 1.0] * 6)
    assert iv.delta == pytest.approx(-2 / 6)
    assert iv.low < iv.delta < iv.high


def test_a_case_the_head_adds_counts_once_until_merged(tmp_path: Path) -> None:
    """An added case with a huge weight would lift the head's pass rate over a threshold by itself:
    the base decides weights, so an added case counts 1 in the pull request's own run."""
    from gating.evals.judging import judging_for, self_judging

    old = [{"id": "old", "prompt": "p", "vars": {"q": "x"}, "weight": 2}]
    new = [*old, {"id": "new", "prompt": "p", "vars": {"q": "y"}, "weight": 1000}]
    bsnap, breader = load(write_repo(tmp_path / "base", old))
    hsnap, hreader = load(write_repo(tmp_path / "head", [{**old[0], "weight": 0.5}, new[1]]))
    judging = judging_for(self_judging(bsnap, "base", breader), bsnap, hsnap, "base", hreader)
    assert judging is not None and judging.added == ("new",)
    assert {c.id: c.weight for c in judging.cases} == {"old": 2.0, "new": 1.0}


def test_what_a_weighted_suite_can_confirm_is_the_drop_of_its_lightest_cases() -> None:
    weights = [1.0] * 4 + [3.0] * 4
    base = [case(f"c{i}", True, w) for i, w in enumerate(weights)]
    head = [case(f"c{i}", i < 5, w) for i, w in enumerate(weights)]  # three heavy cases regress
    got = compare(run(base, "b"), run(head, "h"), CFG)
    assert got.verdict == "inconclusive"
    assert got.reasons == [
        "pass rate fell by 0.562 on 8 paired cases (more than max_drop 0.05); weighted sign-flip exact p = 0.25 "
        "(3 cases worse, 0 better) ≥ alpha 0.05: not confirmed; with 8 paired cases the smallest drop this suite can "
        "confirm at alpha 0.05 is 0.625 (6 of the lightest cases worse, none better); add cases (repeats make each "
        "case surer, but the test counts cases)"]
