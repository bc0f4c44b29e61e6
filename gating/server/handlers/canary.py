"""Canary analysis for rollout tools: Argo Rollouts' web metric provider and Flagger's webhooks.

GET or POST /canary/analysis (Argo Rollouts, `provider: web`) answers 200 with the analysis as JSON
whatever its verdict: the AnalysisTemplate's successCondition reads `result.verdict == "pass"`, its
failureCondition `result.verdict == "fail"`, and "not enough traffic yet" matches neither, so the
measurement is Inconclusive and the rollout pauses until it is asked again. The question is the query
string or a JSON body: repository, canary and baseline (commit SHAs), window (default 30m), and
optionally alpha, power and min_effect. Each commit's roll-ups are matched by its SHA and by the
snapshot digest of the system at it (rebuilt through the API once per commit, then remembered), so
telemetry that names its system only by `gating.snapshot` counts too (gating.monitor.canary.sides).

POST /canary/flagger (Flagger, a `rollout` or `confirm-promotion` webhook) takes Flagger's payload
{name, namespace, phase, metadata} with the question in `metadata` (strings, as Flagger sends them;
its webhooks carry no headers, so the token may come as `metadata.token`, as Flagger's own load
tester takes one). The status code is the answer: 200 pass, 412 fail, 425 not enough traffic yet.
Flagger counts any answer outside 200-202 as a failed check (a rollout webhook) or as "not yet" (a
confirm-promotion webhook), so a canary that fails enough checks is rolled back.

Both windows end at the start of the current minute (a minute still being written is left out) and
read the App's roll-ups, so the canary and the baseline are compared over the same minutes. Both
need the bearer token GATING_CANARY_TOKEN (unset: every request is refused). A failed analysis is
queued as a job that records a signed `canary_failed` entry on the canary's commit, with the figures,
once per canary, baseline and window end however often the tool asks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from collections import OrderedDict
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from gating.audit import log as audit_log
from gating.audit import record as audit_record
from gating.audit.entry import EntryFacts, snapshot_digest
from gating.github import GitHubError, Repo
from gating.github import rollback as gh
from gating.github.facts import RepoFacts
from gating.monitor.canary import FAIL, PASS, Analysis, CanaryError, Policy, analyze, sides
from gating.monitor.rules import MonitorError, minute_of, parse_duration
from gating.server import monitoring
from gating.server.handlers import JobContext, Registry
from gating.server.jobs import PermanentError
from gating.server.rollbacks import app_audit
from gating.server.trail import witness

CANARY_EVENT = "canary"
ACTOR = "gating (canary analysis)"
DEFAULT_WINDOW = "30m"
MAX_WINDOW_MINUTES = 7 * 24 * 60
FLAGGER_STATUS = {PASS: 200, FAIL: 412}  # anything else: 425 Too Early (not enough traffic yet)
_SHA = re.compile(r"^[0-9a-f]{40}$")
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
MAX_REMEMBERED = 1024  # (repository, SHA) -> snapshot digest: a commit's system never changes
_snapshots: OrderedDict[tuple[str, str], str | None] = OrderedDict()
_snapshots_lock = threading.Lock()

blueprint = Blueprint("gating_canary", __name__)


class QuestionError(CanaryError):
    """A request that does not say what to compare, said so that the template's author can fix it."""


def register(registry: Registry) -> None:
    registry.on(CANARY_EVENT, "failed", internal=True, key=lambda p: f"{p.get('repository')}#canary")(record_failure)


# -- the question --------------------------------------------------------------------------------------


def _number(q: dict[str, Any], name: str, default: float) -> float:
    v = q.get(name)
    if v is None or v == "":
        return default
    try:
        return float(v)
    except (TypeError, ValueError):
        raise QuestionError(f"{name} must be a number (got {str(v)[:40]!r})") from None


