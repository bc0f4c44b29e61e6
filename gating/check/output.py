"""What `gating check` shows: the check run's title, summary, text and annotations, the job summary,
the JSON report and the step outputs. Pure functions of a CheckResult.

GitHub caps a check run's `output.summary` and `output.text` at 65,535 characters each and takes 50
annotations per request; `fit` cuts on a line boundary, closes an open code fence or <details> and
says that it cut, so a huge diff never turns into a 422 and a spinning check.
"""

# No `from __future__ import annotations` here: this module's `annotations()` would shadow the feature.

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gating.about import repository, version
from gating.diff.changes import ALL, Change, ChangeSet
from gating.diff.render import render_diff_markdown
from gating.evals.compare import outcome
from gating.evals.judging import Judging
from gating.evals.records import Comparison, FlippedCase, RunResult
from gating.evals.report import render_eval_markdown
from gating.github import limits as github_limits

REPORT_SCHEMA = "gating.check/1"
GITHUB_LIMIT = 65_535  # characters of output.summary / output.text (we count UTF-8 bytes, stricter)
STEP_SUMMARY_LIMIT = 1024 * 1024  # GitHub refuses a job summary over 1 MiB
MAX_ANNOTATIONS = 500
ICON = {"pass": "✅", "fail": "❌", "inconclusive": "⚠️", "unchanged": "✅", "error": "💥", "cancelled": "⏹️"}
WORD = {"pass": "Pass", "fail": "Fail", "inconclusive": "Inconclusive", "unchanged": "No LLM system changes",
        "error": "Error", "cancelled": "Cancelled"}


@dataclass
class CheckResult:
    """Everything one `gating check` decided and measured."""

    verdict: str  # pass | fail | inconclusive | unchanged | error | cancelled
    conclusion: str  # the check run's: success | failure | neutral | cancelled
    reasons: list[str]
    head_sha: str
    base_sha: str | None = None
    fail_on: str = "regression"
    changes: ChangeSet | None = None
    comparison: Comparison | None = None
    head_run: RunResult | None = None
    base_run: RunResult | None = None
    baseline: str = ""  # how the baseline was obtained, one phrase
    head_source: str = ""  # how the head results were obtained, one phrase
    llm_requests: int = 0  # requests sent to providers by this check (retries included)
    cache_hits: int = 0
    replayed: int = 0
    rate_limits: list[str] = field(default_factory=list)  # `rate limited on head: settled at ...`, a line a run
    messages: list[str] = field(default_factory=list)  # warnings for the reader (a note not pushed, ...)
    error: str | None = None  # the crash, when verdict is error
    elapsed_s: float = 0.0
    on_error: str = "fail"  # fail (an error verdict concludes failure) | neutral (reported, not blocking)

    @property
    def exit_code(self) -> int:
        return 1 if self.conclusion in ("failure", "cancelled") else 0


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _short(sha: str | None) -> str:
    return (sha or "-")[:7]


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def regressed_cases(cmp: Comparison | None) -> list[FlippedCase]:
    """Paired cases that passed on base and do not on head."""
    return [f for f in (cmp.flipped if cmp else []) if f.before == "pass" and f.after != "pass"]


def headline(r: CheckResult) -> str:
    """The one line after the verdict word: why, the most serious true cause first (a policy error, cases
    not evaluated, a missed threshold, then a significant regression), as the reasons are ordered."""
    if r.verdict == "unchanged":
        return "nothing in the LLM system changed, so no evals ran"
    if r.verdict in ("error", "cancelled") and (r.error or not r.reasons):
        return r.error or "the check did not finish"
    worse = regressed_cases(r.comparison)
    cmp = r.comparison
    only_regressed = cmp is not None and cmp.verdict == "fail" and bool(r.reasons) and r.reasons[0] == cmp.reasons[0] \
        and not any(row.status == "fail" for row in cmp.rows)
    if r.verdict == "fail" and worse and only_regressed:
        ids = ", ".join(f.id for f in worse[:5]) + (f" and {len(worse) - 5} more" if len(worse) > 5 else "")
        return f"{len(worse)} case{'s' if len(worse) != 1 else ''} regressed ({ids})"
    return r.reasons[0] if r.reasons else ""


def title(r: CheckResult) -> str:
    word = WORD.get(r.verdict, r.verdict)
    if r.verdict == "unchanged":
        return word
    if r.verdict == "fail" and r.conclusion != "failure":
        word += f" (not blocking: fail-on {r.fail_on})"
    if r.verdict == "inconclusive" and r.conclusion == "failure":
        word += " (blocking: a drop it could not confirm needs a person or more cases)"
    if r.verdict == "error" and r.conclusion != "failure":
        word += f" (not blocking: on-error {r.on_error})"
    return _clip(f"{word}: {headline(r)}", 200)


