"""`gating monitor rules --prometheus`: every one of the example's monitor: rules as Prometheus rules that
pass `promtool check rules` and, on series recorded from synthetic traffic with incidents, fire in
`promtool test rules` exactly when the embedded rules (held for the alert's `for:`) fire: rate
thresholds, thresholds relative to the eval's projection (read from the signed audit log), cost per day
from the price table, and the weekly anomaly rule."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from gating.audit import keys as keymod
from gating.audit import log as audit_log
from gating.audit.entry import EntryFacts
from gating.commands.cli import main
from gating.git import notes as git_notes
from gating.git.repository import Git
from gating.monitor.prometheus import System, alert_name, promtool_test
from gating.monitor.rollup import Rollup
from gating.monitor.rules import MonitorConfig, evaluate, parse_monitor, projection_of
from gating.system.manifest import parse_manifest
from gating.testing.example import make_example_repo
from tests.monitor_traffic import MODEL, REPO, START, WEEK, Incident, IndexedRollups, traffic

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "support-bot"
DAY = 24 * 60
NOON = START + 2 * DAY + 11 * 60  # a Wednesday, late morning: busy traffic
MINUTES = 240
ERRORS = Incident("error_spike", NOON + 60, 60)
RETRIEVAL = Incident("retrieval_latency", NOON + 150, 45)
CHECKS = [NOON + 30, NOON + 100, NOON + 140, NOON + 185, NOON + 230]
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
# What the eval projected for the deployed snapshot: 900 tokens and $0.00375 a request, 100,000 a day.
EVAL_METRICS = {"tokens_in_per_request": 700, "tokens_out_per_request": 200, "cost_per_request_usd": 0.00375}
REQUESTS_PER_DAY = 100_000


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("promtool is missing in CI: .ci/run installs Debian's prometheus package")
    pytest.skip("no promtool: install Debian's prometheus package (apt-get install prometheus)")


def sign(g: Git, key: Any, event: str, commit: str, n: int, **facts: Any) -> None:
    audit_log.append_entry(git_notes.LocalNotes(g), EntryFacts(event, commit, REPO, "deploy-bot",
                                                               discriminator=f"d{n}", **facts), key, NOW)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Any]:
    """The example repository, merged (with its eval evidence) and deployed in the signed audit log,
    and its rules written by the command line."""
    root = tmp_path_factory.mktemp("example")
    g = make_example_repo(root / "support-bot")
    key = keymod.generate()
    pub = root / "audit.pub"
    pub.write_bytes(keymod.public_pem(key))
    sha = g.rev_parse("HEAD")
    sign(g, key, "merged", sha, 1, snapshot={"evals": {"traffic": {"requests_per_day": REQUESTS_PER_DAY}}},
         evals={"metrics": EVAL_METRICS})
    sign(g, key, "deployed", sha, 2, deployment={"environment": "production"})
    merged = audit_log.read_log(git_notes.LocalNotes(g))[0]
    system = System((sha, merged.predicate["snapshot_digest"]), projection_of(merged))
    rules, am = root / "rules.yml", root / "alertmanager.yml"
    assert main(["-C", str(g.root), "monitor", "rules", "--prometheus", "--repository", REPO, "-o", str(rules),
                 "--key", str(pub), "--no-fetch", "--alertmanager", str(am), "--app", "https://gating.acme.test"]) == 0
    return {"rules": rules, "am": am, "system": system, "g": g, "pub": pub}


def example_config() -> tuple[MonitorConfig, str]:
    m = parse_manifest((EXAMPLE / "gating.yml").read_bytes())
    return parse_monitor(m.monitor, m.name), m.name


def run_promtool(doc: dict[str, Any], path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True)


def firing_at(doc: dict[str, Any], start: int) -> set[tuple[str, int]]:
    return {(t["alertname"], int(t["eval_time"][:-1]) + start) for t in doc["tests"][0]["alert_rule_test"]
            if t["exp_alerts"]}


def test_the_generated_rules_pass_promtool_check_and_leave_no_rule_out(written):
    out = subprocess.run([promtool(), "check", "rules", str(written["rules"])], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
    text = written["rules"].read_text()
    assert "# not written" not in text
    sha, digest = written["system"].ids
    assert f"# projections of {sha}, {digest}: eval evidence of the merged entry (audit seq 1)" in text
    doc = yaml.safe_load(text)
    rules = doc["groups"][0]["rules"]
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    config, _name = example_config()
    assert set(alerts) == {alert_name(r.name) for r in config.rules}  # every rule of the example
    assert alerts["GatingErrorRate"]["for"] == "15m"
    assert alerts["GatingErrorRate"]["labels"] == {"repository": REPO, "rule": "error-rate", "action": "rollback",
                                                   "severity": "critical", "source": "gating-monitor"}
    projected = {(r["record"], r["labels"]["service_version"]): r["expr"] for r in rules
                 if r.get("record", "").startswith("gating:projected:")}
    assert projected == {("gating:projected:tokens_per_request", sha): "vector(900)",
                         ("gating:projected:tokens_per_request", digest): "vector(900)",
                         ("gating:projected:cost_per_day", sha): "vector(375)",
                         ("gating:projected:cost_per_day", digest): "vector(375)"}
    prices = {(r["labels"]["gen_ai_response_model"], r["labels"]["gen_ai_token_type"]): r["expr"] for r in rules
              if r.get("record") == "gating:price_usd_per_token"}
    assert prices[(MODEL, "input")] == "vector(2.5e-06)" and prices[(MODEL, "output")] == "vector(1e-05)"
    assert any(r.get("record") == "gating:cost_usd:rate1h" for r in rules)
    assert "offset 3w" in next(r["expr"] for r in rules if r.get("record") == "gating:traffic_drop:past")


def test_the_alertmanager_route_posts_to_the_apps_alerts_endpoint_with_its_token(written):
    doc = yaml.safe_load(written["am"].read_text())
    (receiver,) = doc["receivers"]
    (hook,) = receiver["webhook_configs"]
    assert hook["url"] == "https://gating.acme.test/alerts"
    assert hook["http_config"]["authorization"]["type"] == "Bearer"
    assert doc["route"]["routes"][0]["matchers"] == ['source="gating-monitor"']


def test_on_recorded_series_prometheus_fires_when_the_embedded_rules_fire(written, tmp_path):
    rules, system = written["rules"], written["system"]
    config, service = example_config()
    rows = list(traffic(start=NOON, minutes=MINUTES, incidents=[ERRORS, RETRIEVAL], system=system.ids[0]))
    source = IndexedRollups(rows)
    doc = promtool_test(config, str(rules), rows, source, REPO, service, system, NOON, MINUTES, CHECKS, model=MODEL)
    # the expectation has teeth: each incident's rule fires in the middle of it, nothing fires elsewhere
    assert firing_at(doc, NOON) == {(alert_name("error-rate"), NOON + 100), (alert_name("retrieval-p95"), NOON + 185)}
    out = run_promtool(doc, tmp_path / "rules_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout

    # and promtool does notice when the two disagree: a rule file whose threshold is far too high
    loose = tmp_path / "loose.yml"
    loose.write_text(rules.read_text().replace("gating:error_rate:value > 0.02", "gating:error_rate:value > 0.5"))
    doc["rule_files"] = [str(loose)]
    out = run_promtool(doc, tmp_path / "rules_test.yml")
    assert out.returncode != 0 and "GatingErrorRate" in out.stdout + out.stderr


def test_a_token_blowup_fires_the_rules_relative_to_the_projection_and_the_cost_rule(written, tmp_path):
    """Four times the tokens: tokens per request passes 2x the projected 900 within minutes; cost per
    day, from the token rates and the price table, passes 3x the projected $375 once half an hour is
    blown up, and fires after holding for its hour (not yet 40 minutes in)."""
    rules, system = written["rules"], written["system"]
    config, service = example_config()
    blowup = Incident("token_blowup", NOON + 30, 150)
    minutes = 260
    checks = [NOON + 25, NOON + 70, NOON + 120, NOON + 175, NOON + 200, NOON + 255]
    rows = list(traffic(start=NOON, minutes=minutes, incidents=[blowup], system=system.ids[0]))
    doc = promtool_test(config, str(rules), rows, IndexedRollups(rows), REPO, service, system, NOON, minutes, checks,
                        model=MODEL)
    tokens, cost = alert_name("tokens-per-request"), alert_name("cost-per-day")
    assert firing_at(doc, NOON) == {(tokens, NOON + 70), (tokens, NOON + 120), (tokens, NOON + 175),
                                    (cost, NOON + 120), (cost, NOON + 175), (cost, NOON + 200)}
    out = run_promtool(doc, tmp_path / "blowup_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr

    # the price table matters: with the model's prices ten times lower, Prometheus sees no cost spike
    cheap = tmp_path / "cheap.yml"
    cheap.write_text(written["rules"].read_text().replace("vector(2.5e-06)", "vector(2.5e-07)")
                     .replace("vector(1e-05)", "vector(1e-06)"))
    doc["rule_files"] = [str(cheap)]
    out = run_promtool(doc, tmp_path / "blowup_test.yml")
    assert out.returncode != 0 and "GatingCostPerDay" in out.stdout + out.stderr


def only(rules: Path, alert: str, dest: Path) -> Path:
    """The rule file cut down to one alert and the recording rules it reads (promtool evaluates every
    rule at every minute of the three weeks an anomaly rule looks back over)."""
    doc = yaml.safe_load(rules.read_text())
    group = doc["groups"][0]
    records = [r for r in group["rules"] if "record" in r]
    kept = [next(r for r in group["rules"] if r.get("alert") == alert)]
    while True:
        more = [r for r in records if r not in kept and any(r["record"] in k["expr"] for k in kept)]
        if not more:
            break
        kept += more
    group["rules"] = [r for r in group["rules"] if r in kept]
    assert len(group["rules"]) < len(records)
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def weeks_around(at: list[int], weeks: int, before: int, system: str, incidents: list[Incident]) -> list[Rollup]:
    """Traffic in the `before` minutes up to each time of `at` and the same minutes of past weeks."""
    rows: list[Rollup] = []
    for t in at:
        for k in range(weeks + 1):
            since = t - k * WEEK - before
            rows += traffic(start=since, minutes=before + 1, incidents=incidents, system=system, seed=since)
    return rows


@pytest.mark.timeout(400)  # promtool evaluates the rules over three weeks and a half of history, twice
def test_the_weekly_anomaly_rule_fires_on_a_real_drop_and_not_on_a_normal_weekend(written, tmp_path):
    rules, system = written["rules"], written["system"]
    config, service = example_config()
    rule = config.rule("traffic-drop")
    assert rule is not None and rule.anomaly is not None and rule.anomaly.weeks == 3
    wednesday = START + 3 * WEEK + 2 * DAY + 12 * 60  # the fourth week: three past weeks to learn from
    saturday = wednesday + 3 * DAY
    drop = Incident("traffic_drop", wednesday - 45, 60)
    before = 2 * rule.window + 60  # the alert's window and its `for:`, before the first check
    at = [wednesday - 50, wednesday, saturday]
    rows = weeks_around([wednesday, saturday], 3, before, system.ids[0], [drop])
    source = IndexedRollups(rows)
    start = min(r.minute for r in rows)
    minutes = saturday + 1 - start
    keep = [(t - k * WEEK - before, t - k * WEEK + 1) for t in (wednesday, saturday) for k in range(4)]
    # a weekend is quiet: a static rule would see Saturday's traffic far below Wednesday's
    one = MonitorConfig(rules=(rule,))
    (wed_before,) = evaluate(one, source, REPO, list(system.ids), wednesday - 50)
    (sat,) = evaluate(one, source, REPO, list(system.ids), saturday)
    assert sat.value is not None and wed_before.value is not None and sat.value < 0.5 * wed_before.value
    cut = only(rules, alert_name("traffic-drop"), tmp_path / "traffic_drop.yml")
    doc = promtool_test(config, str(cut), rows, source, REPO, service, system, start, minutes, at, model=MODEL,
                        keep=keep, step=5)
    doc["tests"][0]["alert_rule_test"] = [t for t in doc["tests"][0]["alert_rule_test"]
                                          if t["alertname"] == alert_name("traffic-drop")]
    assert firing_at(doc, start) == {(alert_name("traffic-drop"), wednesday)}
    out = run_promtool(doc, tmp_path / "anomaly_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr

    # and promtool notices a rule that disagrees: one that ignores the limit fires on the normal weekend
    flat = tmp_path / "flat.yml"
    flat.write_text(cut.read_text().replace("gating:traffic_drop:z < -6", "gating:traffic_drop:z < 1000"))
    doc["rule_files"] = [str(flat)]
    out = run_promtool(doc, tmp_path / "anomaly_test.yml")
    assert out.returncode != 0 and "GatingTrafficDrop" in out.stdout + out.stderr


def test_without_an_audit_log_the_relative_rules_are_listed_as_not_written(tmp_path, capsys):
    g = make_example_repo(tmp_path / "support-bot")
    key = keymod.generate()
    pub = tmp_path / "audit.pub"
    pub.write_bytes(keymod.public_pem(key))
    out = tmp_path / "rules.yml"
    assert main(["-C", str(g.root), "monitor", "rules", "--prometheus", "--repository", REPO, "-o", str(out),
                 "--key", str(pub), "--no-fetch"]) == 0
    text = out.read_text()
    assert ("# not written: tokens-per-request: relative to the eval's projection, and no known system has a "
            "projection of tokens_per_request") in text
    assert "GatingCostPerDay" not in text and "GatingTrafficDrop" in text
    assert "4 alerting rules written; 2 evaluated by the App only" in capsys.readouterr().err


def test_a_system_with_no_signed_merged_entry_is_refused(tmp_path, capsys):
    g = make_example_repo(tmp_path / "support-bot")
    key = keymod.generate()
    pub = tmp_path / "audit.pub"
    pub.write_bytes(keymod.public_pem(key))
    forged = keymod.generate()  # an entry signed by a key nobody trusts does not count
    sign(g, forged, "merged", g.rev_parse("HEAD"), 1, evals={"metrics": EVAL_METRICS})
    assert main(["-C", str(g.root), "monitor", "rules", "--prometheus", "--repository", REPO, "--key", str(pub),
                 "--no-fetch", "--system", "HEAD"]) != 0
    assert "no signed merged entry in the audit log" in capsys.readouterr().err
