"""A repository on GitHub as the audit trail reads it (gating.audit.record.Source): pull requests,
reviews, check runs, files at a commit and notes refs, all through the REST API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gating.github.notes import GitDatabaseNotes
from gating.github.repo import ApiRevision, BlobCache, Repo


class RepoFacts:
    """One repository's facts; file reads share `blobs` (the App keeps one cache for all jobs)."""

    def __init__(self, repo: Repo, blobs: BlobCache | None = None):
        self.repo, self.blobs = repo, blobs if blobs is not None else BlobCache()
        self.full_name = repo.full_name

    def pull(self, number: int) -> dict[str, Any]:
        return self.repo.pull(number)

    def reviews(self, number: int) -> list[dict[str, Any]]:
        return self.repo.reviews(number)

    def check_runs(self, sha: str, name: str) -> list[dict[str, Any]]:
        return self.repo.check_runs(sha, name)

    def merged_pulls(self, limit: int = 1000, base: str | None = None) -> Iterator[dict[str, Any]]:
        """Merged pull requests, newest first (closed ones without a merge are skipped)."""
        kw: dict[str, Any] = {"base": base} if base else {}
        listing = self.repo.gh.get_pulls(state="closed", sort="updated", direction="desc", **kw)
        for pr in self.repo.client.items(listing, limit=limit, what=f"GET {self.repo.path}/pulls"):
            if pr.get("merged_at") and pr.get("merge_commit_sha"):
                yield pr

    def revision(self, sha: str) -> ApiRevision:
        return ApiRevision(self.repo, sha, self.blobs)

    def notes(self, ref: str) -> GitDatabaseNotes:
        return GitDatabaseNotes(self.repo, ref)
