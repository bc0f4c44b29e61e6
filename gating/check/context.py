"""Where `gating check` runs: which repository, which commits, which token, what it may write.

In GitHub Actions everything comes from the event payload (GITHUB_EVENT_PATH) and the GITHUB_*
variables; locally it comes from flags. Pure: the command reads the environment and the event file
and hands both in as plain mappings, so every combination is a table-driven test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gating.errors import GatingError
from gating.evals.progress import Progress

CHECK_NAME = "gating / eval"
BASELINES = ("notes", "rerun", "none")
FAIL_ON = ("regression", "threshold", "never")
ON_ERROR = ("fail", "neutral")  # what cases that could not be evaluated conclude; closed by default
NOTES_MODES = ("auto", "push", "local", "off")
MAX_SHARDS = 256  # GitHub runs at most 256 jobs of one matrix
DEFAULT_API_URL = "https://api.github.com"
ZERO_SHA = "0" * 40
PR_EVENTS = ("pull_request", "pull_request_target")
# Events whose runs hold a write token and the repository's secrets even when the pull request
# comes from a fork: its head (config, datasets, code) must never be evaluated there directly.
PRIVILEGED_EVENTS = ("pull_request_target", "workflow_run")
FORK_PATTERN = ("the fork pattern: `mode: collect` in an unprivileged `pull_request` workflow, then `mode: evaluate` "
                "in a `workflow_run` workflow (examples/workflows/gating-collect.yml and gating-evaluate.yml; "
                "README, \"Pull requests from forks\")")


class ContextError(GatingError):
    """The run cannot be placed: no head commit, a bad input value. A user error (exit 2)."""


@dataclass(frozen=True)
class Settings:
    """What the user chose (action inputs or flags); validated once here."""

    config: str = "gating.yml"
    baseline: str = "notes"  # notes | rerun | none
    fail_on: str = "regression"  # regression | threshold | never
    on_error: str = "fail"  # fail | neutral: cases not evaluated (a broken setup) are a failure unless relaxed
    concurrency: int | None = None
    comment: bool = False
    post: bool = True  # talk to GitHub at all (check run, comment)
    notes: str = "auto"  # auto (push in Actions when the token may write, else off) | push | local | off
    remote: str = "origin"
    cache_dir: str | None = None  # None: $GATING_CACHE_DIR, else inside the git directory; "" disables the cache
    replay: bool = False  # replay the cassettes whatever the base's evals.mode says
    json_path: str | None = None
    junit_path: str | None = None
    post_wait: float = 300.0  # seconds posting may wait out GitHub's rate limits in all
    shard: tuple[int, int] | None = None  # (i, n): evaluate slice i of n and write a partial report (nothing posted)
    shard_out: str | None = None  # where the partial report goes (default: gating-shard-I-of-N.json)
    merge: str | None = None  # a directory of the shards' partial reports: merged into the one check
    # makes the live progress of one run from its label (`base 1a2b3c4`); None: show none
    progress: Callable[[str], Progress | None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.baseline not in BASELINES:
            raise ContextError(f"baseline {self.baseline!r} is not one of: {', '.join(BASELINES)}")
        if self.fail_on not in FAIL_ON:
            raise ContextError(f"fail-on {self.fail_on!r} is not one of: {', '.join(FAIL_ON)}")
        if self.on_error not in ON_ERROR:
            raise ContextError(f"on-error {self.on_error!r} is not one of: {', '.join(ON_ERROR)}")
        if self.notes not in NOTES_MODES:
            raise ContextError(f"notes {self.notes!r} is not one of: {', '.join(NOTES_MODES)}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ContextError(f"concurrency must be a positive number, not {self.concurrency}")
        if self.shard is not None:
            i, n = self.shard
            if not 1 <= n <= MAX_SHARDS or not 1 <= i <= n:
                raise ContextError(f"shard {i}/{n}: expected I/N with 1 <= I <= N <= {MAX_SHARDS}")
            if self.merge is not None:
                raise ContextError("--shard evaluates one slice and --merge combines the slices: use one of them")
            if self.post or self.comment or self.notes not in ("auto", "off") or self.json_path or self.junit_path:
                raise ContextError("a shard posts nothing and writes only its partial report (--shard-out): the "
                                   "check run, comment, notes, --json and --junit come from the --merge run")
        elif self.shard_out is not None:
            raise ContextError("--shard-out is where a shard (--shard I/N) writes its partial report")
        if not 0 <= self.post_wait <= 6 * 3600:
            raise ContextError(f"post-wait must be between 0 and 21600 seconds, not {self.post_wait}")


@dataclass(frozen=True)
class CheckContext:
    event_name: str  # pull_request, push, workflow_dispatch, ... or "local"
    repository: str | None  # owner/name
    api_url: str
    token: str | None = field(repr=False)
    head_sha: str  # the commit evaluated and the check run's head_sha (a sha or, locally, a rev)
    base: str | None  # base tip (PR base sha, push `before`) or a rev; merge-base is taken with head
    base_ref: str | None = None  # base branch name, for messages and fetching
    pull_number: int | None = None
    fork: bool = False
    in_actions: bool = False
    details_url: str | None = None  # the workflow run, linked from the check run
    server_url: str | None = None  # GITHUB_SERVER_URL, for links
    step_summary: str | None = None  # GITHUB_STEP_SUMMARY
    output_file: str | None = None  # GITHUB_OUTPUT
    untrusted: str | None = None  # why this run must not evaluate the head it names (a fork under a privileged event)

    @property
    def can_post(self) -> bool:
        """Whether GitHub can be asked at all: a repository, a token and not a fork's read-only token."""
        return bool(self.repository and self.token and not self.fork)

    @property
    def read_only_reason(self) -> str | None:
        if self.fork:
            return ("this pull request comes from a fork: its GITHUB_TOKEN is read-only and repository "
                    "secrets are withheld, so no check run, comment or eval note was written")
        if not self.repository or not self.token:
            return "no GitHub repository or token was given, so nothing was posted"
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def is_fork(pull: Mapping[str, Any]) -> bool:
    """A pull request whose head lives in another repository (GitHub withholds secrets and write access)."""
    head_repo = (pull.get("head") or {}).get("repo")
    base_repo = (pull.get("base") or {}).get("repo") or {}
    if head_repo is None:  # the fork was deleted
        return True
    if head_repo.get("full_name") and base_repo.get("full_name"):
        return bool(head_repo["full_name"] != base_repo["full_name"])
    return bool(head_repo.get("fork"))


