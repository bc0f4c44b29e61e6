"""Result records round-trip through JSON (git notes, audit entries) and refuse unknown schemas."""

from __future__ import annotations

import json

import pytest

from gating.evals import load_run
from gating.evals.records import (
    AssertionResult,
    CaseError,
    CaseResult,
    Comparison,
    FlippedCase,
    MetricRow,
    RunResult,
    SchemaError,
    carry_over,
)


def sample() -> RunResult:
    c = CaseResult("a", "answer", True, 0.75, {"rubric": 0.75},
                   [AssertionResult("rubric", True, 0.75, "judge 4/5: fine", "rubric")], "out", None, "",
                   {"llm": 12.5, "total": 12.5}, 10, 3, None, cached=True, tags=["t"])
    return RunResult("abc", "sha256:s", "sha256:d", [c], {"pass_rate": 1.0, "cost_per_request_usd": None},
                     "2024-01-01T00:00:00.000Z", "2024-01-01T00:00:01.000Z", {"mode": "replay"},
                     {"evals/g.jsonl": "00"}, {"requests": 0})


def test_run_round_trips_through_json() -> None:
    run = sample()
    text = json.dumps(run.to_dict())
    assert load_run(text) == run
    assert json.loads(text)["schema"] == "gating.eval.run/1"
    assert json.loads(text)["cases"][0]["cost_usd"] is None  # unknown stays unknown


def test_newer_minor_fields_are_ignored_but_other_major_versions_refused() -> None:
    d = sample().to_dict()
    assert load_run({**d, "schema": "gating.eval.run/1.3", "future": 1}) == sample()
    with pytest.raises(SchemaError, match="unsupported schema version 'gating.eval.run/2'"):
        load_run({**d, "schema": "gating.eval.run/2"})
    with pytest.raises(SchemaError, match="not a gating.eval.run/1 document"):
        load_run({**d, "schema": "gating.eval.comparison/1"})


def test_carry_over_fills_cases_head_did_not_rerun() -> None:
    def c(cid: str, passed: bool) -> CaseResult:
        return CaseResult(cid, "p", passed, float(passed))

    base = RunResult("b", "s1", "d", [c("x", True), c("y", True), c("z", False)])
    head = RunResult("h", "s2", "d", [c("y", False), c("new", True)])
    merged = carry_over(base, head)
    assert [(k.id, k.passed, k.carried) for k in merged.cases] == [
        ("x", True, True), ("y", False, False), ("z", False, True), ("new", True, False)]
    assert merged.rev == "h" and head.cases[0].carried is False


# -- to_dict is asdict, without its deep copy --------------------------------------------------------


def _asdict_reference(obj: object) -> dict:
    """What the records' to_dict returned when it was dataclasses.asdict (the stored bytes follow it)."""
    from dataclasses import asdict

    d = asdict(obj)  # type: ignore[call-overload]
    if isinstance(obj, (RunResult, Comparison)):
        return {"schema": d["schema"], **{k: v for k, v in d.items() if k != "schema"}}
    return d


def nested_records() -> list[object]:
    from collections import OrderedDict, namedtuple

    Pair = namedtuple("Pair", "low high")
    c = CaseResult("a", "p", False, 0.5, {"rubric": 0.5, "icontains": 1.0},
                   [AssertionResult("rubric", False, 0.5, "judge 2/5", "rubric", 2.0),
                    AssertionResult("icontains", True, 1.0, "found", "icontains")],
                   "out ✓", "parse", "bad JSON", {"total": 30.0, "llm": 25.5}, 11, None, None,
                   repeats=2, repeat_passed=[True, False], repeat_scores=[1.0, 0.0],
                   repeat_latency_ms=[{"total": 20.0}, {"total": 40.0, "llm": 35.0}], tags=["red", "red", "x"],
                   provider="openai", model="m", carried=True, weight=3)
    run = RunResult("h" * 40, "sha256:s", "sha256:d", [c, CaseResult("b", None, True, 1.0)],
                    {"pass_rate": 0.5, "cost_per_request_usd": None, "nested": {"a": [1, {"b": (2, 3)}]}},
                    "t0", "t1",
                    {"judged_by": {"digest": "sha256:j", "cases": ["a", "b"], "pair": Pair(1, [2])},
                     "only_prompts": ("p", "q"), "ordered": OrderedDict([("z", 1), ("a", [1.5])]),
                     "record": AssertionResult("x", True, 1.0, "r", "x")},
                    {"evals/g.jsonl": "00"}, {"requests": 2, "by_status": {"200": 2}})
    cmp = Comparison("fail", ["r1"], [MetricRow("pass_rate", 1.0, 0.5, -0.5, [-0.75, -0.25], ">= 0.9", "fail", 0.95,
                                                0.01, "n")],
                     [FlippedCase("a", "pass", "fail", "judge 2/5", "p", 1.0, 0.5)], "b", "h", "s1", "s2", "d",
                     "d0", 2, ["n"], ["gone"], {"b": 1, "c": 0, "p_value": 1.0},
                     [{"metric": "pass_rate", "n": 2, "p_adjusted": 1.0}], {"requests_per_day": None, "x": [1.0]},
                     [{"tag": "red", "cases": 1, "base": 1.0, "head": 0.0, "delta": -1.0}],
                     {"total": {"base_p50": 1.0, "base_p95": None, "head_p50": 2.0, "head_p95": 3.0}},
                     {"head": {"parse": 1}}, ["a"], [CaseError("head", "a", "p", "parse", "bad JSON")])
    return [c, c.assertions[0], run, cmp, cmp.rows[0], cmp.flipped[0], cmp.errored[0]]


@pytest.mark.parametrize("record", nested_records(), ids=lambda r: type(r).__name__)
def test_to_dict_is_what_asdict_made_for_nested_values(record: object) -> None:
    got, want = record.to_dict(), _asdict_reference(record)  # type: ignore[attr-defined]
    assert got == want
    assert json.dumps(got, ensure_ascii=False) == json.dumps(want, ensure_ascii=False)  # key order too

    def shape(v: object) -> object:  # same container types all the way down (a tuple stays a tuple)
        if isinstance(v, dict):
            return (type(v), [(k, shape(x)) for k, x in v.items()])
        if isinstance(v, (list, tuple)):
            return (type(v), [shape(x) for x in v])
        return type(v)

    assert shape(got) == shape(want)


def test_to_dict_shares_no_container_with_the_record() -> None:
    run = nested_records()[2]
    assert isinstance(run, RunResult)
    d = run.to_dict()
    d["cases"][0]["scores"]["rubric"] = 0.0
    d["cases"][0]["tags"].append("y")
    d["cases"][0]["repeat_latency_ms"][0]["total"] = 0.0
    d["config"]["judged_by"]["cases"].append("c")
    d["metrics"]["nested"]["a"][1]["b"] = None
    assert run.to_dict() == _asdict_reference(nested_records()[2])