def verdict_line(r: CheckResult) -> str:
    return f"{ICON.get(r.verdict, '')} **{WORD.get(r.verdict, r.verdict)}**" + (
        "" if r.verdict == "unchanged" else f": {_cell(_clip(headline(r), 400))}") + f" · conclusion `{r.conclusion}`"


def provenance(r: CheckResult) -> str:
    parts = [f"base `{_short(r.base_sha)}` → head `{_short(r.head_sha)}`"]
    if r.baseline:
        parts.append(f"baseline: {r.baseline}")
    if r.head_source:
        parts.append(f"head: {r.head_source}")
    if r.verdict != "unchanged":
        parts.append(f"LLM requests: {r.llm_requests} (cache hits {r.cache_hits}, replayed {r.replayed})")
        parts += r.rate_limits
    parts.append(f"{r.elapsed_s:.1f} s")
    return "<sub>" + " · ".join(parts) + "</sub>"


def summary_markdown(r: CheckResult) -> str:
    """The check run summary: the verdict in one line, then the diff, then the scores."""
    out = [verdict_line(r), ""]
    out += [f"> {_cell(m)}" for m in r.messages] + ([""] if r.messages else [])
    out += [provenance(r), ""]
    if r.error and r.verdict in ("error", "cancelled"):
        out += ["```", _clip(r.error, 4000), "```", ""]
    if r.changes is not None:
        out.append(render_diff_markdown(r.changes, excerpts=False))
    if r.comparison is not None:
        out.append(render_eval_markdown(r.comparison, title="Evals"))
        if not any(r.comparison.errors.values()):
            out.append("#### Errors\n\nNone: every case of base and head was evaluated.\n")
    out.append(footer())
    return "\n".join(out)


def footer() -> str:
    """Which release of gating wrote this, so a surprising verdict can be traced to its code."""
    return f"<sub>[gating {version()}](https://github.com/{repository()}/releases/tag/v{version()})</sub>"


def details_text(r: CheckResult) -> str:
    """output.text: every case, the prompt excerpts, the run statistics."""
    out: list[str] = []
    if r.reasons:
        out += ["### Why", ""] + [f"- {_cell(x)}" for x in r.reasons] + [""]
    if r.head_run is not None:
        base = {c.id: c for c in (r.base_run.cases if r.base_run else [])}
        out += [f"### Cases ({len(r.head_run.cases)})", "",
                "| Case | Prompt | Base | Head | Score | Latency ms | Tokens in/out | Source |",
                "|---|---|---|---|---|---|---|---|"]
        for c in r.head_run.cases:
            b = base.get(c.id)
            score = f"{b.score:.2f} → {c.score:.2f}" if b is not None else f"{c.score:.2f}"
            lat = c.latency_ms.get("total")
            tokens = f"{c.tokens_in if c.tokens_in is not None else '?'}/{c.tokens_out if c.tokens_out is not None else '?'}"
            src = "carried from base" if c.carried else "cache" if c.cached else "run"
            out.append(f"| `{_cell(c.id)}` | {_cell(c.prompt or '')} | {outcome(b) if r.base_run else ''} "
                       f"| {outcome(c)} | {score} | {'' if lat is None else f'{lat:,.0f}'} | {tokens} | {src} |")
        out.append("")
    excerpts = [c for c in (r.changes.changes if r.changes else []) if c.detail]
    if excerpts:
        out += ["### Changed prompts", ""]
        for ch in excerpts:
            out += [f"<details><summary>{_cell(ch.summary)}</summary>", "", "```diff", ch.detail, "```", "",
                    "</details>", ""]
    runs = [("base", r.base_run), ("head", r.head_run)]
    if any(run is not None for _, run in runs):
        out += ["### Runs", "", "| | Rev | Snapshot | Dataset | Cases | Mode | Started |", "|---|---|---|---|---|---|---|"]
        for name, run in runs:
            if run is not None:
                out.append(f"| {name} | `{_short(run.rev)}` | `{run.snapshot_digest[:19]}` | `{run.dataset_digest[:19]}` "
                           f"| {len(run.cases)} | {run.config.get('mode', '')} | {run.started_at} |")
        out.append("")
    return "\n".join(out)


def fit(text: str, limit: int = GITHUB_LIMIT, where: str = "the job summary and the JSON report") -> str:
    """`text` within `limit` UTF-8 bytes: whole lines, fences and <details> closed, and a note saying so."""
    return github_limits.fit(text, limit, where)


