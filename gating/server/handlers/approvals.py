"""The approvals handler: re-evaluate a pull request's approval rules (gating.server.approval_evaluation)
on every event that can change the answer: a push, a review, the eval check, a label, an override.
"""

from __future__ import annotations

from collections.abc import Callable

from gating.policy import APPROVAL_CHECK, EVAL_CHECK, parse_override
from gating.server import overrides
from gating.server.approval_evaluation import evaluate_and_publish
from gating.server.handlers import JobContext, Payload, Registry, pull_key
from gating.server.overrides import Seen

PULL_ACTIONS = ("opened", "reopened", "synchronize", "ready_for_review", "edited", "labeled", "unlabeled")
REVIEW_ACTIONS = ("submitted", "edited", "dismissed")


def register(registry: Registry) -> None:
    # First, so a push is noted before the evaluation its delivery also queues (same key: in order).
    registry.on("pull_request", "synchronize", key=pull_key, name="approvals.on_push")(on_push)
    # Every handler here re-reads the pull request's current state, so one run covers all the
    # deliveries for the same pull request that were queued before it started (coalesce).
    registry.on("pull_request", *PULL_ACTIONS, key=pull_key, coalesce=True)(on_pull_event)
    registry.on("pull_request_review", *REVIEW_ACTIONS, key=pull_key, coalesce=True)(on_pull_event)
    registry.on("check_run", "completed", key=_check_key, when=_is_check(EVAL_CHECK), coalesce=True)(on_check_run)
    registry.on("check_run", "rerequested", key=_check_key, when=_is_check(APPROVAL_CHECK),
                name="approvals.on_rerequest", coalesce=True)(on_check_run)
    # An override is recorded when its comment is seen created, and only taken away after: these run
    # for every delivery (no coalescing), in order with the rest of the pull request's jobs.
    registry.on("issue_comment", "created", key=pull_key, when=_is_override)(on_override)
    registry.on("issue_comment", "edited", "deleted", key=pull_key, when=_is_override)(on_override_changed)


def _is_check(name: str) -> Callable[[Payload], bool]:
    return lambda p: (p.get("check_run") or {}).get("name") == name


def _check_key(p: Payload) -> str | None:
    prs = (p.get("check_run") or {}).get("pull_requests") or []
    repo = (p.get("repository") or {}).get("full_name")
    return f"{repo}#{prs[0]['number']}" if len(prs) == 1 else None


def _is_override(p: Payload) -> bool:
    """Comments on pull requests that carry (or carried) `/gating override` where a reader sees it."""
    issue, comment = p.get("issue") or {}, p.get("comment") or {}
    before = ((p.get("changes") or {}).get("body") or {}).get("from")
    return bool(issue.get("pull_request")) and any(
        parse_override(b) is not None for b in (comment.get("body"), before) if isinstance(b, str))


def on_pull_event(ctx: JobContext) -> None:
    number = (ctx.payload.get("pull_request") or ctx.payload.get("issue") or {})["number"]
    outcome = evaluate_and_publish(ctx, ctx.repo(), int(number))
    ctx.log.info("%s#%s: %s", ctx.payload["repository"]["full_name"], number, outcome)


def on_push(ctx: JobContext) -> None:
    """Note the push, so an override the App received before it stops counting (the evaluation
    itself runs in on_pull_event)."""
    pr = ctx.payload["pull_request"]
    head = ctx.payload.get("after") or pr["head"]["sha"]
    overrides.store(ctx).record_push(ctx.payload["repository"]["full_name"], int(pr["number"]), head, ctx.job)


def _seen(p: Payload, login: str, body: str | None) -> Seen:
    c = p["comment"]
    return Seen(p["repository"]["full_name"], int(p["issue"]["number"]), int(c["id"]), login,
                parse_override(body or "") or "", c.get("created_at") or "", c.get("html_url") or "")


def on_override(ctx: JobContext) -> None:
    """Record `/gating override` as GitHub reports it created: the sender, their permission now, and
    the pull request's head now. Any other delivery of this comment records nothing new."""
    p = ctx.payload
    login = (p.get("sender") or p["comment"].get("user") or {}).get("login") or "ghost"
    seen = _seen(p, login, p["comment"].get("body"))
    repo = ctx.repo()
    permission, head = repo.permission(login), repo.pull(seen.number)["head"]["sha"]
    if not overrides.store(ctx).record_created(seen, permission, head, ctx.job):
        ctx.log.info("%s#%d: override comment %d was recorded before; nothing new", seen.repo, seen.number,
                     seen.comment_id)
        return
    ctx.log.info("%s#%d: override by @%s (%s) recorded on %s; %s", seen.repo, seen.number, login, permission,
                 head[:7], evaluate_and_publish(ctx, repo, seen.number))


def on_override_changed(ctx: JobContext) -> None:
    """An edit or a deletion never makes or keeps an override: the recorded one is void for good, and
    a command an edit wrote in is kept as void, so the check can say why it does not count."""
    p = ctx.payload
    editor = (p.get("sender") or {}).get("login") or "ghost"
    author = (p["comment"].get("user") or {}).get("login") or "ghost"
    deleted = p.get("action") == "deleted"
    seen = _seen(p, editor, p["comment"].get("body"))
    if deleted:
        why = f"its comment was deleted by @{editor}"
    else:
        why = (f"its comment was edited{'' if editor == author else f' by @{editor}'} after it was posted; an "
               "edited override never counts, so it needs a new comment")
    whose = "a comment" if editor == author else f"@{author}'s comment"
    written_in = f"written into {whose} by an edit; only a newly posted comment counts"
    if deleted or parse_override(p["comment"].get("body") or "") is None:
        written_in = why  # the command was there before: the edit (or deletion) only took it away
    if not overrides.store(ctx).void(seen, why, written_in, ctx.job):
        ctx.log.info("%s#%d: comment %d: nothing new", seen.repo, seen.number, seen.comment_id)
        return
    ctx.log.info("%s#%d: override comment %d %s by @%s; %s", seen.repo, seen.number, seen.comment_id,
                 p.get("action"), editor, evaluate_and_publish(ctx, ctx.repo(), seen.number))


def on_check_run(ctx: JobContext) -> None:
    run = ctx.payload["check_run"]
    repo = ctx.repo()
    numbers = [p["number"] for p in run.get("pull_requests") or []]
    if not numbers:  # forks: GitHub leaves pull_requests empty, so look the head SHA up
        numbers = [p["number"] for p in repo.open_pulls() if p["head"]["sha"] == run["head_sha"]]
    for n in numbers:
        ctx.log.info("%s#%s: %s", repo.full_name, n, evaluate_and_publish(ctx, repo, int(n)))