def question(q: dict[str, Any], now: float) -> tuple[str, str, str, int, int, Policy]:
    """(repository, canary, baseline, since, until, policy) from the tool's parameters."""
    repo = str(q.get("repository") or q.get("repo") or "")
    if not _REPO.match(repo):
        raise QuestionError(f"repository must be owner/name (got {repo[:80]!r})")
    shas = []
    for name in ("canary", "baseline"):
        v = str(q.get(name) or "").strip().lower()
        if not _SHA.match(v):
            raise QuestionError(f"{name} must be the full 40-character commit SHA of the {name} system "
                                f"(got {v[:80]!r})")
        shas.append(v)
    try:
        minutes = parse_duration(str(q.get("window") or DEFAULT_WINDOW))
    except MonitorError as e:
        raise QuestionError(f"window: {e}") from None
    if not 0 < minutes <= MAX_WINDOW_MINUTES:
        raise QuestionError(f"window must be between 1m and 7d (got {q.get('window')!r})")
    policy = Policy(alpha=_number(q, "alpha", Policy.alpha), power=_number(q, "power", Policy.power),
                    min_effect=_number(q, "min_effect", Policy.min_effect))
    until = minute_of(datetime.fromtimestamp(now, UTC))
    return repo, shas[0], shas[1], until - minutes, until, policy


def _refused(in_body: Any = None) -> tuple[Response, int] | None:
    """401 unless the bearer token (or, for Flagger, whose webhooks send no headers, `metadata.token`
    as its own load tester takes it) is GATING_CANARY_TOKEN; always 401 when that is unset."""
    token = current_app.extensions["gating"].settings.canary_token
    if not token:
        return jsonify({"error": "canary analysis is not served: the App has no GATING_CANARY_TOKEN"}), 401
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        given = in_body if isinstance(in_body, str) else ""
    if not given or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return jsonify({"error": "missing or wrong bearer token (Authorization: Bearer <GATING_CANARY_TOKEN>"
                        + (", or metadata.token" if in_body is not None else "") + ")"}), 401
    return None


def _json_body() -> dict[str, Any]:
    raw = request.get_data(cache=False)
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise QuestionError("the body is not JSON") from None
    if not isinstance(doc, dict):
        raise QuestionError("the body must be a JSON object")
    return doc


def snapshots_of(repo: str, shas: tuple[str, ...]) -> tuple[dict[str, str | None], dict[str, str]]:
    """The snapshot digest of the system at each commit (None: no valid gating.yml there), and why
    for those it could not tell (the App not installed, not a commit, GitHub failing): those are not
    remembered, so the next question tries again."""
    state = current_app.extensions["gating"]
    with _snapshots_lock:
        known = {sha: _snapshots[(repo, sha)] for sha in shas if (repo, sha) in _snapshots}
    todo, unknown = [sha for sha in shas if sha not in known], {}
    if todo:
        try:
            inst = int(state.github.app_client().get(f"/repos/{repo}/installation")["id"])
            facts = RepoFacts(Repo(state.github.installation(inst), repo), state.blobs)
            for sha in todo:
                try:
                    snap = audit_record.snapshot_at(facts, sha, state.settings.manifest_path)
                except GitHubError as e:
                    if e.status not in (404, 422):
                        raise
                    unknown[sha] = f"not a commit of {repo}"
                    continue
                known[sha] = snapshot_digest(snap) if snap is not None else None
                with _snapshots_lock:
                    _snapshots[(repo, sha)] = known[sha]
                    while len(_snapshots) > MAX_REMEMBERED:
                        _snapshots.popitem(last=False)
        except GitHubError as e:
            why = "the App is not installed on it" if e.status == 404 else f"GitHub answered {e.status or 'nothing'}"
            unknown |= {sha: f"the system at it could not be read: {why}" for sha in todo if sha not in known}
    return known, unknown


def run(q: dict[str, Any], tool: str, rollout: dict[str, Any] | None = None) -> Analysis:
    state = current_app.extensions["gating"]
    repo, canary, baseline, since, until, policy = question(q, monitoring.clock())
    c, b = [canary], [baseline]
    notes: list[str] = []
    if canary != baseline:  # the same commit twice is refused by name by analyze
        c, b, notes = sides(canary, baseline, *snapshots_of(repo, (canary, baseline)))
    a = analyze(state.rollups, repo, c, b, since, until, policy, notes)
    if a.verdict == FAIL:
        queue_failure(a, tool, rollout or {})
    return a


