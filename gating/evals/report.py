"""Renderers of eval results: Markdown for check runs and job summaries, JSON, JUnit. Pure functions of records."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gating.evals.metrics import stage_order

if TYPE_CHECKING:
    from gating.evals.calibrate import Calibration
    from gating.evals.records import Comparison, RunResult

# Renderers of RunResult / Comparison / Calibration records: Markdown for the check run and job
# summary, JUnit XML for CI test reporters, JSON with a stable, versioned schema.

MAX_MARKDOWN = 65_000  # GitHub caps check-run summary and text at 65,535 characters
VERDICT_BADGE = {"pass": "✅ pass", "fail": "❌ fail", "inconclusive": "⚠️ inconclusive", "error": "💥 error"}
STATUS_BADGE = {"ok": "ok", "fail": "**fail**", "regressed": "**regressed**", "improved": "improved",
                "inconclusive": "inconclusive", "info": ""}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _num(v: float | None, metric: str = "") -> str:
    if v is None:
        return "unknown"
    if metric.startswith("cost") or metric.endswith("_usd"):
        if 0 < abs(v) < 0.0001:  # a cheap model's cost per request: three significant digits, never $0.000000
            return f"${v:.{2 - math.floor(math.log10(abs(v)))}f}"
        return f"${v:.6f}" if abs(v) < 1 else f"${v:,.2f}"
    if metric.startswith(("latency", "tokens")):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}"
    return f"{v:.3f}"


def _signed(v: float | None, metric: str = "") -> str:
    if v is None:
        return ""
    s = _num(abs(v), metric)
    return ("+" if v > 0 else "−" if v < 0 else "±") + s


def _status(status: str, note: str) -> str:
    """The row's own judgement, then a note (a drop that is not significant) apart from it."""
    badge = STATUS_BADGE.get(status, status)
    return " · ".join(x for x in (badge, "" if note == status else _cell(note)) if x)


def _short_rev(rev: str) -> str:
    return rev[:7] if len(rev) == 40 else rev


