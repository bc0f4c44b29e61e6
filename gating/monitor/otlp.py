"""OTLP traces and metrics read through OpenTelemetry's GenAI semantic conventions into minute roll-ups.

What a span means:
- **Which system.** The resource's `gating.snapshot`, else `gating.commit`, else `service.version`
  (the commit SHA the deployment was built from). **Which repository**: the resource's
  `gating.repository` (owner/name), else the repository the bearer token is bound to. Spans with
  neither are rejected and counted in the partial-success answer, never guessed.
- **Which component.** The span's `gating.component` (a prompt/component name from gating.yml). Every
  span also counts in its stage's WHOLE_SYSTEM roll-up, so WHOLE_SYSTEM is the system over every
  component (summing over all components counts component spans twice: ask for WHOLE_SYSTEM).
- **Which stage.** `gating.stage` when set; `gen_ai.operation.name` embeddings -> embedding,
  chat/text_completion/generate_content -> llm; `db.*` attributes or a name with retriev/vector/search
  -> retrieval; a name with embed -> embedding, post-process -> post; any other span naming a
  `gen_ai.request.model` -> llm. The root span (no parent) is also the stage "request": the whole
  request's count, errors and latency. Spans with no stage count nowhere (they are still accepted).
- **Tokens and cost** stay in the stage where they were spent (llm, embedding), so a window's tokens
  are the sum over its stages and a request roll-up never counts them again. Cost comes from the
  price table the repository's evals use (`evals.prices` over gating/evals/prices.json; the App
  passes each repository's in), by provider and model; a model without a price adds nothing (the
  price table's rule: unknown, never a guessed zero).
- **Errors.** A span with status ERROR or an `error.type`, or whose finish reasons include
  content_filter, counts as an error of one category (rate_limit, content_filter, timeout, parse,
  other), read from `error.type`, the status message and recorded exception types.
- **Feedback.** A span event `gating.feedback` with attribute `kind` (positive, negative, edited,
  followup, completed) counts in the request stage of the span's component, at the event's minute.

Metrics (`/v1/metrics`): the histograms `gen_ai.client.operation.duration` (requests, errors by
`error.type`, latency from the buckets) and `gen_ai.client.token.usage` (tokens by
`gen_ai.token.type`, and their cost), in delta temporality only: a cumulative series cannot be
turned into per-minute figures without the previous export, so its points are rejected with a
message saying which exporter setting to change. A service should send the GenAI metrics or the
spans, not both: both would count its model calls twice.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from gating.errors import GatingError
from gating.evals.metrics import Prices, cost_usd, default_prices
from gating.monitor.rollup import FEEDBACK_KINDS, STAGES, WHOLE_SYSTEM, Rollup

MAX_FUTURE_SECONDS = 300  # clock skew allowed; later spans would plant figures in windows not yet begun
MAX_NAME = 200  # longest system or component name kept
REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR
DELTA = 1  # AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
DURATION_METRIC = "gen_ai.client.operation.duration"
TOKENS_METRIC = "gen_ai.client.token.usage"
LLM_OPERATIONS = ("chat", "text_completion", "generate_content")
DB_ATTRIBUTES = ("db.system", "db.system.name", "db.operation", "db.operation.name")
SPAN_ATTRIBUTES = frozenset({
    "gating.component", "gating.stage", "gen_ai.operation.name", "gen_ai.request.model", "gen_ai.response.model",
    "gen_ai.provider.name", "gen_ai.system", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
    "gen_ai.response.finish_reasons", "error.type", *DB_ATTRIBUTES})
_ERROR_WORDS = (  # first match wins, in this order
    ("rate_limit", ("rate_limit", "ratelimit", "429", "too_many_requests", "resource_exhausted", "quota")),
    ("content_filter", ("content_filter", "contentfilter", "content_policy", "safety", "moderation")),
    ("timeout", ("timeout", "timed_out", "deadline", "504", "408")),
    ("parse", ("parse", "json", "decode", "validation", "schema")),
)

Key = tuple[str, str, str, str, int]  # repo, system, component, stage, minute


class Rejected(GatingError):
    """Why spans (or data points) were not accepted; the message is counted in the partial success."""


@dataclass
class Ingest:
    """What one export request adds: roll-ups by key, the traces it starts (so feedback can name a
    trace id), and how many items were accepted or rejected, and why."""

    rollups: dict[Key, Rollup] = field(default_factory=dict)
    traces: list[tuple[str, str, str, str, int]] = field(default_factory=list)  # trace id, repo, system, comp, min
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)

    def at(self, repo: str, system: str, component: str, stage: str, minute: int) -> Rollup:
        key = (repo, system, component, stage, minute)
        r = self.rollups.get(key)
        if r is None:
            r = self.rollups[key] = Rollup(repo, system, component, stage, minute)
        return r

    def both(self, repo: str, system: str, component: str, stage: str, minute: int) -> list[Rollup]:
        """The component's roll-up and the WHOLE_SYSTEM one (one roll-up when they are the same)."""
        out = [self.at(repo, system, WHOLE_SYSTEM, stage, minute)]
        if component != WHOLE_SYSTEM:
            out.append(self.at(repo, system, component, stage, minute))
        return out

    @property
    def rejected_count(self) -> int:
        return sum(self.rejected.values())

    def message(self) -> str:
        """The partial-success error_message: each reason with its count."""
        parts = [f"{n} rejected: {why}" for why, n in sorted(self.rejected.items())]
        parts += [f"{n} warning{'s' if n > 1 else ''}: {why}" for why, n in sorted(self.warnings.items())]
        return "; ".join(parts)


