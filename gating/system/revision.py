"""The seam between "a revision of the repository" and the code that reads it.

Snapshots, evals and rollback plans read files through a `RevisionReader`, so the same code runs on
a git commit or the working tree (gating/git/revision.py), a commit read over GitHub's API
(gating/github/repo.py), or an in-memory mapping.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol


class RevisionReader(Protocol):
    label: str

    def list_files(self) -> list[str]: ...

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes | None]: ...


class MemoryRevision:
    """A revision held in a dict, for tests and for plans computed before they are committed."""

    def __init__(self, files: Mapping[str, bytes], label: str = "memory"):
        self.files = dict(files)
        self.label = label

    def list_files(self) -> list[str]:
        return sorted(self.files)

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes | None]:
        return {p: self.files.get(p) for p in paths}
