"""What a person reads, rendered as GitHub renders Markdown (CommonMark with GFM tables and
strikethrough), asserted on the HTML rather than on the source text."""

from __future__ import annotations

import re

from markdown_it import MarkdownIt
from test_check_output import B, H, result

from gating.check.output import job_summary, summary_markdown
from gating.diff.changes import Change, ChangeSet
from gating.diff.render import render_diff_markdown

MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def html(markdown: str) -> str:
    return MD.render(markdown)


def blockquotes(markdown: str) -> list[str]:
    return re.findall(r"<blockquote>(.*?)</blockquote>", html(markdown), flags=re.S)


def test_a_notice_never_swallows_the_verdict_or_what_follows() -> None:
    r = result(messages=["the eval note was not pushed: permission denied", "cache restored from `main`"])
    for text in (summary_markdown(r), job_summary(r, read_only_reason="a pull request from a fork has a "
                                                  "read-only token")):
        for quote in blockquotes(text):
            assert "Fail" not in quote and "conclusion" not in quote and "base <code>" not in quote, quote
        assert re.search(r"<p>❌ <strong>Fail</strong>: [^<]*pass rate fell · conclusion <code>failure</code></p>",
                         html(text))


def test_a_policy_error_is_a_caution_alert_that_keeps_user_text_literal() -> None:
    bad = Change("model", "components.models.answer.model", "changed", "gpt-4o-2024-08-06", "gpt-4o", "error",
                 r"unpinned alias introduced: `answer` moves to `gpt-4o\d+|*x*`")
    out = render_diff_markdown(ChangeSet(B, H, "s1", "s2", [bad]))
    (quote,) = blockquotes(out)
    assert quote.strip().startswith("<p>[!CAUTION]")  # GitHub turns this first line into the Caution alert
    assert r"<code>gpt-4o\d+|*x*</code>" in quote  # backslash, pipe and stars survive in the code span
    assert "<table>" in html(out)
    assert html(out).index("</blockquote>") < html(out).index("<table>")


def metric_rows(markdown: str) -> dict[str, str]:
    """Metric name -> the Status cell a reader sees in the rendered score table."""
    out = {}
    for tr in re.findall(r"<tr>(.*?)</tr>", html(markdown), flags=re.S):
        cells = re.findall(r"<td>(.*?)</td>", tr, flags=re.S)
        if cells and cells[0].startswith("<code>") and len(cells) == 7:
            out[re.sub(r"</?code>", "", cells[0])] = cells[6]
    return out


def test_inconclusive_only_where_a_judgement_was_withheld() -> None:
    from test_eval_compare import case, run

    from gating.evals.compare import compare
    from gating.evals.report import render_eval_markdown

    base = run([case(f"c{i}", True, score=0.9, name="tone") for i in range(10)], "b" * 40)
    head = run([case(f"c{i}", i >= 2, score=0.9, name="tone") for i in range(10)], "h" * 40)
    cmp = compare(base, head, {"thresholds": {"pass_rate": ">= 0.7"}, "regression": {"max_drop": 0.05}})
    assert cmp.verdict == "inconclusive"  # the regression judgement is withheld: this is where the word belongs
    status = metric_rows(render_eval_markdown(cmp))
    assert status["pass_rate"] == "ok · fell 0.2, not confirmed (p = 0.5)"  # the threshold is met, and says so
    assert "inconclusive" not in status["latency_p50_ms"] and "inconclusive" not in status["score:tone"]
    assert not any("inconclusive" in s for s in status.values()), status


def test_regressions_and_how_to_reproduce_them_come_before_the_metric_table() -> None:
    from test_check_output import flip

    r = result(flipped=[flip("refund-1", "answer"), flip("tone-3", "tone ish"), flip("ok-1", "answer", "pass")])
    page = html(summary_markdown(r))
    regressions, command, table = (page.index("Regressions (2)"), page.index("gating eval --base"),
                                   page.index("<th>Metric</th>"))
    assert regressions < command < table < page.index("Fixed (1)")
    assert f"<code class=\"language-sh\">gating eval --base {B} --rev {H} --only answer --only 'tone ish'\n</code>" in page


def test_diff_says_which_base_it_compared_against(example_repo, capsys) -> None:
    import json

    from gating.commands.cli import main
    from gating.git.repository import commit_all
    from gating.testing.example import edit

    base = example_repo.rev_parse("HEAD")
    example_repo.run("checkout", "-q", "-b", "repin")
    edit(example_repo.root / "gating.yml", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20")
    head = commit_all(example_repo, "repin")
    assert main(["-C", str(example_repo.root), "diff"]) == 0
    first = html(capsys.readouterr().out).split("\n")[0]
    assert first == (f"<p>Compared <code>main@{base[:7]}</code> (merge-base of HEAD and main) with "
                     f"<code>HEAD</code> ({head[:7]}).</p>")
    assert main(["-C", str(example_repo.root), "diff", "main", "--json"]) == 0
    about = json.loads(capsys.readouterr().out)["compared"]
    assert about["base"] == {"rev": "main", "sha": base, "how": "given"}
    assert about["head"] == {"rev": "HEAD", "sha": head, "how": ""}
    assert about["text"] == f"Compared `main` ({base[:7]}) with `HEAD` ({head[:7]})."
