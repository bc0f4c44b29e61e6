"""Automatic rollback: Alertmanager webhooks on POST /alerts and failed deployments, end to end on the
emulator, with the App under a real WSGI server."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from app_support import serve_in_thread
from test_rollback_app import MANIFEST, World, make_world

TOKEN = "alert-token-for-tests"
HANDLERS = "gating.server.handlers.merge_audit,gating.server.handlers.deployments,gating.server.handlers.rollback_command,gating.server.handlers.alerts"
RULES = MANIFEST.replace("  mode: pull_request\n", """  mode: pull_request
  on_deploy_failure: true
  on_alert:
    - name: answer-quality
      match: {alertname: AnswerQualityDrop}
      match_re: {severity: "page|critical"}
      repository: acme/support-bot
""")
ALERT = {
    "receiver": "gating",
    "status": "firing",
    "alerts": [{
        "status": "firing",
        "labels": {"alertname": "AnswerQualityDrop", "service": "support-bot", "severity": "page"},
        "annotations": {"summary": "factuality below 0.80 for 10 minutes"},
        "startsAt": "2024-05-01T12:00:00.000Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.invalid:9090/graph?g0.expr=factuality",
        "fingerprint": "6b3f1c0e2a9d4f57",
    }],
    "groupLabels": {"alertname": "AnswerQualityDrop"},
    "commonLabels": {"alertname": "AnswerQualityDrop", "service": "support-bot", "severity": "page"},
    "commonAnnotations": {"summary": "factuality below 0.80 for 10 minutes"},
    "externalURL": "http://alertmanager.invalid:9093",
    "version": "4",
    "groupKey": '{}:{alertname="AnswerQualityDrop"}',
    "truncatedAlerts": 0,
}


def alert_app(github, github_repo, tmp_path: Path):
    return make_world(github, github_repo, tmp_path, GATING_HANDLERS=HANDLERS, GATING_ALERTS_TOKEN=TOKEN)


@pytest.fixture
def bare(github, github_repo, tmp_path: Path):
    """The App and a repository with no history to speak of: for requests refused at the door."""
    app, key = alert_app(github, github_repo, tmp_path)
    with serve_in_thread(app) as url:
        w = World(github, github_repo, app, key, tmp_path)
        w.url = url
        yield w


@pytest.fixture
def world(github, github_repo, tmp_path: Path):
    """M1 good and known good; M2 (new tool, prompt edit, re-pin, and the on_alert rules) merged."""
    app, key = alert_app(github, github_repo, tmp_path)
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = World(github, github_repo, app, key, tmp_path)
        w.url = url
        w.good_then_bad(RULES)
        yield w


def post(world: World, payload: Any, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    resp = httpx.post(world.url + "/alerts", content=body, headers={**headers, "Content-Type": "application/json"})
    world.settle()
    return resp


def test_a_firing_alert_rolls_back_once(world: World):
    world.deploy(world.shas["M2"])
    m1 = world.shas["M1"]
    first = post(world, ALERT)
    assert first.status_code == 202 and first.json()["duplicates"] == 0 and len(first.json()["jobs"]) == 1
    (pr,) = world.rollback_pulls()
    assert pr["title"] == f"Rollback LLM system to {m1[:7]} (last-good)"
    assert ("- Requested by: alertmanager (http://prometheus.invalid:9090/graph?g0.expr=factuality)\n"
            "- Reason: alert AnswerQualityDrop firing since 2024-05-01T12:00:00.000Z: factuality below 0.80 "
            "for 10 minutes\n") in pr["body"]
    assert "tools/refund.json" not in world.files(pr["head"]["sha"])
    (rolled,) = [e for e in world.entries() if e.event == "rolled_back"]
    assert rolled.predicate["actor"] == "alertmanager" and rolled.predicate["rollback"]["previous_known_good"] == m1
    assert {k: rolled.predicate["rollback"][k] for k in ("target", "target_ref", "requested_by", "trigger", "source")} \
        == {"target": m1, "target_ref": "last-good", "requested_by": "alertmanager", "trigger": "alert",
            "source": "http://prometheus.invalid:9090/graph?g0.expr=factuality"}

    again = post(world, ALERT)  # Alertmanager's repeat_interval: the same firing again
    assert (again.status_code, again.json()) == (200, {"status": "nothing to do", "jobs": [], "duplicates": 1,
                                                       "resolved": 0})
    assert len(world.rollback_pulls()) == 1
    assert len([e for e in world.entries() if e.event == "rolled_back"]) == 1


def test_resolved_and_unmatched_alerts_do_nothing(world: World):
    world.deploy(world.shas["M2"])
    resolved = copy.deepcopy(ALERT)
    resolved["status"] = resolved["alerts"][0]["status"] = "resolved"
    r = post(world, resolved)
    assert (r.status_code, r.json()["resolved"], r.json()["jobs"]) == (200, 1, [])
    other = copy.deepcopy(ALERT)
    other["alerts"][0]["labels"]["severity"] = "ticket"  # match_re needs page or critical
    other["alerts"][0]["labels"]["repository"] = "acme/support-bot"
    assert post(world, other).status_code == 202
    assert world.rollback_pulls() == []


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["missing", "wrong"])
def test_a_wrong_token_is_401(bare: World, token):
    r = post(bare, ALERT, token=token)
    assert r.status_code == 401
    assert r.json() == {"error": "missing or wrong bearer token (Authorization: Bearer <GATING_ALERTS_TOKEN>)"}
    assert bare.queue.counts()["queued"] == 0 and bare.queue.list() == []


def _bad(**changes: Any) -> dict[str, Any]:
    p = copy.deepcopy(ALERT)
    for path, value in changes.items():
        target = p
        *parents, last = path.split("__")
        for k in parents:
            target = target[int(k)] if k.isdigit() else target[k]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return p


@pytest.mark.parametrize("payload, message", [
    (b"{not json", "body is not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    ([1, 2], "body must be a JSON object (an Alertmanager webhook payload)"),
    (_bad(version="3"), "version must be \"4\" (Alertmanager webhook payload), not '3'"),
    (_bad(groupKey=...), "groupKey must be a non-empty string"),
    (_bad(alerts={"a": 1}), "alerts must be a list"),
    (_bad(alerts__0__labels={"a": 1}), "alerts[0].labels must be an object of strings"),
    (_bad(alerts__0__fingerprint=...), "alerts[0].fingerprint must be a non-empty string"),
    (_bad(alerts__0__startsAt="yesterday"), "alerts[0].startsAt is not an RFC 3339 time: 'yesterday'"),
    (_bad(alerts__0__status="pending"), "alerts[0].status must be firing or resolved, not 'pending'"),
    (b"[" * 100_000, "body is not JSON: nested too deeply"),
], ids=["not-json", "not-object", "version", "group-key", "alerts", "labels", "fingerprint", "starts-at", "status",
        "nested"])
def test_malformed_payloads_are_400_with_a_message(bare: World, payload, message):
    r = post(bare, payload)
    assert (r.status_code, r.json()) == (400, {"error": f"not an Alertmanager webhook payload: {message}"})


def test_a_failed_deployment_rolls_back_when_the_manifest_says_so(world: World):
    world.deploy(world.shas["M2"], "failure")
    (pr,) = world.rollback_pulls()
    assert pr["title"] == f"Rollback LLM system to {world.shas['M1'][:7]} (last-good)"
    assert "- Requested by: gating (on_deploy_failure)" in pr["body"]
    assert "ended in failure" in pr["body"]
    events = [e.event for e in world.entries()]
    assert events[-2:] == ["deploy_failed", "rolled_back"]
    rb = world.entries()[-1].predicate["rollback"]
    assert (rb["target"], rb["requested_by"], rb["trigger"]) == (world.shas["M1"], "gating (on_deploy_failure)",
                                                                 "deploy_failure")
    assert "ended in failure" in rb["reason"]


def test_the_default_app_handles_rollbacks_and_refuses_alerts_without_a_token(github, tmp_path: Path):
    from gating.server import create_app

    app = create_app({"APP_ID": github.app.app_id, "PRIVATE_KEY": github.app.private_key_pem,
                      "WEBHOOK_SECRET": github.app.webhook_secret, "GITHUB_API_URL": github.api_url,
                      "GATING_DB": str(tmp_path / "jobs.db")})
    names = {h.name for h in app.extensions["gating"].registry.handlers}
    assert {"rollback_command.on_comment", "alerts.on_alert", "alerts.on_deployment_failure"} <= names
    with serve_in_thread(app) as url:
        r = httpx.post(url + "/alerts", json=ALERT, headers={"Authorization": "Bearer anything"})
    assert (r.status_code, r.json()) == (401, {"error": "alerts are not accepted: the App has no "
                                                        "GATING_ALERTS_TOKEN"})
