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
from datetime import UTC, datetime
from typing import Any

from gating import github as gh
from gating.github import GitHubError, RateLimited, Repo
from gating.rollback.plan import (
    Refusal,
    Request,
    done_reply,
    failure_reply,
    parse_command,
    refusal_reply,
    who_allows,
    who_text,
)
from gating.server.handlers import JobContext, Payload, Registry
from gating.server.jobs import JobQueue, PermanentError
from gating.server.rollbacks import app_audit, execute, load_config

log = logging.getLogger("gating.app.rollback")


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


def on_comment(ctx: JobContext, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
    payload = ctx.payload
    comment, issue = payload["comment"], payload["issue"]
    login, number, cid = comment["user"]["login"], int(issue["number"]), int(comment["id"])
    cmd = parse_command(comment.get("body") or "")
    if cmd is None or is_bot(comment.get("user")):
        return
    queue = ctx.queue if ctx.queue is not None else JobQueue(ctx.settings.queue_location)
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
