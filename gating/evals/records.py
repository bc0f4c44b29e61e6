"""Eval result records: what a run produced and what a base/head comparison decided.

Every record round-trips through JSON (`to_dict` / `from_dict`) because results are stored in git
notes, signed into audit entries and read back by later runs as their baseline. Each top-level
document carries a schema string; a reader refuses a major version it does not know.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from gating.errors import InputError

RUN_SCHEMA = "gating.eval.run/1"
COMPARISON_SCHEMA = "gating.eval.comparison/1"

# Why a case errored. Only these strings appear in CaseResult.error. `setup` is a broken setup (no
# key, a wrong base URL, 401/403/404, a command that cannot start); `render` a prompt template that
# failed for the case's vars; `assertion` an assertion that raised; `internal` anything else that
# raised while the case ran. INFRA_ERRORS (below) says which of them mean "not evaluated".
ERROR_CATEGORIES = ("rate_limit", "timeout", "content_filter", "parse", "transport", "provider", "setup", "render",
                    "assertion", "internal")
# Not evaluated: no answer (or no grade) came back, through no fault of the system under test. Most
# serious first: the order in which causes lead a verdict's reasons. Never a score of 0, never dropped.
INFRA_ERRORS = ("setup", "transport", "internal", "provider", "timeout", "rate_limit")


class SchemaError(InputError):
    """A stored document has a schema this version cannot read."""


def _check_schema(d: dict[str, Any], expected: str) -> None:
    got = d.get("schema")
    if not isinstance(got, str) or got.split("/")[0] != expected.split("/")[0]:
        raise SchemaError(f"not a {expected} document (schema {got!r})")
    if got.split("/")[-1].split(".")[0] != expected.split("/")[-1].split(".")[0]:
        raise SchemaError(f"unsupported schema version {got!r}; this version reads {expected!r}")


_NAMES: dict[type, tuple[str, ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    """The record's field names, in order (looked up once per class: to_dict runs once per case)."""
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def _pick(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    """Keep only known fields, so documents from a newer minor version still load."""
    names = _names(cls)
    return {k: v for k, v in d.items() if k in names}


_ATOMS = frozenset({str, int, float, bool, type(None)})


def _plain(v: Any) -> Any:
    """What `dataclasses.asdict` makes of a field's value, without its deep copy of every leaf: results
    are stored for thousands of cases and serialised several times per check. Atoms (immutable) are
    returned as they are, dicts and lists copied; anything else goes the way asdict takes it."""
    t = type(v)
    if t in _ATOMS:
        return v
    if t is dict:
        return {k if type(k) in _ATOMS else _plain(k): x if type(x) in _ATOMS else _plain(x) for k, x in v.items()}
    if t is list:
        return [x if type(x) in _ATOMS else _plain(x) for x in v]
    if is_dataclass(v) and not isinstance(v, type):
        return asdict(v)
    if isinstance(v, (list, tuple, dict)):  # subclasses and named tuples: asdict's own rules
        return asdict(_Box(v))["v"]
    return copy.deepcopy(v)


@dataclass
class _Box:
    v: Any


def _fields_dict(obj: Any, **given: Any) -> dict[str, Any]:
    """asdict(obj), the same keys in the same order; `given` are fields the caller serialised itself."""
    return {name: given[name] if name in given else _plain(getattr(obj, name)) for name in _names(type(obj))}


@dataclass
class AssertionResult:
    type: str  # e.g. "icontains", "not-regex", "rubric"
    passed: bool
    score: float  # 0..1; deterministic assertions score 1.0 or 0.0
    reason: str
    name: str  # metric name for `score:<name>`; defaults to the type without "not-"
    weight: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AssertionResult:
        return cls(**_pick(cls, d))


@dataclass
class CaseResult:
    id: str
    prompt: str | None  # the prompt component the case exercises
    passed: bool
    score: float  # weighted mean of assertion scores (0.0 when the case errored: metrics skip it then)
    scores: dict[str, float] = field(default_factory=dict)  # assertion name -> score; none when not evaluated
    assertions: list[AssertionResult] = field(default_factory=list)
    output: str = ""
    error: str | None = None  # one of ERROR_CATEGORIES, or None
    error_message: str = ""
    latency_ms: dict[str, float] = field(default_factory=dict)  # stage -> ms; always has "total"
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None  # None = unknown price, never silently zero
    cached: bool = False  # every request of the case was served by the cache or a cassette
    repeats: int = 1
    repeat_passed: list[bool] = field(default_factory=list)  # one per repeat when repeats > 1
    repeat_scores: list[float] = field(default_factory=list)
    repeat_latency_ms: list[dict[str, float]] = field(default_factory=list)  # one per answered repeat, when repeats > 1
    tags: list[str] = field(default_factory=list)
    provider: str | None = None
    model: str | None = None
    carried: bool = False  # copied from the baseline run because the change did not affect it
    weight: float = 1.0  # the case's weight (dataset): how much it counts in the metrics and the paired test

    def request_latencies(self) -> list[dict[str, float]]:
        """Stage -> ms of each request the case made: percentiles are over requests, not case means."""
        return self.repeat_latency_ms or ([self.latency_ms] if self.latency_ms else [])

    @property
    def pass_rate(self) -> float:
        """The share of the case's repeats that passed (1 or 0 without repeats): what the paired test compares."""
        if self.repeat_passed:
            return sum(self.repeat_passed) / len(self.repeat_passed)
        return 1.0 if self.passed else 0.0

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self, assertions=[a.to_dict() for a in self.assertions])

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaseResult:
        kw = _pick(cls, d)
        kw["assertions"] = [AssertionResult.from_dict(a) for a in d.get("assertions", [])]
        return cls(**kw)


