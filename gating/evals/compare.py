"""Base vs head: paired by case id, thresholds and the regression rule decide a verdict.

- thresholds (`evals.thresholds`): each names a flat metric of the head run (`pass_rate >= 0.95`);
- regression (`evals.regression`: max_drop, alpha): each metric gets one paired test (the pass rate
  on per-case pass rates: exact McNemar on 0/1 values, the exact sign-flip test otherwise; each
  score alike), Holm-adjusted across the metrics the run tests; a drop larger than max_drop fails
  when its adjusted p < alpha, and is inconclusive otherwise, saying what the suite can confirm.
Fail closed: cases that could not be evaluated (INFRA_ERRORS: a broken setup, rate limits, timeouts,
transport or provider errors, on either side) are not evidence, neither scores of 0 nor dropped: any
one of them makes the verdict `error`, led by the most serious cause with its fix. So does a
threshold on a metric the run did not measure, a run with no cases, and a head where every case
errored. `inconclusive` is only for a drop beyond max_drop that the test could not confirm. A case
whose template or assertion raised (`render`, `assertion`) was evaluated: it fails, like a wrong
answer. Reasons are ordered: errors, missed
thresholds, significant regressions, then what is inconclusive.
Pure: takes records and the evals config, returns a Comparison.
"""

from __future__ import annotations

import operator
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from gating.evals.metrics import latency_table, stage_order
from gating.evals.records import (
    INFRA_ERRORS,
    CaseError,
    CaseResult,
    Comparison,
    FlippedCase,
    MetricRow,
    RunResult,
)
from gating.evals.stats import holm, mcnemar_exact, min_detectable, paired_bootstrap, paired_test

DEFAULT_MAX_DROP = 0.02
DEFAULT_ALPHA = 0.05
# Below this many paired cases the bootstrap interval is withheld: its percentile interval is too
# narrow there (at 8 cases a nominal 2.5% tail is 4-6%). It is shown for reading, never decisive.
MIN_INTERVAL_PAIRS = 20
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_THRESHOLD = re.compile(r"^\s*(>=|<=|>|<|==)\s*(-?[0-9.]+)\s*$")
SHOWN = ("pass_rate", "error_rate", "latency_p50_ms", "latency_p95_ms", "tokens_in_per_request",
         "tokens_out_per_request", "cost_per_request_usd")


def parse_threshold(text: str) -> tuple[str, float]:
    m = _THRESHOLD.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a threshold like '>= 0.9' or '<= 3000'")
    return m.group(1), float(m.group(2))


def _fmt(v: float | None) -> str:
    if v is None:
        return "unknown"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def outcome(c: CaseResult | None) -> str:
    if c is None:
        return "absent"
    if c.error:
        return f"error:{c.error}"
    return "pass" if c.passed else "fail"


def why(c: CaseResult) -> str:
    if c.error:
        return f"{c.error}: {c.error_message}"
    bad = next((a for a in c.assertions if not a.passed), None)
    return f"{bad.type}: {bad.reason}" if bad else "all assertions passed"


def _optimistic_pass_rate(cases: list[CaseResult]) -> float | None:
    total = sum(c.weight for c in cases)
    if not cases or not total:
        return None
    return sum(c.weight for c in cases if c.passed or c.error in INFRA_ERRORS) / total


