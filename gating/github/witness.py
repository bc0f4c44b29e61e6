"""Check runs by name across commits, for reading the App's witnesses back (gating.audit.witness
decides what they mean)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gating.github.client import GitHubError
from gating.github.repo import Repo


def runs_on(repo: Repo, commits: Iterable[str], name: str) -> list[dict[str, Any]]:
    """Every check run called `name` on these commits, by any app; a commit GitHub does not have (422,
    404: never pushed there) has none."""
    out: list[dict[str, Any]] = []
    for sha in dict.fromkeys(commits):
        try:
            runs = repo.check_runs(sha, name)
        except GitHubError as e:
            if e.status in (404, 422):
                continue
            raise
        out += [r for r in runs if r.get("name") == name]
    return out
