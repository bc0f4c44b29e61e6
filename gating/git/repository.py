"""The one place that runs git.

Everything goes through real `git` subprocesses. Reading many files at one revision uses a single
`git cat-file --batch` process, so a snapshot of thousands of files costs one fork, not thousands.
"""

from __future__ import annotations

import os
import subprocess
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO

from gating.errors import GatingError

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


class GitError(GatingError):
    """A git command failed; the message carries git's own stderr. Exit 2: what fails is most often
    a revision or path the user named (an unknown revision, a shallow clone)."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str):
        self.args_ = list(args)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"git {' '.join(args)} failed ({returncode}): {self.stderr}")


@dataclass(frozen=True)
class TreeEntry:
    mode: str
    type: str
    sha: str
    path: str


class Git:
    """A repository on disk, driven by subprocess git."""

    def __init__(self, root: str | os.PathLike[str], env: dict[str, str] | None = None):
        self.root = Path(root)
        self.env = env

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("GIT_TERMINAL_PROMPT", "0")
        if self.env:
            env.update(self.env)
        if extra:
            env.update(extra)
        return env

    def run_bytes(
        self,
        *args: str,
        input: bytes | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> bytes:
        proc = subprocess.run(
            ["git", *args],
            cwd=self.root,
            input=input,
            capture_output=True,
            env=self._env(env),
        )
        if check and proc.returncode != 0:
            raise GitError(args, proc.returncode, proc.stderr.decode("utf-8", "replace"))
        return proc.stdout

    def run(self, *args: str, input: str | None = None, check: bool = True, env: dict[str, str] | None = None) -> str:
        data = self.run_bytes(*args, input=input.encode() if input is not None else None, check=check, env=env)
        return data.decode("utf-8", "replace").strip()

    def try_run(self, *args: str, env: dict[str, str] | None = None) -> str | None:
        """Run and return stdout, or None when git exits non-zero (a missing ref, say)."""
        proc = subprocess.run(["git", *args], cwd=self.root, capture_output=True, env=self._env(env))
        if proc.returncode != 0:
            return None
        return proc.stdout.decode("utf-8", "replace").strip()

    # -- revisions -------------------------------------------------------------------------------

    def is_repo(self) -> bool:
        return self.try_run("rev-parse", "--git-dir") is not None

    def toplevel(self) -> Path:
        return Path(self.run("rev-parse", "--show-toplevel"))

    @cached_property
    def is_bare(self) -> bool:
        """A bare repository has objects and refs but no working tree."""
        return self.try_run("rev-parse", "--is-bare-repository") == "true"

    def rev_parse(self, rev: str) -> str:
        out = self.try_run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        if not out:
            shallow = self.try_run("rev-parse", "--is-shallow-repository") == "true"
            raise GitError(["rev-parse", rev], 128, f"unknown revision {rev!r}" + (
                " (this is a shallow clone, so older commits are not here: fetch them, e.g. "
                "git fetch --deepen=50 or git fetch --unshallow)" if shallow else ""))
        return out

    def resolve(self, rev: str) -> str | None:
        return self.try_run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}") or None

    @cached_property
    def common_dir(self) -> Path:
        """The git directory that all worktrees of this repository share."""
        return self._absolute(self.run("rev-parse", "--git-common-dir"))

    def _absolute(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def commits_and_trees(self, revs: Sequence[str]) -> list[tuple[str, str]]:
        """(commit, tree) of each revision from one `git rev-parse`, which also tells `common_dir`.

        Reading two revisions then costs one process instead of one each (plus one for the git dir).
        """
        for rev in revs:
            if rev.startswith("-"):
                raise GitError(["rev-parse", rev], 128, f"unknown revision {rev!r}")
        specs = [s for rev in revs for s in (f"{rev}^{{commit}}", f"{rev}^{{tree}}")]
        out = (self.try_run("rev-parse", "--git-common-dir", *specs, "--") or "").splitlines()
        if out[-1:] == ["--"]:
            out.pop()
        if len(out) != 1 + len(specs):
            for rev in revs:
                self.rev_parse(rev)  # raises the usual "unknown revision" error for the first bad one
            raise GitError(["rev-parse", *revs], 128, "git rev-parse gave unexpected output")
        self.__dict__.setdefault("common_dir", self._absolute(out[0]))
        return [(out[1 + 2 * i], out[2 + 2 * i]) for i in range(len(revs))]

    def merge_base(self, a: str, b: str) -> str:
        out = self.try_run("merge-base", a, b)
        if not out:
            for rev in (a, b):
                self.rev_parse(rev)  # an unknown revision says so
            raise GitError(["merge-base", a, b], 1, f"{a} and {b} have no common ancestor (unrelated histories); "
                           "pass BASE explicitly")
        return out

    def default_branch(self, remote: str = "origin") -> str | None:
        """The default branch: origin/HEAD if known, else main or master if they exist."""
        head = self.try_run("symbolic-ref", "--quiet", "--short", f"refs/remotes/{remote}/HEAD")
        if head:
            return head
        for name in (f"{remote}/main", f"{remote}/master", "main", "master"):
            if self.resolve(name):
                return name
        return None

    def current_branch(self) -> str | None:
        return self.try_run("symbolic-ref", "--quiet", "--short", "HEAD") or None

    def commit_time(self, rev: str) -> int:
        return int(self.run("show", "-s", "--format=%ct", rev))

    def log_subjects(self, rev_range: str) -> list[tuple[str, str]]:
        out = self.run("log", "--format=%H%x00%s", rev_range)
        return [tuple(line.split("\x00", 1)) for line in out.splitlines() if line]  # type: ignore[misc]

    # -- trees and blobs -------------------------------------------------------------------------

    def ls_tree(self, rev: str, paths: Sequence[str] = ()) -> list[TreeEntry]:
        """Every blob in the tree of `rev` (recursive), optionally limited to paths."""
        out = self.run_bytes("ls-tree", "-r", "-z", "--full-tree", rev, "--", *paths)
        entries = []
        for rec in out.split(b"\0"):
            if not rec:
                continue
            meta, path = rec.split(b"\t", 1)
            mode, typ, sha = meta.decode().split()
            entries.append(TreeEntry(mode, typ, sha, path.decode("utf-8", "surrogateescape")))
        return entries

    def read_blobs(self, specs: Iterable[str]) -> dict[str, bytes | None]:
        """Read many objects (`REV:path` or a sha) through one `git cat-file --batch` process."""
        specs = list(specs)
        if not specs:
            return {}
        batch = self.batch()
        try:
            return batch.read(specs)
        finally:
            batch.close()

    def batch(self) -> CatFileBatch:
        """A long-lived `git cat-file --batch` process for several rounds of reads."""
        return CatFileBatch(self)

    def show_file(self, rev: str, path: str) -> bytes | None:
        return self.read_blobs([f"{rev}:{path}"])[f"{rev}:{path}"]

    def clean_blobs(self, paths: Sequence[str]) -> dict[str, str]:
        """path -> id of the blob `git add` would store for that working-tree file (its line endings
        converted and clean filters run, as attributes and core.autocrlf say), written to the object store."""
        if not paths:
            return {}
        out = self.run_bytes("hash-object", "-w", "--stdin-paths",
                             input="".join(p + "\n" for p in paths).encode("utf-8", "surrogateescape"))
        return dict(zip(paths, out.decode().split(), strict=True))

    def hash_object(self, data: bytes, write: bool = True) -> str:
        args = ["hash-object", "--stdin"] + (["-w"] if write else [])
        return self.run_bytes(*args, input=data).decode().strip()

    # -- notes -----------------------------------------------------------------------------------

    def notes_show(self, ref: str, commit: str) -> bytes | None:
        """The note text attached to `commit` in notes ref `ref`, or None."""
        proc = subprocess.run(
            ["git", "notes", "--ref", ref, "show", commit],
            cwd=self.root,
            capture_output=True,
            env=self._env(),
        )
        if proc.returncode != 0:
            return None
        return proc.stdout

    def notes_list(self, ref: str) -> list[tuple[str, str]]:
        """(note blob sha, annotated commit sha) pairs in `ref`."""
        if not self.resolve(ref if ref.startswith("refs/") else f"refs/notes/{ref}"):
            return []
        out = self.run("notes", "--ref", ref, "list")
        return [tuple(line.split()) for line in out.splitlines() if line]  # type: ignore[misc]

    def notes_add(self, ref: str, commit: str, data: bytes, force: bool = True) -> None:
        """Set the note of `commit` to `data` (one notes commit)."""
        blob = self.hash_object(data)
        args = ["notes", "--ref", ref, "add", "-C", blob, commit]
        if force:
            args.insert(4, "-f")
        self.run(*args)

    def fetch(self, remote: str, *refspecs: str, env: dict[str, str] | None = None) -> bool:
        proc = subprocess.run(
            ["git", "fetch", "--quiet", remote, *refspecs],
            cwd=self.root,
            capture_output=True,
            env=self._env(env),
        )
        return proc.returncode == 0

    def push(self, remote: str, *refspecs: str, env: dict[str, str] | None = None) -> tuple[bool, str]:
        proc = subprocess.run(
            ["git", "push", "--porcelain", remote, *refspecs],
            cwd=self.root,
            capture_output=True,
            env=self._env(env),
        )
        return proc.returncode == 0, (proc.stdout + proc.stderr).decode("utf-8", "replace")

    # -- notes store plumbing (audit log; used by gating/git/notes.py) -------------------------------
    # Notes are written with plumbing rather than `git notes add` so that the local backend and the
    # GitHub API backend place a note at the same path and so produce identical trees.

    def ls_tree_level(self, tree: str) -> list[TreeEntry]:
        """One level of a tree (no recursion); `path` is the entry's name."""
        out = self.run_bytes("ls-tree", "-z", tree)
        entries = []
        for rec in out.split(b"\0"):
            if rec:
                meta, name = rec.split(b"\t", 1)
                mode, typ, sha = meta.decode().split()
                entries.append(TreeEntry(mode, typ, sha, name.decode("utf-8", "surrogateescape")))
        return entries

    def write_tree_with(self, base: str | None, blobs: dict[str, str]) -> str:
        """The tree of `base` (tree or commit; None: empty) with blobs set at paths, via a throwaway index."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="gating-index-") as tmp:
            env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
            self.run("read-tree", *([base] if base else ["--empty"]), env=env)
            info = "".join(f"100644 {sha}\t{path}\n" for path, sha in blobs.items())
            self.run("update-index", "--index-info", input=info, env=env)
            return self.run("write-tree", env=env)

    def commit_tree(self, tree: str, parents: Sequence[str], message: str,
                    env: dict[str, str] | None = None) -> str:
        args = ["commit-tree", tree]
        for p in parents:
            args += ["-p", p]
        return self.run(*args, input=message, env=env)

    def update_ref(self, ref: str, new: str, old: str | None) -> bool:
        """Compare-and-swap: move `ref` to `new` only if it is at `old` (None: only if it does not exist)."""
        proc = subprocess.run(
            ["git", "update-ref", ref, new, old or "0" * 40],
            cwd=self.root, capture_output=True, env=self._env(),
        )
        return proc.returncode == 0

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        proc = subprocess.run(
            ["git", "merge-base", "--is-ancestor", ancestor, descendant],
            cwd=self.root, capture_output=True, env=self._env(),
        )
        return proc.returncode == 0

    def raw_history(self, rev: str) -> list[tuple[str, list[str], list[tuple[str, str, str]]]]:
        """Oldest first: (commit, parents, [(old blob, new blob, path)]) for every commit, one `git log`."""
        out = self.run("log", "--reverse", "--root", "-r", "--raw", "--no-abbrev", "--no-renames",
                       "--format=@%H %P", rev)
        history: list[tuple[str, list[str], list[tuple[str, str, str]]]] = []
        for line in out.splitlines():
            if line.startswith("@"):
                sha, *parents = line[1:].split()
                history.append((sha, parents, []))
            elif line.startswith(":"):
                meta, path = line.split("\t", 1)
                _m1, _m2, old, new, _status = meta[1:].split()
                history[-1][2].append((old, new, path))
        return history

    def fast_import(self, stream: bytes) -> None:
        """Feed a `git fast-import` stream (bulk history, as the benchmarks build it)."""
        self.run_bytes("fast-import", "--quiet", "--force", input=stream)

    # -- rollback: a restore as one commit, without touching the work tree or the index -----------

    def tree_of(self, rev: str) -> str:
        return self.run("rev-parse", f"{rev}^{{tree}}")

    def write_tree_changes(self, base: str, changes: dict[str, tuple[str, str] | None]) -> str:
        """The tree of commit `base` with path -> (mode, blob) set, or removed where None."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="gating-index-") as tmp:
            env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
            self.run("read-tree", base, env=env)
            info = "".join(f"{c[0]} {c[1]}\t{p}\n" if c else f"0 {'0' * 40}\t{p}\n" for p, c in changes.items())
            self.run("update-index", "--index-info", input=info, env=env)
            return self.run("write-tree", env=env)


