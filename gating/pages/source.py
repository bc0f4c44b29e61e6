"""What the pages read, as a seam each door fills: the App with the REST API, `gating view` with a
clone. Git stays the system of record; the index (gating/pages/index.py) is rebuilt from it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gating.audit.entry import Entry
from gating.audit.verify import Report
from gating.audit.witness import CrossCheck
from gating.system.revision import RevisionReader


class Notes(Protocol):
    """A notes ref, read-only (gating.git.notes.LocalNotes, gating.github.GitDatabaseNotes)."""

    def tip(self) -> str | None: ...
    def commit(self, sha: str) -> tuple[str, list[str]]: ...
    def tree(self, sha: str) -> list[Any]: ...
    def blobs(self, shas: Iterable[str]) -> dict[str, bytes]: ...
    def all_notes(self, tip: str) -> dict[str, bytes]: ...


@dataclass
class Source:
    """One repository as the pages see it.

    `verify(keys)` judges the audit log (a clone also checks the notes history); `witnesses(entries)`
    reads the App's `gating / audit` check runs (None where no API can be reached); `revision(commit)`
    reads files at a commit (the compare page's snapshots); `note(commit)` an eval note's bytes.
    """

    name: str  # owner/name (or the clone's directory name)
    audit: Notes
    evals: Notes
    verify: Callable[[dict[str, Ed25519PublicKey]], Report]
    revision: Callable[[str], RevisionReader]
    note: Callable[[str], bytes | None]
    keys: dict[str, Ed25519PublicKey]
    key_source: str  # where the trusted key came from, said on the timeline
    witnesses: Callable[[Sequence[Entry]], CrossCheck | None] | None = None
    web_url: str | None = None  # https://github.com/owner/name, for links to commits and pull requests
    resolve: Callable[[str], str | None] | None = None  # a revision (sha prefix, branch) -> full sha
