"""The emulator's records: users, repositories and what happens on them.

Plain dataclasses; git content (blobs, trees, commits, refs) is never copied here: it lives in the
bare repository and is read from it on every request.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PERMISSION_ORDER = ["none", "read", "triage", "write", "maintain", "admin"]


@dataclass
class User:
    login: str
    id: int
    type: str = "User"  # User | Bot | Organization
    name: str | None = None
    email: str | None = None


@dataclass
class Team:
    org: str
    slug: str
    id: int
    name: str
    members: dict[str, str] = field(default_factory=dict)  # login -> member | maintainer


@dataclass
class Review:
    id: int
    number: int
    user: str
    state: str  # APPROVED | CHANGES_REQUESTED | COMMENTED | DISMISSED | PENDING
    body: str
    commit_id: str
    submitted_at: float


@dataclass
class Comment:
    id: int
    number: int
    user: str
    body: str
    created_at: float
    updated_at: float


@dataclass
class Reaction:
    id: int
    user: str
    content: str
    created_at: float
    comment_id: int | None = None
    number: int | None = None


@dataclass
class Issue:
    """An issue or a pull request (they share numbers, comments, labels and reactions, as on GitHub)."""

    number: int
    id: int
    title: str
    body: str
    user: str
    created_at: float
    updated_at: float
    state: str = "open"
    closed_at: float | None = None
    labels: list[str] = field(default_factory=list)
    # pull request fields (is_pull False for plain issues)
    is_pull: bool = False
    head_ref: str = ""
    head_repo: str | None = None  # full name of the fork holding head_ref (None: the same repository)
    base_ref: str = ""
    draft: bool = False
    merged: bool = False
    merged_at: float | None = None
    merged_by: str | None = None
    merge_commit_sha: str | None = None
    closed_head_sha: str | None = None  # the head once merged/closed (the branch may move on)
    closed_base_sha: str | None = None


@dataclass
class CheckRun:
    id: int
    head_sha: str
    name: str
    app_id: int
    suite_id: int
    status: str = "queued"
    conclusion: str | None = None
    started_at: float = 0.0
    completed_at: float | None = None
    details_url: str | None = None
    external_id: str | None = None
    output: dict[str, Any] = field(default_factory=dict)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CheckSuite:
    id: int
    head_sha: str
    head_branch: str | None
    app_id: int
    created_at: float


@dataclass
class DeploymentStatus:
    id: int
    state: str
    creator: str
    description: str
    environment: str
    environment_url: str
    log_url: str
    created_at: float


@dataclass
class Deployment:
    id: int
    sha: str
    ref: str
    task: str
    environment: str
    payload: Any
    description: str | None
    creator: str
    created_at: float
    production_environment: bool
    transient_environment: bool
    statuses: list[DeploymentStatus] = field(default_factory=list)


@dataclass
class GateRun:
    """A workflow run waiting on a custom deployment protection rule: its job targets `environment`,
    whose rules name the Apps in `apps`; each App's review is kept (state, comment) in `reviews`."""

    id: int
    sha: str
    ref: str
    environment: str
    event: str
    deployment_id: int
    apps: set[int]
    reviews: dict[int, tuple[str, str]] = field(default_factory=dict)  # app id -> (state, comment)
    comments: list[str] = field(default_factory=list)  # comments posted without a state
    # The next this many reviews meet GitHub's failing gate notification (its 422 "There was a problem
    # approving one of the gates", seen when many reviews race): a test sets it.
    failing_reviews: int = 0

    @property
    def state(self) -> str:
        """waiting until every App reviewed; rejected as soon as one rejects."""
        states = [s for s, _c in self.reviews.values()]
        if "rejected" in states:
            return "rejected"
        return "approved" if len(states) == len(self.apps) else "waiting"


@dataclass
class BranchProtection:
    """A classic branch protection rule, as PUT .../branches/{branch}/protection set it.

    Ref updates through the API are checked against `required_reviews`, `contexts` (with `check_apps`)
    and `allow_force_pushes` / `allow_deletions`; the rest is kept to be shown back."""

    required_reviews: dict[str, Any] | None = None  # required_pull_request_reviews (None: not required)
    strict: bool = False
    contexts: list[str] | None = None  # required status checks (None: none required)
    check_apps: dict[str, int | None] = field(default_factory=dict)  # context -> app_id that must report it
    enforce_admins: bool = False
    restrictions: dict[str, list[str]] | None = None  # users, teams allowed to push (not enforced)
    flags: dict[str, bool] = field(default_factory=dict)  # allow_force_pushes, allow_deletions, ...

    def flag(self, name: str) -> bool:
        return bool(self.flags.get(name))


@dataclass
class Repo:
    id: int
    owner: str
    name: str
    private: bool
    default_branch: str
    bare_path: Path
    created_at: float
    collaborators: dict[str, str] = field(default_factory=dict)  # login -> permission
    issues: dict[int, Issue] = field(default_factory=dict)
    reviews: dict[int, Review] = field(default_factory=dict)
    comments: dict[int, Comment] = field(default_factory=dict)
    reactions: list[Reaction] = field(default_factory=list)
    check_runs: dict[int, CheckRun] = field(default_factory=dict)
    check_suites: dict[int, CheckSuite] = field(default_factory=dict)
    deployments: dict[int, Deployment] = field(default_factory=dict)
    protections: dict[str, BranchProtection] = field(default_factory=dict)  # branch name -> rule
    environment_rules: dict[str, set[int]] = field(default_factory=dict)  # environment -> Apps with a custom rule
    gate_runs: dict[int, GateRun] = field(default_factory=dict)  # workflow runs waiting on those rules
    next_number: int = 1
    parent: str | None = None  # full name of the repository this one is a fork of

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def take_number(self) -> int:
        n = self.next_number
        self.next_number += 1
        return n


class Ids:
    """One id sequence per emulator; ids look like GitHub's (large, distinct per kind of record)."""

    def __init__(self, start: int = 1000):
        self._it = itertools.count(start)

    def __call__(self) -> int:
        return next(self._it)


def permission_at_least(have: str, need: str) -> bool:
    return PERMISSION_ORDER.index(have) >= PERMISSION_ORDER.index(need)
