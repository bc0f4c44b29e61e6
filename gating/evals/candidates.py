"""Candidates: the same cases run on other models or prompt variants, compared with the current system.

A candidate overrides the current revision, nothing else: `model` swaps every prompt's model pin
for another model component (or a `provider:model` given on the command line), `prompts` gives a
prompt another file of the revision or another prompt component's text. Each candidate is a full
eval run of the overridden snapshot, paired case by case with the run of the system as it is, so
the significance is the gate's own (McNemar on pass/fail flips, the paired bootstrap on scores:
`gating.evals.compare.compare`). The table answers "should we swap the model?" before anyone opens
a pull request: pass rate, scores, cost per request and per day, latency, errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import posixpath
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, cast

from gating.errors import GatingError
from gating.evals.compare import DEFAULT_ALPHA, INFRA_ERRORS, compare
from gating.evals.records import Comparison, RunResult
from gating.git.revision import OutsideTree
from gating.system.revision import RevisionReader
from gating.system.schema import PROVIDERS
from gating.system.snapshot import Snapshot

COMPARE_SCHEMA = "gating.eval.compare/1"
CURRENT = "current"


class CandidateError(GatingError):
    """A candidate names a model, prompt or file the revision does not have."""


@dataclass(frozen=True)
class Candidate:
    name: str
    model: str | None = None  # a model component, or "provider:model"
    prompts: tuple[tuple[str, str], ...] = ()  # (prompt component, file of the revision or prompt component)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "prompts": dict(self.prompts)}


def parse_candidate(text: str) -> Candidate:
    """`MODEL`, `PROVIDER:MODEL`, `PROMPT=FILE` or `PROMPT=OTHER_PROMPT` (combined with `+`)."""
    model: str | None = None
    prompts: list[tuple[str, str]] = []
    for part in (p.strip() for p in text.split("+")):
        if not part:
            raise CandidateError(f"candidate {text!r}: empty part (write MODEL, PROMPT=FILE, or both joined by +)")
        if "=" in part:
            prompt, _, variant = part.partition("=")
            if not prompt.strip() or not variant.strip():
                raise CandidateError(f"candidate {text!r}: {part!r} is not PROMPT=FILE")
            prompts.append((prompt.strip(), variant.strip()))
        elif model is not None:
            raise CandidateError(f"candidate {text!r}: names two models ({model!r} and {part!r})")
        else:
            model = part
    return Candidate(text, model, tuple(prompts))


def from_manifest(entries: Iterable[Mapping[str, Any]]) -> list[Candidate]:
    """`evals.candidates`: each {name?, model?, prompts?: {PROMPT: FILE_OR_PROMPT}}."""
    out = []
    for i, e in enumerate(entries):
        prompts = tuple(sorted((str(k), str(v)) for k, v in (e.get("prompts") or {}).items()))
        model = e.get("model")
        if not model and not prompts:
            raise CandidateError(f"evals.candidates[{i}]: a candidate sets `model`, `prompts` or both")
        name = e.get("name") or "+".join([*([model] if model else []), *(f"{p}={v}" for p, v in prompts)])
        out.append(Candidate(str(name), model, prompts))
    return out


def _unknown(kind: str, name: str, known: Iterable[str], where: str, more: str = "") -> CandidateError:
    names = sorted(known)
    hint = difflib.get_close_matches(name, names, n=1)
    return CandidateError(f"{where}: unknown {kind} {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; known {kind}s: {', '.join(names) or 'none'}" + (f", {more}" if more else ""))


def apply(snap: Snapshot, reader: RevisionReader, cand: Candidate) -> Snapshot:
    """The snapshot with the candidate's overrides (raises CandidateError naming what is unknown)."""
    m = snap.manifest
    where = f"candidate {cand.name!r}"
    models = {k: dict(v) for k, v in m.models.items()}
    prompts = {k: dict(v) for k, v in m.prompts.items()}
    added: dict[str, bytes] = {}
    target = ((m.evals.get("target") or {}).get("type")) or "prompt"
    if cand.model is not None:
        if target != "prompt":
            raise CandidateError(f"{where}: a model candidate needs evals.target type prompt (this system's evals "
                                 f"call a {target} target, which chooses its own model)")
        name = cand.model
        if name not in models:
            provider, sep, model_id = name.partition(":")
            if not sep or provider not in PROVIDERS or provider == "replay" or not model_id:
                raise _unknown("model", name, models, where, "or PROVIDER:MODEL with a provider among "
                               + ", ".join(p for p in PROVIDERS if p != "replay"))
            models[name] = {"provider": provider, "model": model_id}
        for p in prompts.values():
            if p.get("model"):
                p["model"] = name
    for prompt, variant in cand.prompts:
        if prompt not in prompts:
            raise _unknown("prompt", prompt, prompts, where)
        if variant in m.prompts:
            prompts[prompt]["file"] = m.prompts[variant]["file"]
            if m.prompts[variant].get("system"):
                prompts[prompt]["system"] = m.prompts[variant]["system"]
            continue
        if variant.startswith("/") or "\\" in variant or posixpath.normpath(variant) != variant \
                or variant.split("/")[0] == "..":
            raise CandidateError(f"{where}: {variant!r} is not a path inside the repository (a relative path like "
                                 "prompts/answer-v2.md)")
        try:
            blob = reader.read_many([variant]).get(variant)
        except OutsideTree as e:  # through a directory that is a link out of the repository
            raise CandidateError(f"{where}: {e}") from None
        if blob is None:
            raise CandidateError(f"{where}: {variant!r} is neither a prompt component nor a file at {reader.label}; "
                                 f"known prompts: {', '.join(sorted(m.prompts)) or 'none'}")
        prompts[prompt]["file"] = variant
        added[variant] = blob
    components = {**m.components, "models": models, "prompts": prompts}
    data = {**m.data, "components": components}
    manifest = dataclasses.replace(m, data=data)
    contents = ChainMap(added, cast(MutableMapping[str, bytes], snap.contents))  # the revision's files, read lazily
    return Snapshot({**snap.data, "candidate": cand.to_dict()}, manifest, contents, m.source)


