"""Render a policy result as the `gating / approval` check run: verdict line, then a table of rules."""

from __future__ import annotations

from dataclasses import dataclass

from gating.policy.result import Result, Status

APPROVAL_CHECK = "gating / approval"
MAX_FIELD = 65535
_ICON = {Status.APPROVED: "✅", Status.PENDING: "⏳", Status.BLOCKED: "⛔", Status.SKIPPED: "➖"}


@dataclass(frozen=True)
class CheckOutput:
    """What the check run shows; `conclusion` is None while it is still pending (in_progress)."""

    status: str
    conclusion: str | None
    title: str
    summary: str
    text: str

    def as_fields(self) -> dict[str, object]:
        out: dict[str, object] = {"status": self.status,
                                  "output": {"title": self.title, "summary": self.summary, "text": self.text}}
        if self.conclusion:
            out["conclusion"] = self.conclusion
        return out


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ") or " "


def _cap(s: str) -> str:
    if len(s) <= MAX_FIELD:
        return s
    return s[: MAX_FIELD - 40] + "\n\n… (truncated to fit the check run)\n"


def _approved_by(r: Result) -> str:
    out = []
    for n in r.reviews:
        who = f"@{n.login} on `{n.sha[:7]}`"
        if n.state == "changes_requested":
            who = f"@{n.login} requested changes on `{n.sha[:7]}`"
        out.append(who if n.counted else f"~~{who}~~ ({n.note})")
    return "<br>".join(out)


def _rows(r: Result, depth: int = 0) -> list[str]:
    rows = []
    for c in r.children:
        if c.kind != "rule":
            continue
        reviews = next((g for g in c.children if g.kind == "approvals"), None)
        name = ("&nbsp;&nbsp;" * depth + ("↳ " if depth else "")) + c.name
        rows.append("| " + " | ".join(_cell(x) for x in (
            name, f"{_ICON[c.status]} {c.status.label}", c.description,
            _approved_by(reviews) if reviews else "", c.missing)) + " |")
        rows.extend(_rows(c, depth + 1))
    return rows


def _tree(r: Result, depth: int = 0) -> list[str]:
    lines = [f"{'  ' * depth}- {_ICON[r.status]} **{r.name}** ({r.status.label}): {r.description}"]
    for c in r.children:
        lines.extend(_tree(c, depth + 1))
    return lines


def render_check(result: Result, head_sha: str, rules_source: str) -> CheckOutput:
    """`rules_source` says where the rules came from, e.g. "gating.yml on main at 1a2b3c4"."""
    status = result.status
    if result.override:
        verdict = f"Overridden by @{result.override.login}: {result.override.reason}"
    else:
        verdict = f"{status.label.capitalize()}: {result.description}"
    title = verdict if len(verdict) <= 200 else verdict[:197] + "..."
    lines = [f"**{verdict}**", "", f"Evaluated on `{head_sha[:7]}` with the rules from {rules_source}; "
             "a pull request cannot change its own rules.", ""]
    rows = _rows(result)
    if rows:
        lines += ["| Rule | Status | Detail | Reviews | Missing (and who can give it) |",
                  "|---|---|---|---|---|", *rows, ""]
    if result.override:
        o = result.override
        on = f" on `{o.head_sha[:7]}`" if o.head_sha else ""
        lines += [f"Override recorded by @{o.login}{on}" + (f" ({o.url})" if o.url else "") + f": {o.reason}", ""]
    for c in result.children:
        if c.kind == "override":
            lines += [f"Note: {c.description}", ""]
    text = "\n".join(_tree(result)) + "\n"
    if status == Status.PENDING:
        return CheckOutput("in_progress", None, title, _cap("\n".join(lines)), _cap(text))
    conclusion = "failure" if status == Status.BLOCKED else "success"
    return CheckOutput("completed", conclusion, title, _cap("\n".join(lines)), _cap(text))
