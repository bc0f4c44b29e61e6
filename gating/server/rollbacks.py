"""Carrying out a rollback in the App: the plan's audit trail, the rollback settings of the default
branch, and the restore as a pull request or a commit, recorded as a signed entry. Shared by `/rollback`
comments and alerts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gating import github as gh
from gating.audit import log as audit_log
from gating.audit.keys import keyid
from gating.github import ApiRevision, BlobCache, EmptyRepository, GitHubError, Repo
from gating.rollback.plan import (
    Refusal,
    Request,
    RestorePlan,
    commit_message,
    environments_of,
    make_plan,
    pr_body,
    rolled_back_facts,
)
from gating.server.handlers import JobContext
from gating.server.trail import audit_store, signing_key, witness
from gating.system.manifest import MANIFEST_PATH, ManifestError, parse_manifest

log = logging.getLogger("gating.app.rollback")
ATTEMPTS = 3  # a direct commit that lost a race with another push is planned again this often


@dataclass
class Audit:
    """Where the App reads and appends entries, and the key it signs (and trusts) them with."""

    store: audit_log.NotesBackend
    key: Ed25519PrivateKey
    trusted: dict[str, Ed25519PublicKey]
    app_id: int = 0  # whose `gating / audit` check runs witness the entries

    def entries(self) -> list:
        return audit_log.read_log(self.store, self.trusted)


def app_audit(ctx: JobContext, repo: Repo) -> Audit:
    """The App's own audit store for `repo` (as the merge and deployment handlers write it); only
    entries signed by the App's key count, so a note pushed by hand cannot pick a rollback target."""
    key = signing_key(ctx)
    if (ctx.payload.get("repository") or {}).get("full_name") != repo.full_name:  # an alert: no event repo
        info = gh.repository(repo)
        push = ctx.settings.audit_backend == "push"
        inst = ctx.github.app_client().get(f"{repo.path}/installation")["id"] if push else 0
        ctx = replace(ctx, payload={**ctx.payload, "repository": info, "installation": {"id": inst}})
    return Audit(audit_store(ctx, repo), key, {keyid(key): key.public_key()}, int(ctx.settings.app_id))


# -- one rollback, from any trigger --------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    plan: RestorePlan
    commit: str
    url: str
    number: int | None  # the pull request (None: committed directly)
    existing: bool  # the pull request was already open (a second request for the same target)
    fallback: str = ""  # why a direct commit became a pull request
    entry_seq: int | None = None


@dataclass(frozen=True)
class Config:
    """rollback.* from gating.yml on the default branch."""

    branch: str
    tip: str
    rollback: Mapping[str, Any]
    monitor: Mapping[str, Any] = field(default_factory=dict)  # monitor.* (gating.monitor.rules reads it)
    name: str = ""  # the manifest's name: the telemetry's default service.name
    deploy: Mapping[str, Any] = field(default_factory=dict)  # deploy.* (gating.deploy.gate reads it)
    prices: str = ""  # evals.prices: the price table telemetry is costed at (gating.server.monitoring)


def load_config(repo: Repo, blobs: BlobCache, manifest_path: str = MANIFEST_PATH) -> Config:
    branch = gh.repository(repo)["default_branch"]
    try:
        tip = gh.ref_sha(repo, f"heads/{branch}")
    except EmptyRepository:
        raise Refusal("empty_repository", f"{repo.full_name} is empty (no commit yet): there is no LLM system "
                      "to roll back.") from None
    if tip is None:
        raise GitHubError(404, f"the default branch {branch} has no commit", "GET", repo.path)
    data = ApiRevision(repo, tip, blobs).read_many([manifest_path])[manifest_path]
    try:
        m = parse_manifest(data, manifest_path) if data is not None else None
    except ManifestError:
        m = None  # a broken manifest on the branch: the defaults (write, pull_request) apply
    return Config(branch, tip, (m.rollback if m else {}) or {}, (m.monitor if m else {}) or {}, m.name if m else "",
                  (m.deploy if m else {}) or {}, str(m.evals.get("prices") or "") if m else "")


