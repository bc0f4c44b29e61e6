"""The canary analysis endpoints of the App, in the shapes Argo Rollouts' web metric provider and
Flagger's webhooks use (pinned against the example manifests in examples/rollouts/), end to end on
the emulator: a failed analysis records one signed canary_failed entry on the canary's commit."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from app_support import app_settings, serve_in_thread
from test_rollback_app import HANDLERS, MANIFEST, World, make_world

from gating.monitor.rollup import MemoryRollups
from gating.server import create_app, monitoring
from tests.monitor_traffic import REPO, START, traffic

TOKEN = "canary-token-for-tests-0123456789"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "rollouts"
AFTERNOON = START + 14 * 60
NOW = AFTERNOON + 60  # the analysis window (30m) ends here


def argo_template() -> dict:
    docs = list(yaml.safe_load_all((EXAMPLES / "argo-analysis-template.yaml").read_text()))
    return next(d for d in docs if d["kind"] == "AnalysisTemplate")


def flagger_canary() -> dict:
    return yaml.safe_load((EXAMPLES / "flagger-canary.yaml").read_text())


def argo_request(url: str, canary: str, stable: str, token: str = TOKEN) -> httpx.Response:
    """What Argo Rollouts sends for the example template: its URL and headers with the args filled in."""
    web = argo_template()["spec"]["metrics"][0]["provider"]["web"]
    args = {"repository": REPO, "canary-sha": canary, "stable-sha": stable, "gating-token": token}
    fill = lambda text: _fill(text, args)  # noqa: E731
    query = {k: v[0] for k, v in parse_qs(urlsplit(fill(web["url"])).query).items()}
    headers = {h["key"]: fill(h["value"]) for h in web["headers"]}
    assert web["method"] == "GET" and urlsplit(web["url"]).path == "/canary/analysis"
    return httpx.get(url + "/canary/analysis", params=query, headers=headers)


def _fill(text: str, args: dict[str, str]) -> str:
    for k, v in args.items():
        text = text.replace("{{args." + k + "}}", v)
    return text


def argo_measurement(resp: httpx.Response) -> str:
    """Successful, Failed or Inconclusive, as the template's conditions judge `result` (jsonPath {$})."""
    metric = argo_template()["spec"]["metrics"][0]
    assert metric["provider"]["web"]["jsonPath"] == "{$}"
    assert metric["successCondition"] == 'result.verdict == "pass"'
    assert metric["failureCondition"] == 'result.verdict == "fail"'
    if resp.status_code != 200:
        return "Error"
    result = resp.json()
    return "Successful" if result["verdict"] == "pass" else "Failed" if result["verdict"] == "fail" else "Inconclusive"


def flagger_request(url: str, canary: str, baseline: str, hook: int = 0, **meta: str) -> httpx.Response:
    """Flagger's webhook call for the example Canary: POST {name, namespace, phase, metadata}."""
    c = flagger_canary()
    webhook = c["spec"]["analysis"]["webhooks"][hook]
    assert urlsplit(webhook["url"]).path == "/canary/flagger"
    metadata = {**webhook["metadata"], "token": TOKEN, "canary": canary, "baseline": baseline, **meta}
    payload = {"name": c["metadata"]["name"], "namespace": c["metadata"]["namespace"], "phase": "Progressing",
               "metadata": metadata}
    return httpx.post(url + "/canary/flagger", json=payload)


@pytest.fixture
def world(github, github_repo, tmp_path: Path):
    app, key = make_world(github, github_repo, tmp_path, GATING_HANDLERS=HANDLERS + ",gating.server.handlers.canary",
                          GATING_CANARY_TOKEN=TOKEN)
    rollups = app.extensions["gating"].rollups = MemoryRollups()
    real_clock = monitoring.clock
    monitoring.clock = lambda: NOW * 60.0
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = World(github, github_repo, app, key, tmp_path)
        w.url, w.rollups = url, rollups
        w.good_then_bad(MANIFEST)
        w.settle()
        try:
            yield w
        finally:
            monitoring.clock = real_clock


def feed(world: World, *, canary_rate: float, minutes: int = 60) -> tuple[str, str]:
    stable, canary = world.shas["M1"], world.shas["M2"]
    world.rollups.items += [*traffic(minutes=minutes, start=NOW - minutes, seed=1, system=stable, error_rate=0.004,
                                     repo=world.repo.full_name),
                            *traffic(minutes=minutes, start=NOW - minutes, seed=2, system=canary,
                                     error_rate=canary_rate, repo=world.repo.full_name)]
    return canary, stable


