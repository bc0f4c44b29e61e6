"""Helpers the subcommands share: finding the repository and reading snapshots at revisions."""

from __future__ import annotations

import argparse

from gating.git import Git, GitError
from gating.manifest import MANIFEST_PATH, Manifest
from gating.revision import GitRevision, RevisionReader, WorkTree
from gating.snapshot import Snapshot, build_snapshot
from gating.snapshot_cache import DiskSnapshotCache

WORKTREE = "WORKTREE"


def repo(args: argparse.Namespace) -> Git:
    g = Git(getattr(args, "repo", "."))
    if not g.is_repo():
        raise GitError(["rev-parse"], 128, f"{g.root.resolve()} is not a git repository")
    return Git(g.toplevel())


def reader(g: Git, rev: str | None) -> RevisionReader:
    """A revision, or the working tree when rev is None or WORKTREE."""
    if rev is None or rev == WORKTREE:
        return WorkTree(g.root, g)
    return GitRevision(g, rev)


def readers(g: Git, revs: list[str | None]) -> list[RevisionReader]:
    """Readers for several revisions at once: commits share one `rev-parse` and one `cat-file`."""
    commits = [r for r in revs if r is not None and r != WORKTREE]
    opened = dict(zip(commits, GitRevision.many(g, commits), strict=True)) if commits else {}
    return [opened[r] if r in opened else reader(g, r) for r in revs]


def snapshot_at(g: Git, rev: str | None, manifest_path: str = MANIFEST_PATH) -> Snapshot:
    return build_snapshot(reader(g, rev), manifest_path, DiskSnapshotCache.for_repo(g))


def empty_snapshot(name: str = "(none)") -> Snapshot:
    """The system of a revision that has no manifest yet: everything at head is 'added'."""
    data = {
        "version": 1,
        "name": name,
        "manifest": None,
        "components": {k: {} for k in ("models", "prompts", "retrieval", "orchestration", "tools", "guardrails")},
        "evals": {},
        "approvals": [],
        "rollback": {},
        "files": {},
    }
    return Snapshot(data=data, manifest=Manifest({"version": 1, "name": name, "components": {}}))


def default_base(g: Git) -> str:
    """Merge-base of HEAD and the default branch, as a pull request would be compared."""
    branch = g.default_branch()
    if branch is None:
        raise GitError(["merge-base"], 128, "no default branch found (origin/HEAD, main or master); pass BASE")
    return g.merge_base("HEAD", branch)