@dataclass
class CandidateRow:
    """One line of the table: a candidate's run and how it compares with the current system."""

    name: str
    run: RunResult
    comparison: Comparison | None  # None for the current system itself
    overrides: dict[str, Any] = field(default_factory=dict)

    def summary(self, alpha: float) -> dict[str, Any]:
        m = self.run.metrics
        out: dict[str, Any] = {
            "name": self.name, "cases": len(self.run.cases), "pass_rate": m.get("pass_rate"),
            "score": m.get("score"), "errors": sum(1 for c in self.run.cases if c.error in INFRA_ERRORS),
            "cost_per_request_usd": m.get("cost_per_request_usd"),
            "latency_p50_ms": m.get("latency_p50_ms"), "latency_p95_ms": m.get("latency_p95_ms"),
            "scores": {k[len("score:"):]: v for k, v in sorted(m.items()) if k.startswith("score:")},
        }
        if self.comparison is None:
            return out
        c = self.comparison
        mc = c.mcnemar or {}
        pr = c.row("pass_rate")
        out.update({
            "paired": c.paired, "pass_rate_delta": pr.delta if pr else None,
            "pass_rate_interval": pr.interval if pr else None, "mcnemar": mc,
            "significance": significance(mc, alpha),
            "score_deltas": {r.metric[len("score:"):]: {"delta": r.delta, "interval": r.interval}
                             for r in c.rows if r.metric.startswith("score:")},
            "verdict": c.verdict, "reasons": list(c.reasons),
        })
        return out


def significance(mcnemar: Mapping[str, Any], alpha: float) -> str:
    """Better, worse or no significant difference on pass/fail, by the exact McNemar test."""
    if not mcnemar or not mcnemar.get("n"):
        return "not paired"
    b, c, p = mcnemar.get("b", 0), mcnemar.get("c", 0), mcnemar.get("p_value", 1.0)
    if p < alpha and c > b:
        return f"better (p = {p:.3g})"
    if p < alpha and b > c:
        return f"worse (p = {p:.3g})"
    return f"no significant difference (p = {p:.3g})"


@dataclass
class CandidateComparison:
    rows: list[CandidateRow]
    alpha: float
    requests_per_day: float | None

    @property
    def broken(self) -> list[str]:
        """Runs with cases that could not be evaluated: their figures are not evidence."""
        out = []
        for r in self.rows:
            bad = [c for c in r.run.cases if c.error in INFRA_ERRORS]
            if bad:
                out.append(f"{r.name}: {len(bad)} of {len(r.run.cases)} cases could not be evaluated "
                           f"({bad[0].error}: {bad[0].error_message})")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": COMPARE_SCHEMA, "alpha": self.alpha, "requests_per_day": self.requests_per_day,
            "table": [{**r.summary(self.alpha), "cost_per_day_usd": self._per_day(r),
                       "overrides": r.overrides} for r in self.rows],
            "runs": {r.name: r.run.to_dict() for r in self.rows},
            "comparisons": {r.name: r.comparison.to_dict() for r in self.rows if r.comparison is not None},
            "errors": self.broken,
        }

    def _per_day(self, r: CandidateRow) -> float | None:
        c = r.run.metrics.get("cost_per_request_usd")
        return c * self.requests_per_day if c is not None and self.requests_per_day is not None else None


def compare_candidates(current: RunResult, runs: list[tuple[Candidate, RunResult]],
                       evals_config: Mapping[str, Any]) -> CandidateComparison:
    """Each candidate's run against the current system's, paired by case id."""
    alpha = float((evals_config.get("regression") or {}).get("alpha", DEFAULT_ALPHA))
    rpd = (evals_config.get("traffic") or {}).get("requests_per_day")
    rows = [CandidateRow(CURRENT, current, None)]
    rows += [CandidateRow(c.name, r, compare(current, r, evals_config), c.to_dict()) for c, r in runs]
    return CandidateComparison(rows, alpha, rpd)