# -- attribute values ------------------------------------------------------------------------------------


def value(av: Any) -> Any:
    """The Python value of an OTLP AnyValue."""
    kind = av.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(v) for v in av.array_value.values]
    if kind == "kvlist_value":
        return attributes(av.kvlist_value.values)
    return getattr(av, kind)


def attributes(kvs: Iterable[Any], wanted: frozenset[str] | None = None) -> dict[str, Any]:
    """Attributes as a dict; only the `wanted` keys (instrumented spans carry prompts and more)."""
    out = {}
    for kv in kvs:
        key = kv.key
        if wanted is None or key in wanted:
            out[key] = value(kv.value)
    return out


# -- attribution -----------------------------------------------------------------------------------------


def attribution(resource: Mapping[str, Any], bound_repo: str | None) -> tuple[str, str]:
    """(repository, system) of a resource's telemetry; raises Rejected saying what is missing."""
    named = resource.get("gating.repository")
    if named is not None and (not isinstance(named, str) or not REPOSITORY.fullmatch(named)):
        raise Rejected(f"resource attribute gating.repository must be owner/name, got {str(named)[:80]!r}")
    if bound_repo and named and named.lower() != bound_repo.lower():
        raise Rejected(f"gating.repository {named} is not the repository this token sends for ({bound_repo})")
    repo = named or bound_repo
    if not repo:
        raise Rejected("no gating.repository resource attribute, and the token is not bound to a repository")
    for attr in ("gating.snapshot", "gating.commit", "service.version"):
        system = resource.get(attr)
        if system not in (None, ""):
            if not isinstance(system, str) or len(system) > MAX_NAME:
                raise Rejected(f"resource attribute {attr} must be a string of at most {MAX_NAME} characters")
            return repo, system
    raise Rejected("no service.version, gating.commit or gating.snapshot resource attribute: "
                   "the deployed system that sent them is unknown")


def component_of(attrs: Mapping[str, Any]) -> str:
    c = attrs.get("gating.component")
    if c in (None, ""):
        return WHOLE_SYSTEM
    if not isinstance(c, str) or len(c) > MAX_NAME:
        raise Rejected(f"span attribute gating.component must be a string of at most {MAX_NAME} characters")
    return c


def stage_of(name: str, attrs: Mapping[str, Any]) -> str | None:
    """The stage a span measures (see the module docstring), or None."""
    explicit = attrs.get("gating.stage")
    if explicit in STAGES:
        return str(explicit)
    op = attrs.get("gen_ai.operation.name")
    if op == "embeddings":
        return "embedding"
    if op in LLM_OPERATIONS:
        return "llm"
    if any(a in attrs for a in DB_ATTRIBUTES):
        return "retrieval"
    n = name.lower()
    if "embed" in n:
        return "embedding"
    if "retriev" in n or "vector" in n or "search" in n:
        return "retrieval"
    if re.search(r"post[-_ ]?process", n):
        return "post"
    if "gen_ai.request.model" in attrs:
        return "llm"
    return None


def error_category(text: str) -> str:
    """rate_limit, content_filter, timeout, parse or other, from an error type or message."""
    t = re.sub(r"[\s-]+", "_", text.lower())
    for category, words in _ERROR_WORDS:
        if any(w in t for w in words):
            return category
    return "other"


def _finish_filtered(attrs: Mapping[str, Any]) -> bool:
    reasons = attrs.get("gen_ai.response.finish_reasons")
    return "content_filter" in (reasons if isinstance(reasons, list) else [reasons])


# -- prices ----------------------------------------------------------------------------------------------


