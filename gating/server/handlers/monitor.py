"""The monitor: per deployed system, the `monitor:` rules of the default branch over production
telemetry, on a timer (GATING_MONITOR_SECONDS).

Each tick, for every deployment the App watches (gating.server.monitoring):
- the rules are evaluated over the App's roll-ups for the deployed system (its commit SHA and its
  snapshot digest), with the eval's projection of tokens and cost for that snapshot;
- a baking deployment whose bake window (`monitor.bake_minutes`) passed with traffic and no rule
  firing becomes known-good: a signed `known_good` entry records the evidence (every rule's value,
  threshold, sample size and window). A rule firing during the bake fails it: the deployment never
  becomes known-good, so rollback never returns to it;
- a firing rule opens an incident, named by the repository, the system, the rule and the time it
  began, and acted on once however many ticks and replicas see it (the App database's `once` table):
  `action: rollback` restores the last known-good snapshot through the same path as `/rollback`
  (a pull request, or a direct commit where rollback.mode says so), `action: notify` comments on
  `monitor.issue`, else on the pull request that merged the deployed commit. Either way a signed
  `monitor_alert` entry records the rule, the window's figures and the comparison.

GET /monitor/status?repo=owner/name answers from the last tick's evaluation (bearer token
GATING_MONITOR_TOKEN; unset, every request is refused).
"""

from __future__ import annotations

import hmac
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from gating.audit import log as audit_log
from gating.audit.entry import Entry, EntryFacts
from gating.deploy.gate import chain_of
from gating.github import GitHubError, RateLimited, Repo
from gating.github import rollback as gh
from gating.monitor.rules import (
    Projection,
    Reader,
    RuleResult,
    evaluate,
    firing,
    merged_entry,
    minute_of,
    projection_of,
)
from gating.rollback.plan import LAST_GOOD, Refusal, Request, current_state, environments_of
from gating.server import monitoring
from gating.server.handlers import JobContext, Registry
from gating.server.jobs import PermanentError
from gating.server.rollbacks import Audit, Config, app_audit, execute, load_config
from gating.server.trail import witness

ACTOR = "gating (monitor)"
blueprint = Blueprint("gating_monitor", __name__)


def register(registry: Registry) -> None:
    registry.every("monitor", lambda settings: settings.monitor_seconds)(on_tick)


def on_tick(ctx: JobContext) -> None:
    """Every watched deployment on its own: one repository GitHub refuses does not stop the others."""
    if ctx.queue is None:
        raise PermanentError("the monitor needs the App's database")
    now = tick_time(ctx.payload)
    failed = []
    for w in monitoring.watches(ctx.queue):
        try:
            check(ctx, w, now)
        except GitHubError as e:
            if isinstance(e, RateLimited) or not 400 <= e.status < 500:
                raise  # the whole tick runs again; each step is idempotent
            ctx.log.warning("%s: monitor of %s skipped: %s", w.repo, w.commit[:12], e)
            failed.append(f"{w.repo}: {e}")
    if failed:
        ctx.log.warning("monitor: %d deployment(s) not checked: %s", len(failed), "; ".join(failed))


def tick_time(payload: dict[str, Any]) -> datetime:
    """The start of the tick's period, so every retry of the tick judges the same windows; never
    later than now (a forged period in the future must not end a bake early)."""
    now = monitoring.clock()
    period, every = payload.get("period"), payload.get("every_seconds")
    if isinstance(period, int) and isinstance(every, (int, float)) and every > 0:
        return datetime.fromtimestamp(min(period * every, now), UTC)
    return datetime.fromtimestamp(now, UTC)


