"""monitor: rules over weeks of synthetic traffic: every injected incident fires its rule within its
window, the normal weekly pattern (nights, weekends) fires nothing, and bad rules are refused with
the line and column of the key."""

from __future__ import annotations

import pytest
import yaml

from gating.monitor.rollup import MemoryRollups, Rollup
from gating.monitor.rules import (
    Projection,
    evaluate,
    firing,
    parse_duration,
    parse_monitor,
    projection_from,
)
from gating.system.manifest import ManifestError, parse_manifest
from tests.monitor_traffic import (
    MONITOR,
    REPO,
    START,
    SYSTEM,
    WEEK,
    Incident,
    IndexedRollups,
    traffic,
)

DAY = 24 * 60
LAST_WEEK = START + 3 * WEEK
# Incidents in the fourth week, on weekday afternoons and a Saturday morning.
INCIDENTS = {
    "error_spike": Incident("error_spike", LAST_WEEK + 1 * DAY + 14 * 60),  # Tuesday 14:00
    "retrieval_latency": Incident("retrieval_latency", LAST_WEEK + 2 * DAY + 10 * 60),  # Wednesday 10:00
    "token_blowup": Incident("token_blowup", LAST_WEEK + 5 * DAY + 11 * 60),  # Saturday 11:00
}
EXPECTED = {"error_spike": "error-rate", "retrieval_latency": "retrieval-p95", "token_blowup": "tokens-per-request"}
# What the eval projected for this snapshot: 900 tokens and $0.00375 per request at 100,000 requests a day.
PROJECTION = projection_from({"tokens_in_per_request": 700, "tokens_out_per_request": 200,
                              "cost_per_request_usd": 0.00375}, 100_000, "eval note")


@pytest.fixture(scope="module")
def month() -> IndexedRollups:
    return IndexedRollups(traffic(weeks=4, incidents=list(INCIDENTS.values())))


@pytest.fixture(scope="module")
def config():
    return parse_monitor(MONITOR)


def test_every_incident_fires_its_rule_within_its_window(month, config):
    for kind, incident in INCIDENTS.items():
        times = range(incident.start + 1, incident.start + incident.minutes + 1)
        fired: dict[str, int] = {}
        for t in times:
            for r in firing(evaluate(config, month, REPO, [SYSTEM], t, PROJECTION)):
                fired.setdefault(r.rule, t)  # the first minute it fired
        rule = config.rule(EXPECTED[kind])
        assert EXPECTED[kind] in fired, (kind, fired)
        assert fired[EXPECTED[kind]] - incident.start <= rule.window, kind  # within one window of the start


def test_the_normal_weekly_pattern_fires_nothing(month, config):
    quiet = [(i.start, i.start + i.minutes + 60) for i in INCIDENTS.values()]  # the incident and its tail
    fired = []
    for t in range(LAST_WEEK, LAST_WEEK + WEEK, 15):
        if any(a <= t < b for a, b in quiet):
            continue
        fired += [(t, r.rule, r.reason) for r in firing(evaluate(config, month, REPO, [SYSTEM], t, PROJECTION))]
    assert fired == []


def test_a_retrieval_regression_fires_the_retrieval_rule_and_not_the_error_or_token_rules(month, config):
    t = INCIDENTS["retrieval_latency"].start + 30
    results = {r.rule: r for r in evaluate(config, month, REPO, [SYSTEM], t, PROJECTION)}
    assert results["retrieval-p95"].firing and results["retrieval-p95"].value > 300
    assert results["retrieval-p95"].samples > 100 and results["retrieval-p95"].action == "notify"
    assert not results["error-rate"].firing and not results["tokens-per-request"].firing


