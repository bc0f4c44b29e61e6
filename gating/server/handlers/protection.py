"""The App as a custom deployment protection rule: GitHub holds a workflow job that targets an
environment where the App is enabled and sends `deployment_protection_rule`; the App decides
(gating.deploy.gate), records the decision as a signed `deploy_approved` / `deploy_rejected` entry,
and answers through the review endpoint (`POST /repos/{owner}/{repo}/actions/runs/{run_id}/
deployment_protection_rule`). It fails closed: whatever it cannot read or check (no audit key, an
unknown commit, GitHub failing after the job's retries) is a rejection that says why.

Also here: a deployment status that reports a traffic weight (`gating.weight=N`, see
gating.deploy.gate.weight_of) records a signed `promoted` entry, so the audit log shows each step of a
canary (5% → 25% → 100%) per deployment.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from gating.audit import log as audit_log
from gating.audit import record as audit_record
from gating.audit.entry import EntryFacts, snapshot_digest
from gating.audit.log import AppendError
from gating.deploy.gate import MAX_COMMENT, Decision, chain_of, decide, weight_of
from gating.git.notes import TransientError
from gating.github import GitHubError, RateLimited, Repo
from gating.github.facts import RepoFacts
from gating.rollback.plan import environments_of
from gating.server.handlers import JobContext, Registry
from gating.server.jobs import PermanentError, RetryLater
from gating.server.rollbacks import Audit, app_audit, load_config
from gating.server.trail import witness

ACTOR = "gating (deployment protection rule)"
_CALLBACK = re.compile(r"/repos/([^/]+/[^/]+)/actions/runs/([0-9]+)/deployment_protection_rule$")
# GitHub's 422 when the run holds no request of this App's rule on the environment: already reviewed
# (a redelivery, a retry after a lost answer), rejected by another rule, or no longer waiting.
NOT_PENDING = "No pending custom deployment requests"
# GitHub's 422 when it could not pass the review on to the run (seen when many reviews race): the run
# still waits, so the review is sent again.
NOT_PASSED_ON = "There was a problem approving one of the gates"


def _repo_key(p: dict[str, Any]) -> str | None:
    full = (p.get("repository") or {}).get("full_name")
    return f"{full}#audit" if full else None


def register(registry: Registry) -> None:
    registry.on("deployment_protection_rule", "requested", key=_repo_key)(on_requested)
    registry.on("deployment_status", "created", key=_repo_key, name="protection.on_promotion",
                when=lambda p: weight_of(p.get("deployment_status") or {}) is not None)(on_promotion)


def run_id_of(payload: dict[str, Any], full_name: str) -> int:
    """The workflow run from the event's deployment_callback_url; it must name this repository (a
    payload pointing the App's answer at another repository's run is refused)."""
    m = _CALLBACK.search(str(payload.get("deployment_callback_url") or ""))
    if m is None or m.group(1).lower() != full_name.lower():
        raise PermanentError(f"deployment_protection_rule delivery names no run of {full_name} in "
                             f"deployment_callback_url ({payload.get('deployment_callback_url')!r})")
    return int(m.group(2))


def _rejected(reason: str) -> Decision:
    return Decision(False, "", (reason,))


def on_requested(ctx: JobContext) -> None:
    repo = ctx.repo()
    p = ctx.payload
    run_id = run_id_of(p, repo.full_name)
    env = str(p.get("environment") or "")
    commit = str((p.get("deployment") or {}).get("sha") or p.get("sha") or "")
    audit: Audit | None = None
    last_try = ctx.queue is None or ctx.job.attempts >= ctx.queue.max_attempts
    try:
        if not re.fullmatch(r"[0-9a-f]{40}", commit) or (p.get("sha") and p["sha"] != commit):
            decision = _rejected(f"no commit to check: the event names {commit or 'none'!r} (sha {p.get('sha')!r}). "
                                 "Re-run the deployment job")
        else:
            audit = app_audit(ctx, repo)  # PermanentError without an audit key
            decision = judge(ctx, repo, audit, commit, env)
    except PermanentError as e:
        decision = _rejected(f"the App cannot check this deployment: {e}. Fix the App's configuration and re-run "
                             "the deployment job")
    except GitHubError as e:
        if not last_try and (isinstance(e, RateLimited) or e.status >= 500):
            raise  # the job runs again; nothing was answered yet
        decision = _rejected(f"the App could not read what it checks (GitHub answered {e.status}: {e}). Re-run the "
                             "deployment job")
    except TransientError as e:  # the audit log's notes ref, read through the Git Database API
        if not last_try:
            raise
        decision = _rejected(f"the App could not read the audit log ({e}). Re-run the deployment job")
    decision = record(ctx, repo, audit, decision, commit, env, run_id, p)
    answer(ctx, repo, run_id, env, decision.state, decision.comment(commit, env))


def judge(ctx: JobContext, repo: Repo, audit: Audit, commit: str, env: str) -> Decision:
    cfg = load_config(repo, ctx.blobs, ctx.settings.manifest_path)
    snap = audit_record.snapshot_at(RepoFacts(repo, ctx.blobs), commit, ctx.settings.manifest_path)
    digest = snapshot_digest(snap) if snap is not None else None
    return decide(audit.entries(), commit, env, chain_of(cfg.deploy), digest, cfg.branch, ctx.settings.app_id)


def record(ctx: JobContext, repo: Repo, audit: Audit | None, decision: Decision, commit: str, env: str, run_id: int,
           p: dict[str, Any]) -> Decision:
    """The signed entry of the decision; a redelivery finds the entry of the first decision and
    answers the same. Without a key (or a commit) nothing can be signed: the answer is still sent."""
    if audit is None or not re.fullmatch(r"[0-9a-f]{40}", commit):
        ctx.log.warning("%s: run %d to %s %s without an audit entry", repo.full_name, run_id, env, decision.state)
        return decision
    dep = p.get("deployment") or {}
    facts = EntryFacts(
        event=f"deploy_{decision.state}", commit=commit, repository=repo.full_name, actor=ACTOR,
        deployment={"id": dep.get("id"), "environment": env, "run_id": run_id, "state": decision.state,
                    "basis": decision.basis, "reasons": list(decision.reasons), "evidence": decision.evidence,
                    "requested_by": (p.get("sender") or {}).get("login"), "event": p.get("event")},
        discriminator=f"run {run_id} {env}")
    try:
        res = audit_log.append_entry(audit.store, facts, audit.key, datetime.now(UTC))
    except (GitHubError, TransientError, AppendError) as e:
        if decision.approved:
            return _rejected(f"the App could not record its approval in the audit log ({e}). Re-run the deployment "
                             "job")
        ctx.log.warning("%s: rejection of run %d not recorded: %s", repo.full_name, run_id, e)
        return decision
    d = res.entry.predicate.get("deployment") or {}
    if not res.created:  # decided before: answer as recorded
        decision = Decision(d.get("state") == "approved", d.get("basis") or "", tuple(d.get("reasons") or ()),
                            d.get("evidence") or {})
    ctx.log.info("%s: run %d to %s: %s %s (audit seq %d)", repo.full_name, run_id, env, decision.state, commit[:12],
                 res.entry.seq)
    witness(repo, res.entry, audit.key, audit.app_id, ctx.log)
    return decision


def answer(ctx: JobContext, repo: Repo, run_id: int, env: str, state: str, comment: str) -> None:
    """Review the run. Nothing pending for the App is done (logged, not retried); GitHub failing to
    pass the decision on ("There was a problem approving one of the gates", when reviews race) is
    tried again after the job's retry delay, with the decision as recorded."""
    body = {"environment_name": env, "state": state, "comment": comment[:MAX_COMMENT]}
    try:
        repo.client.request("POST", f"{repo.path}/actions/runs/{run_id}/deployment_protection_rule", json=body)
    except GitHubError as e:
        if e.status == 422 and NOT_PENDING.lower() in e.message.lower():
            ctx.log.info("%s: run %d holds no pending request of the App's rule on %s (already reviewed, or no longer "
                         "waiting): %s", repo.full_name, run_id, env, e.message)
            return
        if e.status == 422 and NOT_PASSED_ON.lower() in e.message.lower():
            raise RetryLater(f"GitHub did not take the review of run {run_id} on {env} ({e.message}); answering again",
                             ctx.settings.retry_base_seconds) from e
        raise