def check(ctx: JobContext, w: monitoring.Watch, now: datetime) -> None:
    assert ctx.queue is not None
    repo = Repo(ctx.github.installation(w.installation), w.repo)
    cfg = load_config(repo, ctx.blobs, ctx.settings.manifest_path)
    monitoring.record_prices(ctx.queue, repo, ctx.blobs, cfg, ctx.log)  # the branch's prices may have changed
    config = monitoring.config_of(cfg)
    envs = environments_of(cfg.rollback)
    audit = app_audit(replace(ctx, payload={"installation": {"id": w.installation}}), repo)
    entries = audit.entries()
    chain = chain_of(cfg.deploy).environments  # an earlier environment of deploy.environments bakes too
    cur = current_state(entries, cfg.tip, envs if w.environment in envs else (w.environment,))
    if (cur.commit != w.commit or cur.entry is None or cur.entry.event == "deploy_failed"
            or (w.environment not in envs and w.environment not in chain)):
        monitoring.forget(ctx.queue, w)  # superseded, failed, or no longer an environment that counts
        ctx.log.info("%s: %s in %s is no longer the deployed state; not watched any more", w.repo, w.commit[:12],
                     w.environment)
        return
    merged = merged_entry(entries, w.commit)
    systems = [w.commit] + ([merged.predicate["snapshot_digest"]] if merged and merged.predicate.get("snapshot_digest")
                            else [])
    projection = projection_of(merged)
    t = now.timestamp()
    results = evaluate(config, ctx.rollups, w.repo, systems, minute_of(now), projection)
    fired = firing(results)
    incidents = {r.rule: monitoring.incident_since(ctx.queue, w.repo, w.commit, r.rule, t, r.firing) for r in results}
    rolled = None
    for r in fired:
        since = incidents[r.rule] or t
        if not ctx.queue.first_run(f"monitor:{w.repo}:{w.commit}:{r.rule}:{since}", ctx.job):
            continue  # this incident was acted on by an earlier tick (or another replica)
        rolled = act(ctx, repo, audit, cfg, w, r, since, systems, projection, merged, now, rolled)
    state, note = w.state, ""
    if w.state == "baking" and fired:
        state, note = "unhealthy", f"bake failed: {', '.join(r.rule for r in fired)} fired"
    elif w.state == "baking" and t >= w.bake_until:
        state, note = bake(ctx, audit, repo, config.bake_minutes, w, results, systems, projection, envs, now)
    elif w.state == "baking":
        note = f"baking until {_iso(w.bake_until)}"
    known = [e for e in entries if e.event == "known_good" and e.commit != w.commit]
    status = {"commit": w.commit, "environment": w.environment, "state": state, "note": note,
              "systems": systems, "deployed_at": _iso(w.deployed_at), "bake_until": _iso(w.bake_until),
              "evaluated_at": _iso(t), "projection": projection.to_dict(), "rules": [r.to_dict() for r in results],
              "known_good": state == "known_good" and w.commit or (known[-1].commit if known else None)}
    monitoring.update(ctx.queue, w, state, status, t)