def _blocks(lines: tuple[int, ...]) -> list[tuple[int, int]]:
    """Consecutive line numbers as (start, end) ranges."""
    out: list[tuple[int, int]] = []
    for n in sorted(set(lines)):
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def annotations(r: CheckResult) -> list[dict[str, Any]]:
    """One annotation per changed block of a prompt file whose cases regressed."""
    worse = regressed_cases(r.comparison)
    if not worse or r.changes is None:
        return []
    level = "failure" if r.conclusion == "failure" else "warning"
    out: list[dict[str, Any]] = []
    for c in r.changes.changes:
        if c.category != "prompt" or not c.file:
            continue
        hit = [f for f in worse if ALL in c.affects or f.prompt in c.affects]
        if not hit:
            continue
        n = len(hit)
        msg = "\n".join(f"{f.id} ({f.prompt}): {f.before} → {f.after}: {_clip(f.reason, 300)}" for f in hit[:20])
        if n > 20:
            msg += f"\n… and {n - 20} more"
        for start, end in _blocks(c.changed_lines) or [(1, 1)]:
            out.append({"path": c.file, "start_line": start, "end_line": end, "annotation_level": level,
                        "title": f"{n} eval case{'s' if n != 1 else ''} regressed after this change",
                        "message": msg})
    return out[:MAX_ANNOTATIONS]


def job_summary(r: CheckResult, read_only_reason: str | None = None, check_run_url: str | None = None) -> str:
    """GITHUB_STEP_SUMMARY: the same report, with why nothing was posted when that is the case."""
    head = [f"## gating / eval: {title(r)}", ""]
    if read_only_reason:
        head += [f"> **Nothing was posted to the pull request:** {read_only_reason}. This job's exit code "
                 f"carries the verdict ({r.exit_code}).", ""]
    elif check_run_url:
        head += [f"Check run: {check_run_url}", ""]
    body = "\n".join(head) + "\n" + summary_markdown(r) + "\n\n" + details_text(r)  # a blank line ends a quote
    return fit(body, STEP_SUMMARY_LIMIT - 1024, "the JSON report") + "\n"


def report_document(r: CheckResult, *, repository: str | None, pull_number: int | None,
                    check_run_id: int | None, notes: dict[str, Any]) -> dict[str, Any]:
    """The JSON report (an artifact): the verdict and everything behind it."""
    return {
        "schema": REPORT_SCHEMA,
        "verdict": r.verdict,
        "conclusion": r.conclusion,
        "title": title(r),
        "reasons": r.reasons,
        "repository": repository,
        "pull_request": pull_number,
        "base": r.base_sha,
        "head": r.head_sha,
        "fail_on": r.fail_on,
        "on_error": r.on_error,
        "baseline": r.baseline,
        "head_source": r.head_source,
        "llm_requests": r.llm_requests,
        "cache_hits": r.cache_hits,
        "check_run_id": check_run_id,
        "notes": notes,
        "messages": r.messages,
        "error": r.error,
        "changes": r.changes.to_dict() if r.changes is not None else None,
        "comparison": r.comparison.to_dict() if r.comparison is not None else None,
        "head_run": r.head_run.to_dict() if r.head_run is not None else None,
    }


def step_outputs(verdict: str, conclusion: str, files: dict[str, str] | None = None,
                 check_run_id: int | None = None) -> str:
    """GITHUB_OUTPUT text for action.yml's outputs: every key, whatever happened."""
    files = files or {}
    return output_lines({"verdict": verdict, "conclusion": conclusion, "report-json": files.get("report-json", ""),
                         "junit": files.get("junit", ""), "check-run-id": check_run_id or "",
                         "shard-report": files.get("shard-report", "")})


def append_to(path: str, text: str) -> None:
    """GITHUB_OUTPUT and GITHUB_STEP_SUMMARY are files each step appends to."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def output_lines(values: dict[str, Any]) -> str:
    """GITHUB_OUTPUT text; a value with a newline uses the heredoc form."""
    out = []
    for k, v in values.items():
        s = "" if v is None else str(v)
        if "\n" in s:
            delim = "gating_EOF"
            while delim in s:
                delim += "_"
            out.append(f"{k}<<{delim}\n{s}\n{delim}")
        else:
            out.append(f"{k}={s}")
    return "\n".join(out) + "\n"


def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def _ids(ids: Sequence[str], n: int = 5) -> str:
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def judging_messages(j: Judging, after_merge: Sequence[Change]) -> list[str]:
    """What the check says about how it judged: which config and why, what the head changed of it
    (applied after merge), and the cases the head adds."""
    out = [j.sentence + "."]
    evals = [c for c in after_merge if c.category == "evals"]
    if j.source == "base" and evals:
        high = sum(1 for c in evals if c.risk == "high")
        out.append(f"This pull request changes its evals ({len(evals)} change{'s' if len(evals) != 1 else ''}, "
                   f"{high} high risk): they take effect only after merge, and the base's evals judged it.")
    if j.source == "base" and j.added:
        n = len(j.added)
        out.append(f"{n} case{'s' if n != 1 else ''} added by this pull request ({_ids(j.added)}) "
                   f"{'was' if n == 1 else 'were'} run and judged with {'its' if n == 1 else 'their'} own "
                   "assertions from the head.")
    if j.unjudged:
        n = len(j.unjudged)
        out.append(f"{n} case{'s' if n != 1 else ''} added by this pull request ({_ids(j.unjudged)}) "
                   f"{'needs' if n == 1 else 'need'} a judge model the base does not define: not run; judged "
                   "after merge.")
    return out
