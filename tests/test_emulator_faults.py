"""Fault injection: clients meet real 5xx, secondary rate limits, latency and connection resets."""

from __future__ import annotations

import time

import httpx
import pytest
from github import Auth, Github, GithubException

from gating.testing import Emulator, RepoHandle


@pytest.fixture
def c(github: Emulator) -> httpx.Client:
    return httpx.Client(base_url=github.api_url, headers={"Authorization": f"token {github.installation_token()}"},
                        timeout=10)


def test_5xx_once_then_normal(github: Emulator, github_repo: RepoHandle, c: httpx.Client) -> None:
    github.faults.add(method="GET", path=r"^/repos/acme/support-bot$", kind="5xx", status=502)
    first = c.get("/repos/acme/support-bot")
    assert (first.status_code, first.json()) == (502, {"message": "Server Error"})
    assert c.get("/repos/acme/support-bot").status_code == 200
    assert [(q.status, q.operation) for q in github.requests] == [(502, "fault/5xx"), (200, "repos/get")]


def test_fault_matches_method_and_path(github: Emulator, github_repo: RepoHandle, c: httpx.Client) -> None:
    github.faults.add(method="PATCH", path=r"/git/refs/", kind="5xx", status=503, times=None)
    assert c.get("/repos/acme/support-bot/git/ref/heads/main").status_code == 200
    for _ in range(3):
        r = c.patch("/repos/acme/support-bot/git/refs/heads/main", json={"sha": github_repo.head()})
        assert r.status_code == 503
    github.faults.clear()
    assert c.patch("/repos/acme/support-bot/git/refs/heads/main", json={"sha": github_repo.head()}).status_code == 200


def test_secondary_rate_limit_has_retry_after_and_githubs_message(github: Emulator, github_repo: RepoHandle,
                                                                   c: httpx.Client) -> None:
    github.faults.add(path=r"/check-runs", kind="secondary_rate_limit", retry_after=7)
    r = c.post("/repos/acme/support-bot/check-runs", json={"name": "x", "head_sha": github_repo.head()})
    assert r.status_code == 403 and r.headers["Retry-After"] == "7"
    assert r.json()["message"].startswith("You have exceeded a secondary rate limit.")
    assert github.list_check_runs(github_repo) == []


def test_pygithub_retries_through_faults(github: Emulator, github_repo: RepoHandle) -> None:
    """PyGithub's own retry (GithubRetry) honours Retry-After and retries 5xx: the call succeeds."""
    github.faults.add(method="POST", path=r"/check-runs", kind="secondary_rate_limit", retry_after=0)
    github.faults.add(method="GET", path=r"^/repos/acme/support-bot$", kind="5xx", status=502, times=2)
    gh = Github(base_url=github.api_url, auth=Auth.Token(github.installation_token()),
                seconds_between_requests=0, seconds_between_writes=0)
    run = gh.get_repo("acme/support-bot").create_check_run("gating / eval", github_repo.head())
    assert run.name == "gating / eval"
    assert [q.status for q in github.requests] == [502, 502, 200, 403, 201]


def test_latency_delays_the_normal_response(github: Emulator, github_repo: RepoHandle, c: httpx.Client) -> None:
    github.faults.add(path=r"^/repos/acme/support-bot$", kind="latency", delay=0.3)
    t0 = time.perf_counter()
    r = c.get("/repos/acme/support-bot")
    assert r.status_code == 200 and time.perf_counter() - t0 >= 0.3
    t0 = time.perf_counter()
    c.get("/repos/acme/support-bot")
    assert time.perf_counter() - t0 < 0.3


def test_connection_reset(github: Emulator, github_repo: RepoHandle, c: httpx.Client) -> None:
    github.faults.add(kind="reset")
    with pytest.raises(httpx.TransportError):
        c.get("/repos/acme/support-bot")
    assert c.get("/repos/acme/support-bot").status_code == 200
    assert github.requests[0].status == 0 and github.requests[0].operation == "fault/reset"


def test_reset_surfaces_in_pygithub_without_retry(github: Emulator, github_repo: RepoHandle) -> None:
    github.faults.add(kind="reset", method="GET")
    gh = Github(base_url=github.api_url, auth=Auth.Token(github.installation_token()), retry=None,
                seconds_between_requests=0, seconds_between_writes=0)
    with pytest.raises(Exception) as e:
        gh.get_repo("acme/support-bot")
    assert not isinstance(e.value, GithubException)  # a transport error, not an HTTP status


def test_bad_fault_definitions_are_refused(github: Emulator) -> None:
    with pytest.raises(ValueError, match="unknown fault kind 'timeout'"):
        github.faults.add(kind="timeout")
    with pytest.raises(ValueError, match="a 5xx fault needs a 5xx status, not 404"):
        github.faults.add(kind="5xx", status=404)