def execute(repo: Repo, audit: Audit, target: str, req: Request, now: datetime, blobs: BlobCache,
            manifest_path: str = MANIFEST_PATH, config: Config | None = None) -> Outcome:
    """Plan against the current tip and write it; raises Refusal when there is nothing to do.
    `config` is the caller's fresh read of the default branch, if it has one."""
    for attempt in range(1, ATTEMPTS + 1):
        cfg = config if config is not None and attempt == 1 else load_config(repo, blobs, manifest_path)
        plan = make_plan(audit.entries(), target, cfg.tip, cfg.branch, lambda sha: ApiRevision(repo, sha, blobs),
                         lambda prefix: gh.commit_sha(repo, prefix), manifest_path,
                         environments=environments_of(cfg.rollback))
        tree = _write_tree(repo, plan, blobs)
        fallback = ""
        if cfg.rollback.get("mode") == "direct":
            commit = gh.create_commit(repo, commit_message(plan, req), tree, [plan.tip])
            try:
                gh.update_ref(repo, f"heads/{plan.branch}", commit, force=False)
            except GitHubError as e:
                if e.status == 422 and "fast forward" in str(e) and attempt < ATTEMPTS:
                    continue  # the branch moved under us: plan again on the new tip
                if not _protected(e):
                    raise
                fallback = (f"Branch protection on {plan.branch} refused a direct commit from the App "
                            f"({e}); opened a pull request instead.")
            else:
                url = f"{_web(repo)}/commit/{commit}"
                return _record(audit, repo, Outcome(plan, commit, url, None, False), req, now)
        commit = _branch(repo, plan, tree, commit_message(plan, req))
        pr, created = gh.create_pull(repo, plan.title, plan.branch_name, plan.branch, pr_body(plan, req))
        outcome = Outcome(plan, commit, pr["html_url"], int(pr["number"]), not created and not _asked_by(pr, req),
                          fallback)
        return _record(audit, repo, outcome, req, now)
    raise RuntimeError("unreachable")


def _asked_by(pr: Mapping[str, Any], req: Request) -> bool:
    """The open pull request is this very request's (an earlier run of its job opened it, then failed
    before replying), not another request's for the same target."""
    return bool(req.source) and f"- Requested by: {req.actor} ({req.source})" in (pr.get("body") or "")


# GitHub's 422s for a ref update that branch protection or a ruleset forbids. Phrases, not words:
# the error text also holds the request path, and a repository may be called "protected-...".
PROTECTION_REFUSALS = ("protected branch", "through a pull request", "required status check",
                       "repository rule violation")


def _protected(e: GitHubError) -> bool:
    """Branch protection refused the direct commit, so a pull request is the way in."""
    text = str(e).lower()
    return e.status == 403 or (e.status == 422 and any(phrase in text for phrase in PROTECTION_REFUSALS))


def _web(repo: Repo) -> str:
    return str(gh.repository(repo)["html_url"])


def _write_tree(repo: Repo, plan: RestorePlan, blobs: BlobCache) -> str:
    """The tip's tree with every file of the target snapshot at its target blob, removed files gone."""
    listing = ApiRevision(repo, plan.resolution.commit, blobs).entries(plan.writes)  # their directories only
    entries: list[dict[str, Any]] = []
    for path in sorted(plan.writes):
        e = listing[path]
        entries.append({"path": path, "mode": e.mode, "type": "blob", "sha": e.sha})
    entries += [{"path": p, "mode": "100644", "type": "blob", "sha": None} for p in plan.deletes]
    base = gh.commit_tree(repo, plan.tip)
    tree = gh.create_tree(repo, base, entries)
    if tree == base:
        raise Refusal("nothing_to_restore", f"nothing to restore: the files of {plan.resolution.short} are "
                      f"already on {plan.branch} ({plan.tip[:7]}).")
    return tree


def _branch(repo: Repo, plan: RestorePlan, tree: str, message: str) -> str:
    """The rollback branch at a commit with `tree`: reused when it already holds it (a second request)."""
    ref = f"heads/{plan.branch_name}"
    existing = gh.ref_sha(repo, ref)
    if existing and gh.commit_tree(repo, existing) == tree:
        return existing
    commit = gh.create_commit(repo, message, tree, [plan.tip])
    if existing is None and gh.create_ref(repo, ref, commit):
        return commit
    raced = gh.ref_sha(repo, ref)
    if raced and gh.commit_tree(repo, raced) == tree:
        return raced  # another worker made the same restore first
    gh.update_ref(repo, ref, commit, force=True)  # a stale rollback branch: bring it to the new tip
    return commit


def _record(audit: Audit, repo: Repo, outcome: Outcome, req: Request, now: datetime) -> Outcome:
    facts = rolled_back_facts(outcome.plan, outcome.commit, repo.full_name, req, outcome.number)
    res = audit_log.append_entry(audit.store, facts, audit.key, now)
    witness(repo, res.entry, audit.key, audit.app_id, log)
    log.info("%s: rollback to %s -> %s (audit seq %d%s)", repo.full_name, outcome.plan.resolution.commit[:12],
             outcome.url, res.entry.seq, "" if res.created else ", already recorded")
    return Outcome(outcome.plan, outcome.commit, outcome.url, outcome.number, outcome.existing, outcome.fallback,
                   res.entry.seq)


# -- the comment -------------------------------------------------------------------------------------


