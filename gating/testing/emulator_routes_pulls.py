"""Pull requests, reviews, issues, comments, labels and reactions."""

from __future__ import annotations

from gating.testing import emulator_render as render
from gating.testing.emulator_http import ApiError, Ctx, Reply, handles, not_found
from gating.testing.emulator_limits import check_body
from gating.testing.emulator_state import Comment, Issue, permission_at_least


def _issue(ctx: Ctx, pull_only: bool = False) -> Issue:
    r = ctx.require_repo()
    key = "pull_number" if "pull_number" in ctx.params else "issue_number"
    i = r.issues.get(ctx.int_param(key))
    if i is None or (pull_only and not i.is_pull):
        raise not_found()
    return i


def _author(ctx: Ctx) -> str:
    if not ctx.actor.login:
        raise ApiError(403, "Resource not accessible by integration")
    return ctx.actor.login


@handles("pulls/list")
def list_pulls(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    state = ctx.query.get("state", "open")
    head, base = ctx.query.get("head"), ctx.query.get("base")
    items = []
    for i in sorted(r.issues.values(), key=lambda x: -x.number):
        if not i.is_pull or (state != "all" and i.state != state):
            continue
        if base and i.base_ref != base:
            continue
        if head and (head.split(":", 1)[-1] != i.head_ref
                     or ":" in head and head.split(":", 1)[0].lower() != (i.head_repo or r.full_name).split("/")[0].lower()):
            continue
        items.append(render.pull(ctx.emu, r, i, full=False))
    return ctx.paginate(items)


@handles("pulls/create")
def create_pull(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    check_body(ctx, "PullRequest")
    data = ctx.emu.create_pull(r, ctx.arg("head", ""), ctx.arg("base"), ctx.arg("title") or "", _author(ctx),
                               body=ctx.arg("body") or "", draft=bool(ctx.arg("draft", False)))
    return Reply(201, data, {"Location": data["url"]})


@handles("pulls/get")
def get_pull(ctx: Ctx) -> Reply:
    return Reply(200, render.pull(ctx.emu, ctx.require_repo(), _issue(ctx, pull_only=True)))


@handles("pulls/update")
def update_pull(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    i = _issue(ctx, pull_only=True)
    check_body(ctx, "PullRequest")
    changes = {k: ctx.arg(k) for k in ("title", "body", "state", "base") if ctx.arg(k) is not None}
    ctx.emu.update_pull(r, i.number, ctx.actor.login or ctx.emu.app.bot_login, **changes)
    return Reply(200, render.pull(ctx.emu, r, i))


@handles("pulls/list-files")
def list_files(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    i = _issue(ctx, pull_only=True)
    head, _base = ctx.emu.pull_shas(r, i)
    listed = ctx.emu.pull_files(r, i)[:ctx.emu.limits.pull_files]  # GitHub lists at most 3,000
    return ctx.paginate([render.diff_entry(ctx.emu, r, f, head) for f in listed])


@handles("pulls/list-commits")
def list_pull_commits(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    i = _issue(ctx, pull_only=True)
    return ctx.paginate([render.commit(ctx.emu, r, c) for c in ctx.emu.pull_commits(r, i)])


@handles("pulls/list-reviews")
def list_reviews(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    i = _issue(ctx, pull_only=True)
    return ctx.paginate([render.review(ctx.emu, r, v) for v in sorted(r.reviews.values(), key=lambda v: v.id)
                         if v.number == i.number])


@handles("pulls/create-review")
def create_review(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    i = _issue(ctx, pull_only=True)
    event = ctx.arg("event")
    state = {"APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED", "COMMENT": "COMMENTED",
             None: "PENDING"}[event]
    body = ctx.arg("body") or ""
    if state in ("CHANGES_REQUESTED", "COMMENTED") and not body and not ctx.arg("comments"):
        raise ApiError(422, "Unprocessable Entity", errors=[f"Review body is required for {event}"])
    login = _author(ctx)
    if state == "APPROVED" and login == i.user:
        raise ApiError(422, "Unprocessable Entity", errors=["Can not approve your own pull request"])
    data = ctx.emu.add_review(r, i.number, login, state, commit_id=ctx.arg("commit_id"), body=body)
    return Reply(200, data)


@handles("pulls/get-review")
def get_review(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    i = _issue(ctx, pull_only=True)
    v = r.reviews.get(ctx.int_param("review_id"))
    if v is None or v.number != i.number:
        raise not_found()
    return Reply(200, render.review(ctx.emu, r, v))


@handles("pulls/dismiss-review")
def dismiss_review(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    i = _issue(ctx, pull_only=True)
    v = r.reviews.get(ctx.int_param("review_id"))
    if v is None or v.number != i.number:
        raise not_found()
    if v.state not in ("APPROVED", "CHANGES_REQUESTED"):
        raise ApiError(422, "Can not dismiss a commented pull request review")
    return Reply(200, ctx.emu.dismiss_review(r, i.number, v.id, ctx.arg("message", ""),
                                             actor=ctx.actor.login))


@handles("pulls/merge")
def merge_pull(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    i = _issue(ctx, pull_only=True)
    if i.state != "open":
        raise ApiError(405, "Pull Request is not mergeable")
    head, _base = ctx.emu.pull_shas(r, i)
    if ctx.arg("sha") and ctx.arg("sha") != head:
        raise ApiError(409, "Head branch was modified. Review and try the merge again.")
    sha = ctx.emu.merge_pull(r, i.number, ctx.actor.login or ctx.emu.app.bot_login,
                             method=ctx.arg("merge_method", "merge"), title=ctx.arg("commit_title"),
                             message=ctx.arg("commit_message"))
    return Reply(200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"})


# -- issues ---------------------------------------------------------------------------------------


@handles("issues/list-for-repo")
def list_issues(ctx: Ctx) -> Reply:
    """Issues and pull requests (marked by `pull_request`), open by default, newest first."""
    r = ctx.require_repo()
    state, creator = ctx.query.get("state", "open"), ctx.query.get("creator")
    labels = {n.strip().lower() for n in ctx.query.get("labels", "").split(",") if n.strip()}
    sort, direction = ctx.query.get("sort", "created"), ctx.query.get("direction", "desc")
    if state not in ("open", "closed", "all") or sort not in ("created", "updated", "comments") \
            or direction not in ("asc", "desc"):
        raise ApiError(422, "Validation Failed")
    items = [i for i in r.issues.values()
             if (state == "all" or i.state == state) and (creator is None or i.user.lower() == creator.lower())
             and labels <= {n.lower() for n in i.labels}]
    comments = {i.number: sum(1 for c in r.comments.values() if c.number == i.number) for i in items}
    key = {"created": lambda i: (i.created_at, i.number), "updated": lambda i: (i.updated_at, i.number),
           "comments": lambda i: (comments[i.number], i.number)}[sort]
    items.sort(key=key, reverse=direction == "desc")
    return ctx.paginate([render.issue(ctx.emu, r, i) for i in items])


@handles("issues/get")
def get_issue(ctx: Ctx) -> Reply:
    return Reply(200, render.issue(ctx.emu, ctx.require_repo(), _issue(ctx)))


@handles("issues/create")
def create_issue(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    title = ctx.arg("title")
    if isinstance(title, bool) or not isinstance(title, (str, int)) or str(title).strip() == "":
        raise ApiError(422, "Validation Failed", errors=[{"resource": "Issue", "code": "missing_field", "field": "title"}])
    check_body(ctx, "Issue")
    data = ctx.emu.create_issue(r, str(title), _author(ctx), ctx.arg("body") or "")
    return Reply(201, data, {"Location": data["url"]})


@handles("issues/list-comments")
def list_comments(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    i = _issue(ctx)
    return ctx.paginate([render.comment(ctx.emu, r, c) for c in sorted(r.comments.values(), key=lambda c: c.id)
                         if c.number == i.number])


@handles("issues/create-comment")
def create_comment(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    i = _issue(ctx)
    check_body(ctx, "IssueComment")
    data = ctx.emu.add_comment(r, i.number, _author(ctx), ctx.arg("body"))
    return Reply(201, data, {"Location": data["url"]})


def _comment(ctx: Ctx) -> Comment:
    r = ctx.require_repo()
    c = r.comments.get(ctx.int_param("comment_id"))
    if c is None:
        raise not_found()
    return c


@handles("issues/get-comment")
def get_comment(ctx: Ctx) -> Reply:
    return Reply(200, render.comment(ctx.emu, ctx.require_repo(), _comment(ctx)))


@handles("issues/update-comment")
def update_comment(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    c = _comment(ctx)
    token = ctx.actor.token
    if token is not None and token.kind == "installation":
        allowed = token.permissions.get("issues") == "write" or token.permissions.get("pull_requests") == "write"
    else:  # GitHub: "the author or write access to this repository"
        allowed = ctx.actor.login == c.user or permission_at_least(ctx.emu.permission_of(r, ctx.actor.login), "write")
    if not allowed:
        raise ApiError(403, "You must be the author or have write access to this repository to edit this comment.")
    check_body(ctx, "IssueComment")
    return Reply(200, ctx.emu.edit_comment(r, c.id, ctx.arg("body"), editor=ctx.actor.login))


@handles("issues/list-labels-on-issue")
def list_labels(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    return ctx.paginate([render.label(ctx.emu, r, n) for n in _issue(ctx).labels])


@handles("issues/add-labels")
def add_labels(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    i = _issue(ctx)
    body = ctx.body
    names = body if isinstance(body, list) else (body or {}).get("labels", [])
    for n in names:
        name = n["name"] if isinstance(n, dict) else n
        ctx.emu.add_label(r, i.number, name, actor=ctx.actor.login)
    return Reply(200, [render.label(ctx.emu, r, n) for n in i.labels])


def _reaction_reply(ctx: Ctx, comment_id: int | None, number: int | None) -> Reply:
    r = ctx.require_repo()
    content = ctx.arg("content")
    login = _author(ctx)
    for x in r.reactions:
        if x.user == login and x.content == content and x.comment_id == comment_id and x.number == number:
            return Reply(200, render.reaction(ctx.emu, x))
    data = ctx.emu.add_reaction(r, login, content, comment_id=comment_id, number=number)
    return Reply(201, data)


@handles("reactions/create-for-issue-comment")
def react_comment(ctx: Ctx) -> Reply:
    return _reaction_reply(ctx, _comment(ctx).id, None)


@handles("reactions/create-for-issue")
def react_issue(ctx: Ctx) -> Reply:
    return _reaction_reply(ctx, None, _issue(ctx).number)


@handles("reactions/list-for-issue-comment", "reactions/list-for-issue")
def list_reactions(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    if "comment_id" in ctx.params:
        cid, number = _comment(ctx).id, None
    else:
        cid, number = None, _issue(ctx).number
    content = ctx.query.get("content")
    items = [render.reaction(ctx.emu, x) for x in r.reactions
             if x.comment_id == cid and x.number == number and (content is None or x.content == content)]
    return ctx.paginate(items)
