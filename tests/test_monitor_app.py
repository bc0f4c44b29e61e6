"""The monitor in the App, end to end on the emulator under a real WSGI server: a deployment bakes
before it is known-good, a firing `action: rollback` rule opens exactly one rollback pull request and
writes one signed monitor_alert entry however many ticks see it, `action: notify` comments once, and
GET /monitor/status shows each rule against its threshold."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from app_support import serve_in_thread
from test_rollback_app import HANDLERS, MANIFEST, World, make_world

from gating.commands.cli import main
from gating.monitor.rollup import MemoryRollups, Rollup
from gating.server import monitoring

TOKEN = "monitor-token-for-tests"
MONITOR_HANDLERS = HANDLERS + ",gating.server.handlers.monitor"
REPO = "acme/support-bot"


def minutes_of(world: World, sha: str) -> int:
    """The unix minute the App started watching `sha`."""
    (row,) = [r for r in world.queue.query("SELECT commit_sha, deployed_at FROM monitor_watch") if r[0] == sha]
    return int(row[1] // 60)


def traffic(rollups: MemoryRollups, system: str, start: int, minutes: int, *, error_rate: float = 0.004,
            retrieval_ms: float = 120.0, rpm: int = 100) -> None:
    for m in range(start, start + minutes):
        errors = round(rpm * error_rate)
        req = Rollup(REPO, system, "answer", "request", m, requests=rpm, errors={"timeout": errors} if errors else {},
                     input_tokens=700 * rpm, output_tokens=200 * rpm, cost=0.00375 * rpm,
                     feedback={"negative": 1, "positive": 9})
        req.latency.add(900.0, rpm)
        ret = Rollup(REPO, system, "answer", "retrieval", m, requests=rpm)
        ret.latency.add(retrieval_ms, rpm)
        rollups.add(req)
        rollups.add(ret)


def tick(world: World, minute: int, now: int | None = None) -> None:
    """The monitor's timed job for the period starting at `minute`, as the scheduler queues it, with
    the monitor's clock at that minute (or at `now`)."""
    monitoring.clock = lambda: (minute if now is None else now) * 60.0
    state = world.app.extensions["gating"]
    payload = {"action": "monitor", "period": minute, "every_seconds": 60.0}
    handlers = [(h.name, h.key(payload)) for h in state.registry.match("schedule", payload)]
    state.queue.enqueue(f"schedule:monitor:{minute}", "schedule", "monitor", json.dumps(payload), handlers)
    state.worker.wake()
    world.settle()


def events(world: World) -> list[tuple[str, str]]:
    return [(e.event, e.commit) for e in world.entries()]


def status(world: World, token: str | None = TOKEN, repo: str | None = REPO) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(world.url + "/monitor/status", params={"repo": repo} if repo else {}, headers=headers)


@pytest.fixture
def world(github, github_repo, tmp_path: Path):
    """M1 merged and deployed (baking), M2 merged; the example's monitor: rules on main."""
    app, key = make_world(github, github_repo, tmp_path, GATING_HANDLERS=MONITOR_HANDLERS, GATING_MONITOR_SECONDS=0,
                          GATING_MONITOR_TOKEN=TOKEN)
    app.extensions["gating"].rollups = MemoryRollups()
    real_clock = monitoring.clock
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = World(github, github_repo, app, key, tmp_path)
        w.url = url
        w.rollups = app.extensions["gating"].rollups
        w.good_then_bad(MANIFEST)
        try:
            yield w
        finally:
            monitoring.clock = real_clock


def bake_m1(world: World) -> int:
    m1 = world.shas["M1"]
    start = minutes_of(world, m1)
    traffic(world.rollups, m1, start, 40)
    tick(world, start + 31)
    return start