def on_promotion(ctx: JobContext) -> None:
    repo = ctx.repo()
    p = ctx.payload
    status, dep = p["deployment_status"], p["deployment"]
    weight = weight_of(status)
    cfg = load_config(repo, ctx.blobs, ctx.settings.manifest_path)
    env = status.get("environment") or dep.get("environment")
    envs = set(environments_of(cfg.rollback)) | set(chain_of(cfg.deploy).environments)
    if env not in envs or weight is None:
        ctx.log.info("%s: promotion of deployment %s in %s not recorded: not a gated environment", repo.full_name,
                     dep.get("id"), env)
        return
    audit = app_audit(ctx, repo)
    facts = EntryFacts(
        event="promoted", commit=dep["sha"], repository=repo.full_name,
        actor=(p.get("sender") or status.get("creator") or {}).get("login") or "unknown",
        deployment={"id": dep["id"], "environment": env, "weight": weight, "status": status.get("state"),
                    "status_id": status.get("id"), "description": status.get("description") or "",
                    "url": status.get("log_url") or status.get("target_url") or status.get("environment_url") or None},
        discriminator=f"deployment {dep['id']} weight {weight:g}")
    res = audit_log.append_entry(audit.store, facts, audit.key, datetime.now(UTC))
    ctx.log.info("%s: deployment %s in %s at %g%% (audit seq %d)", repo.full_name, dep["id"], env, weight,
                 res.entry.seq)
    witness(repo, res.entry, audit.key, audit.app_id, ctx.log)