def bake(ctx: JobContext, audit: Audit, repo: Repo, bake_minutes: int, w: monitoring.Watch,
         results: list[RuleResult], systems: list[str], projection: Projection, envs: tuple[str, ...] | list[str],
         now: datetime) -> tuple[str, str]:
    """The bake passed with no rule firing: known-good, with the evidence; with no traffic yet, wait."""
    since, until = int(w.deployed_at // 60), int(w.bake_until // 60) + 1
    requests = Reader(ctx.rollups, w.repo).window(systems, since, until, None, "request").requests
    if requests == 0:
        return "baking", "bake window passed with no traffic attributed to this system yet: not known-good until some"
    from gating.audit import record as audit_record
    health = {"bake": {"since": _iso(w.deployed_at), "until": _iso(w.bake_until), "minutes": bake_minutes,
                       "requests": requests}, "systems": systems, "projection": projection.to_dict(),
              "rules": [r.to_dict() for r in results], "verdict": f"no rule fired in {bake_minutes} minutes"}
    facts = EntryFacts(event="known_good", commit=w.commit, repository=w.repo, actor=ACTOR, deployment=w.deployment,
                       discriminator=f"deployment {w.deployment.get('id')}", health=health,
                       previous_known_good=audit_record.last_known_good(audit.store, audit.key, envs))
    res = audit_log.append_entry(audit.store, facts, audit.key, now)
    witness(repo, res.entry, audit.key, audit.app_id, ctx.log)
    ctx.log.info("%s: %s baked %d minutes with no rule firing: known_good (audit seq %d)", w.repo, w.commit[:12],
                 bake_minutes, res.entry.seq)
    return "known_good", f"known-good since {_iso(now.timestamp())}"


def act(ctx: JobContext, repo: Repo, audit: Audit, cfg: Config, w: monitoring.Watch, r: RuleResult, since: float,
        systems: list[str], projection: Projection, merged: Entry | None, now: datetime,
        rolled: dict[str, Any] | None) -> dict[str, Any] | None:
    """One incident: roll back (once per deployment, whatever rules fire) or notify; then the entry."""
    outcome: dict[str, Any] = {"action": r.action}
    why = f"monitor rule {r.rule} fired: {r.reason}"
    if r.action == "rollback":
        if rolled is None:
            req = Request(ACTOR, why, f"monitor rule {r.rule} ({r.condition})", "monitor")
            try:
                out = execute(repo, audit, LAST_GOOD, req, now, ctx.blobs, ctx.settings.manifest_path, cfg)
                rolled = {"target": out.plan.resolution.commit, "url": out.url, "pull_request": out.number}
            except Refusal as e:
                rolled = {"refused": e.code, "message": e.message}
                ctx.log.warning("%s: monitor rule %s fired; rollback refused (%s): %s", w.repo, r.rule, e.code,
                                e.message)
        outcome["rollback"] = rolled
    else:
        number = monitoring_issue(cfg) or (merged.predicate.get("pull_request") if merged else None)
        if number:
            c = gh.comment(repo, int(number), notice(w, r, since))
            outcome["comment"] = c.get("html_url")
        else:
            outcome["comment"] = None
            ctx.log.warning("%s: monitor rule %s fired; nowhere to notify (set monitor.issue)", w.repo, r.rule)
    health = {"rule": r.to_dict(), "incident_since": _iso(since), "systems": systems,
              "projection": projection.to_dict(), **outcome}
    facts = EntryFacts(event="monitor_alert", commit=w.commit, repository=w.repo, actor=ACTOR, deployment=w.deployment,
                       discriminator=f"{r.rule} since {_iso(since)}", health=health)
    res = audit_log.append_entry(audit.store, facts, audit.key, now)
    witness(repo, res.entry, audit.key, audit.app_id, ctx.log)
    ctx.log.info("%s: monitor rule %s fired on %s (%s): audit seq %d", w.repo, r.rule, w.commit[:12], r.action,
                 res.entry.seq)
    return rolled


def monitoring_issue(cfg: Config) -> int | None:
    issue = cfg.monitor.get("issue")
    return int(issue) if isinstance(issue, int) else None


def notice(w: monitoring.Watch, r: RuleResult, since: float) -> str:
    d = r.to_dict()
    return "\n".join([
        f"**gating monitor: `{r.rule}` is firing** on `{w.commit[:12]}` in {w.environment} ({r.severity})",
        "",
        f"{r.reason}.",
        "",
        "| Rule | Value | Threshold | Samples | Window |",
        "|---|---|---|---|---|",
        f"| `{r.condition}` | {_n(r.value)} | {r.op} {_n(r.threshold)} | {r.samples:,} | "
        f"{d['window']['since']} to {d['window']['until']} |",
        "",
        f"Firing since {_iso(since)}. Action: notify (no automatic rollback for this rule).",
    ])


def _n(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- GET /monitor/status -----------------------------------------------------------------------------


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status


@blueprint.get("/monitor/status")
def status() -> tuple[Response, int]:
    state = current_app.extensions["gating"]
    token = state.settings.monitor_token
    if not token:
        return _error(401, "monitor status is not served: the App has no GATING_MONITOR_TOKEN")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return _error(401, "missing or wrong bearer token (Authorization: Bearer <GATING_MONITOR_TOKEN>)")
    repo = request.args.get("repo", "")
    if repo.count("/") != 1 or not all(repo.split("/")):
        return _error(400, "name the repository: /monitor/status?repo=owner/name")
    rows = monitoring.watches(state.queue, repo)
    if not rows:
        return _error(404, f"no deployment of {repo} is monitored (none deployed since the App ran the monitor, "
                      "or its default branch has no monitor: rules)")
    deployments = [{**{"commit": w.commit, "environment": w.environment, "state": w.state,
                       "deployed_at": _iso(w.deployed_at), "bake_until": _iso(w.bake_until)},
                    **w.status, "evaluated_at": _iso(w.evaluated_at) if w.evaluated_at else None} for w in rows]
    return jsonify({"repository": repo, "deployments": deployments}), 200
