"""Eval renderers: the Markdown a reviewer reads, JUnit XML for CI, versioned JSON."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from gating.evals.compare import compare
from gating.evals.metrics import compute_metrics
from gating.evals.records import AssertionResult, CaseResult, RunResult
from gating.evals.report import (
    MAX_MARKDOWN,
    eval_to_json,
    render_eval_markdown,
    render_junit,
    render_run_markdown,
)


def case(cid: str, passed: bool, error: str | None = None, out: str = "answer") -> CaseResult:
    asserts = [] if error else [AssertionResult("icontains", passed, float(passed),
                                                "found '30 days'" if passed else "missing '30 days'", "icontains")]
    return CaseResult(cid, "answer", passed, float(passed), {"icontains": float(passed)} if not error else {},
                      asserts, out, error, "no answer within 60 s" if error else "", {"llm": 500.0, "total": 500.0},
                      90, 12, 0.00035)


def run(cases: list[CaseResult], rev: str) -> RunResult:
    return RunResult(rev, "sha256:" + "a" * 64, "sha256:" + "b" * 64, cases, compute_metrics(cases))


CFG = {"thresholds": {"pass_rate": ">= 0.9"}, "regression": {"max_drop": 0.05, "alpha": 0.05},
       "traffic": {"requests_per_day": 100000}}


def test_markdown_leads_with_the_verdict_and_lists_regressions() -> None:
    base = run([case(f"c{i}", True) for i in range(10)], "1" * 40)
    head = run([case(f"c{i}", i >= 2) for i in range(10)], "2" * 40)
    md = render_eval_markdown(compare(base, head, CFG))
    lines = md.splitlines()
    assert lines[0] == "### gating / eval: ❌ fail"
    assert lines[2] == "- pass_rate is 0.8, threshold >= 0.9; failing cases: c0, c1"
    assert "Base `1111111` → head `2222222` · 10 paired cases · dataset `sha256:bbbbbbbbbbbb`" in lines
    # the interval is withheld below 20 paired cases (there it is too narrow)
    assert "| `pass_rate` | 1.000 | 0.800 | −0.200 |  | >= 0.9 | **fail** · fell 0.2, not confirmed (p = 0.5) |" in lines
    assert "#### Regressions (2)" in lines
    assert "| `c0` | answer | pass | fail | icontains: missing '30 days' |" in lines
    assert "| cost / day at 100,000 requests | $35.00 | $35.00 | ±$0.000000 |" in lines
    assert "| total | 500 | 500 | 500 | 500 |" in lines


def test_markdown_is_capped_for_check_runs() -> None:
    head = run([case(f"case-{i:05d}-" + "x" * 200, False) for i in range(3000)], "h")
    base = run([case(f"case-{i:05d}-" + "x" * 200, True) for i in range(3000)], "b")
    md = render_eval_markdown(compare(base, head, CFG), max_cases=3000)
    assert len(md) <= MAX_MARKDOWN
    assert md.endswith("… (truncated; the full report is in the JSON)\n")


def test_junit_from_a_run() -> None:
    head = run([case("ok", True), case("bad", False), case("slow", False, error="timeout", out="")], "h")
    xml = render_junit(head)
    root = ET.fromstring(xml)
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    cases = {tc.get("name"): tc for tc in suite.iter("testcase")}
    assert cases["ok"].get("classname") == "answer" and cases["ok"].get("time") == "0.500"
    assert cases["bad"].find("failure").get("message") == "icontains: missing '30 days'"
    assert cases["slow"].find("error").get("message") == "timeout: no answer within 60 s"


def test_junit_from_a_comparison_has_one_test_per_check() -> None:
    base = run([case(f"c{i}", True) for i in range(10)], "b")
    head = run([case(f"c{i}", i != 3) for i in range(10)], "h")
    root = ET.fromstring(render_junit(compare(base, head, CFG)))
    names = [(tc.get("classname"), tc.get("name"), tc.find("failure") is not None) for tc in root.iter("testcase")]
    assert names == [("metrics", "pass_rate", False), ("flipped", "c3", True)]  # the assertion's flips are pass_rate's


def test_json_is_sorted_and_versioned() -> None:
    head = run([case("a", True)], "h")
    text = eval_to_json(head)
    doc = json.loads(text)
    assert doc["schema"] == "gating.eval.run/1"
    assert list(doc) == sorted(doc)
    assert text == eval_to_json(RunResult.from_dict(doc))


def test_run_markdown_lists_failing_cases() -> None:
    md = render_run_markdown(run([case("a", True), case("b", False)], "f" * 40))
    assert md.startswith("### Eval at `fffffff`: 1/2 passed\n")
    assert "| `b` | answer | icontains: missing '30 days' |" in md


def test_a_cheap_model_cost_is_never_printed_as_zero() -> None:
    """gpt-4o-mini answers cost a few millionths of a dollar: six decimals would print $0.000000."""
    def cheap(cid: str, cost: float) -> CaseResult:
        c = case(cid, True)
        c.cost_usd = cost
        return c

    base = run([cheap(f"c{i}", 3.225e-6) for i in range(4)], "1" * 40)
    head = run([cheap(f"c{i}", 3.5e-6) for i in range(4)], "2" * 40)
    lines = render_eval_markdown(compare(base, head, CFG)).splitlines()
    assert "| cost / request | $0.00000323 | $0.00000350 | +$0.000000275 |" in lines
    assert "| cost / day at 100,000 requests | $0.322500 | $0.350000 | +$0.027500 |" in lines


def tagged(cid: str, passed: bool, *tags: str) -> CaseResult:
    c = case(cid, passed)
    c.tags = list(tags)
    return c


def test_markdown_has_pass_rates_by_tag_base_and_head_with_deltas() -> None:
    base = run([tagged("r1", True, "redteam"), tagged("r2", True, "redteam"), tagged("r3", False, "redteam", "pii"),
                tagged("a1", True, "answer"), tagged("a2", True, "answer")], "1" * 40)
    head = run([tagged("r1", False, "redteam"), tagged("r2", True, "redteam"), tagged("r3", False, "redteam", "pii"),
                tagged("a1", True, "answer"), tagged("a2", True, "answer"), tagged("n1", True, "new")], "2" * 40)
    cmp = compare(base, head, CFG)
    md = render_eval_markdown(cmp)
    lines = md.splitlines()
    at = lines.index("#### Pass rate by tag")
    assert lines[at + 1:at + 8] == [
        "",
        "| Tag | Cases | Base | Head | Δ |",
        "|---|---|---|---|---|",
        "| `answer` | 2 | 1.000 | 1.000 | ±0.000 |",
        "| `new` | 1 |  | 1.000 |  |",
        "| `pii` | 1 | 0.000 | 0.000 | ±0.000 |",
        "| `redteam` | 3 | 0.667 | 0.333 | −0.333 |",
    ]
    assert lines.index("#### Pass rate by tag") < lines.index("#### Tokens and cost")
    # a comparison read back from its JSON renders the same section
    from gating.evals.records import Comparison

    again = render_eval_markdown(Comparison.from_dict(json.loads(eval_to_json(cmp)))).splitlines()
    assert again[again.index("#### Pass rate by tag"):][:8] == lines[at:at + 8]


def test_no_tags_no_tag_section() -> None:
    base = run([case("c1", True)], "1" * 40)
    assert "by tag" not in render_eval_markdown(compare(base, run([case("c1", True)], "2" * 40), CFG))


def test_a_comparison_read_back_from_its_json_renders_the_same_latency_table() -> None:
    from gating.evals.records import Comparison

    def timed(cid: str, stages: dict[str, float]) -> CaseResult:
        c = case(cid, True)
        c.latency_ms = stages
        return c

    # stages that sort differently by name than the table lists them ("total" first), and a stage
    # only the base has (a judge the head no longer calls)
    base = run([timed(f"c{i}", {"total": 900.0 + i, "llm": 500.0, "judge": 380.0, "retrieval": 20.0})
                for i in range(3)], "b" * 40)
    head = run([timed(f"c{i}", {"total": 520.0 + i, "llm": 500.0, "retrieval": 20.0}) for i in range(3)], "c" * 40)
    cmp = compare(base, head, CFG)
    read_back = Comparison.from_dict(json.loads(eval_to_json(cmp)))
    shown = render_eval_markdown(cmp)
    assert render_eval_markdown(read_back) == shown
    table = shown.split("#### Latency (ms)")[1].split("\n\n")[1].splitlines()[2:]
    assert [row.split(" | ")[0].lstrip("| ") for row in table] == ["total", "judge", "llm", "retrieval"]
