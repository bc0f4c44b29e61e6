"""The facts a rule may look at, behind one seam (`PullFacts`), plus a plain-data implementation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Actor:
    login: str
    type: str = "User"

    @property
    def is_bot(self) -> bool:
        return self.type == "Bot" or self.login.endswith("[bot]")


@dataclass(frozen=True)
class Review:
    user: Actor
    state: str  # APPROVED | CHANGES_REQUESTED | COMMENTED | DISMISSED | PENDING
    commit_id: str
    submitted_at: str = ""


@dataclass(frozen=True)
class CheckState:
    name: str
    status: str  # queued | in_progress | completed
    conclusion: str | None
    head_sha: str
    url: str = ""


@dataclass(frozen=True)
class OverrideAct:
    """A `/gating override` as the App recorded it the moment it saw the comment created: who sent it
    and their permission then, the pull request's head SHA then. Comment bodies are never re-read
    (any writer may edit any comment). `void` says why it can never count (an edit or a deletion
    of its comment, or a command written in by an edit); `pushed_after` that a push reached the App
    after it."""

    login: str
    reason: str
    head_sha: str
    permission: str
    created_at: str = ""
    url: str = ""
    void: str = ""
    pushed_after: bool = False


class PullFacts(Protocol):
    """What the rules may look at; the App, the CLI and tests each implement it."""

    number: int
    author: Actor
    base_branch: str
    head_sha: str
    labels: Sequence[str]
    changed_files: Sequence[str]
    unlisted_files: int  # changed files GitHub did not list (it lists at most 3,000): path rules cannot tell
    manifest_paths: Sequence[str]
    categories: Sequence[str]
    reviews: Sequence[Review]
    checks: Mapping[str, CheckState]
    overrides: Sequence[OverrideAct]

    def is_team_member(self, team: str, login: str) -> bool: ...

    def permission(self, login: str) -> str: ...


@dataclass
class Facts:
    """Plain-data facts: tests and the CLI fill it in directly."""

    number: int = 1
    author: Actor = Actor("author")
    base_branch: str = "main"
    head_sha: str = "0" * 40
    labels: Sequence[str] = ()
    changed_files: Sequence[str] = ()
    unlisted_files: int = 0
    manifest_paths: Sequence[str] = ()
    categories: Sequence[str] = ()
    reviews: Sequence[Review] = ()
    checks: Mapping[str, CheckState] = field(default_factory=dict)
    overrides: Sequence[OverrideAct] = ()
    teams: Mapping[str, Iterable[str]] = field(default_factory=dict)
    permissions: Mapping[str, str] = field(default_factory=dict)

    def is_team_member(self, team: str, login: str) -> bool:
        members = {m.lower() for m in self.teams.get(team.lower(), self.teams.get(team, ()))}
        return login.lower() in members

    def permission(self, login: str) -> str:
        perms = {k.lower(): v for k, v in self.permissions.items()}
        return perms.get(login.lower(), "none")
