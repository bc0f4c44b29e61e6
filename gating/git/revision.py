"""Revision readers that run git: one commit read from git objects, and the working tree on disk.

Both implement gating.system.revision.RevisionReader.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping
from pathlib import Path

from gating.errors import InputError
from gating.git.repository import CatFileBatch, Git

SYMLINK_MODE = "120000"


class OutsideTree(InputError):
    """A path that would read a file from outside the revision: a manifest or a dataset naming
    `../../etc/passwd`, or a directory that is a symbolic link out of the repository."""

    def __init__(self, path: str, reason: str, where: str):
        self.path = path
        super().__init__(f"{path!r} {reason}: gating reads only files inside the {where}")


def _outside(path: str) -> str | None:
    """Why `path` is not a path inside a revision, or None."""
    if path.startswith("/") or os.path.isabs(path):
        return "is an absolute path"
    if ".." in path.replace("\\", "/").split("/"):
        return "has a '..' component"
    return None


def _refuse_outside(paths: list[str], where: str) -> None:
    for p in paths:
        if (reason := _outside(p)) is not None:
            raise OutsideTree(p, reason, where)


class GitRevision:
    """Files of one commit, read from git objects without a checkout."""

    def __init__(self, git: Git, rev: str, resolved: tuple[str, str] | None = None,
                 batch: CatFileBatch | None = None):
        self.git = git
        self.rev = rev
        self.commit, self.tree = resolved or git.commits_and_trees([rev])[0]
        self._seeds: list[Mapping[str, str]] = []
        self.label = rev
        self._files: dict[str, str] | None = None
        self._links: set[str] = set()
        self._submodules: list[str] = []
        self._batch = batch

    @classmethod
    def many(cls, git: Git, revs: list[str]) -> list[GitRevision]:
        """Several revisions resolved by one `rev-parse` and read through one `cat-file` process."""
        pairs = git.commits_and_trees(revs)
        batch = git.batch()
        return [cls(git, rev, pair, batch) for rev, pair in zip(revs, pairs, strict=True)]

    def list_files(self) -> list[str]:
        return list(self.blob_ids())

    def blob_ids(self) -> dict[str, str]:
        """path -> git blob id, from one `git ls-tree`."""
        if self._files is None:
            entries = self.git.ls_tree(self.commit)
            self._files = {e.path: e.sha for e in entries if e.type == "blob"}
            self._links = {e.path for e in entries if e.mode == SYMLINK_MODE}
            self._submodules = [e.path for e in entries if e.type == "commit"]
        return self._files

    def submodules(self) -> list[str]:
        """Paths of the submodules (gitlinks) in this commit's tree."""
        self.blob_ids()
        return self._submodules

    def links(self, paths: Iterable[str]) -> dict[str, str]:
        """path -> link text of those paths that git stores as symbolic links."""
        self.blob_ids()
        found = [p for p in paths if p in self._links]
        return {p: os.fsdecode(b or b"") for p, b in self.read_many(found).items()} if found else {}

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes | None]:
        paths = list(paths)
        # `REV:../x` is relative to git's working directory, not the tree: never a file of this commit.
        _refuse_outside(paths, f"commit {self.label}")
        if self._batch is None or not self._batch.alive:
            self._batch = self.git.batch()
        # Ask by blob id where known: `commit:path` makes git walk the tree once per file.
        specs = {p: self._blob_id(p) or f"{self.commit}:{p}" for p in paths}
        got = self._batch.read(specs.values())
        return {p: got[specs[p]] for p in paths}

    def _blob_id(self, path: str) -> str | None:
        if self._files is not None:
            return self._files.get(path)
        for ids in self._seeds:
            if oid := ids.get(path):
                return oid
        return None

    def seed_ids(self, ids: Mapping[str, str]) -> None:
        """Blob ids already known (from a cached snapshot), so reading them needs no `ls-tree`."""
        self._seeds.append(ids)

    def close(self) -> None:
        if self._batch is not None:
            self._batch.close()
            self._batch = None


