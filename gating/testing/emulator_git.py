"""Git Database operations on an emulated repository's bare git repository.

Every object the API creates is a real git object written by git itself (through gating.git.repository.Git), so
a clone sees exactly what the API wrote, and the API sees exactly what a push wrote.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gating.git.repository import Git, GitError

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
SHA_SPEC = re.compile(r"^[0-9a-f]{40}(\.\.[0-9a-f]{40})?$")
F = TypeVar("F", bound=Callable[..., Any])


def content_addressed(fn: F) -> F:
    """Memoise a read whose arguments are all full SHAs: git objects never change, so neither does
    the answer (a None answer is not kept: the object may be written later)."""

    @functools.wraps(fn)
    def wrapper(self: BareRepo, *args: Any, **kwargs: Any) -> Any:
        if not all(isinstance(a, str) and SHA_SPEC.match(a) for a in args):
            return fn(self, *args, **kwargs)
        key = (fn.__name__, args, tuple(sorted(kwargs.items())))
        if key in self._memo:
            value = self._memo[key]
        else:
            value = fn(self, *args, **kwargs)
            if value is None:
                return None
            if len(self._memo) > 4096:
                self._memo.clear()
            self._memo[key] = value
        return list(value) if isinstance(value, list) else value

    return wrapper  # type: ignore[return-value]
LOG_FORMAT = "%H%x00%T%x00%P%x00%an%x00%ae%x00%at%x00%cn%x00%ce%x00%ct%x00%B%x1e"


@dataclass(frozen=True)
class Person:
    name: str
    email: str
    date: int  # unix seconds


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    tree: str
    parents: tuple[str, ...]
    author: Person
    committer: Person
    message: str


@dataclass(frozen=True)
class FileChange:
    filename: str
    status: str  # added | removed | modified | renamed
    additions: int
    deletions: int
    sha: str | None
    patch: str | None
    previous_filename: str | None = None


class RefConflict(Exception):
    """The ref moved (or did not exist / already existed) under a compare-and-swap update."""


class BareRepo:
    """A bare repository and the operations the REST handlers need."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.git = Git(self.path)
        self._memo: dict[tuple, Any] = {}

    # -- objects ----------------------------------------------------------------------------------

    @content_addressed
    def object_type(self, sha: str) -> str | None:
        return self.git.try_run("cat-file", "-t", sha)

    def write_blob(self, data: bytes) -> str:
        return self.git.hash_object(data)

    def read_blob(self, sha: str) -> bytes | None:
        if self.object_type(sha) != "blob":
            return None
        try:
            return self.git.run_bytes("cat-file", "blob", sha)
        except GitError:  # listed once, gone from the object store since: GitHub answers 404 for it
            return None

    @content_addressed
    def read_tree(self, sha: str, recursive: bool = False) -> list[tuple[str, str, str, int | None, str]] | None:
        """(mode, type, sha, size, path) entries, or None when `sha` names no tree (or commit)."""
        typ = self.object_type(sha)
        if typ not in ("tree", "commit"):
            return None
        args = ["ls-tree", "-l", "-z"] + (["-r", "-t"] if recursive else []) + [sha]
        out = self.git.run_bytes(*args)
        entries = []
        for rec in out.split(b"\0"):
            if not rec:
                continue
            meta, path = rec.split(b"\t", 1)
            mode, otype, osha, size = meta.decode().split()
            # "-" for a tree; "BAD" for a blob gone from the object store (listed with no size then)
            entries.append((mode, otype, osha, int(size) if size.isdigit() else None, path.decode("utf-8", "replace")))
        return entries

    @content_addressed
    def tree_of(self, commit: str) -> str:
        return self.git.run("rev-parse", f"{commit}^{{tree}}")

    def _flat(self, tree: str) -> dict[str, tuple[str, str]]:
        """path -> (mode, sha) for every blob and gitlink under `tree`."""
        out = self.git.run_bytes("ls-tree", "-r", "-z", "--full-tree", tree)
        flat = {}
        for rec in out.split(b"\0"):
            if rec:
                meta, path = rec.split(b"\t", 1)
                mode, _t, sha = meta.decode().split()
                flat[path.decode("utf-8", "surrogateescape")] = (mode, sha)
        return flat

    def write_tree(self, entries: list[dict], base_tree: str | None) -> str:
        """GitHub's create-tree: entries with path/mode/type and sha (None deletes) or content; paths
        may be nested (`a/b/c.txt`), a tree entry replaces a whole directory."""
        flat = self._flat(base_tree) if base_tree else {}
        for e in entries:
            path, mode = e["path"].strip("/"), e["mode"]
            sha = self.write_blob(e["content"].encode("utf-8")) if e.get("content") is not None else e.get("sha")
            parents = {"/".join(path.split("/")[:k]) for k in range(1, path.count("/") + 1)}
            for p in [p for p in flat if p == path or p.startswith(path + "/") or p in parents]:
                del flat[p]  # the entry itself, what was under it, and files where its folders go
            if sha is None:
                continue
            if mode == "040000":
                flat.update({f"{path}/{p}": v for p, v in self._flat(sha).items()})
            else:
                flat[path] = (mode, sha)
        with tempfile.TemporaryDirectory(prefix="emu-index-") as tmp:
            env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
            lines = "".join(f"{mode} {sha}\t{path}\n" for path, (mode, sha) in sorted(flat.items()))
            self.git.run_bytes("update-index", "--add", "-z", "--index-info",
                               input=lines.replace("\n", "\0").encode("utf-8", "surrogateescape"), env=env)
            return self.git.run("write-tree", env=env)

    def tree_from_dir(self, directory: Path) -> str:
        """The tree of every file under `directory`, honouring its .gitignore files."""
        with tempfile.TemporaryDirectory(prefix="emu-index-") as tmp:
            env = {"GIT_INDEX_FILE": os.path.join(tmp, "index"), "GIT_DIR": str(self.path),
                   "GIT_WORK_TREE": str(Path(directory).resolve())}
            work = Git(directory)
            work.run("add", "-A", env=env)
            return work.run("write-tree", env=env)

    def write_commit(self, tree: str, parents: list[str], message: str, author: Person,
                     committer: Person) -> str:
        args = ["commit-tree", tree]
        for p in parents:
            args += ["-p", p]
        args += ["-F", "-"]
        env = {
            "GIT_AUTHOR_NAME": author.name, "GIT_AUTHOR_EMAIL": author.email,
            "GIT_AUTHOR_DATE": f"{author.date} +0000",
            "GIT_COMMITTER_NAME": committer.name, "GIT_COMMITTER_EMAIL": committer.email,
            "GIT_COMMITTER_DATE": f"{committer.date} +0000",
        }
        return self.git.run_bytes(*args, input=message.encode("utf-8"), env=env).decode().strip()

    @content_addressed
    def commits(self, *revs: str, max_count: int | None = None, paths: tuple[str, ...] = (),
                no_walk: bool = False) -> list[CommitInfo]:
        args = ["log", f"--format={LOG_FORMAT}"]
        if no_walk:
            args.append("--no-walk=unsorted")
        if max_count is not None:
            args.append(f"--max-count={max_count}")
        args += list(revs)
        args += ["--", *paths]
        out = self.git.run_bytes(*args).decode("utf-8", "replace")
        infos = []
        for rec in out.split("\x1e"):
            rec = rec.lstrip("\n")
            if not rec:
                continue
            sha, tree, parents, an, ae, at, cn, ce, ct, body = rec.split("\x00", 9)
            infos.append(CommitInfo(sha, tree, tuple(parents.split()), Person(an, ae, int(at)),
                                    Person(cn, ce, int(ct)), body))
        return infos

    @content_addressed
    def commit(self, sha: str) -> CommitInfo | None:
        if self.object_type(sha) != "commit":
            return None
        return self.commits(sha, no_walk=True)[0]

    def resolve_commit(self, rev: str) -> str | None:
        """A branch, tag, full ref or (abbreviated) SHA to a commit SHA."""
        if not rev or rev.startswith("-"):
            return None
        for cand in (f"refs/heads/{rev}", f"refs/tags/{rev}", rev):
            sha = self.git.resolve(cand)
            if sha:
                return sha
        return None

    # -- refs -------------------------------------------------------------------------------------

    def refs(self, prefix: str = "refs/") -> list[tuple[str, str, str]]:
        """(refname, sha, object type) for every ref starting with `prefix` (a plain string prefix)."""
        out = self.git.run("for-each-ref", "--format=%(refname) %(objectname) %(objecttype)")
        rows = [tuple(line.split(" ")) for line in out.splitlines() if line]
        return [r for r in rows if r[0].startswith(prefix)]  # type: ignore[misc]

    def refs_of(self, *names: str) -> dict[str, str]:
        """Several exact ref names to SHAs in one git call (missing ones are left out)."""
        out = self.git.run("for-each-ref", "--format=%(refname) %(objectname)", *names)
        found = dict(line.split(" ", 1) for line in out.splitlines() if line)
        return {n: found[n] for n in names if n in found}

    def ref(self, name: str) -> str | None:
        out = self.git.try_run("rev-parse", "--verify", "--quiet", name)
        return out or None

    def update_ref(self, name: str, new: str, old: str | None) -> None:
        """Compare-and-swap: `old` None means the ref must not exist yet."""
        try:
            self.git.run("update-ref", name, new, old or "0" * 40)
        except GitError as e:
            raise RefConflict(e.stderr) from e

    def delete_ref(self, name: str, old: str) -> None:
        try:
            self.git.run("update-ref", "-d", name, old)
        except GitError as e:
            raise RefConflict(e.stderr) from e

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        return self.git.try_run("merge-base", "--is-ancestor", ancestor, descendant) is not None

    @content_addressed
    def merge_base(self, a: str, b: str) -> str | None:
        return self.git.try_run("merge-base", a, b) or None

    @content_addressed
    def count(self, rev_range: str) -> int:
        return int(self.git.run("rev-list", "--count", rev_range))

    def merge_tree(self, base: str, head: str) -> str | None:
        """The tree of merging head into base, or None on conflicts (git merge-tree --write-tree)."""
        try:
            out = self.git.run("merge-tree", "--write-tree", "--no-messages", base, head)
        except GitError:
            return None
        return out.splitlines()[0].strip()

    # -- diffs ------------------------------------------------------------------------------------

    @content_addressed
    def diff(self, base: str, head: str) -> list[FileChange]:
        """The files changed from `base` to `head`, as GitHub's pull/compare file lists show them."""
        raw = self.git.run_bytes("diff", "--raw", "-z", "-M", "--no-abbrev", base, head).decode("utf-8", "replace")
        numstat = self.git.run_bytes("diff", "--numstat", "-z", "-M", base, head).decode("utf-8", "replace")
        patch = self.git.run_bytes("diff", "-M", "--no-color", base, head).decode("utf-8", "replace")
        fields = raw.split("\0")
        entries: list[tuple[str, str, str | None, str | None]] = []
        i = 0
        while i < len(fields) and fields[i]:
            meta = fields[i].split()
            letter, new_sha = meta[4][0], meta[3]
            if letter in "RC":
                old_path, new_path = fields[i + 1], fields[i + 2]
                i += 3
            else:
                old_path, new_path = None, fields[i + 1]
                i += 2
            entries.append((letter, new_path, old_path, None if set(new_sha) == {"0"} else new_sha))
        counts: list[tuple[int, int]] = []
        ns = numstat.split("\0")
        j = 0
        while j < len(ns) and ns[j]:
            added, deleted, name = ns[j].split("\t", 2)
            counts.append((0 if added == "-" else int(added), 0 if deleted == "-" else int(deleted)))
            j += 3 if name == "" else 1
        chunks = re.split(r"(?m)^diff --git ", patch)[1:]
        result = []
        for k, (letter, path, old, sha) in enumerate(entries):
            status = {"A": "added", "D": "removed", "R": "renamed", "C": "copied"}.get(letter, "modified")
            adds, dels = counts[k] if k < len(counts) else (0, 0)
            chunk = chunks[k] if k < len(chunks) else ""
            hunk_at = chunk.find("\n@@")
            body = chunk[hunk_at + 1:].rstrip("\n") if hunk_at >= 0 else None
            result.append(FileChange(path, status, adds, dels, sha, body, old))
        return result

    # -- smart HTTP -------------------------------------------------------------------------------

    @staticmethod
    def http_backend(project_root: Path, env: dict[str, str], body: bytes) -> bytes:
        """Run `git http-backend` as a CGI and return its raw output (headers and body)."""
        return Git(project_root).run_bytes("http-backend", input=body, env=env, check=False)


def init_bare(path: Path, default_branch: str) -> BareRepo:
    from gating.git.repository import init_repo

    init_repo(path, bare=True, branch=default_branch)
    repo = BareRepo(path)
    repo.git.run("config", "http.receivepack", "true")
    repo.git.run("config", "core.logAllRefUpdates", "false")
    repo.git.run("config", "user.name", "gating-emulator")  # for tests that write into the bare repo
    repo.git.run("config", "user.email", "emulator@example.invalid")
    return repo
