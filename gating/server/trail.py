"""The App's audit trail: its signing key, the notes store it writes to, and its witnesses."""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gating.audit import log as audit_log
from gating.audit.entry import Entry
from gating.audit.keys import KeyError_
from gating.audit.witness import witness_entry
from gating.git import notes as git_notes
from gating.github import GitDatabaseNotes, Repo
from gating.server.handlers import JobContext
from gating.server.jobs import PermanentError


def signing_key(ctx: JobContext) -> Ed25519PrivateKey:
    try:
        return ctx.settings.audit_key()
    except KeyError_ as e:
        raise PermanentError(str(e)) from e


def audit_store(ctx: JobContext, repo: Repo) -> audit_log.NotesBackend:
    """The Git Database API, or (GATING_AUDIT_BACKEND=push) a mirror pushed with the installation token."""
    if ctx.settings.audit_backend == "push":
        url = (ctx.payload.get("repository") or {}).get("clone_url") or repo.client.get(
            f"/repos/{repo.full_name}").get("clone_url")
        if not url:
            raise PermanentError("the push audit backend needs repository.clone_url in the event")
        inst = (ctx.payload.get("installation") or {}).get("id") or ctx.github.app_client().get(
            f"/repos/{repo.full_name}/installation")["id"]
        mirror = Path(ctx.settings.audit_push_dir) / repo.full_name.replace("/", "__")
        return git_notes.PushNotes(mirror, url, ctx.github.token(int(inst)).token)
    return GitDatabaseNotes(repo)


def witness(repo: Repo, entry: Entry, key: Ed25519PrivateKey, app_id: int, log: logging.Logger) -> None:
    """The App's `gating / audit` check run for an entry it wrote (once per entry)."""
    run_id, created = witness_entry(repo, entry, key.public_key(), app_id)
    if created:
        log.info("%s: witnessed seq %d on %s (check run %d)", repo.full_name, entry.seq, entry.commit[:12], run_id)