def compare(base: RunResult | None, head: RunResult, evals_config: Mapping[str, Any]) -> Comparison:
    """The verdict for head, against base when there is one (None: thresholds only)."""
    cfg = evals_config or {}
    reg = cfg.get("regression") or {}
    max_drop = float(reg.get("max_drop", DEFAULT_MAX_DROP))
    alpha = float(reg.get("alpha", DEFAULT_ALPHA))
    broken: list[str] = not_evaluated(base, head)
    fails: list[str] = []
    unsure: list[str] = []
    rows: dict[str, MetricRow] = {}
    bm = base.metrics if base else {}
    hm = head.metrics

    def row(metric: str) -> MetricRow:
        if metric not in rows:
            b, h = bm.get(metric), hm.get(metric)
            d = h - b if isinstance(b, (int, float)) and isinstance(h, (int, float)) else None
            rows[metric] = MetricRow(metric, b if base else None, h, d)
        return rows[metric]

    for metric in (*SHOWN, *sorted(k for k in {*bm, *hm} if k.startswith("score:"))):
        if metric in hm or metric in bm:
            row(metric)

    # -- thresholds ----------------------------------------------------------------------------
    infra = Counter(c.error for c in head.cases if c.error in INFRA_ERRORS)
    for metric, text in (cfg.get("thresholds") or {}).items():
        r = row(metric)
        r.threshold = text
        op, limit = parse_threshold(text)
        value = hm.get(metric)
        if value is None:
            r.status = "inconclusive"
            r.note = "not measured" if metric not in hm else "unknown"
            hint = " (is the metric name right?)" if metric not in hm else \
                " (a model has no price: add it to evals.prices)" if metric.startswith("cost") else ""
            broken.append(f"threshold {metric} {text} cannot be checked: {metric} is {r.note} in this run{hint}")
            continue
        if _OPS[op](value, limit):
            r.status = "ok"
            continue
        optimistic = _optimistic_pass_rate(head.cases) if metric == "pass_rate" else value
        if infra and optimistic is not None and _OPS[op](optimistic, limit):
            r.status = "inconclusive"  # the verdict is `error` (see not_evaluated): this row says why it is open
            r.note = f"{sum(infra.values())} cases not evaluated; {_fmt(optimistic)} if they pass"
            continue
        r.status = "fail"
        failing = [c.id for c in head.cases if not c.passed]
        detail = f"; failing cases: {', '.join(failing[:10])}" + (" …" if len(failing) > 10 else "") \
            if metric == "pass_rate" and failing else ""
        fails.append(f"{metric} is {_fmt(value)}, threshold {text}{detail}")

    # -- paired regression -----------------------------------------------------------------------
    flipped: list[FlippedCase] = []
    tests: list[dict[str, Any]] = []
    within: list[str] = []  # drops that a test confirms but max_drop allows
    mcn: dict[str, Any] = {}
    paired: list[tuple[CaseResult, CaseResult]] = []
    added: list[str] = []
    removed: list[str] = []
    if base is not None:
        by_id = {c.id: c for c in base.cases}
        head_ids = {c.id for c in head.cases}
        paired = [(by_id[c.id], c) for c in head.cases if c.id in by_id]
        added = [c.id for c in head.cases if c.id not in by_id]
        removed = [c.id for c in base.cases if c.id not in head_ids]
        for b, h in paired:
            if b.passed != h.passed or (b.error is None) != (h.error is None):
                flipped.append(FlippedCase(h.id, outcome(b), outcome(h), why(h) if not h.passed else why(b),
                                           h.prompt, b.score, h.score))
        flipped.sort(key=lambda f: (f.after == "pass", f.id))
        evidence = [(b, h) for b, h in paired if b.error not in INFRA_ERRORS and h.error not in INFRA_ERRORS]
        test = mcnemar_exact(sum(b.passed and not h.passed for b, h in evidence),
                             sum(h.passed and not b.passed for b, h in evidence))
        mcn = {**test.to_dict(), "n": len(evidence)}
        if evidence:
            tests, within = _regression(evidence, row, max_drop, alpha, fails, unsure)

    if not head.cases:
        broken.append("no eval cases were run at head: the datasets hold no cases for this run")
    for r in rows.values():
        if r.note == "improved" and r.status == "info":
            r.status = "improved"

    if head.cases and all(c.error for c in head.cases) and not unevaluated(head):
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(Counter(c.error for c in head.cases).items()))
        broken.append(f"every one of the {len(head.cases)} cases errored at head ({kinds}): no answer was graded")
    verdict = "error" if broken else "fail" if fails else "inconclusive" if unsure else "pass"
    if verdict == "pass":
        n_thr = len(cfg.get("thresholds") or {})
        basis = _basis(base is not None, len(paired), tests, within, max_drop)
        met = "no thresholds set" if n_thr == 0 else "the 1 threshold met" if n_thr == 1 else f"all {n_thr} thresholds met"
        reasons = [f"{met}; {basis}"]
    else:
        reasons = broken + fails + unsure
    return Comparison(
        verdict=verdict, reasons=reasons, rows=list(rows.values()), flipped=flipped,
        base_rev=base.rev if base else "", head_rev=head.rev,
        base_snapshot=base.snapshot_digest if base else "", head_snapshot=head.snapshot_digest,
        dataset_digest=head.dataset_digest, base_dataset_digest=base.dataset_digest if base else "",
        paired=len(paired), added=added, removed=removed, mcnemar=mcn, tests=tests,
        cost=_cost(bm if base else None, hm, cfg), tags=_tags(base, head),
        latency=_latency(base, head), errors={"base": _errors(base), "head": _errors(head)},
        failing=[c.id for c in head.cases if not c.passed],
        errored=[CaseError(side, c.id, c.prompt, c.error, c.error_message)
                 for side, run in (("head", head), ("base", base)) if run is not None for c in run.cases if c.error],
    )


