"""Renderers: Markdown for check runs and job summaries, JSON, JUnit. Pure functions of records."""

from __future__ import annotations

from gating.diff import ChangeSet

RISK_BADGE = {
    "info": "info",
    "low": "low",
    "medium": "medium",
    "high": "**high**",
    "breaking": "**breaking**",
    "error": "**error**",
}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_diff_markdown(cs: ChangeSet, heading: str = "###", excerpts: bool = True) -> str:
    """The semantic diff as a reviewer reads it: a table of changes, then prompt excerpts."""
    if cs.is_empty:
        return f"{heading} LLM system: no changes\n\nNothing in the LLM system changed between `{cs.base}` and `{cs.head}`.\n"
    n = len(cs.changes)
    lines = [
        f"{heading} LLM system: {n} change{'s' if n != 1 else ''} (highest risk: {cs.max_risk})",
        "",
    ]
    if cs.has_errors:
        lines += ["> **Policy error:** " + "; ".join(c.summary for c in cs.changes if c.risk == "error"), ""]
    scope = "every eval case (full re-evaluation)" if cs.full_reeval else (
        "cases of prompts " + ", ".join(f"`{p}`" for p in sorted(cs.affected_prompts() or [])) or "no eval cases"
    )
    lines += [f"Re-evaluate: {scope}.", "", "| Category | Change | Path | Risk |", "|---|---|---|---|"]
    for c in cs.changes:
        lines.append(f"| {c.category} | {_cell(c.summary)} | `{_cell(c.path)}` | {RISK_BADGE[c.risk]} |")
    if excerpts:
        for c in cs.changes:
            if c.detail:
                lines += ["", f"<details><summary>{_cell(c.summary)}</summary>", "", "```diff", c.detail, "```",
                          "", "</details>"]
    return "\n".join(lines) + "\n"