class CatFileBatch:
    """One `git cat-file --batch` process answering many rounds of object reads.

    A snapshot needs two rounds (the manifest, then the files it names); keeping one process for both
    keeps the cost at one fork per snapshot whatever the number of files. The process starts at the
    first read, so a batch that is never read from costs nothing.
    """

    def __init__(self, git: Git):
        self._git = git
        self._proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None
        self._closed = False

    @property
    def proc(self) -> subprocess.Popen:
        if self._closed:
            raise GitError(["cat-file", "--batch"], -1, "the git cat-file process was already closed")
        if self._proc is None:
            self._proc = subprocess.Popen(
                ["git", "cat-file", "--batch"],
                cwd=self._git.root,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=self._git._env(),
            )
            self._finalizer = weakref.finalize(self, CatFileBatch._stop, self._proc)
        return self._proc

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        if proc.stdin and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except BrokenPipeError:  # git was stopped before it read everything (`stream`)
                pass
        proc.wait()
        if proc.stdout:
            proc.stdout.close()

    def close(self) -> None:
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()

    @property
    def alive(self) -> bool:
        return not self._closed

    def read(self, specs: Iterable[str]) -> dict[str, bytes | None]:
        return dict(self.stream(specs))

    def stream(self, specs: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
        """(spec, blob or None) in the order asked, each as soon as git has written it: the caller
        works on one while git reads the next. A stream left before its end stops the process."""
        specs = list(specs)
        for spec in specs:
            if "\n" in spec:
                raise ValueError(f"object name contains a newline: {spec!r}")
        if not specs:
            return
        assert self.proc.stdin and self.proc.stdout
        writer = threading.Thread(
            target=self._write,
            args=(self.proc.stdin, ("".join(s + "\n" for s in specs)).encode("utf-8", "surrogateescape")),
        )
        writer.start()
        stdout, done = self.proc.stdout, False
        try:
            for spec in specs:
                header = stdout.readline().decode("utf-8", "surrogateescape").rstrip("\n")
                if not header:
                    raise GitError(["cat-file", "--batch"], -1, "git cat-file ended early")
                if header.endswith(" missing") or header.endswith(" ambiguous"):
                    yield spec, None
                    continue
                _sha, typ, size_s = header.rsplit(" ", 2)
                body = stdout.read(int(size_s))
                stdout.read(1)
                yield spec, body if typ == "blob" else None
            done = True
        finally:
            if not done:  # git may be blocked writing what nobody will read, and the writer with it
                self.proc.kill()
            writer.join()
            if not done:
                self.close()

    @staticmethod
    def _write(stdin: IO[bytes], data: bytes) -> None:
        try:
            stdin.write(data)
            stdin.flush()
        except (BrokenPipeError, ValueError):  # the reader left early and stopped git (`stream`)
            pass


def init_repo(path: str | os.PathLike[str], bare: bool = False, branch: str = "main") -> Git:
    """Create a repository with a fixed identity, as tests and the demo need."""
    Path(path).mkdir(parents=True, exist_ok=True)
    args = ["git", "init", "--quiet", f"--initial-branch={branch}"] + (["--bare"] if bare else [])
    subprocess.run([*args, str(path)], check=True, capture_output=True)
    g = Git(path)
    if not bare:
        g.run("config", "user.name", "gating")
        g.run("config", "user.email", "gating@example.invalid")
        g.run("config", "commit.gpgsign", "false")
    return g


def commit_all(g: Git, message: str, env: dict[str, str] | None = None) -> str:
    """Stage everything in the work tree and commit; returns the new commit sha."""
    g.run("add", "-A")
    g.run("commit", "--quiet", "--allow-empty", "-m", message, env=env)
    return g.rev_parse("HEAD")
