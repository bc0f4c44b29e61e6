"""On merge, write the signed `merged` audit entry on the merge commit; now and then, backfill merges
that have none (a lost webhook, an App outage), so no merge is ever missing from the trail.

Redelivered events and racing replicas are safe: the entry's idempotency key (`merged:<sha>`) is
looked up on the commit's note after every re-read of the notes ref (gating.audit.log.append_entry).

Every entry the App writes is also witnessed: a `gating / audit` check run on the entry's commit with
its seq, hash and keyid (gating.audit.witness), which no writer of the repository can change, so a
fresh clone can tell a truncated or re-signed log. A job that fails after the append witnesses on its
retry, and the reconciliation witnesses the newest entries that have none.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gating.audit import log as audit_log
from gating.audit import record as audit_record
from gating.audit.keys import keyid
from gating.github import Repo
from gating.github.facts import RepoFacts
from gating.server import overrides
from gating.server.handlers import JobContext, Registry, installed_repos
from gating.server.trail import audit_store, signing_key, witness

RECONCILE_RECENT = 30  # merged pull requests looked at by the periodic reconciliation
WITNESS_RECENT = 10  # newest entries the reconciliation makes sure are witnessed
_last_reconcile: dict[str, float] = {}
_lock = threading.Lock()


def register(registry: Registry) -> None:
    registry.on("pull_request", "closed", key=_merge_key,
                when=lambda p: bool((p.get("pull_request") or {}).get("merged")))(on_merged)
    registry.every("audit_reconcile", lambda settings: settings.audit_schedule_seconds)(on_schedule)


def _merge_key(p: dict) -> str | None:
    """One writer per repository at a time in this process; other replicas are handled by the ref."""
    repo = (p.get("repository") or {}).get("full_name")
    return f"{repo}#audit" if repo else None


def on_merged(ctx: JobContext) -> None:
    repo = ctx.repo()
    number = int(ctx.payload["pull_request"]["number"])
    key = signing_key(ctx)
    store = audit_store(ctx, repo)
    res = audit_record.record_merge(RepoFacts(repo, ctx.blobs), store, key, number, datetime.now(UTC),
                                    ctx.settings.manifest_path, overrides_of=overrides.source(ctx, repo.full_name),
                                    app_id=ctx.settings.app_id)
    ctx.log.info("%s#%d: merged entry seq %d on %s (%s)", repo.full_name, number, res.entry.seq,
                 res.entry.commit[:12], "written" if res.created else "already there")
    witness(repo, res.entry, key, int(ctx.settings.app_id), ctx.log)
    reconcile_if_due(ctx, repo, store, key)


def witness_recent(repo: Repo, store: audit_log.NotesBackend, key: Ed25519PrivateKey, app_id: int,
                   log: logging.Logger) -> None:
    """Witness the newest entries the App's key (or a key rotated to it) signed that have no witness yet."""
    for e in audit_log.read_log(store, {keyid(key): key.public_key()})[-WITNESS_RECENT:]:
        witness(repo, e, key, app_id, log)


def reconcile_if_due(ctx: JobContext, repo: Repo, store: audit_log.NotesBackend, key: Ed25519PrivateKey) -> None:
    every = ctx.settings.audit_reconcile_seconds
    with _lock:
        if every <= 0 or time.monotonic() - _last_reconcile.get(repo.full_name, -every) < every:
            return
        _last_reconcile[repo.full_name] = time.monotonic()
    written = audit_record.backfill(RepoFacts(repo, ctx.blobs), store, key, datetime.now(UTC), ctx.settings.manifest_path,
                                    limit=RECONCILE_RECENT, overrides_of=overrides.source(ctx, repo.full_name),
                                    app_id=ctx.settings.app_id)
    for r in written:
        ctx.log.warning("%s: backfilled the merged entry of %s (seq %d): its merge event was never recorded",
                        repo.full_name, r.entry.commit[:12], r.entry.seq)
    witness_recent(repo, store, key, int(ctx.settings.app_id), ctx.log)


def on_schedule(ctx: JobContext) -> None:
    """With no event at all (a quiet repository, webhooks lost in an outage): backfill every repository."""
    key = signing_key(ctx)
    for repo in installed_repos(ctx, limit=1000):
        store = audit_store(ctx, repo)
        written = audit_record.backfill(RepoFacts(repo, ctx.blobs), store, key, datetime.now(UTC),
                                        ctx.settings.manifest_path, limit=RECONCILE_RECENT,
                                        overrides_of=overrides.source(ctx, repo.full_name),
                                        app_id=ctx.settings.app_id)
        for r in written:
            ctx.log.warning("%s: backfilled the merged entry of %s (seq %d) on the App's schedule",
                            repo.full_name, r.entry.commit[:12], r.entry.seq)
        witness_recent(repo, store, key, int(ctx.settings.app_id), ctx.log)
