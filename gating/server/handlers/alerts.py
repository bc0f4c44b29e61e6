"""Automatic rollback: Alertmanager webhooks on POST /alerts, and failed deployments.

POST /alerts takes Alertmanager's webhook payload (version 4), authenticated by a bearer token from
the settings (fail closed: no token configured, no alerts). Each firing alert becomes one durable job
whose delivery id is its identity (groupKey + fingerprint + startsAt), so a repeated notification
of the same alert queues nothing; resolved alerts queue nothing either. The job reads
rollback.on_alert from gating.yml on each candidate repository's default branch and, where a rule's
label matchers match, runs the same rollback as `/rollback` with the alert as the reason.

A failed deployment (deployment_status failure or error) rolls back to the last known-good state
when gating.yml says rollback.on_deploy_failure: true, once its deploy_failed audit entry is in the
log (written by the deployments handler, whose jobs share this one's key and so run first; should
the entry still be missing, the job retries).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from gating.errors import GatingError
from gating.github import GitHubError, RateLimited, Repo
from gating.rollback.plan import LAST_GOOD, Refusal, Request, current_state, environments_of, matching_rule
from gating.server.handlers import JobContext, Payload, Registry, installed_repos
from gating.server.jobs import PermanentError, RetryLater
from gating.server.rollbacks import app_audit, execute, load_config

ALERT_EVENT = "alertmanager"
MAX_ALERTS = 500  # Alertmanager's max_alerts is unbounded by default; refuse absurd batches
MAX_REPOSITORIES = 100  # candidate repositories looked at for one alert when none is named
FAILED_STATES = ("failure", "error")
DEPLOY_RETRY_SECONDS = 1.0

blueprint = Blueprint("gating_alerts", __name__)  # create_app registers it


class PayloadError(GatingError):
    """What is wrong with an Alertmanager payload, said so that its operator can fix the config."""


def register(registry: Registry) -> None:
    registry.on(ALERT_EVENT, "firing", internal=True, key=lambda p: p.get("key"))(on_alert)
    # the deployments handler's key: queued after it for the same delivery, this job finds its entry
    registry.on("deployment_status", "created", key=_audit_key, when=_failed)(on_deployment_failure)


def _audit_key(payload: Payload) -> str | None:
    repo = (payload.get("repository") or {}).get("full_name")
    return f"{repo}#audit" if repo else None


def _failed(payload: Payload) -> bool:
    return (payload.get("deployment_status") or {}).get("state") in FAILED_STATES


# -- POST /alerts ------------------------------------------------------------------------------------


def _str_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise PayloadError(f"{where} must be an object of strings")
    return value


def parse_payload(body: bytes) -> dict[str, Any]:
    """The payload, checked field by field; raises PayloadError naming the first bad field."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise PayloadError(f"body is not JSON: {e}") from None
    except RecursionError:
        raise PayloadError("body is not JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise PayloadError("body must be a JSON object (an Alertmanager webhook payload)")
    if str(doc.get("version")) != "4":
        raise PayloadError(f"version must be \"4\" (Alertmanager webhook payload), not {doc.get('version')!r}")
    if not isinstance(doc.get("groupKey"), str) or not doc["groupKey"]:
        raise PayloadError("groupKey must be a non-empty string")
    if doc.get("status") not in ("firing", "resolved"):
        raise PayloadError(f"status must be firing or resolved, not {doc.get('status')!r}")
    alerts = doc.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("alerts must be a list")
    if len(alerts) > MAX_ALERTS:
        raise PayloadError(f"{len(alerts)} alerts in one payload; at most {MAX_ALERTS}")
    for i, a in enumerate(alerts):
        where = f"alerts[{i}]"
        if not isinstance(a, dict):
            raise PayloadError(f"{where} must be an object")
        if a.get("status") not in ("firing", "resolved"):
            raise PayloadError(f"{where}.status must be firing or resolved, not {a.get('status')!r}")
        _str_map(a.get("labels"), f"{where}.labels")
        _str_map(a.get("annotations", {}), f"{where}.annotations")
        for key in ("fingerprint", "startsAt"):
            if not isinstance(a.get(key), str) or not a[key]:
                raise PayloadError(f"{where}.{key} must be a non-empty string")
        try:
            datetime.fromisoformat(a["startsAt"].replace("Z", "+00:00"))
        except ValueError:
            raise PayloadError(f"{where}.startsAt is not an RFC 3339 time: {a['startsAt']!r}") from None
    return doc


def alert_id(group_key: str, alert: dict[str, Any]) -> str:
    """The identity of one firing: the same alert notified again (repeat_interval, a second
    Alertmanager replica) has the same id; the same alert firing again later starts anew."""
    raw = "\0".join((group_key, alert["fingerprint"], alert["startsAt"])).encode()
    return "alert-" + hashlib.sha256(raw).hexdigest()[:32]


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status


@blueprint.post("/alerts")
def receive_alerts() -> tuple[Response, int]:
    state = current_app.extensions["gating"]
    token = state.settings.alerts_token
    if not token:
        return _error(401, "alerts are not accepted: the App has no GATING_ALERTS_TOKEN")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return _error(401, "missing or wrong bearer token (Authorization: Bearer <GATING_ALERTS_TOKEN>)")
    try:
        doc = parse_payload(request.get_data(cache=False))
    except PayloadError as e:
        return _error(400, f"not an Alertmanager webhook payload: {e}")
    queued, duplicates, resolved = [], 0, 0
    for alert in doc["alerts"]:
        if alert["status"] != "firing":
            resolved += 1
            continue
        repo = alert["labels"].get("repository")
        job = {"alert": alert, "groupKey": doc["groupKey"], "receiver": doc.get("receiver"),
               "externalURL": doc.get("externalURL"), "key": f"{repo}#rollback" if repo else None}
        handlers = [(h.name, h.key(job)) for h in state.registry.match(ALERT_EVENT, {"action": "firing", **job})]
        ids = state.queue.enqueue(alert_id(doc["groupKey"], alert), ALERT_EVENT, "firing", json.dumps(job), handlers)
        if ids:
            queued += ids
        else:
            duplicates += 1
    if queued:
        state.worker.wake(len(queued))
    return jsonify({"status": "queued" if queued else "nothing to do", "jobs": queued,
                    "duplicates": duplicates, "resolved": resolved}), 202 if queued else 200


# -- the jobs --------------------------------------------------------------------------------------------


def _reason(alert: dict[str, Any]) -> str:
    labels, notes = alert["labels"], alert.get("annotations") or {}
    what = notes.get("summary") or notes.get("description") or ""
    name = labels.get("alertname", "alert")
    return f"alert {name} firing since {alert['startsAt']}" + (f": {what}" if what else "")


def candidate_repos(ctx: JobContext, alert: dict[str, Any]) -> Iterator[Repo]:
    """The repository the alert names (label `repository`), else every repository the App is on."""
    app_client = ctx.github.app_client()
    named = alert["labels"].get("repository")
    if named:
        try:
            inst = app_client.get(f"/repos/{named}/installation")["id"]
        except GitHubError as e:
            raise PermanentError(f"alert names repository {named!r}, where the App is not installed: {e}") from None
        yield Repo(ctx.github.installation(int(inst)), named)
        return
    yield from installed_repos(ctx, MAX_REPOSITORIES)


def on_alert(ctx: JobContext) -> None:
    """Each candidate repository on its own: an empty one is skipped and reported, and one GitHub
    refuses does not keep the others from rolling back (the job then fails, naming it)."""
    alert = ctx.payload["alert"]
    source = f"alert {alert['labels'].get('alertname', '')} ({alert['fingerprint']})".replace(" ()", "")
    req = Request("alertmanager", _reason(alert), alert.get("generatorURL") or source, "alert")
    matched, failed = 0, []
    for repo in candidate_repos(ctx, alert):
        try:
            matched += _roll_back_one(ctx, repo, alert, req)
        except GitHubError as e:
            if isinstance(e, RateLimited) or not 400 <= e.status < 500:
                raise  # GitHub down or asking us to slow down: the whole job runs again (each step is idempotent)
            ctx.log.warning("%s: alert %s not handled: %s", repo.full_name, alert["fingerprint"], e)
            failed.append(f"{repo.full_name}: {e}")
    if not matched and not failed:
        ctx.log.info("alert %s matched no rollback.on_alert rule", alert["fingerprint"])
    if failed:
        raise PermanentError(f"alert {alert['fingerprint']}: {len(failed)} repositor{'y' if len(failed) == 1 else 'ies'}"
                             f" could not be handled: " + "; ".join(failed))


def _roll_back_one(ctx: JobContext, repo: Repo, alert: dict[str, Any], req: Request) -> int:
    """1 when a rule of `repo` matched the alert (rolled back or refused, as the log says), else 0."""
    try:
        cfg = load_config(repo, ctx.blobs, ctx.settings.manifest_path)
    except Refusal as r:  # an empty repository: no system there to roll back
        ctx.log.warning("%s: alert %s skipped: %s", repo.full_name, alert["fingerprint"], r.message)
        return 0
    rule = matching_rule(cfg.rollback, alert["labels"], repo.full_name)
    if rule is None:
        return 0
    try:
        out = execute(repo, app_audit(ctx, repo), rule.target, req, datetime.now(UTC), ctx.blobs,
                      ctx.settings.manifest_path, cfg)
    except Refusal as r:
        ctx.log.warning("%s: alert %s matched rule %s; rollback refused (%s): %s", repo.full_name,
                        alert["fingerprint"], rule.name, r.code, r.message)
        return 1
    ctx.log.info("%s: alert %s matched rule %s: %s", repo.full_name, alert["fingerprint"], rule.name, out.url)
    return 1


def on_deployment_failure(ctx: JobContext) -> None:
    dep = ctx.payload["deployment"]
    repo = ctx.repo()
    cfg = load_config(repo, ctx.blobs, ctx.settings.manifest_path)
    envs = environments_of(cfg.rollback)
    if not cfg.rollback.get("on_deploy_failure") or dep.get("environment") not in envs:
        return
    audit = app_audit(ctx, repo)
    cur = current_state(audit.entries(), cfg.tip, envs)
    if cur.entry is None or cur.commit != dep["sha"] or cur.entry.event != "deploy_failed":
        if any(e.event == "deploy_failed" and e.commit == dep["sha"] for e in audit.entries()):
            return  # a later deployment superseded this failure: nothing to roll back
        raise RetryLater(f"no deploy_failed entry for {dep['sha'][:12]} yet", DEPLOY_RETRY_SECONDS)
    state = ctx.payload["deployment_status"]
    reason = (f"deployment {dep.get('id')} of {dep['sha'][:12]} to {dep.get('environment')} ended in "
              f"{state.get('state')}" + (f": {state['description']}" if state.get("description") else ""))
    req = Request("gating (on_deploy_failure)", reason, state.get("log_url") or state.get("target_url") or "",
                  "deploy_failure")
    try:
        out = execute(repo, audit, LAST_GOOD, req, datetime.now(UTC), ctx.blobs, ctx.settings.manifest_path, cfg)
    except Refusal as r:
        ctx.log.warning("%s: deployment %s failed; rollback refused (%s): %s", repo.full_name, dep.get("id"),
                        r.code, r.message)
        return
    ctx.log.info("%s: deployment %s failed; rollback %s", repo.full_name, dep.get("id"), out.url)
