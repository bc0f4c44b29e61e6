"""Refs, trees and commits over the Git Database API, with no clone.

A rollback's restore branch and commit (gating/github/rollback.py's callers) and the audit notes ref
(gating/github/notes.py) are both written through these.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from gating.github.client import GitHubError, NotFound
from gating.github.repo import Repo


def ref_sha(repo: Repo, ref: str) -> str | None:
    """The commit `refs/<ref>` points at (ref like "heads/main"), or None when the ref does not exist."""
    try:
        return repo.client.get(f"{repo.path}/git/ref/{quote(ref, safe='/')}")["object"]["sha"]
    except NotFound:
        return None


def commit_tree(repo: Repo, sha: str) -> str:
    return repo.client.get(f"{repo.path}/git/commits/{sha}")["tree"]["sha"]


def create_tree(repo: Repo, base_tree: str, entries: list[dict[str, Any]]) -> str:
    """A tree on top of `base_tree`; an entry with "sha": None removes that path."""
    body = {"base_tree": base_tree, "tree": entries}
    return repo.client.request("POST", f"{repo.path}/git/trees", json=body).json()["sha"]


def create_commit(repo: Repo, message: str, tree: str, parents: list[str]) -> str:
    body = {"message": message, "tree": tree, "parents": parents}
    return repo.client.request("POST", f"{repo.path}/git/commits", json=body).json()["sha"]


def create_ref(repo: Repo, ref: str, sha: str) -> bool:
    """Create `refs/<ref>`; False when it exists already (someone else made it first)."""
    try:  # a retry after a failure that came after the write finds the ref there, at `sha`
        repo.client.create(f"{repo.path}/git/refs", {"ref": f"refs/{ref}", "sha": sha},
                           lambda: {"ref": f"refs/{ref}"} if ref_sha(repo, ref) == sha else None)
    except GitHubError as e:
        if e.status == 422 and "already exists" in str(e):
            return False
        raise
    return True


def update_ref(repo: Repo, ref: str, sha: str, force: bool = False) -> None:
    """Move `refs/<ref>`; without force GitHub refuses anything but a fast-forward (422)."""
    repo.client.request("PATCH", f"{repo.path}/git/refs/{quote(ref, safe='/')}", json={"sha": sha, "force": force})
