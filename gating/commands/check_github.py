"""`gating check`'s GitHub: the check step's `CheckGitHub` seam (gating/check/post.py) filled with
gating/github/, so the core never imports a GitHub client. GitHub's errors become `GitHubFailure`.
PyGithub is imported when a client is made, so `gating check --no-post` never loads it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from gating.check.post import GitHubFailure
from gating.github.basics import GitHubError, RateLimited

if TYPE_CHECKING:
    from gating.github.repo import Repo


@contextmanager
def _failures() -> Iterator[None]:
    try:
        yield
    except GitHubError as e:
        raise GitHubFailure(e.status, e.message, str(e), isinstance(e, RateLimited)) from e


class Writer:
    """The check run and the sticky comment through a token client that waits out rate limits in
    place, at most `wait_budget` seconds in all (the Action has no job queue to hand a wait back to)."""

    def __init__(self, repo: Repo):
        self.repo = repo

    @property
    def waited(self) -> float:
        return self.repo.client.waited

    @property
    def wait_budget(self) -> float:
        return self.repo.client.retry.wait_budget or 0.0

    def start_check_run(self, name: str, head_sha: str, **kw: Any) -> int:
        from gating.github import checks

        with _failures():
            return checks.start_check_run(self.repo, name, head_sha, **kw)

    def finish_check_run(self, check_run_id: int | None, **kw: Any) -> int:
        from gating.github import checks

        with _failures():
            return checks.finish_check_run(self.repo, check_run_id, **kw)

    def upsert_comment(self, number: int, body: str) -> int:
        from gating.github import checks

        with _failures():
            return checks.upsert_comment(self.repo, number, body)


class GitHub:
    """The `CheckGitHub` the door hands to run_check, refuse and evaluate_artifact."""

    def writer(self, api_url: str, token: str, repository: str, wait_budget: float) -> Writer:
        from gating.github.client import RetryPolicy, token_client
        from gating.github.repo import Repo

        return Writer(Repo(token_client(api_url, token, RetryPolicy(wait_budget=wait_budget)), repository))

    def pull(self, api_url: str, token: str, repository: str, number: int) -> dict[str, Any]:
        from gating.github.client import token_client
        from gating.github.repo import Repo

        with _failures():
            return Repo(token_client(api_url, token), repository).pull(number)
