"""The check run and the pull request comment of one `gating check`, through the `CheckGitHub` seam.

The core imports no GitHub client: the door hands in a `CheckGitHub` (gating/commands/check_github.py
fills it with gating/github/), whose failures arrive as `GitHubFailure`.

A refusal from GitHub (401/403/404: a read-only token, a fork) turns posting off for the rest of the
run and is explained in the job summary; it never fails the job. A rate limit is waited out by the
client (as long as GitHub asks, at most `wait_budget` seconds in all, then one last try); a check
run that still cannot be completed is said so, and fails the job, since it stays in progress on
GitHub. Other errors become warnings.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from gating.check import output as out
from gating.check.context import CHECK_NAME, CheckContext
from gating.check.output import CheckResult
from gating.errors import ServiceError


class GitHubFailure(ServiceError):
    """GitHub refused or failed a call (status 0: unreachable); `rate_limited`: still limited after the
    writer waited as long as its budget allowed. `str()` is the whole message, `message` GitHub's."""

    def __init__(self, status: int, message: str, text: str, rate_limited: bool = False):
        super().__init__(text)
        self.status, self.message, self.rate_limited = status, message, rate_limited


class CheckWriter(Protocol):
    """The check run and the comment on GitHub; every method raises `GitHubFailure` when GitHub says no."""

    @property
    def waited(self) -> float:
        """Seconds spent waiting out rate limits so far."""
        ...

    @property
    def wait_budget(self) -> float:
        """At most this many seconds in all."""
        ...

    def start_check_run(self, name: str, head_sha: str, *, started_at: str, title: str, summary: str,
                        details_url: str | None = None) -> int: ...

    def finish_check_run(self, check_run_id: int | None, *, name: str, head_sha: str, conclusion: str,
                         completed_at: str, title: str, summary: str, text: str = "",
                         annotations: list[dict[str, Any]] | None = None, details_url: str | None = None) -> int: ...

    def upsert_comment(self, number: int, body: str) -> int: ...


class CheckGitHub(Protocol):
    """What `gating check` asks of GitHub; the door fills it (gating/commands/check_github.py)."""

    def writer(self, api_url: str, token: str, repository: str, wait_budget: float) -> CheckWriter: ...

    def pull(self, api_url: str, token: str, repository: str, number: int) -> dict[str, Any]:
        """The pull request as the REST API returns it; `GitHubFailure` when it cannot be read."""
        ...


DEFAULT_WAIT_BUDGET = 300.0  # seconds one run may spend waiting out GitHub's rate limits


def _secs(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Poster:
    """The check run (and optional comment) for one head commit; a refusal turns posting off, not the job."""

    def __init__(self, ctx: CheckContext, github: CheckWriter, clock: Callable[[], float]):
        self.ctx, self.github, self.clock = ctx, github, clock
        self.check_run_id: int | None = None
        self.refused: str | None = None  # why GitHub would not take our writes (403 on a read-only token)
        self.unfinished: str | None = None  # the check run was left in progress on GitHub: why
        self.messages: list[str] = []

    @classmethod
    def open(cls, ctx: CheckContext, clock: Callable[[], float], wait_budget: float = DEFAULT_WAIT_BUDGET,
             github: CheckGitHub | None = None) -> Poster | None:
        if not ctx.can_post or github is None:
            return None
        assert ctx.repository and ctx.token
        return cls(ctx, github.writer(ctx.api_url, ctx.token, ctx.repository, wait_budget), clock)

    def _failed(self, what: str, e: GitHubFailure) -> None:
        if e.rate_limited:
            self.messages.append(f"could not {what}: GitHub's rate limit still refused it after waiting "
                                 f"{_secs(self.github.waited)} s ({e.status}: {e.message})")
        elif e.status in (401, 403, 404):
            self.refused = (f"GitHub refused to {what} ({e.status}: {str(e).split(': ', 1)[-1]}); the token is "
                            "probably read-only (grant `checks: write` in the workflow's permissions)")
        else:
            self.messages.append(f"could not {what}: {e}")

    def start(self, head_sha: str) -> None:
        try:
            self.check_run_id = self.github.start_check_run(
                CHECK_NAME, head_sha, started_at=iso(self.clock()), title="Evaluating the LLM system…",
                summary="Diffing the LLM system and running the affected eval cases.",
                details_url=self.ctx.details_url)
        except GitHubFailure as e:
            self._failed("create the check run", e)

    def finish(self, r: CheckResult) -> None:
        if self.refused:
            return
        try:
            self.check_run_id = self.github.finish_check_run(
                self.check_run_id, name=CHECK_NAME, head_sha=r.head_sha, conclusion=r.conclusion,
                completed_at=iso(self.clock()), title=out.title(r), summary=out.fit(out.summary_markdown(r)),
                text=out.fit(out.details_text(r)), annotations=out.annotations(r), details_url=self.ctx.details_url)
        except GitHubFailure as e:
            self._failed("complete the check run", e)
            if e.rate_limited:
                where = f"check run {self.check_run_id} stays in progress" if self.check_run_id else \
                    "there is no check run"
                self.unfinished = (f"`{CHECK_NAME}` was not completed on GitHub: its secondary rate limit still "
                                   f"refused the update after {_secs(self.github.waited)} s of waiting (the "
                                   f"budget is {_secs(self.github.wait_budget)} s, --post-wait); "
                                   f"{where}, "
                                   "so this job fails; "
                                   f"the verdict was {r.verdict} ({r.conclusion})")
                self.messages[-1] = self.unfinished

    def comment(self, r: CheckResult) -> None:
        if self.refused or not self.ctx.pull_number:
            return
        try:
            self.github.upsert_comment(self.ctx.pull_number, out.fit(out.summary_markdown(r), 65_000))
        except GitHubFailure as e:
            self.messages.append(f"could not comment on the pull request: {e}")
