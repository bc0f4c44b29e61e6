"""The seam between "a revision of the repository" and the code that reads it.

Snapshots, evals and rollback plans read files through a `RevisionReader`, so the same code runs on
a git commit (one `git cat-file --batch` per read), the working tree, or an in-memory mapping.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from gating.git import CatFileBatch, Git, GitError


class RevisionReader(Protocol):
    label: str

    def list_files(self) -> list[str]: ...

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes | None]: ...


class GitRevision:
    """Files of one commit, read from git objects without a checkout."""

    def __init__(self, git: Git, rev: str):
        self.git = git
        self.rev = rev
        if rev.startswith("-"):
            raise GitError(["rev-parse", rev], 128, f"unknown revision {rev!r}")
        out = (git.try_run("rev-parse", f"{rev}^{{commit}}", f"{rev}^{{tree}}", "--") or "").split()[:2]
        if len(out) != 2:
            git.rev_parse(rev)  # raises the usual "unknown revision" error
        self.commit, self.tree = out
        self._known: dict[str, str] = {}
        self.label = rev
        self._files: dict[str, str] | None = None
        self._batch: CatFileBatch | None = None

    def list_files(self) -> list[str]:
        return list(self.blob_ids())

    def blob_ids(self) -> dict[str, str]:
        """path -> git blob id, from one `git ls-tree`."""
        if self._files is None:
            self._files = {e.path: e.sha for e in self.git.ls_tree(self.commit) if e.type == "blob"}
        return self._files

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes | None]:
        paths = list(paths)
        if self._batch is None:
            self._batch = self.git.batch()
        # Ask by blob id where known: `commit:path` makes git walk the tree once per file.
        ids = self._files if self._files is not None else self._known
        specs = {p: ids.get(p) or f"{self.commit}:{p}" for p in paths}
        got = self._batch.read(specs.values())
        return {p: got[specs[p]] for p in paths}

    def seed_ids(self, ids: dict[str, str]) -> None:
        """Blob ids already known (from a cached snapshot), so reading them needs no `ls-tree`."""
        self._known.update(ids)

    def close(self) -> None:
        if self._batch is not None:
            self._batch.close()
            self._batch = None


class WorkTree:
    """Files as they are on disk now (tracked and untracked, minus ignored), uncommitted edits included."""

    label = "working tree"

    def __init__(self, root: str | os.PathLike[str], git: Git | None = None):
        self.root = Path(root)
        self.git = git

    def list_files(self) -> list[str]:
        if self.git is not None and self.git.is_repo():
            out = self.git.run_bytes("ls-files", "-z", "--cached", "--others", "--exclude-standard")
            names = {p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p}
            return sorted(n for n in names if (self.root / n).is_file() or (self.root / n).is_symlink())
        files = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            for f in filenames:
                files.append(os.path.relpath(os.path.join(dirpath, f), self.root).replace(os.sep, "/"))
        return sorted(files)

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        for p in paths:
            fp = self.root / p
            if fp.is_symlink():
                # As git stores it: the link's target path, never the file it points at.
                out[p] = os.fsencode(os.readlink(fp))
            else:
                out[p] = fp.read_bytes() if fp.is_file() else None
        return out


class MemoryRevision:
    """A revision held in a dict, for tests and for plans computed before they are committed."""

    def __init__(self, files: Mapping[str, bytes], label: str = "memory"):
        self.files = dict(files)
        self.label = label

    def list_files(self) -> list[str]:
        return sorted(self.files)

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes | None]:
        return {p: self.files.get(p) for p in paths}
