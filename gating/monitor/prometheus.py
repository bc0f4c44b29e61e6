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
Not written, and listed as such: rules relative to the eval's projection (the projection belongs to
one snapshot, which only the App knows is deployed), cost per day (the price table lives in the
App), and weekly anomaly rules (median/MAD over past weeks).

Pure: config in, plain data out; the CLI writes it as YAML.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gating.monitor.rollup import Rollup
from gating.monitor.rules import MonitorConfig, MonitorRule, evaluate, format_duration

CALLS = "traces_span_metrics_calls_total"
DURATION = "traces_span_metrics_duration_milliseconds_bucket"
TOKENS = "gen_ai_client_token_usage_sum"
EVENTS = "traces_span_metrics_events_total"
ERROR_STATUS = "STATUS_CODE_ERROR"
OK_STATUS = "STATUS_CODE_UNSET"
BY = "service_name, service_version"
SOURCE = "gating-monitor"  # the `source` label of every alert, for the Alertmanager route
LE_BUCKETS = (2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10000, 15000)  # spanmetrics' defaults
METRIC_NAMES = {"calls": CALLS, "duration": DURATION, "tokens": TOKENS, "events": EVENTS}


@dataclass(frozen=True)
class Skipped:
    rule: str
    why: str


def skipped_why(rule: MonitorRule) -> str | None:
    if rule.anomaly is not None:
        return "a weekly anomaly rule (median/MAD over past weeks) is evaluated by the App only"
    if rule.relative:
        return "a threshold relative to the eval's projection belongs to one snapshot; the App evaluates it"
    if rule.metric == "cost_per_day":
        return "cost comes from the App's price table; no exported metric carries it"
    return None


def alert_name(rule: str) -> str:
    return "Gating" + "".join(p[:1].upper() + p[1:] for p in re.split(r"[-_.]+", rule) if p)


def _record(rule: str, what: str) -> str:
    return f"gating:{re.sub(r'[^A-Za-z0-9_]', '_', rule)}:{what}"


def _sel(service: str, **labels: str) -> str:
    parts = [f'service_name="{service}"'] + [f'{k}="{v}"' for k, v in labels.items()]
    return "{" + ", ".join(parts) + "}"


def _exprs(rule: MonitorRule, service: str) -> tuple[str, str]:
    """(the rule's value, its sample size) as PromQL over its window."""
    w = format_duration(rule.window)
    comp = {"gating_component": rule.component} if rule.component else {}
    requests = f"sum by ({BY}) (rate({CALLS}{_sel(service, gating_stage='request', **comp)}[{w}]))"
    count = f"sum by ({BY}) (increase({CALLS}{_sel(service, gating_stage='request', **comp)}[{w}]))"
    m = rule.metric
    if m == "error_rate":
        cat = {"gating_error": rule.category} if rule.category else {}
        errors = f"sum by ({BY}) (rate({CALLS}{_sel(service, gating_stage='request', status_code=ERROR_STATUS, **comp, **cat)}[{w}]))"
        return f"({errors} or {requests} * 0) / {requests}", count
    if m.startswith("latency_"):
        q = {"latency_p50": "0.5", "latency_p95": "0.95", "latency_p99": "0.99"}[m]
        sel = _sel(service, gating_stage=rule.stage, **comp)
        value = f"histogram_quantile({q}, sum by ({BY}, le) (rate({DURATION}{sel}[{w}])))"
        samples = f"sum by ({BY}) (increase({DURATION}{_sel(service, gating_stage=rule.stage, le='+Inf', **comp)}[{w}]))"
        return value, samples
    if m == "tokens_per_request":
        return f"sum by ({BY}) (rate({TOKENS}{_sel(service, **comp)}[{w}])) / {requests}", count
    if m == "negative_feedback_rate":
        neg = f"sum by ({BY}) (rate({EVENTS}{_sel(service, event_name='gating.feedback', gating_feedback='negative', **comp)}[{w}]))"
        return f"({neg} or {requests} * 0) / {requests}", count
    if m == "requests_per_minute":
        return f"{requests} * 60", count
    raise ValueError(f"metric {m} has no PromQL form")


def alert_annotations(rule: MonitorRule) -> dict[str, str]:
    return {"summary": f"{rule.name}: {rule.condition} (action {rule.action})"}


def labels(rule: MonitorRule, repo: str) -> dict[str, str]:
    return {"repository": repo, "rule": rule.name, "action": rule.action, "severity": rule.severity, "source": SOURCE}


def prometheus_rules(config: MonitorConfig, repo: str, service: str) -> tuple[dict[str, Any], list[Skipped]]:
    """(a Prometheus rule file, the rules it could not express and why)."""
    rules: list[dict[str, Any]] = []
    skipped = []
    for rule in config.rules:
        why = skipped_why(rule)
        if why:
            skipped.append(Skipped(rule.name, why))
            continue
        value, samples = _exprs(rule, service)
        rv, rs = _record(rule.name, "value"), _record(rule.name, "samples")
        rules.append({"record": rv, "expr": value})
        rules.append({"record": rs, "expr": samples})
        cond = f"{rv} {rule.op} {rule.threshold:g} and on ({BY}) {rs} >= {rule.min_requests}"
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


def series(rollups: Iterable[Rollup], service: str, start: int, minutes: int) -> list[dict[str, str]]:
    """The counters an OpenTelemetry Collector would export for these roll-ups, one sample a minute
    from `start`, as promtool `input_series` (the sample at minute i counts the minutes before it)."""
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
            add(TOKENS, {**tok, "gen_ai_token_type": "input"}, r.minute, r.input_tokens)
            add(TOKENS, {**tok, "gen_ai_token_type": "output"}, r.minute, r.output_tokens)
            for kind, n in r.feedback.items():
                add(EVENTS, {**tok, "event_name": "gating.feedback", "gating_feedback": kind}, r.minute, n)
    out = []
    for key, deltas in sorted(counters.items()):
        total, samples = 0.0, []
        for d in deltas:
            total += d
            samples.append(f"{total:.15g}")
        out.append({"series": key, "values": " ".join(samples)})
    return out


def fires(config: MonitorConfig, source: Any, repo: str, system: str, rule: MonitorRule, t: int) -> bool:
    """Whether Prometheus should have `rule` firing at minute `t`: the embedded rule fired at every
    minute of the alert's `for:` before it."""
    one = MonitorConfig(config.bake_minutes, (rule,), config.issue, config.service)
    return all(evaluate(one, source, repo, [system], m)[0].firing for m in range(t - rule.window, t + 1))


def promtool_test(config: MonitorConfig, rules_file: str, rollups: Sequence[Rollup], source: Any, repo: str,
                  service: str, system: str, start: int, minutes: int, at: Sequence[int]) -> dict[str, Any]:
    """A `promtool test rules` file: the roll-ups as input series, and at each minute of `at` the
    alerts the embedded rules say should be firing."""
    prom, _skipped = prometheus_rules(config, repo, service)
    written = {r["alert"] for r in prom["groups"][0]["rules"] if "alert" in r}
    tests = []
    for rule in config.rules:
        if alert_name(rule.name) not in written:
            continue
        for t in at:
            expected = []
            if fires(config, source, repo, system, rule, t):
                expected.append({"exp_labels": {**labels(rule, repo), "service_name": service,
                                                "service_version": system},
                                 "exp_annotations": alert_annotations(rule)})
            tests.append({"eval_time": f"{t - start}m", "alertname": alert_name(rule.name), "exp_alerts": expected})
    return {"rule_files": [rules_file], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series(rollups, service, start, minutes),
                       "alert_rule_test": tests}]}