def _ancestors(parent: str) -> list[str]:
    """`a/b/c` -> `a`, `a/b`, `a/b/c`."""
    parts = parent.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class WorkTree:
    """Files as they are on disk now (tracked and untracked, minus ignored), uncommitted edits included."""

    label = "working tree"

    def __init__(self, root: str | os.PathLike[str], git: Git | None = None):
        self.root = Path(root)
        self.git = git
        self._submodules: list[str] = []
        self._conversion: bool | None = None
        self._in_repo: bool | None = None
        self._names: set[str] | None = None  # what `git ls-files` lists, tracked and untracked

    def _repo(self) -> bool:
        if self._in_repo is None:
            self._in_repo = self.git is not None and self.git.is_repo()
        return self._in_repo

    def _listed(self) -> set[str]:
        if self._names is None:
            assert self.git is not None
            out = self.git.run_bytes("ls-files", "-z", "--cached", "--others", "--exclude-standard")
            self._names = {p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p}
        return self._names

    def list_files(self) -> list[str]:
        if self._repo():
            names = self._listed()
            files = sorted(n for n in names if (self.root / n).is_file() or (self.root / n).is_symlink())
            self._submodules = sorted(n.rstrip("/") for n in set(names).difference(files) if (self.root / n).is_dir())
            return files
        files = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            for f in filenames:
                files.append(os.path.relpath(os.path.join(dirpath, f), self.root).replace(os.sep, "/"))
        return sorted(files)

    def submodules(self) -> list[str]:
        """Submodules (and other repositories) inside this one, as the last `list_files` found them."""
        return self._submodules

    def links(self, paths: Iterable[str]) -> dict[str, str]:
        """path -> link text of those paths that are symbolic links on disk."""
        paths = self._inside(paths)
        return {p: os.readlink(self.root / p) for p in paths if (self.root / p).is_symlink()}

    def _inside(self, paths: Iterable[str]) -> list[str]:
        """The paths, each checked to name a file inside the tree as git would: no `..`, not absolute,
        and no directory on the way that is a symbolic link (git stores the link, never the files
        behind it, and the link may lead anywhere on the machine)."""
        paths = list(paths)
        _refuse_outside(paths, f"{self.label} {self.root}")
        real_root = os.path.realpath(self.root)
        seen: set[str] = set()
        for p in paths:
            parent = posixpath.dirname(p)
            if not parent or parent in seen:
                continue
            if os.path.realpath(self.root / parent) != os.path.join(real_root, *parent.split("/")):
                link = next((d for d in _ancestors(parent) if (self.root / d).is_symlink()), None)
                reason = f"goes through the symbolic link {link!r}" if link else "resolves elsewhere on disk"
                raise OutsideTree(p, reason, f"{self.label} {self.root}")
            seen.add(parent)
        return paths

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        for p in self._inside(paths):
            fp = self.root / p
            if fp.is_symlink():
                # As git stores it: the link's target path, never the file it points at.
                out[p] = os.fsencode(os.readlink(fp))
            else:
                out[p] = fp.read_bytes() if fp.is_file() else None
        if self._converts():
            # As `git add` would store them, so a clean CRLF checkout has the snapshot of its commit.
            files = [p for p, b in out.items() if b is not None and "\n" not in p and not (self.root / p).is_symlink()]
            assert self.git is not None
            ids = self.git.clean_blobs(files)
            blobs = self.git.read_blobs(ids.values())
            out.update({p: blobs[oid] for p, oid in ids.items() if blobs.get(oid) is not None})
        return out

    def _converts(self) -> bool:
        """Whether git may store a file differently from its bytes on disk (core.autocrlf, attributes)."""
        if self._conversion is None:
            self._conversion = False
            if self._repo():
                assert self.git is not None
                config = (self.git.try_run("config", "--get-regexp", r"^core\.(autocrlf|attributesfile)$") or "").lower()
                attributes = any(n == ".gitattributes" or n.endswith("/.gitattributes") for n in self._listed())
                self._conversion = bool(
                    "autocrlf true" in config or "autocrlf input" in config or "attributesfile" in config
                    or attributes or (self.git.common_dir / "info" / "attributes").is_file())
        return self._conversion
