"""The `monitor:` rules of gating.yml and their evaluation over minute roll-ups.

Pure: a rule set, a `RollupSource`, the repository, the deployed system and a time (unix minutes) go
in; each rule's current value, threshold, sample size, verdict and a sentence saying why come out.
The App's scheduler, `gating monitor status` and the bench all call `evaluate`, so they agree.

Roll-up convention (gating/monitor/otlp.py writes it): every request counts once in the `request`
stage of its component (requests, errors, feedback, whole-request latency); each other stage carries
its own spans' latency and errors; tokens and cost stay in the stage that spent them (llm, embedding),
so a window's tokens and cost are the sum over its stages. When the store also keeps whole-system
records (component ""), those are read instead of the sum of the components, so nothing is counted
twice.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gating.audit.entry import Entry
from gating.errors import GatingError
from gating.monitor.anomaly import WEEK_MINUTES, Baseline, baseline, is_anomalous
from gating.monitor.rollup import WHOLE_SYSTEM, Rollup, RollupSource, total
from gating.system.schema import DEFAULT_BAKE_MINUTES, duration_minutes

DAY_MINUTES = 24 * 60
_THRESHOLD = re.compile(r"^\s*(>=|<=|>|<)\s*([0-9]+(?:\.[0-9]+)?)\s*(x\s*projected)?\s*$")
_OPS = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}
DEFAULT_MIN_REQUESTS = {"requests_per_minute": 0}  # every other metric: 100 requests in the window
FALLBACK_MIN_REQUESTS = 100


class MonitorError(GatingError):
    """A `monitor:` section that cannot be used; the manifest's schema normally catches this first."""


def parse_duration(text: str) -> int:
    """'15m' / '1h' / '1d' -> minutes."""
    minutes = duration_minutes(text)
    if minutes is None:
        raise MonitorError(f"{text!r} is not a duration like '15m', '1h' or '1d'")
    return minutes


def format_duration(minutes: int) -> str:
    for unit, size in (("d", DAY_MINUTES), ("h", 60)):
        if minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


@dataclass(frozen=True)
class Anomaly:
    z: float = 4.0
    weeks: int = 4  # how many past weeks to compare with
    min_weeks: int = 2  # past weeks with traffic needed before the rule can fire
    direction: str = "up"  # up, down or both


@dataclass(frozen=True)
class MonitorRule:
    name: str
    metric: str
    window: int  # minutes (`for:`)
    action: str  # rollback | notify
    severity: str = "warning"
    op: str = ">"
    threshold: float | None = None
    relative: bool = False  # threshold is a multiple of the eval's projection for this snapshot
    min_requests: int = FALLBACK_MIN_REQUESTS
    stage: str = "request"
    component: str | None = None
    category: str | None = None  # error_rate of one error category
    anomaly: Anomaly | None = None

    @property
    def condition(self) -> str:
        """The rule as a person reads it: 'error_rate > 0.02 over 15m'."""
        parts = []
        if self.threshold is not None:
            parts.append(f"{self.op} {_num(self.threshold)}" + ("x projected" if self.relative else ""))
        if self.anomaly:
            parts.append(f"robust z {'>' if self.anomaly.direction == 'up' else '<' if self.anomaly.direction == 'down' else '|>|'} "
                         f"{_num(self.anomaly.z)} vs the same time of {self.anomaly.weeks} past weeks")
        return f"{self.metric} {' and '.join(parts)} over {format_duration(self.window)}"


@dataclass(frozen=True)
class MonitorConfig:
    bake_minutes: int = DEFAULT_BAKE_MINUTES
    rules: tuple[MonitorRule, ...] = ()
    issue: int | None = None
    service: str = ""

    def rule(self, name: str) -> MonitorRule | None:
        return next((r for r in self.rules if r.name == name), None)


def parse_threshold(text: str) -> tuple[str, float, bool]:
    m = _THRESHOLD.match(str(text))
    if not m:
        raise MonitorError(f"{text!r} is not a threshold like '> 0.02', '<= 800' or '> 1.5x projected'")
    return m.group(1), float(m.group(2)), bool(m.group(3))


