"""deployment_status: success makes the deployed SHA known_good, failure (or error) records
deploy_failed, each with the rollback pointer (the previous known-good commit). One entry per
deployment and outcome, however often GitHub delivers the event.

Where the App runs the monitor and gating.yml on the default branch has `monitor:` rules, success
records `deployed` instead, and the deployment becomes known-good only once its bake window passes
with no rule firing (gating.server.handlers.monitor writes that entry, with the health evidence).

Only deployments that decide what runs count: to an environment of rollback.environments in
gating.yml on the default branch (default: production), of a commit on the default branch. A preview
(another environment, or the head of an unmerged pull request) records nothing, so it never becomes
known-good or the currently deployed state.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from gating.audit import log as audit_log
from gating.audit import record as audit_record
from gating.deploy.gate import chain_of
from gating.github import GitHubError, Repo
from gating.rollback.plan import environments_of
from gating.server import monitoring
from gating.server.handlers import JobContext, Registry
from gating.server.rollbacks import load_config
from gating.server.trail import audit_store, signing_key, witness


def register(registry: Registry) -> None:
    registry.on("deployment_status", "created", key=lambda p: f"{(p.get('repository') or {}).get('full_name')}#audit",
                when=lambda p: (p.get("deployment_status") or {}).get("state") in ("success", "failure", "error"))(
        on_deployment_status)


def on_branch(repo: Repo, branch: str, sha: str) -> bool:
    """Whether `sha` is in the history of `branch` (GitHub's compare: the branch is ahead of it or at it)."""
    try:
        status = repo.compare(branch, sha).get("status")
    except GitHubError as e:
        if e.status in (404, 422):
            return False
        raise
    return status in ("behind", "identical")


def on_deployment_status(ctx: JobContext) -> None:
    repo = ctx.repo()
    p = ctx.payload
    actor = (p.get("sender") or p["deployment_status"].get("creator") or {}).get("login") or "unknown"
    facts = audit_record.deployment_facts(repo.full_name, p["deployment"], p["deployment_status"], actor)
    if facts is None:
        return
    cfg = load_config(repo, ctx.blobs, ctx.settings.manifest_path)
    envs = environments_of(cfg.rollback)
    env = p["deployment"].get("environment")
    chain = chain_of(cfg.deploy).environments  # staging of a deploy: chain bakes too, for promotion order
    if env not in envs and env not in chain:
        ctx.log.info("%s: deployment %s to %s not recorded: rollback.environments is %s", repo.full_name,
                     p["deployment"]["id"], env, ", ".join(envs))
        return
    if not on_branch(repo, cfg.branch, facts.commit):
        ctx.log.info("%s: deployment %s of %s not recorded: the commit is not on %s (a preview)", repo.full_name,
                     p["deployment"]["id"], facts.commit[:12], cfg.branch)
        return
    key = signing_key(ctx)
    store = audit_store(ctx, repo)
    facts = audit_record.replace_pointer(facts, audit_record.last_known_good(store, key, envs))
    now = datetime.now(UTC)
    baking = facts.event == "known_good" and monitoring.active(ctx.settings, cfg)
    if baking:  # healthy first: the monitor makes it known-good once its bake passes
        facts = dataclasses.replace(facts, event="deployed")
    res = audit_log.append_entry(store, facts, key, now)
    if baking and ctx.queue is not None:
        monitoring.watch(ctx.queue, repo.full_name, env, facts.commit, int(p["installation"]["id"]),
                         dict(facts.deployment or {}), now.timestamp(), monitoring.config_of(cfg).bake_minutes)
        monitoring.record_prices(ctx.queue, repo, ctx.blobs, cfg, ctx.log)
    ctx.log.info("%s: %s entry seq %d on %s (%s)", repo.full_name, facts.event, res.entry.seq,
                 facts.commit[:12], "written" if res.created else "already there")
    witness(repo, res.entry, key, int(ctx.settings.app_id), ctx.log)
