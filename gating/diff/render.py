"""The semantic diff as Markdown, for the check run, the job summary and `gating diff`. Pure."""

from __future__ import annotations

import re

from gating.diff.changes import ChangeSet

RISK_BADGE = {
    "info": "info",
    "low": "low",
    "medium": "medium",
    "high": "**high**",
    "breaking": "**breaking**",
    "error": "**error**",
}


def short_rev(rev: str) -> str:
    """A full commit id shortened as GitHub shows it; anything else (a branch, HEAD) as given."""
    return rev[:7] if re.fullmatch(r"[0-9a-f]{40}", rev) else rev


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_diff_markdown(cs: ChangeSet, heading: str = "###", excerpts: bool = True) -> str:
    """The semantic diff as a reviewer reads it: a table of changes, then prompt excerpts."""
    if cs.is_empty:
        return (f"{heading} LLM system: no changes\n\nNothing in the LLM system changed between "
                f"`{short_rev(cs.base)}` and `{short_rev(cs.head)}`.\n")
    n = len(cs.changes)
    lines = [
        f"{heading} LLM system: {n} change{'s' if n != 1 else ''} (highest risk: {cs.max_risk})",
        "",
    ]
    if cs.has_errors:
        lines += ["> [!CAUTION]", "> **Policy error:** " + "; ".join(" ".join(c.summary.split()) for c in cs.changes
                                                                    if c.risk == "error"), ""]
    affected = sorted(cs.affected_prompts() or [])
    if cs.full_reeval:
        scope = "every eval case (full re-evaluation)"
    elif affected:
        scope = "cases of prompts " + ", ".join(f"`{p}`" for p in affected)
    else:
        scope = "no eval cases (nothing evaluated changed)"
    lines += [f"Re-evaluate: {scope}.", ""]
    if gates := cs.after_merge:  # the base's evals and rules judge this change; these apply after it
        n = len(gates)
        lines += [f"> {n} change{'s' if n != 1 else ''} to how pull requests are judged or approved (evals, "
                  "approval rules, rollback, monitor): they take effect only after merge, so the base's settings judge "
                  "this pull request.", ""]
    lines += ["| Category | Change | Path | Risk |", "|---|---|---|---|"]
    for c in cs.changes:
        lines.append(f"| {c.category} | {_cell(c.summary)} | `{_cell(c.path)}` | {RISK_BADGE[c.risk]} |")
    if excerpts:
        for c in cs.changes:
            if c.detail:
                lines += ["", f"<details><summary>{_cell(c.summary)}</summary>", "", "```diff", c.detail, "```",
                          "", "</details>"]
    return "\n".join(lines) + "\n"
