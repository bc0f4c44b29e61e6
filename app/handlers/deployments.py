"""deployment_status: success makes the deployed SHA known_good, failure (or error) records
deploy_failed, each with the rollback pointer (the previous known-good commit). One entry per
deployment and outcome, however often GitHub delivers the event."""

from __future__ import annotations

from datetime import UTC, datetime

from app.handlers import JobContext, Registry
from app.handlers.merge_audit import audit_store, signing_key, witness
from gating import audit_record, notes


def register(registry: Registry) -> None:
    registry.on("deployment_status", "created", key=lambda p: f"{(p.get('repository') or {}).get('full_name')}#audit",
                when=lambda p: (p.get("deployment_status") or {}).get("state") in ("success", "failure", "error"))(
        on_deployment_status)


def on_deployment_status(ctx: JobContext) -> None:
    repo = ctx.repo()
    p = ctx.payload
    actor = (p.get("sender") or p["deployment_status"].get("creator") or {}).get("login") or "unknown"
    facts = audit_record.deployment_facts(repo.full_name, p["deployment"], p["deployment_status"], actor)
    if facts is None:
        return
    key = signing_key(ctx)
    store = audit_store(ctx, repo)
    facts = audit_record.replace_pointer(facts, audit_record.last_known_good(store, key))
    res = notes.append_entry(store, facts, key, datetime.now(UTC))
    ctx.log.info("%s: %s entry seq %d on %s (%s)", repo.full_name, facts.event, res.entry.seq,
                 facts.commit[:12], "written" if res.created else "already there")
    witness(repo, res.entry, key, int(ctx.settings.app_id), ctx.log)