def test_the_weekend_dip_fires_a_static_volume_threshold_but_not_the_weekly_anomaly_rule(month):
    static = parse_monitor({"rules": [
        {"name": "low-traffic", "metric": "requests_per_minute", "threshold": "< 50", "for": "30m", "action": "notify"},
        {"name": "traffic-drop", "metric": "requests_per_minute", "anomaly": {"z": 6, "weeks": 3, "direction": "down"},
         "for": "30m", "action": "notify"}]})
    saturday_noon = LAST_WEEK + 5 * DAY + 13 * 60
    results = {r.rule: r for r in evaluate(static, month, REPO, [SYSTEM], saturday_noon)}
    assert results["low-traffic"].firing
    drop = results["traffic-drop"]
    assert not drop.firing and drop.baseline is not None and drop.baseline.weeks == 3
    assert "robust z-scores" in drop.reason and "3 past weeks" in drop.reason


def test_the_anomaly_rule_fires_when_traffic_stops_at_a_busy_hour(config):
    rows = [r for r in traffic(weeks=4) if not (LAST_WEEK + 2 * DAY + 12 * 60 <= r.minute < LAST_WEEK + 2 * DAY + 14 * 60
                                                and r.minute % 10)]  # 90% of Wednesday noon's traffic lost
    source = IndexedRollups(rows)
    result = next(r for r in evaluate(config, source, REPO, [SYSTEM], LAST_WEEK + 2 * DAY + 13 * 60)
                  if r.rule == "traffic-drop")
    assert result.firing and result.z is not None and result.z < -6, result.reason
    assert "below the median" in result.reason


def test_a_rule_does_not_fire_below_its_minimum_request_count_and_says_so():
    rows = [Rollup(REPO, SYSTEM, "answer", "request", m, requests=10, errors={"timeout": 5}) for m in range(100, 115)]
    cfg = parse_monitor({"rules": [MONITOR["rules"][0]]})
    (r,) = evaluate(cfg, MemoryRollups(rows), REPO, [SYSTEM], 115)
    assert (r.firing, r.samples, r.value) == (False, 150, 0.5)
    assert r.reason == "not enough traffic: 150 requests in the last 15m, the rule needs 200"


def test_relative_thresholds_compare_with_the_eval_projection_and_say_when_there_is_none():
    rows = [Rollup(REPO, SYSTEM, "answer", "request", m, requests=100, input_tokens=180_000, output_tokens=20_000,
                   cost=1.0) for m in range(0, 60)]
    cfg = parse_monitor({"rules": [MONITOR["rules"][2], MONITOR["rules"][3]]})
    tokens, cost = evaluate(cfg, MemoryRollups(rows), REPO, [SYSTEM], 60, PROJECTION)
    assert tokens.firing and tokens.value == 2000 and tokens.threshold == 1800 and tokens.projected == 900
    assert tokens.reason == ("tokens per request over 15m is 2,000 tokens/request, > 1,800 tokens/request "
                             "(2x the projected 900 tokens/request) (1,500 requests)")
    assert cost.value == pytest.approx(1440.0) and cost.projected == pytest.approx(375.0) and cost.firing
    (none,) = evaluate(parse_monitor({"rules": [MONITOR["rules"][2]]}), MemoryRollups(rows), REPO, [SYSTEM], 60,
                       Projection())
    assert not none.firing and "no eval projection of tokens_per_request for this snapshot" in none.reason


def test_only_the_deployed_system_counts_and_whole_system_records_are_not_added_twice():
    rows = [Rollup(REPO, "other", "answer", "request", m, requests=100, errors={"timeout": 50}) for m in range(15)]
    rows += [Rollup(REPO, SYSTEM, c, "request", m, requests=50, errors={"parse": 1}) for m in range(15)
             for c in ("answer", "classify")]
    rows += [Rollup(REPO, SYSTEM, "", "request", m, requests=100, errors={"parse": 2}) for m in range(15)]
    cfg = parse_monitor({"rules": [MONITOR["rules"][0]]})
    (r,) = evaluate(cfg, MemoryRollups(rows), REPO, [SYSTEM], 15)
    assert (r.samples, r.value, r.firing) == (1500, 0.02, False)
    (r,) = evaluate(cfg, MemoryRollups(rows), REPO, [SYSTEM, "other"], 15)
    assert r.firing and r.samples == 3000


