"""GitHub at its edges, as the emulator models it: custom repository roles, secondary rate limits
without Retry-After, App JWTs from a skewed clock, writes that fail after they happened, a
permission the installation lacks, and the re-run buttons."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from gating.testing import Emulator, RepoHandle
from gating.testing.faults import SECONDARY_RATE_LIMIT_MESSAGE

REPO = "/repos/acme/support-bot"


def api(emu: Emulator, token: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=emu.api_url, timeout=10,
                        headers={"Authorization": f"token {token or emu.installation_token()}"})


def deliveries(emu: Emulator) -> list[tuple[str, dict[str, Any]]]:
    emu.wait_for_deliveries(timeout=10)
    return [(f"{d.event}.{d.action}" if d.action else d.event, d.payload) for d, _status in emu.deliveries]


@pytest.fixture
def hooks(github: Emulator) -> Emulator:
    """Deliveries go nowhere (a closed port) but are recorded with what they carried."""
    github.webhook_url = "http://127.0.0.1:9/webhooks"
    return github


# -- custom repository roles ----------------------------------------------------------------------


@pytest.mark.parametrize("base, legacy, flags", [
    ("maintain", "write", {"admin": False, "maintain": True, "push": True, "triage": True, "pull": True}),
    ("write", "write", {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True}),
    ("triage", "read", {"admin": False, "maintain": False, "push": False, "triage": True, "pull": True}),
])
def test_a_custom_role_is_named_in_role_name_and_its_base_shows_in_permission(github: Emulator,
                                                                              github_repo: RepoHandle,
                                                                              base, legacy, flags) -> None:
    github.add_custom_role("acme", "release-manager", base)
    github.add_collaborator(github_repo, "rita", "release-manager")
    body = api(github).get(f"{REPO}/collaborators/rita/permission").json()
    assert (body["role_name"], body["permission"]) == ("release-manager", legacy)
    assert body["user"]["permissions"] == flags and body["user"]["role_name"] == "release-manager"
    assert github.take_problems() == []  # the answer matches GitHub's documented schema


def test_custom_roles_are_the_organizations_and_build_on_a_base_role(github: Emulator, github_repo: RepoHandle):
    with pytest.raises(ValueError, match="unknown permission 'release-manager'"):
        github.add_collaborator(github_repo, "rita", "release-manager")
    with pytest.raises(ValueError, match="base role is read, triage, write or maintain, not 'admin'"):
        github.add_custom_role("acme", "owner-ish", "admin")


# -- secondary rate limits and the App JWT --------------------------------------------------------


@pytest.mark.parametrize("status", [403, 429])
def test_a_secondary_rate_limit_may_come_without_retry_after(github: Emulator, github_repo: RepoHandle,
                                                             status: int) -> None:
    github.faults.add(method="PATCH", path=r"/check-runs/", kind="secondary_rate_limit", retry_after=None,
                      status=status)
    c = api(github)
    run = c.post(f"{REPO}/check-runs", json={"name": "gating / eval", "head_sha": github_repo.head()}).json()
    r = c.patch(f"{REPO}/check-runs/{run['id']}", json={"status": "completed", "conclusion": "success"})
    assert r.status_code == status and "Retry-After" not in r.headers
    assert r.json()["message"] == SECONDARY_RATE_LIMIT_MESSAGE
    assert github.list_check_runs(github_repo)[0]["status"] == "queued"  # nothing was written


@pytest.mark.parametrize("ahead, message", [
    (120, "'Expiration time' claim ('exp') is too far in the future"),
    (300, "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"),
])
def test_an_app_jwt_from_a_clock_ahead_of_githubs_is_refused_and_date_says_githubs_time(
        github: Emulator, github_repo: RepoHandle, ahead: int, message: str) -> None:
    r = httpx.get(f"{github.api_url}/app", headers={"Authorization": f"Bearer {github.app.jwt(github.now() + ahead)}"})
    assert (r.status_code, r.json()["message"]) == (401, message)
    github.advance(3600)
    said = parsedate_to_datetime(httpx.get(f"{github.api_url}/rate_limit").headers["Date"]).timestamp()
    assert abs(said - github.now()) < 2  # the Date header is on the emulator's clock


# -- writes that happened before the error --------------------------------------------------------


@pytest.mark.parametrize("kind", ["5xx_after_write", "reset_after_write"])
def test_a_write_can_fail_after_it_happened(github: Emulator, github_repo: RepoHandle, kind: str) -> None:
    github.push(github_repo, "tune", {"prompts/answer.md": "Be brief.\n"}, "Tune", user="alice")
    pr = github.create_pull(github_repo, "tune", "main", "Tune", "alice")
    github.faults.add(method="POST", path=r"/comments$", kind=kind, status=502)
    c = api(github)
    if kind == "reset_after_write":
        with pytest.raises(httpx.TransportError):
            c.post(f"{REPO}/issues/{pr['number']}/comments", json={"body": "hello"})
    else:
        r = c.post(f"{REPO}/issues/{pr['number']}/comments", json={"body": "hello"})
        assert (r.status_code, r.json()) == (502, {"message": "Server Error"})
    assert [x["body"] for x in github.list_comments(github_repo, pr["number"])] == ["hello"]  # it was made
    assert [q.operation for q in github.requests if q.method == "POST"] == ["issues/create-comment", f"fault/{kind}"]


# -- a permission the installation lacks ----------------------------------------------------------


def test_team_membership_needs_members_read_and_new_permissions_reach_new_tokens_only(hooks: Emulator,
                                                                                     github_repo: RepoHandle):
    github = hooks
    github.add_team_member("acme", "ml-platform", "carol")
    del github.installation_permissions["members"]
    old = github.installation_token()
    r = api(github, old).get("/orgs/acme/teams/ml-platform/memberships/carol")
    assert (r.status_code, r.json()["message"]) == (403, "Resource not accessible by integration")
    assert r.headers["X-Accepted-GitHub-Permissions"] == "members=read"

    github.accept_permissions({"members": "read"}, user="root")
    assert api(github, old).get("/orgs/acme/teams/ml-platform/memberships/carol").status_code == 403
    assert api(github).get("/orgs/acme/teams/ml-platform/memberships/carol").json()["state"] == "active"
    ((event, payload),) = deliveries(github)
    assert event == "installation.new_permissions_accepted"
    assert payload["installation"]["id"] == github.app.installation_id and "repository" not in payload
    assert payload["installation"]["permissions"]["members"] == "read" and payload["sender"]["login"] == "root"
    assert github.take_problems() == []


# -- re-run buttons -------------------------------------------------------------------------------


def test_rerun_buttons_send_rerequested_to_the_app_that_made_the_check(hooks: Emulator, github_repo: RepoHandle):
    github = hooks
    github.add_collaborator(github_repo, "dave", "write")
    github.add_collaborator(github_repo, "erin", "read")
    github.push(github_repo, "tune", {"prompts/answer.md": "Be brief.\n"}, "Tune", user="alice")
    pr = github.create_pull(github_repo, "tune", "main", "Tune", "alice")
    head = pr["head"]["sha"]
    ours = api(github).post(f"{REPO}/check-runs", json={
        "name": "gating / approval", "head_sha": head, "status": "completed", "conclusion": "failure",
        "actions": [{"label": "Re-evaluate", "description": "Read reviews and checks again",
                     "identifier": "re-evaluate"}]}).json()
    theirs = api(github, github.actions_token()).post(f"{REPO}/check-runs", json={
        "name": "gating / eval", "head_sha": head}).json()
    github.wait_for_deliveries(timeout=10)
    github._dispatcher.deliveries.clear()

    github.rerequest_check_run(github_repo, ours["id"], "dave")
    github.rerequest_check_run(github_repo, theirs["id"], "dave")  # the Actions app's: nothing for us
    github.rerequest_check_suite(github_repo, ours["check_suite"]["id"], "dave")
    github.request_check_action(github_repo, ours["id"], "re-evaluate", "dave")
    got = deliveries(github)
    assert [e for e, _ in got] == ["check_run.rerequested", "check_suite.rerequested", "check_run.requested_action"]
    run, suite, action = (p for _, p in got)
    assert (run["check_run"]["id"], run["sender"]["login"]) == (ours["id"], "dave")
    assert [p["number"] for p in run["check_run"]["pull_requests"]] == [pr["number"]]
    assert (suite["check_suite"]["id"], suite["check_suite"]["head_sha"]) == (ours["check_suite"]["id"], head)
    assert [p["number"] for p in suite["check_suite"]["pull_requests"]] == [pr["number"]]
    assert action["requested_action"] == {"identifier": "re-evaluate"}
    assert github.take_problems() == []  # every payload matches GitHub's documented schema

    with pytest.raises(PermissionError, match="erin has no write access"):
        github.rerequest_check_run(github_repo, ours["id"], "erin")
    with pytest.raises(ValueError, match="offers no button 'merge-anyway'"):
        github.request_check_action(github_repo, ours["id"], "merge-anyway", "dave")
