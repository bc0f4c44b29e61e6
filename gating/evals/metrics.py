"""Run-level metrics as one flat name -> number map, and costs from a price table kept as data.

Flat names are what `evals.thresholds` in gating.yml refers to (`pass_rate`, `score:factuality`,
`latency_p95_ms`, ...). A value of None means "unknown" (e.g. a model without a price), which a
threshold treats as not met rather than as zero.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from gating import limits
from gating.evals.dataset import DatasetError
from gating.evals.records import ERROR_CATEGORIES, INFRA_ERRORS, CaseResult
from gating.evals.stats import percentile
from gating.git.revision import OutsideTree
from gating.system.revision import RevisionReader

PRICES_PATH = Path(__file__).with_name("prices.json")
Prices = Mapping[str, Mapping[str, Mapping[str, float]]]


@lru_cache(maxsize=1)
def default_prices() -> dict[str, dict[str, dict[str, float]]]:
    data = json.loads(PRICES_PATH.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def merge_prices(base: Prices, extra: Mapping[str, Any] | None) -> dict[str, dict[str, dict[str, float]]]:
    out = {p: {m: dict(v) for m, v in models.items()} for p, models in base.items()}
    for provider, models in (extra or {}).items():
        if provider.startswith("_") or not isinstance(models, dict):
            continue
        out.setdefault(provider, {}).update(models)
    return out


def price_table(reader: RevisionReader, ev: Mapping[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """The prices a revision's evals use: its `evals.prices` file over the default table, or the
    default table alone. The App prices production telemetry with the default branch's table the
    same way. Raises DatasetError naming the setting when the file is missing, outside the
    repository or not a price table."""
    path = ev.get("prices")
    if not path:
        return default_prices()
    data = price_file(reader, path)
    if data is None:
        raise DatasetError([f"gating.yml: evals.prices names {path!r}, which does not exist at {reader.label}"])
    try:
        return merge_prices(default_prices(), limits.load_json(data, path))
    except limits.LimitError as e:
        raise DatasetError([str(e)]) from None
    except ValueError as e:
        raise DatasetError([f"{path}:1: price table is not valid JSON: {e}"]) from None


def price_file(reader: RevisionReader, path: str) -> bytes | None:
    """The bytes of the `evals.prices` file (None: no such file); a path leading out of the
    repository is refused naming the setting."""
    try:
        return reader.read_many([path])[path]
    except OutsideTree as e:
        raise DatasetError([f"gating.yml: evals.prices: {e}"]) from None


def cost_usd(provider: str | None, model: str | None, tokens_in: int | None, tokens_out: int | None,
             prices: Prices) -> float | None:
    """Cost of one request; None when the model has no price or the token counts are unknown."""
    price = (prices.get(provider or "") or {}).get(model or "")
    if price is None or tokens_in is None or tokens_out is None:
        return None
    return (tokens_in * float(price["input"]) + tokens_out * float(price["output"])) / 1_000_000


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _wmean(pairs: Sequence[tuple[float, float]]) -> float | None:
    """The weighted mean of (value, weight) pairs: a case's weight is how much it counts."""
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if pairs and total else None


def compute_metrics(cases: Sequence[CaseResult]) -> dict[str, Any]:
    """Every metric of a run. The pass rate, scores and tag pass rates are weighted by the cases'
    `weight` (1 unless the dataset says otherwise); counts stay counts. Latency and token figures are
    per request, over cases that answered; latency percentiles are over every request (each repeat),
    not over per-case means."""
    n = len(cases)
    m: dict[str, Any] = {"cases": n, "passed": sum(c.passed for c in cases)}
    m["pass_rate"] = _wmean([(c.pass_rate, c.weight) for c in cases])  # over repeats: each case's share
    errors = Counter(c.error for c in cases if c.error)
    m["errors"] = sum(errors.values())
    m["error_rate"] = m["errors"] / n if n else None
    for cat in ERROR_CATEGORIES:
        if errors.get(cat):
            m[f"error_rate:{cat}"] = errors[cat] / n
    names: dict[str, list[tuple[float, float]]] = {}
    graded = [c for c in cases if c.error not in INFRA_ERRORS]  # a case not evaluated has no score, not 0
    for c in graded:
        for name, score in c.scores.items():
            names.setdefault(name, []).append((score, c.weight))
    for name in sorted(names):
        m[f"score:{name}"] = _wmean(names[name])
    m["score"] = _wmean([(c.score, c.weight) for c in graded])
    tagged: dict[str, list[tuple[float, float]]] = {}  # per tag, so a report groups (and a threshold gates) e.g. red-team cases
    for c in cases:
        for tag in dict.fromkeys(c.tags):
            tagged.setdefault(tag, []).append((float(c.passed), c.weight))
    for tag in sorted(tagged):
        m[f"pass_rate:tag:{tag}"] = _wmean(tagged[tag])
    answered = [c for c in cases if c.error is None or c.output]
    requests = [r for c in answered for r in c.request_latencies()]  # over requests, not per-case means
    stages = sorted({s for r in requests for s in r})
    for stage in stages:
        vals = [r[stage] for r in requests if stage in r]
        suffix = "" if stage == "total" else f":{stage}"
        m[f"latency_p50_ms{suffix}"] = percentile(vals, 50)
        m[f"latency_p95_ms{suffix}"] = percentile(vals, 95)
    tin = [c.tokens_in for c in answered if c.tokens_in is not None]
    tout = [c.tokens_out for c in answered if c.tokens_out is not None]
    m["tokens_in_per_request"] = _mean(tin)
    m["tokens_out_per_request"] = _mean(tout)
    costs = [c.cost_usd for c in answered]
    m["cost_per_request_usd"] = None if not costs or any(x is None for x in costs) else _mean([x for x in costs if x is not None])
    m["cached"] = sum(c.cached for c in cases)
    return m


def stage_order(stages: Iterable[str]) -> list[str]:
    """Latency stages as tables list them: "total" first, then by name. JSON documents store them with
    sorted keys, so a table rendered from one read back must order them by this, not by the dict."""
    return sorted(set(stages), key=lambda s: (s != "total", s))


def latency_table(cases: Sequence[CaseResult]) -> dict[str, dict[str, float | None]]:
    """stage -> {p50, p95} in ms, "total" first."""
    requests = [r for c in cases for r in c.request_latencies()]
    stages = stage_order(s for r in requests for s in r)
    return {
        s: {"p50": percentile([r[s] for r in requests if s in r], 50),
            "p95": percentile([r[s] for r in requests if s in r], 95)}
        for s in stages
    }
