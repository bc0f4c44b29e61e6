"""The `monitor:` rules as Prometheus recording and alerting rules, for teams that already run
Prometheus: it evaluates them at scale over what an OpenTelemetry Collector exports, and
Alertmanager posts the firing ones to the App's `POST /alerts`.

Metric names assumed (the Collector's spanmetrics connector with its default namespace and
`histogram.unit: ms`, exported by its `prometheus` exporter; the GenAI client metrics as the
OpenTelemetry GenAI semantic conventions name them):

- `traces_span_metrics_calls_total`: spans, by `service_name`, `service_version` (the deployed
  system: commit SHA or snapshot digest), `status_code` (`STATUS_CODE_ERROR` for a failed span) and
  the span attributes the connector is told to keep as dimensions: `gating.stage` (request,
  embedding, retrieval, llm, post; the request is the root span), `gating.component` (the prompt)
  and `gating.error` (rate_limit, content_filter, timeout, parse, other);
- `traces_span_metrics_duration_milliseconds_bucket`: span latency histogram, same labels and `le`;
- `gen_ai_client_token_usage_sum`: tokens, by `gen_ai_token_type` (input, output);
- `traces_span_metrics_events_total{event_name="gating.feedback"}`: feedback span events, by
  `gating_feedback` (positive, negative, ...), with the connector's `events` dimensions enabled.

Windows: each rule's `for:` is both the range of its rates and the alert's `for:`, so Prometheus
fires once the rule has held for a whole window (the App fires as soon as one window is over it).

Every kind of rule is written:

- **Thresholds relative to the eval's projection** (`> 2x projected`): the projection belongs to one
  snapshot, and which snapshots are live only the audit log knows. The command runs in a clone, so it
  reads the projection of each known system from the signed log (its `merged` entry's eval metrics,
  `gating.monitor.rules.projection_of`, as the App does) and records it as a constant series
  `gating:projected:<metric>{service_version=...}`, once under the commit SHA and once under the
  snapshot digest; the alert compares the rule's value with the rule's multiple of it, matched on
  `service_version`. Known systems: those with a `deployed` or `known_good` entry, or `--system SHA`.
  A system deployed later needs the rules written again (or it has no projection series, and its
  relative rules stay silent, as the App's do without a projection).
- **cost_per_day**: the price table the App and the evals use (gating/evals/prices.json merged with the
  manifest's evals.prices) is written as constant series `gating:price_usd_per_token{gen_ai_response_model,
  gen_ai_token_type}` (USD per token; a model priced by two providers takes the first, as the App
  does). `gating:cost_usd:rate<window>` is the sum over models of token rate times price, by service,
  system and component. The model is `gen_ai_response_model`, else `gen_ai_request_model` (copied in by
  `label_replace` when the response model is empty), as the App prices spans; tokens of an unpriced
  model add nothing.
- **Weekly anomaly rules**: the rule's value over the same window 1, 2, ... `weeks` weeks back (PromQL
  `offset`), for the whole service (every system, as the App reads the repository's past traffic),
  each labelled `gating_week` by `label_replace` and joined by `or`; weeks with no traffic then are
  left out. Their median is `quantile(0.5, ...)` (the mean of the middle two for an even count, as
  Python's median), the MAD the same over the absolute deviations, the spread max(1.4826 MAD, 5% of the
  median, 1e-9), and the robust z-score is compared with the rule's `z` in its `direction`; the alert
  needs `min_weeks` weeks with traffic. Differences from the App: latency quantiles come from
  histogram buckets rather than the App's sketches, and past weeks are what Prometheus still retains
  (its retention must cover `weeks` weeks).

Pure: config in, plain data out; the CLI writes it as YAML.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gating.evals.metrics import Prices, default_prices
from gating.monitor.anomaly import ABSOLUTE_FLOOR, MAD_TO_SIGMA, RELATIVE_FLOOR
from gating.monitor.rollup import Rollup
from gating.monitor.rules import (
    DAY_MINUTES,
    MonitorConfig,
    MonitorRule,
    Projection,
    evaluate,
    format_duration,
)

CALLS = "traces_span_metrics_calls_total"
DURATION = "traces_span_metrics_duration_milliseconds_bucket"
TOKENS = "gen_ai_client_token_usage_sum"
EVENTS = "traces_span_metrics_events_total"
ERROR_STATUS = "STATUS_CODE_ERROR"
OK_STATUS = "STATUS_CODE_UNSET"
BY = "service_name, service_version"
SOURCE = "gating-monitor"  # the `source` label of every alert, for the Alertmanager route
LE_BUCKETS = (2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10000, 15000)  # spanmetrics' defaults
PRICE = "gating:price_usd_per_token"
MODEL, REQUEST_MODEL, TOKEN_TYPE = "gen_ai_response_model", "gen_ai_request_model", "gen_ai_token_type"
METRIC_NAMES = {"calls": CALLS, "duration": DURATION, "tokens": TOKENS, "events": EVENTS}


@dataclass(frozen=True)
class Skipped:
    rule: str
    why: str


@dataclass(frozen=True)
class System:
    """A system Prometheus may see: its ids (`service_version`: commit SHA, snapshot digest) and what its
    eval projected."""

    ids: tuple[str, ...]
    projection: Projection


def skipped_why(rule: MonitorRule, systems: Sequence[System]) -> str | None:
    if rule.relative and not any(s.projection.get(rule.metric) is not None for s in systems):
        return (f"relative to the eval's projection, and no known system has a projection of {rule.metric} "
                "(no merged entry with eval metrics; pass --system SHA)")
    return None


def alert_name(rule: str) -> str:
    return "Gating" + "".join(p[:1].upper() + p[1:] for p in re.split(r"[-_.]+", rule) if p)


def _record(rule: str, what: str) -> str:
    return f"gating:{re.sub(r'[^A-Za-z0-9_]', '_', rule)}:{what}"


def _sel(service: str, **labels: str) -> str:
    parts = [f'service_name="{service}"'] + [f'{k}="{v}"' for k, v in labels.items()]
    return "{" + ", ".join(parts) + "}"


def _range(minutes: int, offset: str = "") -> str:
    return f"[{format_duration(minutes)}]" + (f" offset {offset}" if offset else "")


def cost_rate(window: int) -> str:
    return f"gating:cost_usd:rate{format_duration(window)}"


def _exprs(rule: MonitorRule, service: str, by: str = BY, offset: str = "") -> tuple[str, str]:
    """(the rule's value, its sample size) as PromQL over its window, `offset` back, summed `by`."""
    w = _range(rule.window, offset)
    comp = {"gating_component": rule.component} if rule.component else {}
    requests = f"sum by ({by}) (rate({CALLS}{_sel(service, gating_stage='request', **comp)}{w}))"
    count = f"sum by ({by}) (increase({CALLS}{_sel(service, gating_stage='request', **comp)}{w}))"
    m = rule.metric
    if m == "error_rate":
        cat = {"gating_error": rule.category} if rule.category else {}
        errors = f"sum by ({by}) (rate({CALLS}{_sel(service, gating_stage='request', status_code=ERROR_STATUS, **comp, **cat)}{w}))"
        return f"({errors} or {requests} * 0) / {requests}", count
    if m.startswith("latency_"):
        q = {"latency_p50": "0.5", "latency_p95": "0.95", "latency_p99": "0.99"}[m]
        sel = _sel(service, gating_stage=rule.stage, **comp)
        value = f"histogram_quantile({q}, sum by ({by}, le) (rate({DURATION}{sel}{w})))"
        samples = f"sum by ({by}) (increase({DURATION}{_sel(service, gating_stage=rule.stage, le='+Inf', **comp)}{w}))"
        return value, samples
    if m == "tokens_per_request":
        return f"sum by ({by}) (rate({TOKENS}{_sel(service, **comp)}{w})) / {requests}", count
    if m == "cost_per_day":
        cost = f"{cost_rate(rule.window)}{_sel(service, **comp)}" + (f" offset {offset}" if offset else "")
        return f"sum by ({by}) ({cost}) * {DAY_MINUTES * 60} and {requests}", count
    if m == "negative_feedback_rate":
        neg = f"sum by ({by}) (rate({EVENTS}{_sel(service, event_name='gating.feedback', gating_feedback='negative', **comp)}{w}))"
        return f"({neg} or {requests} * 0) / {requests}", count
    if m == "requests_per_minute":
        return f"{requests} * 60", count
    raise ValueError(f"metric {m} has no PromQL form")


def price_rules(prices: Prices) -> list[dict[str, Any]]:
    """The price table as constant series, USD per token by model and token type."""
    seen: dict[str, Mapping[str, float]] = {}
    for models in prices.values():
        for model, price in models.items():
            seen.setdefault(model, price)
    return [{"record": PRICE, "expr": f"vector({float(price[kind]) / 1_000_000:.10g})",
             "labels": {MODEL: model, TOKEN_TYPE: kind}}
            for model, price in sorted(seen.items()) for kind in ("input", "output") if kind in price]


def cost_rule(service: str, window: int) -> dict[str, Any]:
    """USD per second over `window`: every model's token rate times its price."""
    w = _range(window)
    named = _sel(service)[:-1] + f', {MODEL}!=""}}'
    tokens = (f'label_replace(rate({TOKENS}{_sel(service, **{MODEL: ""})}{w}), "{MODEL}", "$1", "{REQUEST_MODEL}", "(.+)")'
              f" or rate({TOKENS}{named}{w})")
    return {"record": cost_rate(window),
            "expr": f"sum by ({BY}, gating_component) (({tokens}) * on ({MODEL}, {TOKEN_TYPE}) group_left {PRICE})"}


def projection_rules(systems: Sequence[System], metrics: Iterable[str]) -> list[dict[str, Any]]:
    out = []
    for metric in sorted(set(metrics)):
        for s in systems:
            value = s.projection.get(metric)
            if value is None:
                continue
            out += [{"record": f"gating:projected:{metric}", "expr": f"vector({value:.10g})",
                     "labels": {"service_version": i}} for i in s.ids]
    return out


def _threshold(rule: MonitorRule, value: str) -> str | None:
    """The rule's threshold as a filter on its value series (None: an anomaly rule without one)."""
    if rule.threshold is None:
        return None
    if rule.relative:
        return f"{value} {rule.op} on (service_version) group_left () ({rule.threshold:g} * gating:projected:{rule.metric})"
    return f"{value} {rule.op} {rule.threshold:g}"


def anomaly_rules(rule: MonitorRule, service: str) -> tuple[list[dict[str, Any]], str]:
    """The baseline of past weeks as recording rules, and the alert's condition on the z-score."""
    assert rule.anomaly is not None
    a = rule.anomaly
    past = []
    for k in range(1, a.weeks + 1):
        value, samples = _exprs(rule, service, "service_name", f"{k}w")
        past.append(f'label_replace(({value}) and on (service_name) (({samples}) > 0), "gating_week", "{k}", "", "")')
    name = {what: _record(rule.name, what) for what in ("value", "past", "median", "mad", "weeks", "spread", "z")}
    dev = f"abs({name['past']} - on (service_name) group_left {name['median']})"
    scaled, floor = f"{MAD_TO_SIGMA:g} * {name['mad']}", f"{RELATIVE_FLOOR:g} * abs({name['median']})"
    rules = [
        {"record": name["past"], "expr": " or ".join(past)},
        {"record": name["median"], "expr": f"quantile by (service_name) (0.5, {name['past']})"},
        {"record": name["mad"], "expr": f"quantile by (service_name) (0.5, {dev})"},
        {"record": name["weeks"], "expr": f"count by (service_name) ({name['past']})"},
        {"record": name["spread"], "expr": f"clamp_min(({scaled} >= {floor}) or {floor}, {ABSOLUTE_FLOOR:g})"},
        {"record": name["z"], "expr": f"({name['value']} - on (service_name) group_left {name['median']}) "
                                      f"/ on (service_name) group_left {name['spread']}"},
    ]
    z = {"up": f"{name['z']} > {a.z:g}", "down": f"{name['z']} < -{a.z:g}",
         "both": f"abs({name['z']}) > {a.z:g}"}[a.direction]
    return rules, f"{z} and on (service_name) {name['weeks']} >= {a.min_weeks}"


def alert_annotations(rule: MonitorRule) -> dict[str, str]:
    return {"summary": f"{rule.name}: {rule.condition} (action {rule.action})"}


def labels(rule: MonitorRule, repo: str) -> dict[str, str]:
    return {"repository": repo, "rule": rule.name, "action": rule.action, "severity": rule.severity, "source": SOURCE}


def prometheus_rules(config: MonitorConfig, repo: str, service: str, systems: Sequence[System] = (),
                     prices: Prices | None = None) -> tuple[dict[str, Any], list[Skipped]]:
    """(a Prometheus rule file, the rules it could not express and why). `systems` carry the eval's
    projections for relative thresholds; `prices` the price table for cost_per_day (default: the
    bundled one)."""
    written = []
    skipped = []
    for rule in config.rules:
        why = skipped_why(rule, systems)
        if why:
            skipped.append(Skipped(rule.name, why))
        else:
            written.append(rule)
    rules: list[dict[str, Any]] = []
    if any(r.metric == "cost_per_day" for r in written):
        rules += price_rules(default_prices() if prices is None else prices)
        rules += [cost_rule(service, w) for w in sorted({r.window for r in written if r.metric == "cost_per_day"})]
    rules += projection_rules(systems, [r.metric for r in written if r.relative])
    for rule in written:
        value, samples = _exprs(rule, service)
        rv, rs = _record(rule.name, "value"), _record(rule.name, "samples")
        rules.append({"record": rv, "expr": value})
        rules.append({"record": rs, "expr": samples})
        conds = [c for c in (_threshold(rule, rv),) if c]
        if rule.anomaly is not None:
            baseline, z = anomaly_rules(rule, service)
            rules += baseline
            conds.append(z)
        cond = f" and on ({BY}) ".join(f"({c})" if len(conds) > 1 else c for c in conds)
        cond = f"{cond} and on ({BY}) {rs} >= {rule.min_requests}"
        rules.append({"alert": alert_name(rule.name), "expr": cond, "for": format_duration(rule.window),
                      "labels": labels(rule, repo), "annotations": alert_annotations(rule)})
    group = {"name": f"gating-monitor:{repo}", "interval": "1m", "rules": rules}
    return {"groups": [group]}, skipped


def alertmanager_config(app_url: str, credentials_file: str = "/etc/alertmanager/gating-alerts-token") -> dict[str, Any]:
    """A route and receiver that send the monitor's alerts to the App's POST /alerts (bearer token
    GATING_ALERTS_TOKEN, read from `credentials_file`). Merge it into alertmanager.yml."""
    return {
        "route": {"routes": [{"receiver": "gating", "matchers": [f'source="{SOURCE}"'],
                              "group_by": ["alertname", "repository", "service_version"],
                              "group_wait": "30s", "repeat_interval": "4h", "continue": False}]},
        "receivers": [{"name": "gating", "webhook_configs": [{
            "url": app_url.rstrip("/") + "/alerts", "send_resolved": False,
            "http_config": {"authorization": {"type": "Bearer", "credentials_file": credentials_file}}}]}],
    }


def on_alert_rule() -> dict[str, Any]:
    """The rollback.on_alert entry that makes the App roll back on the monitor's rollback alerts."""
    return {"name": "gating-monitor", "match": {"source": SOURCE, "action": "rollback"}, "target": "last-good"}


# -- promtool tests from recorded series --------------------------------------------------------------


def series(rollups: Iterable[Rollup], service: str, start: int, minutes: int, model: str | None = None,
           keep: Sequence[tuple[int, int]] | None = None) -> list[dict[str, str]]:
    """The counters an OpenTelemetry Collector would export for these roll-ups, one sample a minute
    from `start`, as promtool `input_series` (the sample at minute i counts the minutes before it).
    Tokens carry `model` as the request model; with `keep` ([since, until) minute ranges) only those
    minutes are sampled, the rest left out (weeks of history for anomaly rules, kept small)."""
    counters: dict[str, list[float]] = {}  # per series, what each minute adds; summed up at the end

    def add(name: str, lab: Mapping[str, str], minute: int, n: float) -> None:
        key = name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(lab.items())) + "}"
        counters.setdefault(key, [0.0] * (minutes + 1))[minute - start + 1] += n

    for r in rollups:
        if not start <= r.minute < start + minutes:
            continue
        base = {"service_name": service, "service_version": r.system, "gating_stage": r.stage}
        if r.component:
            base["gating_component"] = r.component
        errors = r.error_count if r.stage == "request" else 0
        add(CALLS, {**base, "status_code": OK_STATUS}, r.minute, r.requests - errors)
        for cat, n in (r.errors.items() if r.stage == "request" else ()):
            add(CALLS, {**base, "status_code": ERROR_STATUS, "gating_error": cat}, r.minute, n)
        done = 0
        values = list(r.latency.values())
        for le in (*LE_BUCKETS, "+Inf"):
            while values and (le == "+Inf" or values[0][0] <= float(le)):
                done += values.pop(0)[1]
            add(DURATION, {**base, "le": str(le)}, r.minute, done)
        if r.stage == "request":
            tok = {k: v for k, v in base.items() if k != "gating_stage"}
            gen = {**tok, **({REQUEST_MODEL: model} if model else {})}
            add(TOKENS, {**gen, TOKEN_TYPE: "input"}, r.minute, r.input_tokens)
            add(TOKENS, {**gen, TOKEN_TYPE: "output"}, r.minute, r.output_tokens)
            for kind, n in r.feedback.items():
                add(EVENTS, {**tok, "event_name": "gating.feedback", "gating_feedback": kind}, r.minute, n)
    sampled = [keep is None or any(a <= start + i - 1 < b for a, b in keep) for i in range(minutes + 1)]
    out = []
    for key, deltas in sorted(counters.items()):
        total, samples = 0.0, []
        for d, on in zip(deltas, sampled, strict=True):
            total += d
            samples.append(f"{total:.15g}" if on else "_")
        out.append({"series": key, "values": " ".join(_runs(samples))})
    return out


