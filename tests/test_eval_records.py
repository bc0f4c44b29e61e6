"""Result records round-trip through JSON (git notes, audit entries) and refuse unknown schemas."""

from __future__ import annotations

import json

import pytest

from gating.evals import load_run
from gating.evals.records import AssertionResult, CaseResult, RunResult, SchemaError, carry_over


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