def parse_monitor(section: Mapping[str, Any] | None, service: str = "") -> MonitorConfig:
    """`monitor:` of a validated manifest -> MonitorConfig (an empty one when the section is absent)."""
    section = section or {}
    rules = []
    for raw in section.get("rules") or []:
        op, threshold, relative = parse_threshold(raw["threshold"]) if "threshold" in raw else (">", None, False)
        anomaly = None
        if "anomaly" in raw:
            a = raw["anomaly"] or {}
            weeks = int(a.get("weeks", 4))
            anomaly = Anomaly(float(a.get("z", 4.0)), weeks, int(a.get("min_weeks", min(2, weeks))),
                              a.get("direction", "up"))
        rules.append(MonitorRule(
            name=raw["name"], metric=raw["metric"], window=parse_duration(raw["for"]), action=raw["action"],
            severity=raw.get("severity", "critical" if raw["action"] == "rollback" else "warning"),
            op=op, threshold=threshold, relative=relative,
            min_requests=int(raw.get("min_requests", DEFAULT_MIN_REQUESTS.get(raw["metric"], FALLBACK_MIN_REQUESTS))),
            stage=raw.get("stage", "request"), component=raw.get("component"), category=raw.get("category"),
            anomaly=anomaly))
    bake = section.get("bake_minutes", DEFAULT_BAKE_MINUTES)
    return MonitorConfig(int(bake), tuple(rules), section.get("issue"), section.get("service") or service)


# -- what the eval projected for this snapshot -----------------------------------------------------


@dataclass(frozen=True)
class Projection:
    """From the snapshot's eval: tokens per request and cost per day at evals.traffic.requests_per_day."""

    tokens_per_request: float | None = None
    cost_per_day: float | None = None
    source: str = ""  # where the figures came from, for the evidence

    def get(self, metric: str) -> float | None:
        return {"tokens_per_request": self.tokens_per_request, "cost_per_day": self.cost_per_day}.get(metric)

    def to_dict(self) -> dict[str, Any]:
        return {"tokens_per_request": self.tokens_per_request, "cost_per_day": self.cost_per_day,
                "source": self.source}


def projection_from(metrics: Mapping[str, Any] | None, requests_per_day: float | None, source: str = "") -> Projection:
    """An eval run's metrics (`cost_per_request_usd`, `tokens_in/out_per_request`) -> the projection."""
    metrics = metrics or {}
    tin, tout = metrics.get("tokens_in_per_request"), metrics.get("tokens_out_per_request")
    tokens = float(tin) + float(tout) if isinstance(tin, (int, float)) and isinstance(tout, (int, float)) else None
    cpr = metrics.get("cost_per_request_usd")
    cost = float(cpr) * float(requests_per_day) if isinstance(cpr, (int, float)) and requests_per_day else None
    return Projection(tokens, cost, source)


def projection_of(merged: Entry | None) -> Projection:
    """What the eval projected for a snapshot: its merged entry's eval metrics at the snapshot's
    evals.traffic.requests_per_day (the App for the deployed system, `gating monitor rules
    --prometheus` for each known one)."""
    if merged is None:
        return Projection()
    p = merged.predicate
    rpd = (((p.get("snapshot") or {}).get("evals") or {}).get("traffic") or {}).get("requests_per_day")
    source = f"eval evidence of the merged entry (audit seq {merged.seq})"
    return projection_from((p.get("evals") or {}).get("metrics"), rpd, source)


def merged_entry(entries: Sequence[Entry], commit: str) -> Entry | None:
    """The last `merged` entry of a commit: its snapshot digest and its eval evidence."""
    return next((e for e in reversed(entries) if e.event == "merged" and e.commit == commit), None)