def _runs(samples: list[str]) -> list[str]:
    """Runs of missing samples as promtool's `_xN`."""
    out: list[str] = []
    gap = 0
    for v in [*samples, ""]:
        if v == "_":
            gap += 1
            continue
        if gap:
            out.append("_" if gap == 1 else f"_x{gap}")
            gap = 0
        if v:
            out.append(v)
    return out


def fires(config: MonitorConfig, source: Any, repo: str, system: System, rule: MonitorRule, t: int,
          step: int = 1) -> bool:
    """Whether Prometheus, evaluating every `step` minutes, should have `rule` firing at minute `t`:
    the embedded rule fired at every evaluation of the alert's `for:` before it."""
    one = MonitorConfig(config.bake_minutes, (rule,), config.issue, config.service)
    return all(evaluate(one, source, repo, list(system.ids), m, system.projection)[0].firing
               for m in range(t - rule.window, t + 1, step))


def promtool_test(config: MonitorConfig, rules_file: str, rollups: Sequence[Rollup], source: Any, repo: str,
                  service: str, system: str | System, start: int, minutes: int, at: Sequence[int],
                  model: str | None = None, keep: Sequence[tuple[int, int]] | None = None,
                  step: int = 1) -> dict[str, Any]:
    """A `promtool test rules` file: the roll-ups as input series (one sample a minute), and at each
    minute of `at` the alerts the embedded rules say should be firing (for `system`, with its
    projection), the rules evaluated every `step` minutes (promtool evaluates every rule at every
    step from the first sample: weeks of history want a coarser step)."""
    if any((t - start) % step for t in at):
        raise ValueError(f"the checks must fall on evaluations, every {step} minutes from the start")
    sys_ = system if isinstance(system, System) else System((system,), Projection())
    prom, _skipped = prometheus_rules(config, repo, service, [sys_])
    written = {r["alert"] for r in prom["groups"][0]["rules"] if "alert" in r}
    tests = []
    for rule in config.rules:
        if alert_name(rule.name) not in written:
            continue
        for t in at:
            expected = []
            if fires(config, source, repo, sys_, rule, t, step):
                expected.append({"exp_labels": {**labels(rule, repo), "service_name": service,
                                                "service_version": sys_.ids[0]},
                                 "exp_annotations": alert_annotations(rule)})
            tests.append({"eval_time": f"{t - start}m", "alertname": alert_name(rule.name), "exp_alerts": expected})
    return {"rule_files": [rules_file], "evaluation_interval": f"{step}m",
            "tests": [{"interval": "1m", "input_series": series(rollups, service, start, minutes, model, keep),
                       "alert_rule_test": tests}]}
