"""`/rollback [last-good|previous|<sha>] [reason...]` in an issue or pull-request comment.

The App checks the commenter against rollback.who (from gating.yml on the default branch, so a
pull request cannot widen it), reacts 👀 at once, builds the plan of gating.rollback over the API,
writes the restore as one commit on a branch named for the target (Git Database API), opens the
pull request, replies with the link, reacts 🚀 and records a signed `rolled_back` audit entry.
Every refusal is a reply that says why. A comment's command runs once: another delivery of it (a
redelivery under a new id) finds the comment id taken in the App's database and does nothing. `execute` is shared with the alert and deploy-failure
triggers (app/handlers/alerts.py): one plan, one writer, one audit trail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.handlers import JobContext, Payload, Registry
from app.handlers.merge_audit import audit_store, signing_key, witness
from app.jobs import JobQueue, PermanentError
from gating import github as gh
from gating import notes
from gating.github import ApiRevision, BlobCache, EmptyRepository, GitHubError, RateLimited, Repo
from gating.keys import keyid
from gating.manifest import MANIFEST_PATH, ManifestError, parse_manifest
from gating.rollback import (
    Refusal,
    Request,
    RestorePlan,
    commit_message,
    done_reply,
    environments_of,
    failure_reply,
    make_plan,
    parse_command,
    pr_body,
    refusal_reply,
    rolled_back_facts,
    who_allows,
    who_text,
)

log = logging.getLogger("gating.app.rollback")
ATTEMPTS = 3  # a direct commit that lost a race with another push is planned again this often


def register(registry: Registry) -> None:
    registry.on("issue_comment", "created", key=rollback_key, when=is_rollback_request)(on_comment)


def rollback_key(payload: Payload) -> str | None:
    """Rollbacks of one repository run one at a time, whatever asked for them."""
    repo = (payload.get("repository") or {}).get("full_name")
    return f"{repo}#rollback" if repo else None


def is_bot(user: Mapping[str, Any] | None) -> bool:
    user = user or {}
    return user.get("type") == "Bot" or str(user.get("login", "")).endswith("[bot]")


def is_rollback_request(payload: Payload) -> bool:
    comment = payload.get("comment") or {}
    return parse_command(comment.get("body") or "") is not None and not is_bot(comment.get("user"))


# -- the audit log and the signing key -----------------------------------------------------------


@dataclass
class Audit:
    """Where the App reads and appends entries, and the key it signs (and trusts) them with."""

    store: notes.NotesBackend
    key: Ed25519PrivateKey
    trusted: dict[str, Ed25519PublicKey]
    app_id: int = 0  # whose `gating / audit` check runs witness the entries

    def entries(self) -> list:
        return notes.read_log(self.store, self.trusted)


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
        rollback = parse_manifest(data, manifest_path).rollback if data is not None else {}
    except ManifestError:
        rollback = {}  # a broken manifest on the branch: the defaults (write, pull_request) apply
    return Config(branch, tip, rollback or {})


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
    return gh.repository(repo)["html_url"]


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
    res = notes.append_entry(audit.store, facts, audit.key, now)
    witness(repo, res.entry, audit.key, audit.app_id, log)
    log.info("%s: rollback to %s -> %s (audit seq %d%s)", repo.full_name, outcome.plan.resolution.commit[:12],
             outcome.url, res.entry.seq, "" if res.created else ", already recorded")
    return Outcome(outcome.plan, outcome.commit, outcome.url, outcome.number, outcome.existing, outcome.fallback,
                   res.entry.seq)


# -- the comment -------------------------------------------------------------------------------------


def on_comment(ctx: JobContext, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
    payload = ctx.payload
    comment, issue = payload["comment"], payload["issue"]
    login, number, cid = comment["user"]["login"], int(issue["number"]), int(comment["id"])
    cmd = parse_command(comment.get("body") or "")
    if cmd is None or is_bot(comment.get("user")):
        return
    queue = ctx.queue if ctx.queue is not None else JobQueue(ctx.settings.db_path)
    if not queue.first_run(f"rollback comment {cid}", ctx.job):  # comment ids are unique across GitHub
        ctx.log.info("comment %d: its /rollback was handled by an earlier delivery; nothing new", cid)
        return
    repo = ctx.repo()
    gh.react(repo, cid, "eyes")
    try:
        cfg = load_config(repo, ctx.blobs, ctx.settings.manifest_path)
        who = cfg.rollback.get("who")
        permission = repo.permission(login)
        teams = [t for t in who or () if "/" in t and repo.is_team_member(t, login)]
        if not who_allows(who, login, permission, teams):
            raise Refusal("no_permission", f"@{login} may not roll back {repo.full_name}: rollback.who allows "
                          f"{who_text(who)}, and @{login} has {permission} permission.")
        source = f"comment {comment.get('html_url') or f'on #{number}'}"
        req = Request(f"@{login}", cmd.reason, source, "comment")
        outcome = execute(repo, app_audit(ctx, repo), cmd.target, req, now(), ctx.blobs, ctx.settings.manifest_path,
                          cfg)
    except Refusal as r:
        gh.comment(repo, number, refusal_reply(r, cmd.target))
        gh.react(repo, cid, "confused")
        ctx.log.info("%s#%d: rollback refused (%s): %s", repo.full_name, number, r.code, r.message)
        return
    except GitHubError as e:
        if isinstance(e, RateLimited) or not 400 <= e.status < 500:
            raise  # GitHub down or asking us to slow down: the job runs again later
        try:  # a missing permission or a vanished repository: say so once rather than retry in silence
            gh.comment(repo, number, failure_reply(cmd.target, e.status, str(e)))
            gh.react(repo, cid, "confused")
        except GitHubError as reply_error:
            ctx.log.warning("%s#%d: could not reply that the rollback failed: %s", repo.full_name, number,
                            reply_error)
        raise PermanentError(str(e)) from e
    marker = f"<!-- gating: reply to comment {cid} -->"
    if ctx.job.attempts <= 1 or not _replied(repo, number, marker):  # a run cut off after its reply
        gh.comment(repo, number, done_reply(outcome.plan, outcome.url, outcome.number, outcome.existing,
                                            outcome.fallback) + marker + "\n")
    gh.react(repo, cid, "rocket")


def _replied(repo: Repo, number: int, marker: str) -> bool:
    return any(marker in (c.get("body") or "") and is_bot(c.get("user")) for c in repo.issue_comments(number))