def queue_failure(a: Analysis, tool: str, rollout: dict[str, Any]) -> None:
    """One job per canary, baseline and window end: the tool asking again in the same minute adds nothing."""
    state = current_app.extensions["gating"]
    job = {"repository": a.repo, "analysis": a.to_dict(), "tool": tool, "rollout": rollout}
    handlers = [(h.name, h.key(job)) for h in state.registry.match(CANARY_EVENT, {"action": "failed", **job})]
    ident = hashlib.sha256(f"{a.repo}:{a.canary[0]}:{a.baseline[0]}:{a.until}".encode()).hexdigest()[:32]
    if state.queue.enqueue(f"canary:{ident}", CANARY_EVENT, "failed", json.dumps(job), handlers):
        state.worker.wake()


@blueprint.route("/canary/analysis", methods=["GET", "POST"])
def argo() -> tuple[Response, int]:
    """Argo Rollouts' web metric provider: always 200 with the verdict in the body (jsonPath `{$}`)."""
    refused = _refused()
    if refused:
        return refused
    try:
        q = {**request.args.to_dict(), **(_json_body() if request.method == "POST" else {})}
        a = run(q, "argo-rollouts")
    except CanaryError as e:
        return jsonify({"error": str(e)}), 400
    return jsonify(a.to_dict()), 200


@blueprint.post("/canary/flagger")
def flagger() -> tuple[Response, int]:
    """Flagger's webhook: {name, namespace, phase, metadata}; the status code is the verdict."""
    try:
        doc = _json_body()
    except CanaryError as e:
        return _refused(False) or (jsonify({"error": str(e)}), 400)
    meta = doc.get("metadata") or {}
    refused = _refused(meta.get("token", False) if isinstance(meta, dict) else False)
    if refused:
        return refused
    try:
        for field in ("name", "namespace"):
            if not isinstance(doc.get(field), str) or not doc[field]:
                raise QuestionError(f"not a Flagger webhook payload: no {field}")
        if not isinstance(meta, dict):
            raise QuestionError("not a Flagger webhook payload: metadata must be an object of strings")
        rollout = {"name": doc["name"], "namespace": doc["namespace"], "phase": doc.get("phase"),
                   "checksum": doc.get("checksum")}
        a = run(meta, "flagger", rollout)
    except CanaryError as e:
        return jsonify({"error": str(e)}), 400
    return jsonify(a.to_dict()), FLAGGER_STATUS.get(a.verdict, 425)


# -- the record ------------------------------------------------------------------------------------------


def record_failure(ctx: JobContext) -> None:
    """The signed canary_failed entry on the canary's commit, with the analysis that failed it."""
    full = ctx.payload["repository"]
    analysis = ctx.payload["analysis"]
    try:
        inst = int(ctx.github.app_client().get(f"/repos/{full}/installation")["id"])
    except GitHubError as e:
        if e.status == 404:
            raise PermanentError(f"canary analysis of {full}, where the App is not installed: {e}") from None
        raise
    repo = Repo(ctx.github.installation(inst), full)
    audit = app_audit(replace(ctx, payload={"installation": {"id": inst}}), repo)
    canary = analysis["canary"]["systems"][0]
    if gh.commit_sha(repo, canary) != canary:  # the audit log records facts about this repository's commits
        raise PermanentError(f"canary analysis of {full}: {canary} is not a commit of the repository; not recorded")
    health = {"analysis": analysis, "tool": ctx.payload.get("tool"), "rollout": ctx.payload.get("rollout") or {},
              "verdict": f"canary analysis failed: {analysis['reason']}"}
    facts = EntryFacts(event="canary_failed", commit=canary, repository=full, actor=ACTOR,
                       discriminator=f"against {analysis['baseline']['systems'][0]} until {analysis['window']['until']}",
                       health=health)
    res = audit_log.append_entry(audit.store, facts, audit.key, datetime.now(UTC))
    witness(repo, res.entry, audit.key, audit.app_id, ctx.log)
    ctx.log.info("%s: canary %s failed its analysis against %s: audit seq %d", full, canary[:12],
                 analysis["baseline"]["systems"][0][:12], res.entry.seq)