def test_argo_web_provider_passes_a_healthy_canary_and_fails_a_regression(world: World):
    canary, stable = feed(world, canary_rate=0.004)
    resp = argo_request(world.url, canary, stable)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert argo_measurement(resp) == "Successful", body["reason"]
    assert body["window"]["minutes"] == 30 and body["canary"]["systems"][0] == canary
    assert {c["name"] for c in body["checks"]} >= {"error_rate", "latency:llm", "tokens_per_request"}
    assert [e.event for e in world.entries()].count("canary_failed") == 0

    world.rollups.items.clear()
    canary, stable = feed(world, canary_rate=0.03)
    resp = argo_request(world.url, canary, stable)
    assert argo_measurement(resp) == "Failed"
    assert resp.json()["reason"].startswith("error rate 2.86% on the canary vs 0.55% on the baseline")
    argo_request(world.url, canary, stable)  # asked again in the same minute: one record
    world.settle()
    (entry,) = [e for e in world.entries() if e.event == "canary_failed"]
    assert entry.commit == canary
    health = entry.predicate["health"]
    assert health["tool"] == "argo-rollouts" and health["analysis"]["verdict"] == "fail"
    assert health["verdict"].startswith("canary analysis failed: error rate 2.86%")


def test_too_little_traffic_is_inconclusive_for_argo_and_425_for_flagger(world: World):
    canary, stable = feed(world, canary_rate=0.004, minutes=3)
    resp = argo_request(world.url, canary, stable)
    assert argo_measurement(resp) == "Inconclusive"
    assert resp.json()["verdict"] == "not enough traffic yet"
    assert "needs" in resp.json()["reason"]
    f = flagger_request(world.url, canary, stable)
    assert f.status_code == 425 and f.json()["verdict"] == "not enough traffic yet"


def test_flagger_webhook_status_is_the_verdict(world: World):
    canary, stable = feed(world, canary_rate=0.004)
    ok = flagger_request(world.url, canary, stable)
    assert ok.status_code == 200, ok.text
    promote = flagger_request(world.url, canary, stable, hook=1)  # confirm-promotion, a 1h window
    assert promote.status_code == 200 and promote.json()["window"]["minutes"] == 60
    world.rollups.items.clear()
    canary, stable = feed(world, canary_rate=0.03)
    bad = flagger_request(world.url, canary, stable)
    assert bad.status_code == 412 and bad.json()["verdict"] == "fail"
    world.settle()
    (entry,) = [e for e in world.entries() if e.event == "canary_failed"]
    assert entry.predicate["health"]["tool"] == "flagger"
    assert entry.predicate["health"]["rollout"] == {"name": "support-bot", "namespace": "prod",
                                                    "phase": "Progressing", "checksum": None}


def test_tokens_and_bad_questions_are_refused_by_name(world: World):
    canary, stable = feed(world, canary_rate=0.004)
    assert argo_request(world.url, canary, stable, token="wrong").status_code == 401
    assert httpx.get(world.url + "/canary/analysis").status_code == 401
    no_token = httpx.post(world.url + "/canary/flagger", json={"name": "x", "namespace": "y", "metadata": {}})
    assert no_token.status_code == 401 and "metadata.token" in no_token.json()["error"]
    bad = argo_request(world.url, canary[:12], stable)
    assert bad.status_code == 400 and "canary must be the full 40-character commit SHA" in bad.json()["error"]
    same = argo_request(world.url, canary, canary)
    assert same.status_code == 400 and "same system" in same.json()["error"]
    window = httpx.get(world.url + "/canary/analysis", headers={"Authorization": f"Bearer {TOKEN}"},
                       params={"repository": REPO, "canary": canary, "baseline": stable, "window": "forever"})
    assert window.status_code == 400 and window.json()["error"].startswith("window:")
    not_flagger = httpx.post(world.url + "/canary/flagger", json={"metadata": {"token": TOKEN}})
    assert not_flagger.status_code == 400 and "no name" in not_flagger.json()["error"]


def test_unset_token_refuses_every_request(tmp_path: Path):
    app = create_app(app_settings(tmp_path, GATING_JOB_THREADS=0))
    client = app.test_client()
    for resp in (client.get("/canary/analysis", headers={"Authorization": "Bearer anything"}),
                 client.post("/canary/flagger", json={"name": "a", "namespace": "b", "metadata": {"token": ""}})):
        assert resp.status_code == 401
        assert "no GATING_CANARY_TOKEN" in resp.get_json()["error"]


