"""Rollback: the repository, a commit prefix, the restore's pull request, and the replies.

The restore itself is a branch and a commit written through gating/github/gitdb.py. The rollback
handlers write through these; each call is safe to repeat, so a redelivered or concurrent request
meets the branch and pull request the first one made.
"""

from __future__ import annotations

from typing import Any, cast

from gating.github.client import GitHubError, raw
from gating.github.limits import fit, fit_title
from gating.github.repo import Repo, _q


def repository(repo: Repo) -> dict[str, Any]:
    return cast(dict[str, Any], repo.client.get(repo.path))


def commit_sha(repo: Repo, ref: str) -> str | None:
    """The full SHA a commit prefix (or ref) names in the repository, or None when there is none."""
    try:
        return repo.client.call(lambda: str(repo.gh.get_commit(ref).raw_data["sha"]),  # PyGithub quotes the ref
                                f"GET {repo.path}/commits/{_q(ref)}")
    except GitHubError as e:
        if e.status in (404, 422):  # unknown, or an ambiguous prefix
            return None
        raise


def open_pull_for(repo: Repo, branch: str) -> dict[str, Any] | None:
    owner = repo.full_name.split("/", 1)[0]
    pulls = repo.client.items(repo.gh.get_pulls(state="open", head=f"{owner}:{branch}"), limit=1,
                              what=f"GET {repo.path}/pulls")
    return next(iter(pulls), None)


def create_pull(repo: Repo, title: str, head: str, base: str, body: str) -> tuple[dict[str, Any], bool]:
    """(pull request, created); an open pull request from `head` already there is returned as it is."""
    try:  # a retry after a failure that came after the write finds the pull request by its head branch
        made = repo.client.create_with(
            lambda: raw(repo.gh.create_pull(base=base, head=head, title=fit_title(title), body=fit(body))),
            lambda: open_pull_for(repo, head), f"POST {repo.path}/pulls")
        return made, True
    except GitHubError as e:
        if e.status != 422:
            raise
        existing = open_pull_for(repo, head)
        if existing is None:
            raise
        return existing, False


def comment(repo: Repo, number: int, body: str) -> dict[str, Any]:
    return repo.create_comment(number, body)


def react(repo: Repo, comment_id: int, content: str) -> None:
    """A reaction (eyes, rocket, confused, ...) on an issue comment; reacting twice is harmless."""
    repo.client.call(lambda: repo.issue_comment(comment_id).create_reaction(content),
                     f"POST {repo.path}/issues/comments/{comment_id}/reactions")


def open_issue(repo: Repo, title: str, body: str) -> dict[str, Any]:
    """A new issue (a failed rollback drill); the title and body cut to GitHub's limits."""
    return cast(dict[str, Any], repo.client.request("POST", f"{repo.path}/issues",
                                                    json={"title": fit_title(title), "body": fit(body)}))


def open_issue_marked(repo: Repo, mark: str, *, bots_only: bool = True, limit: int = 300) -> dict[str, Any] | None:
    """The newest open issue with `mark` in its body, among the newest `limit` open ones; `bots_only`:
    opened by an App (a bot), as the App's own are, since a person's issue is not a bot's whatever its words."""
    for issue in repo.client.paginate(f"{repo.path}/issues", limit=limit, state="open"):
        if issue.get("pull_request") or mark not in (issue.get("body") or ""):
            continue
        if not bots_only or (issue.get("user") or {}).get("type") == "Bot":
            return cast(dict[str, Any], issue)
    return None


def report_issue(repo: Repo, mark: str, title: str, body: str, again: str, *,
                 bots_only: bool = True) -> tuple[dict[str, Any], bool]:
    """An issue for something that may keep happening (a drill failing every week): while the last one
    is open, `again` and the body are a comment on it; closed (the team thought it fixed), a new
    issue. Answers the issue and whether it is new."""
    known = open_issue_marked(repo, mark, bots_only=bots_only)
    if known is not None:
        comment(repo, int(known["number"]), f"{again}\n\n{body}")
        return known, False
    return open_issue(repo, title, f"{body}\n{mark}\n"), True