class PriceBook:
    """A price table (gating.evals.metrics: the default one, or a repository's `evals.prices` over
    it) and the (provider, model) each span's names resolve to in it."""

    def __init__(self, table: Prices):
        self.table = table
        self._by_model: dict[str, tuple[str, str]] = {}  # for a span whose provider is not the table's
        for provider, models in table.items():
            for model in models:
                self._by_model.setdefault(model, (provider, model))
        self._priced: dict[tuple[str, str], tuple[str, str]] = {}

    def cost(self, attrs: Mapping[str, Any], tokens_in: int, tokens_out: int) -> float:
        model = attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model")
        if not isinstance(model, str) or not (tokens_in or tokens_out):
            return 0.0
        provider, model = self.priced(str(attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system") or ""),
                                      model)
        return cost_usd(provider, model, tokens_in, tokens_out, self.table) or 0.0

    def priced(self, provider: str, model: str) -> tuple[str, str]:
        """The table's (provider, model) for a span's: its own, else the first provider pricing the model."""
        key = (provider, model)
        if key not in self._priced:
            if len(self._priced) > 1024:  # span attributes are the sender's: bound what they can grow
                self._priced.clear()
            own = model in self.table.get(provider, {})
            self._priced[key] = key if own else self._by_model.get(model, key)
        return self._priced[key]


@lru_cache(maxsize=1)
def default_book() -> PriceBook:
    return PriceBook(default_prices())


PriceLookup = Callable[[str], PriceBook]  # repository -> the prices its spans cost at


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


# -- traces ----------------------------------------------------------------------------------------------


def read_traces(request: Any, *, bound_repo: str | None, now: float, oldest_minute: int,
                prices: PriceLookup | None = None) -> Ingest:
    """An ExportTraceServiceRequest as roll-ups; nothing is written here. `prices` gives each
    repository's price table (default: the built-in one)."""
    out = Ingest()
    for rs in request.resource_spans:
        spans = [s for ss in rs.scope_spans for s in ss.spans]
        try:
            repo, system = attribution(attributes(rs.resource.attributes), bound_repo)
        except Rejected as e:
            out.rejected[str(e)] += len(spans)
            continue
        book = prices(repo) if prices is not None else default_book()
        for span in spans:
            try:
                _add_span(out, repo, system, span, now, oldest_minute, book)
            except Rejected as e:
                out.rejected[str(e)] += 1
            else:
                out.accepted += 1
    return out


def _minute(nanos: int, now: float, oldest_minute: int, what: str) -> int:
    seconds = nanos / 1e9
    if seconds > now + MAX_FUTURE_SECONDS:
        raise Rejected(f"{what} more than {MAX_FUTURE_SECONDS} s in the future (is the sender's clock right?)")
    minute = int(seconds // 60)
    if minute < oldest_minute:
        raise Rejected(f"{what} before the retention window (GATING_MONITOR_RETENTION_DAYS)")
    return minute


def _add_span(out: Ingest, repo: str, system: str, span: Any, now: float, oldest_minute: int,
              book: PriceBook) -> None:
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if not end or end < start:
        raise Rejected("span with no end time or one before its start")
    minute = _minute(end, now, oldest_minute, "span ending")
    attrs = attributes(span.attributes, SPAN_ATTRIBUTES)
    component = component_of(attrs)
    stage = stage_of(span.name, attrs)
    stages = [stage] if stage else []
    if not span.parent_span_id and stage != "request":
        stages.insert(0, "request")
    ms = (end - start) / 1e6
    error = None
    if span.status.code == STATUS_ERROR or attrs.get("error.type"):
        exc = [str(a.value.string_value) for ev in span.events if ev.name == "exception"
               for a in ev.attributes if a.key == "exception.type"]
        error = error_category(" ".join([str(attrs.get("error.type") or ""), span.status.message, *exc]))
    elif _finish_filtered(attrs):
        error = "content_filter"
    tin, tout = _int(attrs.get("gen_ai.usage.input_tokens")), _int(attrs.get("gen_ai.usage.output_tokens"))
    spent = book.cost(attrs, tin, tout)
    for st in stages:
        for r in out.both(repo, system, component, st, minute):
            r.requests += 1
            r.latency.add(ms)
            if error:
                r.errors[error] = r.errors.get(error, 0) + 1
            if st == stages[-1]:  # the model stage when there is one, else the request
                r.input_tokens += tin
                r.output_tokens += tout
                r.cost += spent
    if span.events:
        for ev in span.events:
            if ev.name == "gating.feedback":
                _add_feedback_event(out, repo, system, component, ev, minute, now, oldest_minute)
    if "request" in stages:
        out.traces.append((span.trace_id.hex(), repo, system, component, minute))


def _add_feedback_event(out: Ingest, repo: str, system: str, component: str, ev: Any, minute: int,
                        now: float, oldest_minute: int) -> None:
    attrs = attributes(ev.attributes)
    kind = attrs.get("kind", attrs.get("gating.feedback.kind"))
    if kind not in FEEDBACK_KINDS:
        out.warnings[f"gating.feedback event with kind {str(kind)[:40]!r} ignored: kind must be one of "
                     f"{', '.join(FEEDBACK_KINDS)}"] += 1
        return
    try:
        at = _minute(ev.time_unix_nano, now, oldest_minute, "feedback event") if ev.time_unix_nano else minute
    except Rejected as e:
        out.warnings[str(e)] += 1
        return
    add_feedback(out, repo, system, component, str(kind), at)


def add_feedback(out: Ingest, repo: str, system: str, component: str, kind: str, minute: int) -> None:
    for r in out.both(repo, system, component, "request", minute):
        r.feedback[kind] = r.feedback.get(kind, 0) + 1


# -- metrics ---------------------------------------------------------------------------------------------


def read_metrics(request: Any, *, bound_repo: str | None, now: float, oldest_minute: int,
                 prices: PriceLookup | None = None) -> Ingest:
    """An ExportMetricsServiceRequest's GenAI histograms as roll-ups; other metrics are accepted and
    ignored. `accepted`/`rejected` count data points; `prices` as for read_traces."""
    out = Ingest()
    for rm in request.resource_metrics:
        metrics = [m for sm in rm.scope_metrics for m in sm.metrics]
        try:
            repo, system = attribution(attributes(rm.resource.attributes), bound_repo)
        except Rejected as e:
            out.rejected[str(e)] += sum(len(getattr(m, m.WhichOneof("data")).data_points)
                                        for m in metrics if m.WhichOneof("data"))
            continue
        book = prices(repo) if prices is not None else default_book()
        for m in metrics:
            kind = m.WhichOneof("data")
            if kind is None:
                continue
            points = getattr(m, kind).data_points
            if m.name not in (DURATION_METRIC, TOKENS_METRIC):
                out.accepted += len(points)
                continue
            if kind != "histogram":
                out.rejected[f"{m.name} must be a histogram, not a {kind}"] += len(points)
                continue
            if m.histogram.aggregation_temporality != DELTA:
                out.rejected[f"{m.name} in cumulative temporality: export metrics with delta temporality "
                             "(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta)"] += len(points)
                continue
            for p in points:
                try:
                    _add_point(out, repo, system, m.name, p, now, oldest_minute, book)
                except Rejected as e:
                    out.rejected[str(e)] += 1
                else:
                    out.accepted += 1
    return out


def _add_point(out: Ingest, repo: str, system: str, name: str, p: Any, now: float, oldest_minute: int,
               book: PriceBook) -> None:
    if not p.time_unix_nano:
        raise Rejected(f"{name} data point with no time")
    minute = _minute(p.time_unix_nano, now, oldest_minute, f"{name} data point")
    attrs = attributes(p.attributes)
    component = component_of(attrs)
    stage = "embedding" if attrs.get("gen_ai.operation.name") == "embeddings" else "llm"
    rollups = out.both(repo, system, component, stage, minute)
    if name == TOKENS_METRIC:
        tokens = int(round(p.sum))
        kind = attrs.get("gen_ai.token.type")
        tin, tout = (tokens, 0) if kind == "input" else (0, tokens) if kind == "output" else (0, 0)
        if not (tin or tout):
            raise Rejected(f"{TOKENS_METRIC} data point without gen_ai.token.type input or output")
        spent = book.cost(attrs, tin, tout)
        for r in rollups:
            r.input_tokens += tin
            r.output_tokens += tout
            r.cost += spent
        return
    error = error_category(str(attrs["error.type"])) if attrs.get("error.type") else None
    values = _bucket_values(p)
    for r in rollups:
        r.requests += p.count
        if error:
            r.errors[error] = r.errors.get(error, 0) + p.count
        for seconds, n in values:
            r.latency.add(seconds * 1000, n)


def _bucket_values(p: Any) -> list[tuple[float, int]]:
    """(representative seconds, count) per histogram bucket: the exact value for a single request,
    else each bucket's midpoint (the first bucket's from 0, the overflow bucket at its lower bound),
    clamped to the point's min and max when it has them."""
    if p.count == 1 and p.HasField("sum"):
        return [(p.sum, 1)]
    bounds = list(p.explicit_bounds)
    lo_clamp = p.min if p.HasField("min") else 0.0
    hi_clamp = p.max if p.HasField("max") else float("inf")
    out = []
    for i, n in enumerate(p.bucket_counts):
        if not n:
            continue
        lo = bounds[i - 1] if 0 < i <= len(bounds) else 0.0
        hi = bounds[i] if i < len(bounds) else lo
        out.append((min(max((lo + hi) / 2, lo_clamp), hi_clamp), int(n)))
    if not out and p.count:  # no buckets: the mean
        out.append((p.sum / p.count if p.HasField("sum") else 0.0, int(p.count)))
    return out