def _regression(evidence: list[tuple[CaseResult, CaseResult]], row: Any, max_drop: float, alpha: float,
                fails: list[str], unsure: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """One paired test per metric (pass rate on per-case rates, each score unless it is the pass rate
    again), Holm-adjusted across them: a drop beyond max_drop fails when its adjusted p < alpha and
    is unconfirmed (inconclusive) otherwise, saying what the suite could have confirmed."""
    values: dict[str, tuple[list[float], list[float]]] = {
        "pass_rate": ([b.pass_rate for b, _ in evidence], [h.pass_rate for _, h in evidence])}
    # the base decides: a pull request cannot make a case it regressed count less in its own test
    weight_of = {b.id: b.weight for b, _ in evidence}
    case_weights: dict[str, list[float]] = {"pass_rate": [b.weight for b, _ in evidence]}
    same: list[str] = []
    for name in sorted({k for b, h in evidence for k in b.scores if k in h.scores}):
        pairs = [(b.scores[name], h.scores[name], b.id) for b, h in evidence if name in b.scores and name in h.scores]
        bs, hs = [p[0] for p in pairs], [p[1] for p in pairs]
        if len(pairs) == len(evidence) and (bs, hs) == values["pass_rate"]:
            same.append(name)  # a pass/fail assertion that decides its case: the pass rate's flips, tested once
            continue
        values[f"score:{name}"] = (bs, hs)
        case_weights[f"score:{name}"] = [weight_of[p[2]] for p in pairs]
    results = {m: paired_test(bs, hs, case_weights[m]) for m, (bs, hs) in values.items()}
    # a metric no case moved on cannot be rejected (p = 1 under every sign pattern): it takes no share of alpha
    moved = {m: t.p_value for m, t in results.items() if t.worse + t.better}
    adjusted = {**{m: 1.0 for m in results}, **holm(moved)}
    family = max(1, len(moved))
    out, within = [], []
    for metric, t in results.items():
        p_adj = adjusted[metric]
        out.append({"metric": metric, "n": t.n, "worse": t.worse, "better": t.better, "delta": t.delta,
                    "p_value": t.p_value, "p_adjusted": p_adj, "method": t.method, "family": family, "alpha": alpha})
        r = row(metric)
        bs, hs = values[metric]
        r.p_value = p_adj
        if t.n >= MIN_INTERVAL_PAIRS:
            iv = paired_bootstrap(bs, hs, level=1 - alpha, weights=case_weights[metric])
            r.interval, r.interval_level = [iv.low, iv.high], iv.level
        adj = f", Holm-adjusted across {family} metrics p = {p_adj:.3g}" if family > 1 else ""
        what = "pass rate" if metric == "pass_rate" else f"mean {metric}"
        counts = (f"{t.worse} pass→fail, {t.better} fail→pass" if t.method == "McNemar exact"
                  else f"{t.worse} cases worse, {t.better} better")
        p_text = f"{t.method} p = {t.p_value:.3g}{adj} ({counts})"
        if -t.delta > max_drop:
            msg = f"{what} fell by {-t.delta:.3g} on {t.n} paired cases (more than max_drop {max_drop:g}); {p_text}"
            if p_adj < alpha:
                r.status = r.status if r.status == "fail" else "regressed"
                tail = ""
                if metric == "pass_rate":  # its values are one per evidence pair, in order
                    regressed = [b.id for (b, _), x, y in zip(evidence, bs, hs, strict=True) if y < x]
                    tail = f"; regressed: {', '.join(regressed[:10])}"
                fails.append(f"{msg} < alpha {alpha:g}{tail}")
            else:  # the row keeps its own status (a met threshold is met); the drop is a note on it
                r.note = f"fell {-t.delta:.3g}, not confirmed (p = {p_adj:.3g})"
                unsure.append(f"{msg} ≥ alpha {alpha:g}: not confirmed; "
                              f"{_detectable(t.n, alpha, family, case_weights[metric])}")
        elif t.delta < 0 and p_adj < alpha:
            within.append(f"{what} fell by {-t.delta:.3g}, confirmed (p = {p_adj:.3g}) but within max_drop "
                          f"{max_drop:g}")
        elif t.delta > max_drop and p_adj < alpha and r.status in ("info", "ok"):
            r.note = "improved"
    for name in same:
        row(f"score:{name}").note = "the pass rate's flips (tested once, as pass_rate)"
    return out, within


def _detectable(n: int, alpha: float, family: int, weights: list[float] | None = None) -> str:
    """What a suite of n paired cases can confirm at all: the tests count cases, not repeats. With
    case weights, the smallest confirmable drop is that of the k lightest cases."""
    k = min_detectable(n, alpha / family)
    level = f"alpha {alpha:g}" + (f" shared by {family} metrics (Holm)" if family > 1 else "")
    if k is None:
        return (f"{n} paired cases cannot confirm any drop at {level}: that takes at least "
                f"{min_detectable(10**6, alpha / family)} cases getting worse; add cases (repeats do not help: "
                "the test counts cases)")
    weighted = weights is not None and any(w != weights[0] for w in weights)
    drop = sum(sorted(weights or [])[:k]) / sum(weights or [1.0]) if weighted else k / n
    return (f"with {n} paired cases the smallest drop this suite can confirm at {level} is {drop:.3g} "
            f"({k} {'of the lightest ' if weighted else ''}cases worse, none better); add cases (repeats make each "
            "case surer, but the test counts cases)")


def _basis(has_base: bool, paired: int, tests: list[dict[str, Any]], within: list[str], max_drop: float) -> str:
    """What held, for a pass: never "no significant regression" when nothing was tested."""
    if not has_base:
        return "no baseline"
    if paired == 0:
        return "no case paired with the base, so no regression test ran"
    if not tests:
        return f"{paired} paired cases, none evaluated on both sides: no regression test ran"
    n = tests[0]["n"]
    if not within:  # every drop within max_drop, none of them confirmed
        return f"{n} paired cases, no significant regression"
    held = f"{n} paired cases, no metric fell by more than max_drop {max_drop:g}"
    return "; ".join([held, *within])


def unevaluated(run: RunResult | None) -> list[CaseResult]:
    """The cases of `run` that could not be evaluated (an infrastructure error, not an answer)."""
    return [c for c in (run.cases if run else []) if c.error in INFRA_ERRORS]


def not_evaluated(base: RunResult | None, head: RunResult) -> list[str]:
    """Reasons for an `error` verdict: the most serious cause first, with its fix and how many cases
    of each side it cost; then up to two other causes."""
    sides = [(name, run, unevaluated(run)) for name, run in (("head", head), ("base", base)) if run is not None]
    bad = [c for _, _, cases in sides for c in cases]
    if not bad:
        return []
    counts = Counter((c.error, c.error_message) for c in bad)
    causes = sorted(counts, key=lambda k: (INFRA_ERRORS.index(k[0]), -counts[k], k[1]))
    where = " and ".join(f"{len(cases)} of {len(run.cases)} {'cases ' if i == 0 else ''}at {name}"
                         for i, (name, run, cases) in enumerate(s for s in sides if s[2]))
    out = [f"{causes[0][1]} ({where} could not be evaluated)"]
    out += [f"{msg} ({counts[(cat, msg)]} case{'s' if counts[(cat, msg)] != 1 else ''})" for cat, msg in causes[1:3]]
    if len(causes) > 3:
        out.append(f"and {len(causes) - 3} other causes; see the cases with errors")
    return out


TAG_PREFIX = "pass_rate:tag:"


def _tags(base: RunResult | None, head: RunResult) -> list[dict[str, Any]]:
    """The runs' per-tag pass rates side by side (weighted as the pass rate is), for reading: a tag
    is a slice of the suite (red-team cases, one feature), decided by a threshold on it if anything."""
    bm = base.metrics if base else {}
    names = sorted({k[len(TAG_PREFIX):] for m in (bm, head.metrics) for k in m if k.startswith(TAG_PREFIX)})
    out = []
    for tag in names:
        b, h = bm.get(TAG_PREFIX + tag), head.metrics.get(TAG_PREFIX + tag)
        cases = sum(tag in c.tags for c in head.cases) or sum(tag in c.tags for c in (base.cases if base else []))
        out.append({"tag": tag, "cases": cases, "base": b, "head": h,
                    "delta": h - b if isinstance(b, (int, float)) and isinstance(h, (int, float)) else None})
    return out


def _errors(run: RunResult | None) -> dict[str, int]:
    if run is None:
        return {}
    return dict(sorted(Counter(c.error for c in run.cases if c.error).items()))


def _latency(base: RunResult | None, head: RunResult) -> dict[str, dict[str, float | None]]:
    bt = latency_table(base.cases) if base else {}
    ht = latency_table(head.cases)
    out = {}
    for stage in stage_order([*ht, *bt]):
        out[stage] = {"base_p50": bt.get(stage, {}).get("p50"), "base_p95": bt.get(stage, {}).get("p95"),
                      "head_p50": ht.get(stage, {}).get("p50"), "head_p95": ht.get(stage, {}).get("p95")}
    return out


def _cost(bm: Mapping[str, Any] | None, hm: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Per-request cost and tokens, and what the difference means at the configured traffic."""
    rpd = (cfg.get("traffic") or {}).get("requests_per_day")
    out: dict[str, Any] = {"requests_per_day": rpd}
    for side, m in (("base", bm), ("head", hm)):
        if m is None:
            continue
        out[f"{side}_per_request_usd"] = m.get("cost_per_request_usd")
        out[f"{side}_tokens_per_request"] = _sum(m.get("tokens_in_per_request"), m.get("tokens_out_per_request"))
        c = m.get("cost_per_request_usd")
        out[f"{side}_per_day_usd"] = c * rpd if c is not None and rpd is not None else None
    if bm is not None:
        bc, hc = out.get("base_per_request_usd"), out.get("head_per_request_usd")
        out["delta_per_request_usd"] = hc - bc if bc is not None and hc is not None else None
        bt, ht = out.get("base_tokens_per_request"), out.get("head_tokens_per_request")
        out["delta_tokens_per_request"] = ht - bt if bt is not None and ht is not None else None
        if rpd is not None:
            d = out["delta_per_request_usd"]
            out["projected_delta_per_day_usd"] = d * rpd if d is not None else None
            dt = out["delta_tokens_per_request"]
            out["projected_delta_tokens_per_day"] = dt * rpd if dt is not None else None
    return out


def _sum(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b