def build_context(env: Mapping[str, str], event: Mapping[str, Any] | None, *, head: str | None = None,
                  base: str | None = None, repository: str | None = None, pull_number: int | None = None,
                  api_url: str | None = None) -> CheckContext:
    """The context from the Actions environment and event payload; explicit arguments win."""
    event = event or {}
    in_actions = env.get("GITHUB_ACTIONS") == "true" or bool(env.get("GITHUB_EVENT_PATH"))
    event_name = env.get("GITHUB_EVENT_NAME") or ("local" if not event else "")
    repo_name = repository or env.get("GITHUB_REPOSITORY") or (event.get("repository") or {}).get("full_name")
    pull = event.get("pull_request") if isinstance(event.get("pull_request"), Mapping) else None
    run = event.get("workflow_run") if isinstance(event.get("workflow_run"), Mapping) else None
    if not event_name:
        event_name = "pull_request" if pull else "workflow_run" if run else "push" if "after" in event else "local"
    ev_head = ev_base = ev_base_ref = None
    fork = False
    number = pull_number
    if pull:
        ev_head = (pull.get("head") or {}).get("sha")
        ev_base = (pull.get("base") or {}).get("sha")
        ev_base_ref = (pull.get("base") or {}).get("ref")
        number = number or _int(pull.get("number")) or _int(event.get("number"))
        fork = is_fork(pull)
    elif run:  # a finished run of another workflow: its head is the commit that run was on
        ev_head = run.get("head_sha")
        head_repo = (run.get("head_repository") or {}).get("full_name")
        fork = not head_repo or head_repo != repo_name
        prs = [p for p in run.get("pull_requests") or [] if isinstance(p, Mapping)]  # empty for forks
        if prs:
            number = number or _int(prs[0].get("number"))
            ev_base = (prs[0].get("base") or {}).get("sha")
            ev_base_ref = (prs[0].get("base") or {}).get("ref")
    elif event.get("after"):
        ev_head = event.get("after")
        before = event.get("before")
        ev_base = before if before and before != ZERO_SHA else None
        ref = str(event.get("ref") or "")
        ev_base_ref = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    head_sha = head or ev_head or env.get("GITHUB_SHA") or ("HEAD" if not in_actions else None)
    if not head_sha:
        raise ContextError("no head commit: GITHUB_SHA is unset and the event names none; pass --head")
    untrusted = None
    if fork and event_name in PRIVILEGED_EVENTS:
        untrusted = (f"a pull request from a fork is not evaluated under `{event_name}`, which holds a write token "
                     f"and the repository's secrets: use {FORK_PATTERN}. The head's gating.yml, datasets and code "
                     "are written by whoever opened the pull request, so running them here would hand both to them.")
    server = (env.get("GITHUB_SERVER_URL") or "").rstrip("/")
    run_id = env.get("GITHUB_RUN_ID")
    details = f"{server}/{repo_name}/actions/runs/{run_id}" if server and repo_name and run_id else None
    pages = (env.get("GATING_PAGES_URL") or "").rstrip("/")  # the App's public URL: its eval report page
    if pages.startswith(("https://", "http://")) and repo_name and head_sha and len(head_sha) in (40, 64):
        details = f"{pages}/pages/{repo_name}/report/{head_sha}"
    return CheckContext(
        event_name=event_name,
        repository=repo_name,
        api_url=(api_url or env.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/"),
        token=env.get("GITHUB_TOKEN") or env.get("GH_TOKEN") or None,
        head_sha=head_sha,
        base=base or ev_base,
        base_ref=ev_base_ref or env.get("GITHUB_BASE_REF") or None,
        pull_number=number,
        fork=fork,
        in_actions=in_actions,
        details_url=details,
        server_url=server or None,
        step_summary=env.get("GITHUB_STEP_SUMMARY") or None,
        output_file=env.get("GITHUB_OUTPUT") or None,
        untrusted=untrusted,
    )