def run_candidates(snap: Snapshot, reader: RevisionReader, candidates: list[Candidate],
                   run: Callable[[str, Snapshot], RunResult]) -> tuple[RunResult, list[tuple[Candidate, RunResult]]]:
    """Check every candidate first (a bad name costs no calls), then run the current system and each."""
    names = [c.name for c in candidates]
    dup = sorted({n for n in names if names.count(n) > 1 or n == CURRENT})
    if dup:
        raise CandidateError(f"candidate names must be unique and not {CURRENT!r}: {', '.join(dup)}")
    snaps = [(c, apply(snap, reader, c)) for c in candidates]
    current = run(CURRENT, snap)
    return current, [(c, run(c.name, s)) for c, s in snaps]


# -- rendering ------------------------------------------------------------------------------------


def _pct(v: float | None) -> str:
    return "unknown" if v is None else f"{v:.3f}"


def _usd(v: float | None) -> str:
    if v is None:
        return "unknown"
    if 0 < abs(v) < 0.0001:
        return f"${v:.2e}"
    return f"${v:.6f}" if abs(v) < 1 else f"${v:,.2f}"


def _ms(v: float | None) -> str:
    return "unknown" if v is None else f"{v:,.0f}"


def _cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def render_markdown(cc: CandidateComparison, heading: str = "###") -> str:
    """The table a reader compares candidates by, then score deltas with their intervals."""
    level = int(100 * (1 - cc.alpha))
    per_day = f"cost/day at {cc.requests_per_day:,g} req" if cc.requests_per_day is not None else "cost/day"
    lines = [f"{heading} gating / eval --compare: {len(cc.rows) - 1} candidate"
             f"{'s' if len(cc.rows) != 2 else ''} against the current system", ""]
    lines += [f"| Candidate | Pass rate | Δ pass rate | vs current (McNemar) | Score | Cost/request | {per_day} | "
              "Latency p50 ms | Latency p95 ms | Errors |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in cc.rows:
        s = r.summary(cc.alpha)
        delta = "" if r.comparison is None or s.get("pass_rate_delta") is None else f"{s['pass_rate_delta']:+.3f}"
        sig = "—" if r.comparison is None else s["significance"]
        per = cc._per_day(r)
        lines.append(f"| `{_cell(r.name)}` | {_pct(s['pass_rate'])} | {delta} | {sig} | {_pct(s['score'])} | "
                     f"{_usd(s['cost_per_request_usd'])} | {'n/a' if cc.requests_per_day is None else _usd(per)} | "
                     f"{_ms(s['latency_p50_ms'])} | {_ms(s['latency_p95_ms'])} | {s['errors']} |")
    names = sorted({k for r in cc.rows for k in r.summary(cc.alpha)["scores"]})
    if names:
        lines += ["", f"Mean scores (Δ against the current system, {level}% paired bootstrap interval):", "",
                  "| Candidate | " + " | ".join(f"score:{_cell(n)}" for n in names) + " |",
                  "|---|" + "---|" * len(names)]
        for r in cc.rows:
            s = r.summary(cc.alpha)
            cells = []
            for n in names:
                v = s["scores"].get(n)
                d = (s.get("score_deltas") or {}).get(n) or {}
                iv = d.get("interval")
                extra = "" if r.comparison is None or d.get("delta") is None else \
                    f" ({d['delta']:+.3f}" + (f", [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "") + ")"
                cells.append(_pct(v) + extra)
            lines.append(f"| `{_cell(r.name)}` | " + " | ".join(cells) + " |")
    tags = sorted({k[len("pass_rate:tag:"):] for r in cc.rows for k in r.run.metrics if k.startswith("pass_rate:tag:")})
    if tags:
        lines += ["", "Pass rate by tag:", "", "| Candidate | " + " | ".join(f"`{_cell(t)}`" for t in tags) + " |",
                  "|---|" + "---|" * len(tags)]
        lines += [f"| `{_cell(r.name)}` | " + " | ".join(_pct(r.run.metrics.get(f"pass_rate:tag:{t}")) for t in tags)
                  + " |" for r in cc.rows]
    if cc.broken:
        lines += ["", "Not evidence (cases that could not be evaluated):", ""]
        lines += [f"- {_cell(b)}" for b in cc.broken]
    lines += ["", f"Paired by case id; pass/fail by the exact McNemar test at alpha {cc.alpha:g}. "
              + ("Cost per day at evals.traffic.requests_per_day." if cc.requests_per_day is not None
                 else "Set evals.traffic.requests_per_day for cost per day.")]
    return "\n".join(lines) + "\n"
