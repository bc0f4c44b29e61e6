"""`gating monitor rules --prometheus`: the example's monitor: rules as Prometheus rules that pass
`promtool check rules` and, on series recorded from synthetic traffic with incidents, fire in
`promtool test rules` exactly when the embedded rules (held for the alert's `for:`) fire."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gating.commands.cli import main
from gating.monitor.prometheus import alert_name, promtool_test
from gating.monitor.rules import parse_monitor
from gating.system.manifest import parse_manifest
from tests.monitor_traffic import REPO, START, SYSTEM, Incident, IndexedRollups, traffic

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "support-bot"
DAY = 24 * 60
NOON = START + 2 * DAY + 11 * 60  # a Wednesday, late morning: busy traffic
MINUTES = 240
ERRORS = Incident("error_spike", NOON + 60, 60)
RETRIEVAL = Incident("retrieval_latency", NOON + 150, 45)
CHECKS = [NOON + 30, NOON + 100, NOON + 140, NOON + 185, NOON + 230]


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("promtool is missing in CI: .ci/run installs Debian's prometheus package")
    pytest.skip("no promtool: install Debian's prometheus package (apt-get install prometheus)")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, Path]:
    """The example repository's rules, written by the command line (rules file, Alertmanager snippet)."""
    root = tmp_path_factory.mktemp("example")
    shutil.copytree(EXAMPLE, root, dirs_exist_ok=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    rules, am = root / "rules.yml", root / "alertmanager.yml"
    assert main(["-C", str(root), "monitor", "rules", "--prometheus", "--repository", REPO, "-o", str(rules),
                 "--alertmanager", str(am), "--app", "https://gating.acme.test"]) == 0
    return rules, am


def test_the_generated_rules_pass_promtool_check(written):
    rules, _am = written
    out = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 9 rules found" in out.stdout
    text = rules.read_text()
    assert "# not written: traffic-drop: a weekly anomaly rule" in text
    doc = yaml.safe_load(text)
    alerts = {r["alert"]: r for r in doc["groups"][0]["rules"] if "alert" in r}
    assert set(alerts) == {"GatingErrorRate", "GatingRetrievalP95", "GatingNegativeFeedback"}
    assert alerts["GatingErrorRate"]["for"] == "15m"
    assert alerts["GatingErrorRate"]["labels"] == {"repository": REPO, "rule": "error-rate", "action": "rollback",
                                                   "severity": "critical", "source": "gating-monitor"}


def test_the_alertmanager_route_posts_to_the_apps_alerts_endpoint_with_its_token(written):
    _rules, am = written
    doc = yaml.safe_load(am.read_text())
    (receiver,) = doc["receivers"]
    (hook,) = receiver["webhook_configs"]
    assert hook["url"] == "https://gating.acme.test/alerts"
    assert hook["http_config"]["authorization"]["type"] == "Bearer"
    assert doc["route"]["routes"][0]["matchers"] == ['source="gating-monitor"']


def test_on_recorded_series_prometheus_fires_when_the_embedded_rules_fire(written, tmp_path):
    rules, _am = written
    m = parse_manifest((EXAMPLE / "gating.yml").read_bytes())
    config = parse_monitor(m.monitor, m.name)
    rows = list(traffic(start=NOON, minutes=MINUTES, incidents=[ERRORS, RETRIEVAL]))
    source = IndexedRollups(rows)
    doc = promtool_test(config, str(rules), rows, source, REPO, m.name, SYSTEM, NOON, MINUTES, CHECKS)
    firing = {(t["alertname"], t["eval_time"]) for t in doc["tests"][0]["alert_rule_test"] if t["exp_alerts"]}
    # the expectation has teeth: each incident's rule fires in the middle of it, nothing fires elsewhere
    assert firing == {(alert_name("error-rate"), "100m"), (alert_name("retrieval-p95"), "185m")}
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout

    # and promtool does notice when the two disagree: a rule file whose threshold is far too high
    loose = tmp_path / "loose.yml"
    loose.write_text(rules.read_text().replace("gating:error_rate:value > 0.02", "gating:error_rate:value > 0.5"))
    doc["rule_files"] = [str(loose)]
    test_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True)
    assert out.returncode != 0 and "GatingErrorRate" in out.stdout + out.stderr
