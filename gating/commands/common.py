"""Helpers the subcommands share: finding the repository and reading snapshots at revisions."""

from __future__ import annotations

import argparse
import posixpath
import re
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from gating.commands.cli import UsageError
from gating.git.repository import Git, GitError
from gating.git.revision import GitRevision, WorkTree
from gating.git.snapshot_store import DiskSnapshotCache
from gating.system.manifest import MANIFEST_PATH
from gating.system.revision import RevisionReader
from gating.system.snapshot import Snapshot, build_snapshot

WORKTREE = "WORKTREE"
STDOUT = "-"  # a report path that means standard output
_OWNER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+$")


def owner_name(value: str) -> str:
    """An argparse type for a GitHub repository, so a typo is refused before any request is made."""
    if not _OWNER_NAME.match(value) or value.split("/", 1)[1] in (".", ".."):
        raise argparse.ArgumentTypeError(f"{value!r} is not a GitHub repository; expected OWNER/NAME, "
                                         "e.g. acme/support-bot")
    return value


def repo(args: argparse.Namespace) -> Git:
    """The repository the command runs in; a `--config` it was given becomes a path from its root."""
    g = Git(getattr(args, "repo", "."))
    if not g.is_repo():
        raise GitError(["rev-parse"], 128, f"{g.root.resolve()} is not a git repository")
    toplevel = g.try_run("rev-parse", "--show-toplevel")
    top = Git(toplevel) if toplevel else Git(g.root.resolve()) if g.is_bare else Git(g.toplevel())
    if getattr(args, "config", None):
        args.config = manifest_path(top, args.config)
    return top


def manifest_path(g: Git, path: str) -> str:
    """`--config` as the path a revision's tree knows: `./gating.yml`, `a/../gating.yml` and the absolute
    path are one file (and so one snapshot digest); a path outside the repository is refused."""
    root = g.root.resolve()
    p = Path(path)
    rel: PurePath | None = p.resolve().relative_to(root) if p.is_absolute() and p.resolve().is_relative_to(root) else None
    if rel is None and not p.is_absolute():
        normal = PurePosixPath(posixpath.normpath(p.as_posix()))
        rel = None if normal.parts[:1] == ("..",) else normal
    if rel is None or rel.as_posix() in ("", "."):
        raise UsageError(f"--config {path}: the manifest must be a file inside the repository")
    return rel.as_posix()


def reader(g: Git, rev: str | None) -> RevisionReader:
    """A revision, or the working tree when rev is None or WORKTREE."""
    if rev is None or rev == WORKTREE:
        if g.is_bare:
            raise UsageError(f"{g.root.resolve()} is a bare repository, with no working tree to read: name a "
                             "revision (gating snapshot HEAD)")
        return WorkTree(g.root, g)
    return GitRevision(g, rev)


def readers(g: Git, revs: list[str | None]) -> list[RevisionReader]:
    """Readers for several revisions at once: commits share one `rev-parse` and one `cat-file`."""
    commits = [r for r in revs if r is not None and r != WORKTREE]
    opened = dict(zip(commits, GitRevision.many(g, commits), strict=True)) if commits else {}
    return [opened[r] if r in opened else reader(g, r) for r in revs]


def snapshot_at(g: Git, rev: str | None, manifest_path: str = MANIFEST_PATH) -> Snapshot:
    return build_snapshot(reader(g, rev), manifest_path, DiskSnapshotCache.for_repo(g))


def default_base(g: Git) -> str:
    """Merge-base of HEAD and the default branch, as a pull request would be compared."""
    branch = g.default_branch()
    if branch is None:
        raise UsageError("no default branch found (origin/HEAD, main or master); pass BASE")
    return g.merge_base("HEAD", branch)


def app_get(app: str, path: str, params: dict[str, Any], token: str, timeout: float) -> tuple[int, dict[str, Any]]:
    """GET one of the App's token-protected JSON endpoints: (status, body); a body that is not JSON is
    kept as `{"error": <its start>}` so the caller can say what the App answered."""
    import httpx

    try:
        resp = httpx.get(app.rstrip("/") + path, params=params, headers={"Authorization": f"Bearer {token}"},
                         timeout=timeout)
    except httpx.HTTPError as e:
        raise UsageError(f"cannot reach the App at {app}: {e}") from None
    try:
        body = resp.json()
    except ValueError:
        body = {"error": resp.text[:200]}
    return resp.status_code, body if isinstance(body, dict) else {"error": body}