def test_results_serialise_with_the_window_and_figures():
    rows = [Rollup(REPO, SYSTEM, "answer", "request", m, requests=100, errors={"timeout": 5}) for m in range(15)]
    (r,) = evaluate(parse_monitor({"rules": [MONITOR["rules"][0]]}), MemoryRollups(rows), REPO, [SYSTEM], 15)
    d = r.to_dict()
    assert d["window"] == {"since": "1970-01-01T00:00:00Z", "until": "1970-01-01T00:15:00Z", "minutes": 15}
    assert (d["rule"], d["value"], d["threshold"], d["op"], d["samples"], d["firing"], d["action"]) == \
        ("error-rate", 0.05, 0.02, ">", 1500, True, "rollback")
    assert d["reason"] == "error rate over 15m is 5.00%, > 2.00% (1,500 requests)"


@pytest.mark.parametrize(("text", "minutes"), [("15m", 15), ("1h", 60), (" 2d ", 2880)])
def test_durations(text, minutes):
    assert parse_duration(text) == minutes


HEAD = "version: 1\nname: bot\ncomponents:\n  prompts: {}\nmonitor:\n  rules:\n"


@pytest.mark.parametrize(("rule", "message"), [
    ("    - {name: e, metric: error_rat, threshold: '> 0.1', for: 15m, action: rollback}\n",
     "gating.yml:7:25: monitor.rules[0].metric: 'error_rat' is not one of: error_rate"),
    ("    - {name: e, metric: error_rate, threshold: 'over 2%', for: 15m, action: rollback}\n",
     "gating.yml:7:48: monitor.rules[0].threshold: 'over 2%' is not a threshold like '> 0.02', '<= 800' or "
     "'> 1.5x projected'"),
    ("    - {name: e, metric: error_rate, threshold: '> 0.1', for: 15 minutes, action: rollback}\n",
     "gating.yml:7:62: monitor.rules[0].for: '15 minutes' is not a duration like '15m', '1h' or '1d'"),
    ("    - {name: e, metric: error_rate, threshold: '> 0.1', for: 15m, action: revert}\n",
     "gating.yml:7:75: monitor.rules[0].action: 'revert' is not one of: rollback, notify"),
    ("    - {name: e, metric: error_rate, for: 15m, action: rollback}\n",
     "gating.yml:7:7: monitor.rules[0]: needs a `threshold`, an `anomaly`, or both"),
    ("    - {name: e, metric: error_rate, threshold: '> 2x projected', for: 15m, action: notify}\n",
     "gating.yml:7:48: monitor.rules[0].threshold: only tokens_per_request and cost_per_day have an eval "
     "projection to compare with"),
    ("    - {name: e, metric: error_rate, component: nope, threshold: '> 0.1', for: 15m, action: notify}\n",
     "gating.yml:7:48: unknown prompt 'nope'; no prompts are defined"),
    ("    - {name: e, metric: error_rate, threshold: '> 0.1', for: 15m, action: notify}\n"
     "    - {name: e, metric: error_rate, threshold: '> 0.2', for: 15m, action: notify}\n",
     "gating.yml:8:14: duplicate monitor rule name 'e'"),
])
def test_bad_monitor_rules_name_the_key(rule, message):
    with pytest.raises(ManifestError) as e:
        parse_manifest((HEAD + rule).encode())
    assert str(e.value).startswith(message), str(e.value)


def test_the_example_manifest_monitor_section_parses():
    from pathlib import Path
    m = parse_manifest(Path("examples/support-bot/gating.yml").read_bytes())
    cfg = parse_monitor(m.monitor, m.name)
    assert cfg.bake_minutes > 0 and {r.action for r in cfg.rules} == {"rollback", "notify"}
    assert yaml.safe_load(Path("examples/support-bot/gating.yml").read_text())["monitor"] == m.monitor
