"""Audit notes over the Git Database API: the GitHub backend of the log in gating/audit/log.py."""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from gating.git.notes import AUDIT_REF, IDENTITY, Item, RefConflict, TransientError
from gating.github.client import GitHubError
from gating.github.gitdb import (
    create_blob,
    create_commit,
    create_ref,
    create_tree,
    git_commit,
    ref_sha,
    update_ref,
)
from gating.github.repo import Repo, walk_tree

T = TypeVar("T")


class GitDatabaseNotes:
    """A notes ref written through the Git Database API, for the App (no clone needed).

    An append is a blob, a tree on the tip's tree as `base_tree` (so the note lands where the tree
    already keeps notes: same fanout, same path), a commit whose only parent is the observed tip, and a
    ref update with force: false: a 422 means another writer won, and the log's append_entry re-reads.
    Git objects are immutable, so trees and commits are cached by sha.
    """

    def __init__(self, repo: Repo, ref: str = AUDIT_REF, identity: tuple[str, str] = IDENTITY):
        self.repo, self.ref, self.identity = repo, ref, identity
        self._trees: dict[str, list[Any]] = {}
        self._commits: dict[str, tuple[str, list[str]]] = {}

    def __repr__(self) -> str:
        return f"GitDatabaseNotes({self.repo.full_name!r}, {self.ref!r})"

    def _call(self, fn: Callable[[], T]) -> T:

        try:
            return fn()
        except GitHubError as e:
            if e.status == 0 or e.status >= 500:
                raise TransientError(str(e)) from e
            raise

    def tip(self) -> str | None:
        return self._call(lambda: ref_sha(self.repo, self.ref.removeprefix("refs/")))

    def commit(self, sha: str) -> tuple[str, list[str]]:
        if sha not in self._commits:
            body = self._call(lambda: git_commit(self.repo, sha))
            self._commits[sha] = (body["tree"]["sha"], [p["sha"] for p in body.get("parents") or []])
        return self._commits[sha]

    def tree(self, sha: str) -> list[Any]:

        if sha not in self._trees:
            body = self._call(lambda: self.repo.tree(sha, recursive=False))
            self._trees[sha] = [Item(e["mode"], e["type"], e["sha"], e["path"]) for e in body["tree"]]
        return self._trees[sha]

    def blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        return {s: self._call(functools.partial(self.repo.blob, s)) for s in set(shas)}

    def all_notes(self, tip: str) -> dict[str, bytes]:
        # one recursive listing (walked directory by directory should GitHub truncate it)
        found = self._call(lambda: walk_tree(self.repo, self.commit(tip)[0]))
        paths = {path.replace("/", ""): e.sha for path, e in found.items() if e.type == "blob"}
        data = self.blobs(paths.values())
        return {obj: data[sha] for obj, sha in paths.items()}

    def write(self, tip: str | None, path: str, data: bytes, message: str, now: datetime) -> str:

        blob = self._call(lambda: create_blob(self.repo, base64.b64encode(data).decode()))
        entry = [{"path": path, "mode": "100644", "type": "blob", "sha": blob}]
        base_tree = self.commit(tip)[0] if tip else None
        tree = self._call(lambda: create_tree(self.repo, base_tree, entry))
        date = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # aware: the log's clock
        who = {"name": self.identity[0], "email": self.identity[1], "date": date}
        new = self._call(lambda: create_commit(self.repo, message, tree, [tip] if tip else [], author=who))
        ref = self.ref.removeprefix("refs/")
        try:
            if tip:
                self._call(lambda: update_ref(self.repo, ref, new, force=False))
            elif not self._call(lambda: create_ref(self.repo, ref, new)):
                raise RefConflict(f"{self.ref} was created by another writer")
        except GitHubError as e:
            if e.status == 422:
                raise RefConflict(f"{self.ref} moved: {e}") from e
            raise
        return new