@dataclass
class RunResult:
    """One evaluation of one revision. `metrics` is a flat name -> number map (see metrics.py)."""

    rev: str
    snapshot_digest: str
    dataset_digest: str  # sha256 over the datasets' (path, sha256) pairs
    cases: list[CaseResult] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""  # ISO 8601 UTC
    finished_at: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # concurrency, repeat, mode, only_prompts, ...
    datasets: dict[str, str] = field(default_factory=dict)  # path -> sha256
    stats: dict[str, Any] = field(default_factory=dict)  # requests, cache_hits, replayed, retries
    schema: str = RUN_SCHEMA

    def case(self, case_id: str) -> CaseResult | None:
        for c in self.cases:
            if c.id == case_id:
                return c
        return None

    @property
    def passed(self) -> int:
        return sum(1 for c in self.cases if c.passed)

    def to_dict(self) -> dict[str, Any]:
        d = _fields_dict(self, cases=[c.to_dict() for c in self.cases])
        return {"schema": self.schema, **{k: v for k, v in d.items() if k != "schema"}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        _check_schema(d, RUN_SCHEMA)
        kw = _pick(cls, d)
        kw.pop("schema", None)  # re-serialised as the version this code writes
        kw["cases"] = [CaseResult.from_dict(c) for c in d.get("cases", [])]
        return cls(**kw)


@dataclass
class MetricRow:
    metric: str  # "pass_rate", "score:factuality", "latency_p95_ms", ...
    base: float | None
    head: float | None
    delta: float | None
    interval: list[float] | None = None  # paired bootstrap percentile interval (level 1 - alpha), on 20+ pairs
    threshold: str | None = None  # e.g. ">= 0.95" from gating.yml
    status: str = "info"  # ok | fail | regressed | improved | inconclusive | info
    interval_level: float | None = None
    p_value: float | None = None  # the paired test's, Holm-adjusted across the run's tested metrics
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricRow:
        return cls(**_pick(cls, d))


@dataclass
class FlippedCase:
    id: str
    before: str  # "pass" | "fail" | "error:<category>" | "absent"
    after: str
    reason: str  # the first failing assertion's reason, or the error message
    prompt: str | None = None
    score_before: float | None = None
    score_after: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlippedCase:
        return cls(**_pick(cls, d))


@dataclass
class CaseError:
    """One case that errored on one side, for the report to say which case and why."""

    side: str  # "head" | "base"
    id: str
    prompt: str | None
    category: str  # one of ERROR_CATEGORIES
    message: str

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaseError:
        return cls(**_pick(cls, d))


@dataclass
class Comparison:
    """Base vs head, paired by case id. The verdict leads; reasons say which rule decided it."""

    verdict: str  # pass | fail | inconclusive | error (cases could not be evaluated: no evidence)
    reasons: list[str]
    rows: list[MetricRow]
    flipped: list[FlippedCase]
    base_rev: str
    head_rev: str
    base_snapshot: str
    head_snapshot: str
    dataset_digest: str  # the head's; base_dataset_digest differs when cases changed
    base_dataset_digest: str = ""
    paired: int = 0  # cases present in both runs
    added: list[str] = field(default_factory=list)  # case ids only in head
    removed: list[str] = field(default_factory=list)  # case ids only in base
    mcnemar: dict[str, Any] = field(default_factory=dict)  # b (pass->fail), c (fail->pass), p_value
    # one paired test per metric: metric, n, worse, better, delta, p_value, p_adjusted (Holm), method, family
    tests: list[dict[str, Any]] = field(default_factory=list)
    cost: dict[str, Any] = field(default_factory=dict)  # per request, per day, projected delta per day
    # pass rate by case tag (the runs' `pass_rate:tag:*` metrics): tag, cases (at head), base, head, delta
    tags: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[str, dict[str, float | None]] = field(default_factory=dict)  # stage -> base/head p50/p95
    errors: dict[str, dict[str, int]] = field(default_factory=dict)  # "base"/"head" -> category -> n
    failing: list[str] = field(default_factory=list)  # head case ids that fail (for JUnit/annotations)
    errored: list[CaseError] = field(default_factory=list)  # every case that errored, head first
    schema: str = COMPARISON_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        d = _fields_dict(self, rows=[r.to_dict() for r in self.rows], flipped=[f.to_dict() for f in self.flipped],
                         errored=[e.to_dict() for e in self.errored])
        return {"schema": self.schema, **{k: v for k, v in d.items() if k != "schema"}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Comparison:
        _check_schema(d, COMPARISON_SCHEMA)
        kw = _pick(cls, d)
        kw.pop("schema", None)
        kw["rows"] = [MetricRow.from_dict(r) for r in d.get("rows", [])]
        kw["flipped"] = [FlippedCase.from_dict(f) for f in d.get("flipped", [])]
        kw["errored"] = [CaseError.from_dict(e) for e in d.get("errored", [])]
        return cls(**kw)

    def row(self, metric: str) -> MetricRow | None:
        for r in self.rows:
            if r.metric == metric:
                return r
        return None


def carry_over(base: RunResult, head: RunResult) -> RunResult:
    """Head run completed with the base's results for cases head did not re-run (marked `carried`).

    Used when only the cases of affected prompts were evaluated on head: unchanged cases keep the
    baseline's outcome, so head-level metrics cover the whole dataset. Metrics are not recomputed
    here; call gating.evals.metrics.compute_metrics on the result.
    """
    out = RunResult.from_dict(head.to_dict())
    fresh = {c.id: c for c in out.cases}
    base_ids = {c.id for c in base.cases}
    merged = [fresh.get(c.id) or CaseResult.from_dict({**c.to_dict(), "carried": True}) for c in base.cases]
    out.cases = merged + [c for c in out.cases if c.id not in base_ids]
    return out


def load_run(data: str | bytes | dict[str, Any]) -> RunResult:
    """A RunResult from its JSON text (e.g. a git note) or parsed dict."""
    import json

    d = json.loads(data) if isinstance(data, (str, bytes)) else data
    return RunResult.from_dict(d)