def test_a_deployment_is_known_good_only_after_its_bake_passes_with_no_rule_firing(world: World, monkeypatch, capsys):
    m1 = world.shas["M1"]
    assert ("deployed", m1) in events(world) and ("known_good", m1) not in events(world)
    start = minutes_of(world, m1)
    traffic(world.rollups, m1, start, 40)
    tick(world, start + 10)
    assert ("known_good", m1) not in events(world)
    tick(world, start + 45, now=start + 11)  # a period in the future (forged) is judged at now: still baking
    assert ("known_good", m1) not in events(world)
    body = status(world).json()
    (dep,) = body["deployments"]
    assert (dep["commit"], dep["state"], dep["known_good"]) == (m1, "baking", None)
    assert dep["note"].startswith("baking until ")

    tick(world, start + 31)
    (good,) = [e for e in world.entries() if e.event == "known_good"]
    assert good.commit == m1 and good.predicate["actor"] == "gating (monitor)"
    health = good.predicate["health"]
    assert health["bake"]["minutes"] == 30 and health["bake"]["requests"] == 3100
    assert health["verdict"] == "no rule fired in 30 minutes"
    rules = {r["rule"]: r for r in health["rules"]}
    assert set(rules) == {"error-rate", "retrieval-p95", "tokens-per-request", "cost-per-day", "negative-feedback",
                          "traffic-drop"}
    assert not any(r["firing"] for r in rules.values())
    assert rules["error-rate"]["value"] == 0.0 and rules["error-rate"]["samples"] == 1500
    assert rules["error-rate"]["window"]["minutes"] == 15 and rules["error-rate"]["threshold"] == 0.02
    assert "no eval projection" in rules["tokens-per-request"]["reason"]  # the emulated merge had no eval note

    (dep,) = status(world).json()["deployments"]
    assert (dep["state"], dep["known_good"]) == ("known_good", m1)
    shown = {r["rule"]: (r["value"], r["op"], r["threshold"], r["firing"]) for r in dep["rules"]}
    assert shown["error-rate"] == (0.0, ">", 0.02, False)
    assert abs(shown["retrieval-p95"][0] - 120) / 120 < 0.011 and shown["retrieval-p95"][1:] == (">", 300.0, False)

    monkeypatch.setenv("GATING_MONITOR_TOKEN", TOKEN)
    assert main(["monitor", "status", "--app", world.url, "--repository", REPO]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{REPO}: production {m1[:12]} known_good (known-good: {m1[:12]}): known-good since " \
        + out[0].rsplit("known-good since ", 1)[1]
    assert out[2].split() == ["error-rate", "0", ">", "0.02", "1,500", "15m", "ok"]
    monkeypatch.setenv("GATING_MONITOR_TOKEN", "wrong")
    assert main(["monitor", "status", "--app", world.url, "--repository", REPO]) == 1
    assert capsys.readouterr().err == ("gating: the App answered 401: missing or wrong bearer token (Authorization: "
                                       "Bearer <GATING_MONITOR_TOKEN>)\n")


def test_a_firing_rollback_rule_rolls_back_once_with_one_signed_entry_across_ticks(world: World):
    m1, m2 = world.shas["M1"], world.shas["M2"]
    bake_m1(world)
    world.deploy(m2)
    start = minutes_of(world, m2)
    traffic(world.rollups, m2, start, 25, error_rate=0.10)
    for minute in (start + 16, start + 17, start + 18, start + 31):
        tick(world, minute)
    pulls = world.rollback_pulls()
    assert len(pulls) == 1 and pulls[0]["state"] == "open"
    alerts = [e for e in world.entries() if e.event == "monitor_alert"]
    assert len(alerts) == 1
    p = alerts[0].predicate
    assert (p["commit"], p["actor"], p["health"]["action"]) == (m2, "gating (monitor)", "rollback")
    rule = p["health"]["rule"]
    assert (rule["rule"], rule["value"], rule["threshold"], rule["samples"], rule["firing"]) == \
        ("error-rate", 0.1, 0.02, 1500, True)
    assert rule["reason"] == "error rate over 15m is 10.00%, > 2.00% (1,500 requests)"
    assert p["health"]["rollback"]["target"] == m1 and p["health"]["rollback"]["pull_request"] == pulls[0]["number"]
    (rolled,) = [e for e in world.entries() if e.event == "rolled_back"]
    assert rolled.predicate["rollback"]["trigger"] == "monitor" and rolled.predicate["rollback"]["target"] == m1
    assert [e for e in events(world) if e[0] == "known_good"] == [("known_good", m1)]  # the bake of M2 failed
    (dep,) = status(world).json()["deployments"]
    assert (dep["commit"], dep["state"], dep["known_good"]) == (m2, "unhealthy", m1)


def test_a_firing_notify_rule_comments_once_on_the_pull_request_that_merged_it(world: World):
    m2 = world.shas["M2"]
    bake_m1(world)
    world.deploy(m2)
    start = minutes_of(world, m2)
    traffic(world.rollups, m2, start, 25, retrieval_ms=900.0)
    for minute in (start + 11, start + 12, start + 13):
        tick(world, minute)
    assert world.rollback_pulls() == []
    number = next(e.predicate["pull_request"] for e in world.entries() if e.event == "merged" and e.commit == m2)
    notes = [c for c in world.replies(number) if "gating monitor" in c]
    assert len(notes) == 1
    assert notes[0].startswith(f"**gating monitor: `retrieval-p95` is firing** on `{m2[:12]}` in production (warning)")
    (alert,) = [e for e in world.entries() if e.event == "monitor_alert"]
    assert alert.predicate["health"]["action"] == "notify" and alert.predicate["health"]["comment"]


def test_monitor_status_is_refused_without_the_token_and_names_what_is_wrong(world: World):
    assert status(world, token=None).status_code == 401
    r = status(world, token="wrong")
    assert (r.status_code, r.json()["error"]) == (401, "missing or wrong bearer token (Authorization: Bearer "
                                                       "<GATING_MONITOR_TOKEN>)")
    r = status(world, repo=None)
    assert (r.status_code, r.json()["error"]) == (400, "name the repository: /monitor/status?repo=owner/name")
    r = status(world, repo="acme/other")
    assert r.status_code == 404 and r.json()["error"].startswith("no deployment of acme/other is monitored")


def test_the_audit_log_shows_the_bake_and_the_firing_rule():
    from datetime import UTC, datetime

    from gating.audit import entry as audit
    from gating.commands.audit import log_line

    key = audit.Ed25519PrivateKey.generate()
    rule = {"rule": "error-rate", "reason": "error rate over 15m is 10.00%, > 2.00% (1,500 requests)"}
    facts = [audit.EntryFacts("known_good", "a" * 40, REPO, "gating (monitor)", deployment={"environment": "production"},
                              health={"bake": {"minutes": 30, "requests": 3100}, "rules": []}),
             audit.EntryFacts("monitor_alert", "b" * 40, REPO, "gating (monitor)", health={"rule": rule,
                                                                                        "action": "rollback"})]
    lines, prev = [], None
    for seq, f in enumerate(facts, 1):
        line = audit.make_line(f, datetime(2026, 11, 2, tzinfo=UTC), seq, prev, key)
        lines.append(log_line(audit.parse_line(line, f.commit)))
        prev = audit.sha256_line(line)
    assert lines[0].endswith("gating (monitor)  (env production, baked 30 min on 3100 requests, no rule fired)")
    assert lines[1].endswith("gating (monitor)  (error-rate → rollback: error rate over 15m is 10.00%, > 2.00% "
                             "(1,500 requests))")
    assert "monitor_alert" in lines[1]


def test_spans_from_the_opentelemetry_sdk_drive_the_rules_through_the_apps_own_store(github, github_repo,
                                                                                     tmp_path: Path):
    """No test double between the halves: GenAI spans exported by the real SDK land in the App's
    RollupStore, and the monitor's rules read them there (error rate from the request stage, tokens per
    request summed over the stages that spent them), roll back once and sign the alert."""
    from monitor_support import TOKEN as OTLP_TOKEN
    from monitor_support import request_trace, tracer

    app, key = make_world(github, github_repo, tmp_path, GATING_HANDLERS=MONITOR_HANDLERS, GATING_MONITOR_SECONDS=0,
                          GATING_MONITOR_TOKEN=TOKEN, GATING_OTLP_TOKEN=OTLP_TOKEN)
    real_clock = monitoring.clock
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = World(github, github_repo, app, key, tmp_path)
        w.url = url
        try:
            w.good_then_bad(MANIFEST)
            m1, m2 = w.shas["M1"], w.shas["M2"]
            healthy = MemoryRollups()  # M1's bake: thirty minutes of quiet traffic, written as the store keeps it
            traffic(healthy, m1, minutes_of(w, m1), 40)
            app.extensions["gating"].rollups.write(healthy.items)
            tick(w, minutes_of(w, m1) + 31)
            w.deploy(m2)
            start = minutes_of(w, m2)
            with tracer(url, **{"service.version": m2}) as tr:
                for i in range(300):  # 300 requests in the three minutes after the deployment, one in ten failing
                    request_trace(tr, (start + 1) * 60_000_000_000 + i * 500_000_000, llm_ms=800.0,
                                  error="openai.RateLimitError" if i % 10 == 0 else None)
            tick(w, start + 16)  # the 15-minute window [start + 1, start + 16) holds all 300
            (dep,) = status(w).json()["deployments"]
            shown = {r["rule"]: r for r in dep["rules"]}
            assert (shown["error-rate"]["value"], shown["error-rate"]["samples"]) == (0.1, 300)
            assert shown["tokens-per-request"]["value"] == 155.0  # 270 answers of 100+50, 300 embeddings of 20
            tick(w, start + 17)
            assert len(w.rollback_pulls()) == 1
            (alert,) = [e for e in w.entries() if e.event == "monitor_alert"]
            assert alert.commit == m2 and alert.predicate["health"]["rule"]["rule"] == "error-rate"
            assert alert.predicate["health"]["rule"]["reason"] == \
                "error rate over 15m is 10.00%, > 2.00% (300 requests)"
        finally:
            monitoring.clock = real_clock


def test_span_costs_use_the_price_table_of_the_default_branch(github, github_repo, tmp_path: Path):
    """`evals.prices` on the default branch prices production telemetry as it prices eval runs: the
    repository's table over the built-in one, for a model the built-in table prices and one it does not."""
    from monitor_support import MODEL, request_trace, tracer
    from monitor_support import TOKEN as OTLP_TOKEN

    from gating.monitor.rollup import WHOLE_SYSTEM, total

    app, key = make_world(github, github_repo, tmp_path, GATING_HANDLERS=MONITOR_HANDLERS, GATING_MONITOR_SECONDS=0,
                          GATING_OTLP_TOKEN=OTLP_TOKEN)
    manifest = MANIFEST.replace("evals:\n", "evals:\n  prices: evals/prices.json\n", 1)
    github_repo.commit_files("main", {"gating.yml": manifest, "evals/prices.json": json.dumps(
        {"openai": {MODEL: {"input": 1_000_000, "output": 0},
                    "text-embedding-3-small": {"input": 500_000, "output": 0}}})}, "Our negotiated prices")
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = World(github, github_repo, app, key, tmp_path)
        w.good_then_bad(manifest)
        m1 = w.shas["M1"]
        start = minutes_of(w, m1)
        with tracer(url, **{"service.version": m1}) as tr:
            request_trace(tr, (start + 1) * 60_000_000_000, llm_ms=800.0, tokens=(100, 50))
        store = app.extensions["gating"].rollups

        def spent(stage: str) -> float:
            return total(store.rollups(REPO, since=0, until=2**40, system=m1, component=WHOLE_SYSTEM,
                                        stage=stage)).cost

        assert spent("llm") == 100.0  # 100 input tokens at $1 each, output free
        assert spent("embedding") == 10.0  # 20 tokens at $0.50: a model the built-in table has no price for


def test_a_price_table_the_app_cannot_read_keeps_the_default_prices_and_says_why(github, github_repo, tmp_path: Path,
                                                                                  caplog):
    from monitor_support import MODEL, request_trace, tracer
    from monitor_support import TOKEN as OTLP_TOKEN

    from gating.evals.metrics import cost_usd, default_prices
    from gating.monitor.rollup import WHOLE_SYSTEM, total

    app, key = make_world(github, github_repo, tmp_path, GATING_HANDLERS=MONITOR_HANDLERS, GATING_MONITOR_SECONDS=0,
                          GATING_OTLP_TOKEN=OTLP_TOKEN)
    manifest = MANIFEST.replace("evals:\n", "evals:\n  prices: evals/missing.json\n", 1)
    github_repo.commit_files("main", {"gating.yml": manifest}, "A price table that is not there")
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = World(github, github_repo, app, key, tmp_path)
        w.good_then_bad(manifest)
        m1 = w.shas["M1"]
        with tracer(url, **{"service.version": m1}) as tr:
            request_trace(tr, (minutes_of(w, m1) + 1) * 60_000_000_000, llm_ms=800.0, tokens=(100, 50))
        store = app.extensions["gating"].rollups
        llm = total(store.rollups(REPO, since=0, until=2**40, system=m1, component=WHOLE_SYSTEM, stage="llm"))
        assert llm.cost == cost_usd("openai", MODEL, 100, 50, default_prices())
    assert "acme/support-bot: telemetry keeps its earlier prices: gating.yml: evals.prices names " \
           "'evals/missing.json', which does not exist at " in caplog.text