def render_eval_markdown(cmp: Comparison, heading: str = "###", max_cases: int = 50, title: str = "gating / eval") -> str:
    """The Comparison as a reviewer reads it: verdict and reasons first, then the score table,
    flipped cases, cost at the configured traffic, latency per stage and errors by category."""
    lines = [f"{heading} {title}: {VERDICT_BADGE.get(cmp.verdict, cmp.verdict)}", ""]
    lines += [f"- {_cell(r)}" for r in cmp.reasons] + [""]
    extra = []
    if cmp.added:
        extra.append(f"{len(cmp.added)} new")
    if cmp.removed:
        extra.append(f"{len(cmp.removed)} removed")
    if cmp.base_rev:
        where = f"Base `{_short_rev(cmp.base_rev)}` → head `{_short_rev(cmp.head_rev)}` · {cmp.paired} paired cases" \
            + (f" ({', '.join(extra)})" if extra else "")
    else:
        where = f"Head `{_short_rev(cmp.head_rev)}` (no baseline)"
    lines += [f"{where} · dataset `{cmp.dataset_digest[:19]}`", ""]
    worse = [f for f in cmp.flipped if f.after != "pass"]
    better = [f for f in cmp.flipped if f.after == "pass"]
    lines += _flipped_table("Regressions", worse, heading, max_cases)  # what broke, before the long metric table
    if worse and cmp.base_rev:
        lines += ["", "Reproduce locally:", "", "```sh", reproduce_command(cmp), "```", ""]
    lines += ["| Metric | Base | Head | Δ | Interval | Threshold | Status |", "|---|---|---|---|---|---|---|"]
    for r in cmp.rows:
        iv = f"[{_signed(r.interval[0], r.metric)}, {_signed(r.interval[1], r.metric)}]" if r.interval else ""
        lines.append(f"| `{r.metric}` | {_num(r.base, r.metric) if cmp.base_rev else ''} | {_num(r.head, r.metric)} "
                     f"| {_signed(r.delta, r.metric)} | {iv} | {_cell(r.threshold or '')} "
                     f"| {_status(r.status, r.note)} |")
    if cmp.mcnemar and not cmp.tests:  # a comparison stored before every metric had its test
        m = cmp.mcnemar
        lines += ["", f"McNemar exact test on {m.get('n', cmp.paired)} paired cases: {m['b']} pass→fail, "
                  f"{m['c']} fail→pass, p = {m['p_value']:.3g}."]
    lines += _tests_lines(cmp)
    lines += _flipped_table("Fixed", better, heading, max_cases)
    if cmp.tags:
        lines += ["", f"{heading}# Pass rate by tag", "", "| Tag | Cases | Base | Head | Δ |", "|---|---|---|---|---|"]
        for t in cmp.tags:
            b = _num(t.get("base")) if cmp.base_rev and t.get("base") is not None else ""
            h = _num(t.get("head")) if t.get("head") is not None else ""
            lines.append(f"| `{_cell(t['tag'])}` | {t.get('cases', '')} | {b} | {h} | {_signed(t.get('delta'))} |")
    c = cmp.cost
    if c:
        rpd = c.get("requests_per_day")
        lines += ["", f"{heading}# Tokens and cost", "", "| | Base | Head | Δ |", "|---|---|---|---|"]
        has_base = bool(cmp.base_rev)

        def cost_row(label: str, key: str, delta: str, kind: str) -> str:
            b = _num(c.get(f"base_{key}"), kind) if has_base else ""
            return f"| {label} | {b} | {_num(c.get(f'head_{key}'), kind)} | {_signed(c.get(delta), kind)} |"

        lines.append(cost_row("tokens / request", "tokens_per_request", "delta_tokens_per_request", "tokens"))
        lines.append(cost_row("cost / request", "per_request_usd", "delta_per_request_usd", "cost"))
        if rpd is not None:
            lines.append(cost_row(f"cost / day at {rpd:,.0f} requests", "per_day_usd", "projected_delta_per_day_usd",
                                  "cost"))
    if cmp.latency:
        lines += ["", f"{heading}# Latency (ms)", "", "| Stage | Base p50 | Base p95 | Head p50 | Head p95 |",
                  "|---|---|---|---|---|"]
        for stage in stage_order(cmp.latency):  # the JSON's keys are sorted: not the table's order
            v = cmp.latency[stage]
            b50, b95 = (_num(v["base_p50"], "latency"), _num(v["base_p95"], "latency")) if cmp.base_rev else ("", "")
            lines.append(f"| {stage} | {b50} | {b95} | {_num(v['head_p50'], 'latency')} "
                         f"| {_num(v['head_p95'], 'latency')} |")
    cats = sorted({*cmp.errors.get("base", {}), *cmp.errors.get("head", {})})
    if cats:
        lines += ["", f"{heading}# Errors", "", "| Category | Base | Head |", "|---|---|---|"]
        for k in cats:
            lines.append(f"| {k} | {cmp.errors.get('base', {}).get(k, 0)} | {cmp.errors.get('head', {}).get(k, 0)} |")
    if cmp.errored:
        groups: dict[tuple[str, str, str], list[str]] = {}
        for e in cmp.errored:
            groups.setdefault((e.side, e.category, e.message), []).append(f"`{_cell(e.id)}`")
        # cases that failed the same way share a row, so a broken setup is one line, not one per case
        lines += ["", f"{heading}# Cases with errors ({len(cmp.errored)})", "", "| Side | Cases | Category | Why |",
                  "|---|---|---|---|"]
        for (side, category, message), ids in list(groups.items())[:max_cases]:
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            lines.append(f"| {side} | {shown} | {category} | {_cell(message)[:300]} |")
        if len(groups) > max_cases:
            lines.append(f"| … {len(groups) - max_cases} more | | | |")
    text = "\n".join(lines) + "\n"
    if len(text) > MAX_MARKDOWN:
        text = text[: MAX_MARKDOWN - 80].rsplit("\n", 1)[0] + "\n\n… (truncated; the full report is in the JSON)\n"
    return text


