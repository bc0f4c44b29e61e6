"""What the check shows: titles, the summary's first line, safe truncation, annotations, outputs (pure)."""

from __future__ import annotations

import pytest

from gating.check.output import (
    CheckResult,
    annotations,
    fit,
    job_summary,
    output_lines,
    summary_markdown,
    title,
)
from gating.diff.changes import ALL, Change, ChangeSet
from gating.evals.records import Comparison, FlippedCase, MetricRow

H, B = "h" * 40, "b" * 40


def prompt_change(name: str, file: str, lines: tuple[int, ...], affects: tuple[str, ...] | None = None) -> Change:
    return Change("prompt", f"components.prompts.{name}.file", "changed", "x", "y", "medium",
                  f"prompt `{name}` changed", detail="-a\n+b", affects=affects or (name,), file=file,
                  changed_lines=lines)


def comparison(flipped: list[FlippedCase], verdict: str = "fail") -> Comparison:
    return Comparison(verdict=verdict, reasons=["pass rate fell"], rows=[MetricRow("pass_rate", 1.0, 0.5, -0.5,
                                                                                   threshold=">= 0.8", status="regressed")],
                      flipped=flipped, base_rev=B, head_rev=H, base_snapshot="s1", head_snapshot="s2",
                      dataset_digest="sha256:d", paired=4)


def flip(cid: str, prompt: str, after: str = "fail") -> FlippedCase:
    return FlippedCase(cid, "pass" if after != "pass" else "fail", after, f"{cid} went wrong", prompt)


def result(verdict: str = "fail", conclusion: str = "failure", changes: list[Change] | None = None,
           flipped: list[FlippedCase] | None = None, **kw) -> CheckResult:
    cs = ChangeSet(B, H, "s1", "s2", changes or [])
    cmp = comparison(flipped or [], verdict) if verdict not in ("unchanged", "error") else None
    return CheckResult(verdict, conclusion, ["pass rate fell"], H, B, changes=cs, comparison=cmp, **kw)


@pytest.mark.parametrize("r, want", [
    pytest.param(result("unchanged", "success"), "No LLM system changes", id="unchanged"),
    pytest.param(result("pass", "success"), "Pass: pass rate fell", id="pass"),
    pytest.param(result(flipped=[flip("a", "p"), flip("b", "p")]), "Fail: 2 cases regressed (a, b)", id="fail"),
    pytest.param(result(flipped=[flip(f"c{i}", "p") for i in range(7)]),
                 "Fail: 7 cases regressed (c0, c1, c2, c3, c4 and 2 more)", id="many"),
    pytest.param(result(conclusion="neutral", fail_on="never", flipped=[flip("a", "p")]),
                 "Fail (not blocking: fail-on never): 1 case regressed (a)", id="not-blocking"),
    pytest.param(result("inconclusive", "neutral"), "Inconclusive: pass rate fell", id="inconclusive"),
    pytest.param(result("error", "failure", error="DatasetError: cases.jsonl:3: bad"),
                 "Error: DatasetError: cases.jsonl:3: bad", id="error"),
])
def test_title(r: CheckResult, want: str):
    assert title(r) == want


def test_summary_leads_with_the_verdict_then_the_diff_then_the_scores():
    r = result(changes=[prompt_change("answer", "prompts/answer.md", (3,))], flipped=[flip("a", "answer")],
               messages=["the eval note was not pushed"], baseline="eval note on base `bbbbbbb`")
    md = summary_markdown(r)
    lines = md.splitlines()
    assert lines[0] == "❌ **Fail**: 1 case regressed (a) · conclusion `failure`"
    assert lines[2] == "> the eval note was not pushed"
    assert lines[4].startswith("<sub>base `bbbbbbb` → head `hhhhhhh` · baseline: eval note on base `bbbbbbb`")
    assert md.index("### LLM system: 1 change") < md.index("### Evals: ❌ fail") < md.index("#### Regressions (1)")


def test_fit_leaves_short_text_alone():
    assert fit("short\ntext") == "short\ntext"


def test_fit_cuts_on_a_line_closes_blocks_and_says_so():
    body = "head\n<details><summary>x</summary>\n\n```diff\n" + "".join(f"+ line {i} ✓\n" for i in range(20_000))
    cut = fit(body, 65_535)
    assert len(cut.encode()) <= 65_535
    kept = cut.split("\n```\n</details>\n\n---\n✂️ **Truncated**: showing ")[0]
    assert body.startswith(kept) and kept.endswith("✓")
    assert cut.endswith(f"of {len(body):,} characters (GitHub allows 65,535 here); the full report is in the job "
                        "summary and the JSON report.\n")


def test_annotations_mark_changed_blocks_of_prompts_whose_cases_regressed():
    changes = [prompt_change("answer", "prompts/answer.md", (2, 3, 4, 9)),
               prompt_change("greet", "prompts/greet.md", (1,)),
               prompt_change("system", "prompts/system.md", (), affects=("answer", "system")),
               Change("retrieval", "components.retrieval.top_k", "changed", 5, 8, "high", "top_k", affects=(ALL,))]
    r = result(changes=changes, flipped=[flip("a1", "answer"), flip("g1", "greet", after="pass")])
    got = [(a["path"], a["start_line"], a["end_line"], a["annotation_level"]) for a in annotations(r)]
    assert got == [("prompts/answer.md", 2, 4, "failure"), ("prompts/answer.md", 9, 9, "failure"),
                   ("prompts/system.md", 1, 1, "failure")]  # greet's case got better: no annotation
    a = annotations(r)[0]
    assert (a["title"], a["message"]) == ("1 eval case regressed after this change",
                                          "a1 (answer): pass → fail: a1 went wrong")


def test_annotations_are_warnings_when_the_check_does_not_fail():
    r = result(conclusion="neutral", changes=[prompt_change("answer", "a.md", (1,))], flipped=[flip("a", "answer")])
    assert [a["annotation_level"] for a in annotations(r)] == ["warning"]


def test_annotations_are_capped():
    r = result(changes=[prompt_change("answer", "a.md", tuple(range(1, 2000, 2)))], flipped=[flip("a", "answer")])
    assert len(annotations(r)) == 500


def test_job_summary_explains_why_nothing_was_posted():
    r = result(flipped=[flip("a", "p")])
    text = job_summary(r, "this pull request comes from a fork: no writes")
    assert text.startswith("## gating / eval: Fail: 1 case regressed (a)\n\n> **Nothing was posted to the pull "
                           "request:** this pull request comes from a fork: no writes. This job's exit code "
                           "carries the verdict (1).")


def test_output_lines_use_a_heredoc_for_multiline_values():
    assert output_lines({"verdict": "pass", "check-run-id": None, "why": "a\nb"}) == \
        "verdict=pass\ncheck-run-id=\nwhy<<gating_EOF\na\nb\ngating_EOF\n"


def test_the_check_run_summary_has_the_pass_rate_by_tag():
    r = result(flipped=[flip("a", "answer")])
    assert r.comparison is not None
    r.comparison.tags = [{"tag": "red-team", "cases": 8, "base": 1.0, "head": 0.75, "delta": -0.25}]
    md = summary_markdown(r)
    assert "#### Pass rate by tag\n\n| Tag | Cases | Base | Head | Δ |\n|---|---|---|---|---|\n" \
           "| `red-team` | 8 | 1.000 | 0.750 | −0.250 |\n" in md
