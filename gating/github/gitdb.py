"""Refs, blobs, trees and commits over the Git Database API, with no clone.

A rollback's restore branch and commit (gating/github/rollback.py's callers) and the audit notes ref
(gating/github/notes.py) are both written through these. PyGithub's typed methods where they take
what we hold; by path (its requester) where they would want fetched objects for SHAs we already have.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from github.GitRef import GitRef

from gating.github.client import GitHubError, NotFound, raw
from gating.github.repo import Repo


def ref_sha(repo: Repo, ref: str) -> str | None:
    """The commit `refs/<ref>` points at (ref like "heads/main"), or None when the ref does not exist."""
    try:  # get_git_ref is lazy: completing it is the one GET
        return repo.client.call(lambda: str(repo.gh.get_git_ref(ref).raw_data["object"]["sha"]),
                                f"GET {repo.path}/git/ref/{quote(ref, safe='/')}")
    except NotFound:
        return None


def commit_tree(repo: Repo, sha: str) -> str:
    return str(git_commit(repo, sha)["tree"]["sha"])


def git_commit(repo: Repo, sha: str) -> dict[str, Any]:
    return repo.client.call(lambda: raw(repo.gh.get_git_commit(sha)), f"GET {repo.path}/git/commits/{sha}")


def create_blob(repo: Repo, content_base64: str) -> str:
    return repo.client.call(lambda: repo.gh.create_git_blob(content_base64, "base64").sha,
                            f"POST {repo.path}/git/blobs")


def create_tree(repo: Repo, base_tree: str | None, entries: list[dict[str, Any]]) -> str:
    """A tree on top of `base_tree`; an entry with "sha": None removes that path. By path: PyGithub's
    create_git_tree takes the base tree as a fetched GitTree, one more request for a SHA we hold."""
    body: dict[str, Any] = {"tree": entries}
    if base_tree:
        body["base_tree"] = base_tree
    return str(repo.client.request("POST", f"{repo.path}/git/trees", json=body)["sha"])


def create_commit(repo: Repo, message: str, tree: str, parents: list[str],
                  author: dict[str, str] | None = None) -> str:
    """By path: PyGithub's create_git_commit takes the tree and the parents as fetched objects."""
    body: dict[str, Any] = {"message": message, "tree": tree, "parents": parents}
    if author:
        body["author"] = body["committer"] = author
    return str(repo.client.request("POST", f"{repo.path}/git/commits", json=body)["sha"])


def create_ref(repo: Repo, ref: str, sha: str) -> bool:
    """Create `refs/<ref>`; False when it exists already (someone else made it first)."""
    try:  # a retry after a failure that came after the write finds the ref there, at `sha`
        repo.client.create_with(lambda: raw(repo.gh.create_git_ref(f"refs/{ref}", sha)),
                                lambda: {"ref": f"refs/{ref}"} if ref_sha(repo, ref) == sha else None,
                                f"POST {repo.path}/git/refs")
    except GitHubError as e:
        if e.status == 422 and "already exists" in str(e):
            return False
        raise
    return True


def update_ref(repo: Repo, ref: str, sha: str, force: bool = False) -> None:
    """Move `refs/<ref>`; without force GitHub refuses anything but a fast-forward (422)."""
    path = f"{repo.path}/git/refs/{quote(ref, safe='/')}"
    # a lazy GitRef at the update's path (get_git_ref's is the read path, /git/ref/): one PATCH, no GET
    repo.client.call(lambda: GitRef(repo.gh.requester, url=path).edit(sha, force=force), f"PATCH {path}")


def delete_ref(repo: Repo, ref: str) -> None:
    """Delete `refs/<ref>`; one already gone is not an error (a retry after the delete went through)."""
    path = f"{repo.path}/git/refs/{quote(ref, safe='/')}"
    try:
        repo.client.request("DELETE", path)
    except GitHubError as e:
        if e.status not in (404, 422):
            raise