# -- evaluation ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleResult:
    rule: str
    metric: str
    value: float | None
    threshold: float | None  # the absolute threshold compared with (a relative one times the projection)
    op: str
    samples: int  # requests (latency: timed spans) in the window
    min_requests: int
    since: int  # the window [since, until) in unix minutes
    until: int
    firing: bool
    reason: str
    action: str
    severity: str
    condition: str
    baseline: Baseline | None = None
    z: float | None = None
    projected: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule, "metric": self.metric, "value": self.value, "threshold": self.threshold,
            "op": self.op, "samples": self.samples, "min_requests": self.min_requests,
            "window": {"since": _iso(self.since), "until": _iso(self.until), "minutes": self.until - self.since},
            "firing": self.firing, "reason": self.reason, "action": self.action, "severity": self.severity,
            "condition": self.condition, "projected": self.projected, "z": self.z,
            "baseline": self.baseline.to_dict() if self.baseline else None,
        }


def minute_of(now: datetime) -> int:
    return int(now.timestamp() // 60)


def _iso(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Reader:
    """Window queries of one evaluation, each asked of the source once however many rules need it."""

    source: RollupSource
    repo: str
    _cache: dict[tuple[Any, ...], Rollup] = field(default_factory=dict)

    def window(self, systems: Sequence[str] | None, since: int, until: int, component: str | None,
               stage: str | None) -> Rollup:
        """The merged window; `stage` None merges every stage (tokens and cost)."""
        key = (tuple(systems) if systems is not None else None, since, until, component, stage)
        if key not in self._cache:
            rows: list[Rollup] = []
            for system in systems if systems is not None else (None,):
                by_system: dict[str, list[Rollup]] = {}
                for r in self.source.rollups(self.repo, since=since, until=until, system=system,
                                             component=component, stage=stage):
                    by_system.setdefault(r.system, []).append(r)
                for found in by_system.values():
                    rows += _one_level(found, component)
            self._cache[key] = total(rows, repo=self.repo, stage=stage or "", minute=since)
        return self._cache[key]


def _one_level(rows: Iterable[Rollup], component: str | None) -> list[Rollup]:
    """Whole-system records when the store keeps them, else the components' (never both)."""
    rows = list(rows)
    if component is None and any(r.component == WHOLE_SYSTEM for r in rows):
        return [r for r in rows if r.component == WHOLE_SYSTEM]
    return rows


def metric_value(rule: MonitorRule, counts: Rollup, timed: Rollup, minutes: int,
                 spent: Rollup | None = None) -> tuple[float | None, int]:
    """(value, sample size) of the rule's metric over a window; None when nothing was measured.
    `counts` is the request stage, `timed` the rule's stage, `spent` every stage (tokens and cost)."""
    spent = spent or counts
    n = counts.requests
    m = rule.metric
    if m.startswith("latency_"):
        q = {"latency_p50": 0.5, "latency_p95": 0.95, "latency_p99": 0.99}[m]
        return timed.latency.quantile(q), timed.latency.count
    if m == "requests_per_minute":
        return n / minutes, n
    if n == 0:
        return None, 0
    if m == "error_rate":
        errors = counts.errors.get(rule.category, 0) if rule.category else counts.error_count
        return errors / n, n
    if m == "negative_feedback_rate":
        return counts.feedback.get("negative", 0) / n, n
    if m == "tokens_per_request":
        return (spent.input_tokens + spent.output_tokens) / n, n
    if m == "cost_per_day":
        return spent.cost * DAY_MINUTES / minutes, n
    raise MonitorError(f"unknown metric {m!r}")


def _value_at(reader: Reader, rule: MonitorRule, systems: Sequence[str] | None, since: int,
              until: int) -> tuple[float | None, int]:
    counts = reader.window(systems, since, until, rule.component, "request")
    timed = reader.window(systems, since, until, rule.component, rule.stage) if rule.stage != "request" else counts
    spent = (reader.window(systems, since, until, rule.component, None)
             if rule.metric in ("tokens_per_request", "cost_per_day") else counts)
    return metric_value(rule, counts, timed, until - since, spent)


def evaluate_rule(reader: Reader, rule: MonitorRule, systems: Sequence[str], now: int,
                  projection: Projection | None = None) -> RuleResult:
    since, until = now - rule.window, now
    value, samples = _value_at(reader, rule, systems, since, until)

    def result(firing: bool, reason: str, threshold: float | None = rule.threshold, **kw: Any) -> RuleResult:
        return RuleResult(rule.name, rule.metric, value, threshold, rule.op, samples, rule.min_requests, since,
                          until, firing, reason, rule.action, rule.severity, rule.condition, **kw)

    what = f"{_label(rule)} over {format_duration(rule.window)}"
    if samples < rule.min_requests or value is None:
        return result(False, f"not enough traffic: {samples:,} {'spans' if rule.metric.startswith('latency_') else 'requests'} "
                      f"in the last {format_duration(rule.window)}, the rule needs {rule.min_requests:,}")
    threshold, projected = rule.threshold, None
    if rule.relative and rule.threshold is not None:
        projected = projection.get(rule.metric) if projection else None
        if projected is None:
            return result(False, f"{what} is {_fmt(rule.metric, value)}; no eval projection of "
                          f"{rule.metric} for this snapshot to compare with", None)
        threshold = rule.threshold * projected
    over = threshold is None or _OPS[rule.op](value, threshold)
    against = (f"{rule.op} {_fmt(rule.metric, threshold)}" + (f" ({_num(rule.threshold or 0)}x the projected "
               f"{_fmt(rule.metric, projected)})" if projected is not None else "")) if threshold is not None else ""
    if rule.anomaly is None:
        verdict = "" if over else "not "
        return result(over, f"{what} is {_fmt(rule.metric, value)}, {verdict}{against} ({samples:,} "
                      f"{'spans' if rule.metric.startswith('latency_') else 'requests'})", threshold, projected=projected)
    a = rule.anomaly
    past = []
    for k in range(1, a.weeks + 1):
        shift = k * WEEK_MINUTES
        v, n = _value_at(reader, rule, None, since - shift, until - shift)  # the repository's traffic then
        if v is not None and n > 0:  # a week with no traffic then (the system was not live) teaches nothing
            past.append(v)
    base = baseline(past)
    if base is None or base.weeks < a.min_weeks:
        return result(False, f"{what} is {_fmt(rule.metric, value)}; only {len(past)} of the {a.min_weeks} past "
                      "weeks it needs have traffic at this time: learning the weekly pattern", threshold,
                      baseline=base, projected=projected)
    z = base.z(value)
    odd = is_anomalous(z, a.z, a.direction)
    side = "above" if z >= 0 else "below"
    firing = odd and over
    reason = (f"{what} is {_fmt(rule.metric, value)}, {abs(z):.1f} robust z-scores {side} the median "
              f"{_fmt(rule.metric, base.median)} of the same time in {base.weeks} past weeks (limit {_num(a.z)})")
    if threshold is not None:
        reason += f"; threshold {against} {'met' if over else 'not met'}"
    return result(firing, reason, threshold, baseline=base, z=z, projected=projected)


def evaluate(config: MonitorConfig, source: RollupSource, repo: str, systems: Sequence[str], now: int,
             projection: Projection | None = None) -> list[RuleResult]:
    """Every rule of `config` for the deployed system (its ids: commit SHA and/or snapshot digest) at
    `now` (unix minutes; the window ends just before it)."""
    reader = Reader(source, repo)
    return [evaluate_rule(reader, r, systems, now, projection) for r in config.rules]


def firing(results: Iterable[RuleResult], action: str | None = None) -> list[RuleResult]:
    return [r for r in results if r.firing and (action is None or r.action == action)]


def _label(rule: MonitorRule) -> str:
    m = rule.metric
    where = f" of {rule.component}" if rule.component else ""
    if m == "error_rate":
        return (f"{rule.category} error rate" if rule.category else "error rate") + where
    if m.startswith("latency_"):
        return f"{rule.stage} latency {m.removeprefix('latency_')}{where}"
    return m.replace("_", " ") + where


def _num(x: float) -> str:
    return f"{x:g}"


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric.endswith("_rate"):
        return f"{value * 100:.2f}%"
    if metric.startswith("latency_"):
        return f"{value:,.0f} ms"
    if metric == "cost_per_day":
        return f"${value:,.2f}/day"
    if metric == "tokens_per_request":
        return f"{value:,.0f} tokens/request"
    if metric == "requests_per_minute":
        return f"{value:,.1f} requests/min"
    return f"{value:g}" if math.isfinite(value) else str(value)
