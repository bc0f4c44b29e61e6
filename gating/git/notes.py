"""Notes refs in git: the local backend (plumbing, compare-and-swap `update-ref`) and the push
backend (a bare mirror and a fast-forward-only `git push` over HTTPS) of the audit log, and the
vocabulary every notes backend shares (tree items, a moved ref, a host that failed).

The log algorithm that uses them is gating/audit/log.py; the GitHub backend is gating/github/notes.py.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gating.git.repository import Git, GitError, TreeEntry, init_repo

AUDIT_REF = "refs/notes/gating/audit"
EVALS_REF = "refs/notes/gating/evals"
IDENTITY = ("gating", "gating@users.noreply.github.com")


# RefConflict and TransientError tell the audit log's append loop to re-read and retry; a user meets
# AppendError (a GatingError) once the attempts run out, so these two are not GatingErrors.
class RefConflict(Exception):
    """Another writer moved the notes ref since we read it: re-read and retry."""


class TransientError(Exception):
    """The host failed (5xx, reset); the write may or may not have happened: re-read and retry."""


@dataclass(frozen=True)
class Item:
    """One entry of a tree object."""

    mode: str
    type: str
    sha: str
    name: str


# -- local git -------------------------------------------------------------------------------------


class LocalNotes:
    """The notes ref of a repository on disk."""

    def __init__(self, git: Git, ref: str = AUDIT_REF, identity: tuple[str, str] = IDENTITY):
        self.git, self.ref, self.identity = git, ref, identity

    def tip(self) -> str | None:
        return self.git.resolve(self.ref)

    def commit(self, sha: str) -> tuple[str, list[str]]:
        tree, *parents = self.git.run("log", "-1", "--format=%T %P", sha).split()
        return tree, parents

    def tree(self, sha: str) -> list[Item]:
        return [Item(e.mode, e.type, e.sha, e.path) for e in self.git.ls_tree_level(sha)]

    def blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        batch = self.git.batch()  # streams: cheaper than one buffered read for large histories
        try:
            return {k: v for k, v in batch.read(set(shas)).items() if v is not None}
        finally:
            batch.close()

    def all_notes(self, tip: str, tree: list[TreeEntry] | None = None) -> dict[str, bytes]:
        """Every blob under the notes tree by the object it is named for (a submodule entry, which
        has no blob, is not read: `verify` names it with the other entries that are not notes).
        `tree`: the tip's `ls_tree`, when the caller has read it already."""
        return dict(self.iter_notes(tip, tree))

    def iter_notes(self, tip: str, tree: list[TreeEntry] | None = None) -> Iterator[tuple[str, bytes]]:
        """`all_notes` one note at a time, in the same order, as git reads them."""
        paths = {e.path.replace("/", ""): e.sha for e in (self.git.ls_tree(tip) if tree is None else tree)
                 if e.type == "blob"}
        batch = self.git.batch()
        try:
            for (obj, sha), (_spec, data) in zip(paths.items(), batch.stream(paths.values()), strict=True):
                if data is None:
                    raise GitError(["cat-file", "--batch"], -1, f"the note on {obj} (blob {sha}) cannot be read")
                yield obj, data
        finally:
            batch.close()

    def _make_commit(self, tip: str | None, path: str, data: bytes, message: str, now: datetime) -> str:
        blob = self.git.hash_object(data)
        tree = self.git.write_tree_with(tip, {path: blob})
        name, email = self.identity
        date = f"{int(now.timestamp())} +0000"
        env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date,
               "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email, "GIT_COMMITTER_DATE": date}
        return self.git.commit_tree(tree, [tip] if tip else [], message, env=env)

    def write(self, tip: str | None, path: str, data: bytes, message: str, now: datetime) -> str:
        new = self._make_commit(tip, path, data, message, now)
        if not self.git.update_ref(self.ref, new, tip):
            raise RefConflict(f"{self.ref} moved")
        return new


# -- git push over HTTPS ---------------------------------------------------------------------------


def token_env(token: str | None) -> dict[str, str]:
    """Send the installation token as a header, never in a URL or on disk."""
    if not token:
        return {}
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"}


class PushNotes(LocalNotes):
    """A bare mirror of the notes ref; writes are plain pushes, which the server takes fast-forward only.

    For hosts whose REST API refuses refs under refs/notes/.
    """

    def __init__(self, workdir: str | Path, url: str, token: str | None = None, ref: str = AUDIT_REF,
                 identity: tuple[str, str] = IDENTITY):
        workdir = Path(workdir)
        git = Git(workdir) if (workdir / "HEAD").exists() else init_repo(workdir, bare=True)
        super().__init__(git, ref, identity)
        self.url, self.token = url, token

    def tip(self) -> str | None:
        ok = self.git.fetch(self.url, f"+{self.ref}:{self.ref}", env=token_env(self.token))
        if not ok:
            listed = self.git.try_run("ls-remote", self.url, self.ref, env=token_env(self.token))
            if listed is None or listed:
                raise TransientError(f"cannot fetch {self.ref} from {self.url}")
            self.git.try_run("update-ref", "-d", self.ref)  # the remote has no notes ref yet
        return super().tip()

    def write(self, tip: str | None, path: str, data: bytes, message: str, now: datetime) -> str:
        new = self._make_commit(tip, path, data, message, now)
        ok, out = self.git.push(self.url, f"{new}:{self.ref}", env=token_env(self.token))
        if not ok:
            if "[rejected]" in out or "non-fast-forward" in out or "fetch first" in out:
                raise RefConflict(f"{self.ref} moved on {self.url}")
            raise TransientError(f"push to {self.url} failed: {out.strip()[-300:]}")
        self.git.update_ref(self.ref, new, tip)
        return new