def _tests_lines(cmp: Comparison) -> list[str]:
    """Which test decided each metric, its p and the Holm-adjusted p; what the interval column is."""
    if not cmp.tests:
        return []
    fam = cmp.tests[0].get("family", len(cmp.tests))
    head = (f"Paired tests, two-sided, Holm-adjusted across the {fam} metrics tested" if fam > 1
            else "Paired test, two-sided") + f" (alpha {cmp.tests[0].get('alpha', 0.05):g}):"
    out = ["", head, ""]
    for t in cmp.tests:
        adj = f", adjusted {t['p_adjusted']:.3g}" if fam > 1 else ""
        why = (" (case weights: the paired sign-flip test on weighted per-case differences; McNemar counts flips and "
               "cannot weigh them)" if str(t["method"]).startswith("weighted") else "")
        out.append(f"- `{t['metric']}`: {t['method']} on {t['n']} cases ({t['worse']} worse, {t['better']} better), "
                   f"p = {t['p_value']:.3g}{adj}{why}")
    shown = [r for r in cmp.rows if r.interval]
    if shown:
        out += ["", f"Interval: paired bootstrap percentile interval of Δ at level {shown[0].interval_level or 0.95:.0%}, "
                "for reading only (the tests decide); withheld below 20 paired cases, where it is too narrow."]
    return out


def _flipped_table(name: str, group: list, heading: str, max_cases: int) -> list[str]:
    if not group:
        return []
    lines = ["", f"{heading}# {name} ({len(group)})", "", "| Case | Prompt | Before | After | Why |",
             "|---|---|---|---|---|"]
    for f in group[:max_cases]:
        lines.append(f"| `{_cell(f.id)}` | {_cell(f.prompt or '')} | {f.before} | {f.after} | {_cell(f.reason)[:300]} |")
    if len(group) > max_cases:
        lines.append(f"| … {len(group) - max_cases} more | | | | |")
    return lines + [""]


def reproduce_command(cmp: Comparison) -> str:
    """The `gating eval` that re-runs the prompts of the regressed cases on base and head."""
    import shlex

    prompts = sorted({f.prompt for f in cmp.flipped if f.after != "pass" and f.prompt})
    only = "".join(f" --only {shlex.quote(p)}" for p in prompts)
    return f"gating eval --base {shlex.quote(cmp.base_rev)} --rev {shlex.quote(cmp.head_rev)}{only}"


def render_run_markdown(run: RunResult, heading: str = "###", max_cases: int = 50) -> str:
    """One run on its own: pass rate, metrics, and the failing cases with their reasons."""
    m = run.metrics
    lines = [f"{heading} Eval at `{_short_rev(run.rev)}`: {m.get('passed', 0)}/{m.get('cases', 0)} passed", ""]
    lines += ["| Metric | Value |", "|---|---|"]
    for k, v in m.items():
        if k in ("cases", "passed"):
            continue
        lines.append(f"| `{k}` | {_num(v, k) if isinstance(v, (int, float)) or v is None else v} |")
    bad = [c for c in run.cases if not c.passed]
    if bad:
        lines += ["", f"{heading}# Failing cases ({len(bad)})", "", "| Case | Prompt | Why |", "|---|---|---|"]
        for c in bad[:max_cases]:
            reason = f"{c.error}: {c.error_message}" if c.error else next(
                (f"{a.type}: {a.reason}" for a in c.assertions if not a.passed), "")
            lines.append(f"| `{_cell(c.id)}` | {_cell(c.prompt or '')} | {_cell(reason)[:300]} |")
        if len(bad) > max_cases:
            lines.append(f"| … {len(bad) - max_cases} more | | |")
    return "\n".join(lines) + "\n"


