"""Records -> the JSON GitHub returns for them (and puts in webhook payloads).

Only the fields that carry meaning are set here; ApiDescription.complete() fills the rest of what
the schema requires when a response is sent.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gating.testing.emulator_auth import ACTIONS_APP_ID, ACTIONS_APP_SLUG
from gating.testing.emulator_git import CommitInfo, FileChange
from gating.testing.emulator_state import (
    CheckRun,
    CheckSuite,
    Comment,
    Deployment,
    DeploymentStatus,
    Issue,
    Reaction,
    Repo,
    Review,
)

if TYPE_CHECKING:
    from gating.testing.github_emulator import Emulator


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_id(kind: str, ident: Any) -> str:
    return base64.b64encode(f"0:{kind}{ident}".encode()).decode().rstrip("=")


def user(emu: Emulator, login: str | None) -> dict[str, Any] | None:
    if login is None:
        return None
    u = emu.user_record(login)
    api = emu.api_url
    return {
        "login": u.login, "id": u.id, "node_id": node_id("User", u.id),
        "avatar_url": f"{emu.web_url}/avatars/{u.login}", "gravatar_id": "",
        "url": f"{api}/users/{u.login}", "html_url": f"{emu.web_url}/{u.login}",
        "type": u.type, "site_admin": False, "name": u.name, "email": u.email,
    }


def public_user(emu: Emulator, login: str) -> dict[str, Any]:
    u = user(emu, login) or {}
    return u | {"public_repos": 0, "public_gists": 0, "followers": 0, "following": 0,
                "created_at": iso(emu.started_at), "updated_at": iso(emu.started_at),
                "bio": None, "blog": "", "company": None, "location": None, "hireable": None,
                "user_view_type": "public"}


def repo(emu: Emulator, r: Repo, permission: str | None = None) -> dict[str, Any]:
    api = f"{emu.api_url}/repos/{r.full_name}"
    data = {
        "id": r.id, "node_id": node_id("Repository", r.id), "name": r.name, "full_name": r.full_name,
        "owner": user(emu, r.owner), "private": r.private, "visibility": "private" if r.private else "public",
        "html_url": f"{emu.web_url}/{r.full_name}", "description": None, "fork": r.parent is not None, "url": api,
        "clone_url": f"{emu.web_url}/{r.full_name}.git", "git_url": f"{emu.web_url}/{r.full_name}.git",
        "ssh_url": f"{emu.web_url}/{r.full_name}.git", "svn_url": f"{emu.web_url}/{r.full_name}",
        "default_branch": r.default_branch, "created_at": iso(r.created_at), "updated_at": iso(r.created_at),
        "pushed_at": iso(r.created_at), "archived": False, "disabled": False, "homepage": None,
        "language": None, "mirror_url": None, "license": None, "topics": [],
        "pulls_url": api + "/pulls{/number}", "issues_url": api + "/issues{/number}",
        "deployments_url": api + "/deployments", "git_refs_url": api + "/git/refs{/sha}",
        "contents_url": api + "/contents/{+path}", "commits_url": api + "/commits{/sha}",
    }
    if permission is not None:
        data["permissions"] = {"admin": permission == "admin", "maintain": permission in ("admin", "maintain"),
                               "push": permission in ("admin", "maintain", "write"),
                               "triage": permission != "read", "pull": True}
    return data


def git_commit(emu: Emulator, r: Repo, c: CommitInfo) -> dict[str, Any]:
    api = f"{emu.api_url}/repos/{r.full_name}"
    return {
        "sha": c.sha, "node_id": node_id("Commit", c.sha), "url": f"{api}/git/commits/{c.sha}",
        "html_url": f"{emu.web_url}/{r.full_name}/commit/{c.sha}",
        "author": {"name": c.author.name, "email": c.author.email, "date": iso(c.author.date)},
        "committer": {"name": c.committer.name, "email": c.committer.email, "date": iso(c.committer.date)},
        "message": c.message, "tree": {"sha": c.tree, "url": f"{api}/git/trees/{c.tree}"},
        "parents": [{"sha": p, "url": f"{api}/git/commits/{p}",
                     "html_url": f"{emu.web_url}/{r.full_name}/commit/{p}"} for p in c.parents],
        "verification": {"verified": False, "reason": "unsigned", "signature": None, "payload": None,
                         "verified_at": None},
    }


def commit(emu: Emulator, r: Repo, c: CommitInfo, files: list[FileChange] | None = None) -> dict[str, Any]:
    """The repos/commits shape (the git commit inside, plus GitHub users matched by email)."""
    api = f"{emu.api_url}/repos/{r.full_name}"
    gc = git_commit(emu, r, c)
    inner = {k: gc[k] for k in ("author", "committer", "message", "tree", "verification")}
    inner |= {"url": gc["url"], "comment_count": 0}
    data = {
        "sha": c.sha, "node_id": gc["node_id"], "url": f"{api}/commits/{c.sha}", "html_url": gc["html_url"],
        "comments_url": f"{api}/commits/{c.sha}/comments", "commit": inner,
        "author": user(emu, emu.login_for_email(c.author.email)),
        "committer": user(emu, emu.login_for_email(c.committer.email)),
        "parents": [{"sha": p, "url": f"{api}/commits/{p}", "html_url": f"{emu.web_url}/{r.full_name}/commit/{p}"}
                    for p in c.parents],
    }
    if files is not None:
        adds = sum(f.additions for f in files)
        dels = sum(f.deletions for f in files)
        data["stats"] = {"additions": adds, "deletions": dels, "total": adds + dels}
        data["files"] = [diff_entry(emu, r, f, c.sha) for f in files]
    return data


def diff_entry(emu: Emulator, r: Repo, f: FileChange, ref: str) -> dict[str, Any]:
    api = f"{emu.api_url}/repos/{r.full_name}"
    data = {
        "sha": f.sha, "filename": f.filename, "status": f.status, "additions": f.additions,
        "deletions": f.deletions, "changes": f.additions + f.deletions,
        "blob_url": f"{emu.web_url}/{r.full_name}/blob/{ref}/{f.filename}",
        "raw_url": f"{emu.web_url}/{r.full_name}/raw/{ref}/{f.filename}",
        "contents_url": f"{api}/contents/{f.filename}?ref={ref}",
    }
    if f.patch is not None:
        data["patch"] = f.patch
    if f.previous_filename:
        data["previous_filename"] = f.previous_filename
    return data


def git_ref(emu: Emulator, r: Repo, name: str, sha: str, otype: str) -> dict[str, Any]:
    api = f"{emu.api_url}/repos/{r.full_name}"
    plural = {"commit": "commits", "tree": "trees", "blob": "blobs", "tag": "tags"}[otype]
    return {"ref": name, "node_id": node_id("Ref", f"{r.id}:{name}"), "url": f"{api}/git/{name}",
            "object": {"type": otype, "sha": sha, "url": f"{api}/git/{plural}/{sha}"}}


def _branch(emu: Emulator, r: Repo, ref: str, sha: str | None) -> dict[str, Any]:
    return {"label": f"{r.owner}:{ref}", "ref": ref, "sha": sha or "", "user": user(emu, r.owner),
            "repo": repo(emu, r)}


def pull(emu: Emulator, r: Repo, i: Issue, full: bool = True) -> dict[str, Any]:
    api = f"{emu.api_url}/repos/{r.full_name}"
    html = f"{emu.web_url}/{r.full_name}/pull/{i.number}"
    head_sha, base_sha = emu.pull_shas(r, i)
    data = {
        "url": f"{api}/pulls/{i.number}", "id": i.id, "node_id": node_id("PullRequest", i.id),
        "html_url": html, "diff_url": html + ".diff", "patch_url": html + ".patch",
        "issue_url": f"{api}/issues/{i.number}", "commits_url": f"{api}/pulls/{i.number}/commits",
        "review_comments_url": f"{api}/pulls/{i.number}/comments",
        "review_comment_url": f"{api}/pulls/comments{{/number}}",
        "comments_url": f"{api}/issues/{i.number}/comments", "statuses_url": f"{api}/statuses/{head_sha}",
        "number": i.number, "state": i.state, "locked": False, "title": i.title, "user": user(emu, i.user),
        "body": i.body or None, "labels": [label(emu, r, name) for name in i.labels], "milestone": None,
        "active_lock_reason": None, "created_at": iso(i.created_at), "updated_at": iso(i.updated_at),
        "closed_at": iso(i.closed_at), "merged_at": iso(i.merged_at), "merge_commit_sha": i.merge_commit_sha,
        "assignee": None, "assignees": [], "requested_reviewers": [], "requested_teams": [],
        "head": _branch(emu, emu.repo_record(i.head_repo) if i.head_repo else r, i.head_ref, head_sha),
        "base": _branch(emu, r, i.base_ref, base_sha),
        "_links": {k: {"href": v} for k, v in {
            "self": f"{api}/pulls/{i.number}", "html": html, "issue": f"{api}/issues/{i.number}",
            "comments": f"{api}/issues/{i.number}/comments",
            "review_comments": f"{api}/pulls/{i.number}/comments",
            "review_comment": f"{api}/pulls/comments{{/number}}",
            "commits": f"{api}/pulls/{i.number}/commits", "statuses": f"{api}/statuses/{head_sha}"}.items()},
        "author_association": emu.association(r, i.user), "auto_merge": None, "draft": i.draft,
    }
    if full:
        files = emu.pull_files(r, i, (head_sha, base_sha))
        data |= {
            "merged": i.merged, "mergeable": None if i.merged else True, "rebaseable": None,
            "mergeable_state": "unknown" if i.merged else "clean", "merged_by": user(emu, i.merged_by),
            "comments": sum(1 for c in r.comments.values() if c.number == i.number), "review_comments": 0,
            "maintainer_can_modify": False, "commits": len(emu.pull_commits(r, i, (head_sha, base_sha))),
            "additions": sum(f.additions for f in files), "deletions": sum(f.deletions for f in files),
            "changed_files": len(files),
        }
    return data


def label(emu: Emulator, r: Repo, name: str) -> dict[str, Any]:
    ident = int(hashlib.sha256(f"{r.id}:{name}".encode()).hexdigest()[:8], 16)
    return {"id": ident, "node_id": node_id("Label", ident), "url": f"{emu.api_url}/repos/{r.full_name}/labels/{name}",
            "name": name, "description": "", "color": "ededed", "default": False}


def issue(emu: Emulator, r: Repo, i: Issue) -> dict[str, Any]:
    api = f"{emu.api_url}/repos/{r.full_name}"
    kind = "pull" if i.is_pull else "issues"
    data = {
        "id": i.id, "node_id": node_id("Issue", i.id), "url": f"{api}/issues/{i.number}",
        "repository_url": api, "labels_url": f"{api}/issues/{i.number}/labels{{/name}}",
        "comments_url": f"{api}/issues/{i.number}/comments", "events_url": f"{api}/issues/{i.number}/events",
        "html_url": f"{emu.web_url}/{r.full_name}/{kind}/{i.number}", "number": i.number, "state": i.state,
        "title": i.title, "body": i.body or None, "user": user(emu, i.user),
        "labels": [label(emu, r, n) for n in i.labels], "assignee": None, "assignees": [], "milestone": None,
        "locked": False, "active_lock_reason": None,
        "comments": sum(1 for c in r.comments.values() if c.number == i.number),
        "closed_at": iso(i.closed_at), "created_at": iso(i.created_at), "updated_at": iso(i.updated_at),
        "author_association": emu.association(r, i.user),
        "reactions": reaction_rollup(emu, [x for x in r.reactions if x.number == i.number],
                                     f"{api}/issues/{i.number}/reactions"),
    }
    if i.is_pull:
        html = f"{emu.web_url}/{r.full_name}/pull/{i.number}"
        data["pull_request"] = {"url": f"{api}/pulls/{i.number}", "html_url": html, "diff_url": html + ".diff",
                                "patch_url": html + ".patch", "merged_at": iso(i.merged_at)}
    return data


def review(emu: Emulator, r: Repo, v: Review) -> dict[str, Any]:
    api = f"{emu.api_url}/repos/{r.full_name}"
    html = f"{emu.web_url}/{r.full_name}/pull/{v.number}#pullrequestreview-{v.id}"
    return {
        "id": v.id, "node_id": node_id("PullRequestReview", v.id), "user": user(emu, v.user), "body": v.body,
        "state": v.state, "html_url": html, "pull_request_url": f"{api}/pulls/{v.number}",
        "_links": {"html": {"href": html}, "pull_request": {"href": f"{api}/pulls/{v.number}"}},
        "submitted_at": iso(v.submitted_at), "commit_id": v.commit_id,
        "author_association": emu.association(r, v.user),
    }


def reaction_rollup(emu: Emulator, reactions: list[Reaction], url: str) -> dict[str, Any]:
    keys = {"+1": "+1", "-1": "-1", "laugh": "laugh", "confused": "confused", "heart": "heart",
            "hooray": "hooray", "eyes": "eyes", "rocket": "rocket"}
    data: dict[str, Any] = {"url": url, "total_count": len(reactions)}
    for k in keys:
        data[k] = sum(1 for x in reactions if x.content == k)
    return data


def comment(emu: Emulator, r: Repo, c: Comment) -> dict[str, Any]:
    api = f"{emu.api_url}/repos/{r.full_name}"
    i = r.issues[c.number]
    kind = "pull" if i.is_pull else "issues"
    return {
        "id": c.id, "node_id": node_id("IssueComment", c.id), "url": f"{api}/issues/comments/{c.id}",
        "html_url": f"{emu.web_url}/{r.full_name}/{kind}/{c.number}#issuecomment-{c.id}", "body": c.body,
        "user": user(emu, c.user), "created_at": iso(c.created_at), "updated_at": iso(c.updated_at),
        "issue_url": f"{api}/issues/{c.number}", "author_association": emu.association(r, c.user),
        "reactions": reaction_rollup(emu, [x for x in r.reactions if x.comment_id == c.id],
                                     f"{api}/issues/comments/{c.id}/reactions"),
    }


def reaction(emu: Emulator, x: Reaction) -> dict[str, Any]:
    return {"id": x.id, "node_id": node_id("Reaction", x.id), "user": user(emu, x.user), "content": x.content,
            "created_at": iso(x.created_at)}


def app(emu: Emulator, app_id: int | None = None) -> dict[str, Any]:
    """The emulated App, or (app_id ACTIONS_APP_ID) GitHub Actions, whose token posted a check run."""
    if app_id == ACTIONS_APP_ID:
        return {
            "id": ACTIONS_APP_ID, "slug": ACTIONS_APP_SLUG, "node_id": node_id("Integration", ACTIONS_APP_ID),
            "owner": user(emu, "github"), "name": "GitHub Actions", "description": "Automate your workflow",
            "external_url": f"{emu.web_url}/features/actions", "html_url": f"{emu.web_url}/apps/{ACTIONS_APP_SLUG}",
            "created_at": iso(emu.started_at), "updated_at": iso(emu.started_at),
            "permissions": dict(emu.installation_permissions), "events": ["check_run", "pull_request", "push"],
        }
    a = emu.app
    return {
        "id": a.app_id, "slug": a.slug, "node_id": node_id("Integration", a.app_id), "client_id": a.client_id,
        "owner": user(emu, emu.app_owner), "name": a.name, "description": "git-native gates for LLM systems",
        "external_url": emu.web_url, "html_url": f"{emu.web_url}/apps/{a.slug}",
        "created_at": iso(emu.started_at), "updated_at": iso(emu.started_at),
        "permissions": dict(emu.installation_permissions),
        "events": ["pull_request", "pull_request_review", "issue_comment", "check_run", "deployment_status", "push"],
    }


def installation(emu: Emulator) -> dict[str, Any]:
    a = emu.app
    return {
        "id": a.installation_id, "account": user(emu, emu.app_owner), "repository_selection": "all",
        "access_tokens_url": f"{emu.api_url}/app/installations/{a.installation_id}/access_tokens",
        "repositories_url": f"{emu.api_url}/installation/repositories",
        "html_url": f"{emu.web_url}/settings/installations/{a.installation_id}", "app_id": a.app_id,
        "app_slug": a.slug, "target_id": emu.user_record(emu.app_owner).id,
        "target_type": emu.user_record(emu.app_owner).type, "permissions": dict(emu.installation_permissions),
        "events": app(emu)["events"], "created_at": iso(emu.started_at), "updated_at": iso(emu.started_at),
        "single_file_name": None, "suspended_by": None, "suspended_at": None,
    }


def check_suite(emu: Emulator, r: Repo, s: CheckSuite) -> dict[str, Any]:
    runs = [c for c in r.check_runs.values() if c.suite_id == s.id]
    status = "completed" if runs and all(c.status == "completed" for c in runs) else (
        "in_progress" if any(c.status != "queued" for c in runs) else "queued")
    conclusion = None
    if status == "completed":
        order = ["action_required", "cancelled", "timed_out", "failure", "neutral", "skipped", "stale", "success"]
        conclusion = min((c.conclusion or "success" for c in runs),
                         key=lambda x: order.index(x) if x in order else len(order))
    api = f"{emu.api_url}/repos/{r.full_name}"
    commit_info = emu.bare(r).commit(s.head_sha)
    head_commit = None
    if commit_info:
        head_commit = {"id": s.head_sha, "tree_id": commit_info.tree, "message": commit_info.message,
                       "timestamp": iso(commit_info.committer.date),
                       "author": {"name": commit_info.author.name, "email": commit_info.author.email},
                       "committer": {"name": commit_info.committer.name, "email": commit_info.committer.email}}
    return {
        "id": s.id, "node_id": node_id("CheckSuite", s.id), "head_branch": s.head_branch, "head_sha": s.head_sha,
        "status": status, "conclusion": conclusion, "url": f"{api}/check-suites/{s.id}", "before": None,
        "after": s.head_sha, "pull_requests": [], "app": app(emu, s.app_id), "repository": repo(emu, r),
        "created_at": iso(s.created_at), "updated_at": iso(s.created_at), "head_commit": head_commit,
        "latest_check_runs_count": len(runs), "check_runs_url": f"{api}/check-suites/{s.id}/check-runs",
        "rerequestable": True, "runs_rerequestable": True,
    }


def check_run(emu: Emulator, r: Repo, c: CheckRun) -> dict[str, Any]:
    api = f"{emu.api_url}/repos/{r.full_name}"
    out = c.output
    return {
        "id": c.id, "head_sha": c.head_sha, "node_id": node_id("CheckRun", c.id), "external_id": c.external_id,
        "url": f"{api}/check-runs/{c.id}", "html_url": f"{emu.web_url}/{r.full_name}/runs/{c.id}",
        "details_url": c.details_url, "status": c.status, "conclusion": c.conclusion,
        "started_at": iso(c.started_at), "completed_at": iso(c.completed_at), "name": c.name,
        "output": {"title": out.get("title"), "summary": out.get("summary"), "text": out.get("text"),
                   "annotations_count": len(c.annotations),
                   "annotations_url": f"{api}/check-runs/{c.id}/annotations"},
        "check_suite": {"id": c.suite_id}, "app": app(emu, c.app_id),
        # as on GitHub, pull requests from forks are never listed here
        "pull_requests": [pull_minimal(emu, r, i) for i in r.issues.values() if i.is_pull and i.state == "open"
                          and not i.head_repo and emu.pull_shas(r, i)[0] == c.head_sha],
    }


def pull_minimal(emu: Emulator, r: Repo, i: Issue) -> dict[str, Any]:
    head_sha, base_sha = emu.pull_shas(r, i)
    mini_repo = {"id": r.id, "url": f"{emu.api_url}/repos/{r.full_name}", "name": r.name}
    return {"id": i.id, "number": i.number, "url": f"{emu.api_url}/repos/{r.full_name}/pulls/{i.number}",
            "head": {"ref": i.head_ref, "sha": head_sha, "repo": mini_repo},
            "base": {"ref": i.base_ref, "sha": base_sha, "repo": mini_repo}}


def deployment(emu: Emulator, r: Repo, d: Deployment) -> dict[str, Any]:
    api = f"{emu.api_url}/repos/{r.full_name}"
    return {
        "url": f"{api}/deployments/{d.id}", "id": d.id, "node_id": node_id("Deployment", d.id), "sha": d.sha,
        "ref": d.ref, "task": d.task, "payload": d.payload, "original_environment": d.environment,
        "environment": d.environment, "description": d.description, "creator": user(emu, d.creator),
        "created_at": iso(d.created_at), "updated_at": iso(d.statuses[-1].created_at if d.statuses else d.created_at),
        "statuses_url": f"{api}/deployments/{d.id}/statuses", "repository_url": api,
        "transient_environment": d.transient_environment, "production_environment": d.production_environment,
    }


def deployment_status(emu: Emulator, r: Repo, d: Deployment, s: DeploymentStatus) -> dict[str, Any]:
    api = f"{emu.api_url}/repos/{r.full_name}"
    return {
        "url": f"{api}/deployments/{d.id}/statuses/{s.id}", "id": s.id, "node_id": node_id("DeploymentStatus", s.id),
        "state": s.state, "creator": user(emu, s.creator), "description": s.description,
        "environment": s.environment, "target_url": s.log_url, "created_at": iso(s.created_at),
        "updated_at": iso(s.created_at), "deployment_url": f"{api}/deployments/{d.id}", "repository_url": api,
        "environment_url": s.environment_url, "log_url": s.log_url,
    }
