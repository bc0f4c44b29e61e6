"""What a person reads, rendered as GitHub renders Markdown (CommonMark with GFM tables and
strikethrough), asserted on the HTML rather than on the source text."""

from __future__ import annotations

import re

from markdown_it import MarkdownIt
from test_check_output import B, H, result

from gating.check_output import job_summary, summary_markdown
from gating.diff import Change, ChangeSet
from gating.report import render_diff_markdown

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