def render_junit(obj: RunResult | Comparison | None, suite: str = "gating eval") -> str:
    """JUnit XML: a RunResult gives one testcase per eval case; a Comparison one per metric check
    (thresholds and regression rules) plus one per flipped case; None (nothing ran) an empty suite."""
    from xml.sax.saxutils import quoteattr

    cases: list[tuple[str, str, float, str | None, str | None, str]] = []  # class, name, secs, kind, msg, detail
    if obj is not None and hasattr(obj, "cases"):
        for c in obj.cases:
            secs = (c.latency_ms.get("total") or 0.0) / 1000
            if c.error:
                cases.append((c.prompt or "eval", c.id, secs, "error", f"{c.error}: {c.error_message}", c.output))
            elif not c.passed:
                bad = [a for a in c.assertions if not a.passed]
                msg = "; ".join(f"{a.type}: {a.reason}" for a in bad) or "failed"
                cases.append((c.prompt or "eval", c.id, secs, "failure", msg, c.output))
            else:
                cases.append((c.prompt or "eval", c.id, secs, None, None, ""))
    elif obj is not None:
        for r in obj.rows:
            if r.threshold is None and r.status not in ("regressed", "inconclusive") and not r.note.startswith("fell"):
                continue
            kind = "failure" if r.status in ("fail", "regressed") else None
            msg = f"{r.metric}: head {r.head} (base {r.base}), threshold {r.threshold}, status {r.status}"
            cases.append(("metrics", r.metric, 0.0, kind, msg if kind else None, ""))
        for f in obj.flipped:
            kind = None if f.after == "pass" else "failure"
            cases.append(("flipped", f.id, 0.0, kind, f"{f.before} → {f.after}: {f.reason}" if kind else None, ""))
    failures = sum(1 for c in cases if c[3] == "failure")
    errors = sum(1 for c in cases if c[3] == "error")
    total = sum(c[2] for c in cases)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f"<testsuites name={quoteattr(suite)} tests=\"{len(cases)}\" failures=\"{failures}\" errors=\"{errors}\">",
           f"  <testsuite name={quoteattr(suite)} tests=\"{len(cases)}\" failures=\"{failures}\" "
           f"errors=\"{errors}\" time=\"{total:.3f}\">"]
    for cls, name, secs, kind, text, detail in cases:
        attrs = f"classname={quoteattr(cls)} name={quoteattr(name)} time=\"{secs:.3f}\""
        if kind is None:
            out.append(f"    <testcase {attrs}/>")
            continue
        body = _xml_text(detail)
        out.append(f"    <testcase {attrs}>")
        out.append(f"      <{kind} message={quoteattr(_xml_clean(text or ''))}>{body}</{kind}>")
        out.append("    </testcase>")
    out += ["  </testsuite>", "</testsuites>"]
    return "\n".join(out) + "\n"


def _xml_clean(s: str) -> str:
    return "".join(ch for ch in s if ch in "\t\n\r" or ord(ch) >= 0x20)


def _xml_text(s: str) -> str:
    from xml.sax.saxutils import escape

    return escape(_xml_clean(s))


def eval_to_json(obj: RunResult | Comparison | Calibration) -> str:
    """Stable JSON of a RunResult, Comparison or Calibration (sorted keys, schema field included)."""
    import json

    return json.dumps(obj.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


to_json = eval_to_json  # the name the other renderers' callers use


def render_calibration_markdown(cal: Calibration, heading: str = "###") -> str:
    state = "calibrated" if cal.calibrated else "**not calibrated**"
    lines = [f"{heading} Judge calibration: {state}", "",
             f"Judge `{cal.judge}` on {cal.n} human-rated examples (`{cal.ratings_path}`).", "",
             "| Statistic | Value |", "|---|---|",
             f"| exact agreement | {cal.exact:.3f} |", f"| within-one agreement | {cal.within_one:.3f} |",
             f"| quadratic weighted kappa | {'undefined' if cal.kappa is None else f'{cal.kappa:.3f}'} |",
             f"| required (kappa{'' if cal.metric == 'kappa' else ' and ' + cal.metric}) | >= {cal.min_agreement:g} |"]
    if cal.unparsed:
        lines.append(f"| judge replies not parsed (counted as disagreement) | {cal.unparsed} |")
    if cal.why:
        lines += ["", f"Not calibrated: {cal.why}."]
    k = len(cal.confusion)
    lines += ["", "Confusion matrix (rows: human, columns: judge):", "",
              "| human \\ judge | " + " | ".join(str(i + 1) for i in range(k)) + " |", "|---" * (k + 1) + "|"]
    for i, r in enumerate(cal.confusion):
        lines.append(f"| {i + 1} | " + " | ".join(str(x) for x in r) + " |")
    return "\n".join(lines) + "\n"
