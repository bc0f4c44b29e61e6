"""The tree of results every rule and predicate returns; the check run and audit render it."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


class Status(enum.IntEnum):
    """Ordered: a parent reports the most significant state of its children."""

    SKIPPED = 0
    PENDING = 1
    APPROVED = 2
    BLOCKED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


def all_of(statuses: Iterable[Status]) -> Status:
    """Every applicable part must approve; one block blocks, one pending keeps it pending."""
    s = set(statuses)
    for st in (Status.BLOCKED, Status.PENDING, Status.APPROVED):
        if st in s:
            return st
    return Status.SKIPPED


def any_of(statuses: Iterable[Status]) -> Status:
    """One approving part is enough, but a block still blocks (fail closed)."""
    s = set(statuses)
    for st in (Status.BLOCKED, Status.APPROVED, Status.PENDING):
        if st in s:
            return st
    return Status.SKIPPED


@dataclass(frozen=True)
class ReviewNote:
    """One reviewer's latest review as a rule saw it: counted or not, and why not."""

    login: str
    state: str  # approved | changes_requested
    sha: str
    counted: bool
    note: str = ""


@dataclass(frozen=True)
class Override:
    login: str
    reason: str
    created_at: str = ""
    url: str = ""
    head_sha: str = ""  # the head of the pull request when the App saw the override


@dataclass(frozen=True)
class Result:
    name: str
    status: Status
    description: str
    children: tuple[Result, ...] = ()
    kind: str = "rule"  # policy | rule | condition | approvals | evidence | override
    reviews: tuple[ReviewNote, ...] = ()
    missing: str = ""
    override: Override | None = None  # on the policy result, when an admin's override decided it

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "status": self.status.label,
                             "description": self.description}
        if self.missing:
            d["missing"] = self.missing
        if self.reviews:
            d["reviews"] = [vars(r) for r in self.reviews]
        if self.override:
            d["override"] = vars(self.override)
        if self.children:
            d["children"] = [c.to_dict() for c in self.children]
        return d

    def walk(self) -> Iterable[Result]:
        yield self
        for c in self.children:
            yield from c.walk()