def test_cli_reads_an_app_database(tmp_path: Path, capsys):
    from gating.commands.cli import main
    from gating.server.rollup_store import RollupStore

    db = tmp_path / "jobs.db"
    canary, stable = "c" * 40, "b" * 40
    store = RollupStore(str(db))
    store.write([*traffic(minutes=60, start=NOW - 60, seed=1, system=stable, error_rate=0.004),
                 *traffic(minutes=60, start=NOW - 60, seed=2, system=canary, error_rate=0.03)])
    until = f"{_iso(NOW)}"
    args = ["canary", "analyze", "--canary", canary, "--baseline", stable, "--repository", REPO, "--db", str(db),
            "--until", until]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert f"{REPO}: canary cccccccccccc vs baseline bbbbbbbbbbbb" in out and ": FAIL" in out
    assert "the error-rate test needs" in out
    assert main([*args, "--window", "3m"]) == 3
    assert "NOT ENOUGH TRAFFIC YET" in capsys.readouterr().out
    store.write(traffic(minutes=60, start=NOW - 60, seed=3, system="d" * 40, error_rate=0.004))
    assert main([*args[:2], "--canary", "d" * 40, *args[4:], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "pass"
    assert main([*args[:4], "--baseline", canary, *args[6:]]) == 2
    assert "the same system" in capsys.readouterr().err


def test_cli_reads_the_shared_postgresql_database_of_app_replicas(postgres_url: str, tmp_path: Path, capsys):
    # replicas on one PostgreSQL keep their roll-ups there: --db takes its URL as GATING_DB/GATING_QUEUE_URL do
    from gating.commands.cli import main
    from gating.server.rollup_store import RollupStore

    canary, stable = "c" * 40, "b" * 40
    RollupStore(postgres_url).write([*traffic(minutes=60, start=NOW - 60, seed=1, system=stable, error_rate=0.004),
                                     *traffic(minutes=60, start=NOW - 60, seed=2, system=canary, error_rate=0.03)])
    args = ["canary", "analyze", "--canary", canary, "--baseline", stable, "--repository", REPO, "--until", _iso(NOW)]
    assert main([*args, "--db", postgres_url]) == 1
    out = capsys.readouterr().out
    assert f"{REPO}: canary cccccccccccc vs baseline bbbbbbbbbbbb" in out and ": FAIL" in out
    # a server that is not there is named, without the password the URL may carry
    gone = "postgresql://gating:s3cret@127.0.0.1:9/gating"
    assert main([*args, "--db", gone]) == 2
    err = capsys.readouterr().err
    assert "--db postgresql://gating:***@127.0.0.1:9/gating: cannot read it:" in err and "s3cret" not in err


def test_cli_matches_telemetry_naming_only_the_snapshot_through_the_local_clone(example_repo, tmp_path: Path,
                                                                                capsys):
    from gating.commands.cli import main
    from gating.commands.common import snapshot_at
    from gating.git.repository import commit_all
    from gating.server.rollup_store import RollupStore

    stable = example_repo.rev_parse("HEAD")
    (example_repo.root / "prompts" / "system.md").write_text("Answer in one sentence.\n")
    canary = commit_all(example_repo, "Shorter answers")
    digests = {sha: snapshot_at(example_repo, sha).digest for sha in (stable, canary)}
    db = tmp_path / "jobs.db"
    RollupStore(str(db)).write([*traffic(minutes=60, start=NOW - 60, seed=1, system=digests[stable], error_rate=0.004),
                                *traffic(minutes=60, start=NOW - 60, seed=2, system=digests[canary], error_rate=0.03)])
    args = ["canary", "analyze", "--canary", canary, "--baseline", stable, "--repository", REPO, "--db", str(db),
            "--until", _iso(NOW), "--json"]
    assert main(["-C", str(example_repo.root), *args]) == 1
    body = json.loads(capsys.readouterr().out)
    assert body["canary"]["systems"] == [canary, digests[canary]] and body["baseline"]["requests"] > 0
    assert body["verdict"] == "fail" and body["notes"] == []
    # outside the clone the snapshots are unknown: matched by SHA, which this telemetry never names
    assert main(["-C", str(tmp_path), *args[:-1]]) == 3
    out = capsys.readouterr().out
    assert "NOT ENOUGH TRAFFIC YET" in out
    assert ("  note: the canary's snapshot is not known (no git repository here to build it in: run in a clone, or "
            "pass -C): its telemetry is matched by commit SHA only") in out.splitlines()


def test_cli_asks_the_app(world: World, monkeypatch, capsys):
    from gating.commands.cli import main

    canary, stable = feed(world, canary_rate=0.004)
    args = ["canary", "analyze", "--canary", canary, "--baseline", stable, "--repository", REPO, "--app", world.url]
    monkeypatch.delenv("GATING_CANARY_TOKEN", raising=False)
    assert main(args) == 2
    assert "$GATING_CANARY_TOKEN is not set" in capsys.readouterr().err
    monkeypatch.setenv("GATING_CANARY_TOKEN", TOKEN)
    assert main(args) == 0
    assert ": PASS" in capsys.readouterr().out


def test_telemetry_naming_only_the_snapshot_is_matched_to_the_commits(github, github_repo, tmp_path: Path):
    """Spans whose resource names the system only by `gating.snapshot` (no commit SHA) are read as
    the commit's whose system it is: the App rebuilds the snapshot at each SHA it is asked about."""
    from monitor_support import TOKEN as OTLP_TOKEN
    from monitor_support import request_trace, tracer

    from gating.commands.common import snapshot_at
    from gating.git.repository import Git

    app, key = make_world(github, github_repo, tmp_path, GATING_HANDLERS=HANDLERS + ",gating.server.handlers.canary",
                          GATING_CANARY_TOKEN=TOKEN, GATING_OTLP_TOKEN=OTLP_TOKEN)
    real_clock = monitoring.clock
    now = int(time.time() // 60) + 1  # the window ends after the minute being sent in
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = World(github, github_repo, app, key, tmp_path)
        w.good_then_bad(MANIFEST)
        w.settle()
        stable, canary = w.shas["M1"], w.shas["M2"]
        clone = Git(w.repo.clone(tmp_path / "clone", github.installation_token()).root)
        digests = {sha: snapshot_at(clone, sha).digest for sha in (stable, canary)}
        assert digests[stable] != digests[canary]
        for sha, every in ((stable, 0), (canary, 4)):  # the canary fails one request in four
            with tracer(url, **{"service.version": "", "gating.snapshot": digests[sha],
                                "gating.repository": w.repo.full_name}) as tr:
                for i in range(400):
                    request_trace(tr, (now - 20) * 60_000_000_000 + i * 2_000_000_000, llm_ms=700.0,
                                  error="openai.APIError" if every and i % every == 0 else None)
        monitoring.clock = lambda: now * 60.0
        try:
            resp = argo_request(url, canary, stable)
        finally:
            monitoring.clock = real_clock
    body = resp.json()
    assert resp.status_code == 200, body
    assert body["canary"] == {"systems": [canary, digests[canary]], "requests": 400}
    assert body["baseline"] == {"systems": [stable, digests[stable]], "requests": 400}
    assert argo_measurement(resp) == "Failed", body["reason"]
    assert body["reason"].startswith("error rate 25.00% on the canary vs 0.00% on the baseline")
    assert body["notes"] == []


def test_a_commit_the_app_cannot_resolve_is_matched_by_its_sha_and_says_so(world: World):
    canary, stable = feed(world, canary_rate=0.004)
    ghost = "f" * 40
    world.rollups.items += traffic(minutes=60, start=NOW - 60, seed=3, system=ghost, error_rate=0.004,
                                   repo=world.repo.full_name)
    body = argo_request(world.url, ghost, stable).json()
    assert body["canary"]["systems"] == [ghost] and len(body["baseline"]["systems"]) == 2
    assert body["notes"] == [f"the canary's snapshot is not known (not a commit of {world.repo.full_name}): its "
                             "telemetry is matched by commit SHA only"]
    assert body["verdict"] == "pass"


def _iso(minute: int) -> str:
    from gating.monitor.canary import iso

    return iso(minute)


def test_a_failed_analysis_of_a_commit_the_repository_lacks_is_answered_but_not_recorded(world: World):
    stable = world.shas["M1"]
    stranger = "e" * 40
    world.rollups.items += [*traffic(minutes=60, start=NOW - 60, seed=1, system=stable, error_rate=0.004),
                            *traffic(minutes=60, start=NOW - 60, seed=2, system=stranger, error_rate=0.03)]
    resp = argo_request(world.url, stranger, stable)
    assert argo_measurement(resp) == "Failed"
    state = world.app.extensions["gating"]
    state.worker.wake()
    for _ in range(400):  # the job fails permanently: wait for it without asserting a duration
        rows = state.queue.query("SELECT status, last_error FROM jobs WHERE event = 'canary'")
        if rows and rows[0][0] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert rows[0][0] == "failed" and "is not a commit of the repository" in rows[0][1]
    assert [e for e in world.entries() if e.event == "canary_failed"] == []
