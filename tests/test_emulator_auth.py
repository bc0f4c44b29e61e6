"""App JWTs, installation tokens and permissions, checked the way GitHub checks them."""

from __future__ import annotations

import time

import httpx
import pytest
from github import Auth, Github, GithubException, GithubIntegration

from gating.testing import Emulator, RepoHandle
from gating.testing.emulator_auth import generate_key_pair


def call(emu: Emulator, method: str, path: str, token: str | None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, f"{emu.api_url}{path}", headers=headers, timeout=10, **kw)


def test_app_jwt_mints_an_installation_token_that_works(github: Emulator, github_repo: RepoHandle) -> None:
    jwt = github.app.jwt()
    app = call(github, "GET", "/app", jwt).json()
    assert (app["id"], app["slug"]) == (github.app.app_id, "gating-emulated")
    r = call(github, "POST", f"/app/installations/{github.app.installation_id}/access_tokens", jwt,
             json={"permissions": {"checks": "write", "contents": "read"}})
    assert r.status_code == 201
    body = r.json()
    assert body["token"].startswith("ghs_") and body["permissions"] == {"checks": "write", "contents": "read",
                                                                       "metadata": "read"}
    created = call(github, "POST", "/repos/acme/support-bot/check-runs", body["token"],
                   json={"name": "gating / approval", "head_sha": github_repo.head()})
    assert created.status_code == 201
    refused = call(github, "POST", "/repos/acme/support-bot/git/blobs", body["token"], json={"content": "x"})
    assert (refused.status_code, refused.headers["X-Accepted-GitHub-Permissions"]) == (403, "contents=write")


def test_pygithub_app_auth_end_to_end(github: Emulator, github_repo: RepoHandle) -> None:
    auth = Auth.AppAuth(github.app.app_id, github.app.private_key_pem)
    integration = GithubIntegration(auth=auth, base_url=github.api_url, seconds_between_requests=0,
                                    seconds_between_writes=0)
    installation = integration.get_repo_installation("acme", "support-bot")
    assert installation.id == github.app.installation_id
    gh = Github(base_url=github.api_url, auth=auth.get_installation_auth(installation.id), retry=None,
                seconds_between_requests=0, seconds_between_writes=0)
    run = gh.get_repo("acme/support-bot").create_check_run("gating / eval", github_repo.head())
    assert run.app.slug == "gating-emulated"


@pytest.mark.parametrize(("case", "message"), [
    ("expired", "'Expiration time' claim ('exp') must be a numeric value representing the future time at which "
                "the assertion expires"),
    ("too_long", "'Expiration time' claim ('exp') is too far in the future"),
    ("wrong_key", "A JSON web token could not be decoded"),
    ("issued_in_future", "'Issued at' claim ('iat') must be an Integer representing the time that the assertion "
                         "was issued"),
    ("garbage", "Bad credentials"),
], ids=str)
def test_jwt_rules(github: Emulator, case: str, message: str) -> None:
    now = time.time()
    token = {
        "expired": lambda: github.app.jwt(now=now - 700, ttl=600),
        "too_long": lambda: github.app.jwt(now=now, ttl=1200),
        "wrong_key": lambda: github.app.jwt(key_pem=generate_key_pair()[0]),
        "issued_in_future": lambda: github.app.jwt(now=now + 300, iat_offset=0, ttl=200),
        "garbage": lambda: "not-a-jwt",
    }[case]()
    r = call(github, "POST", f"/app/installations/{github.app.installation_id}/access_tokens", token)
    assert (r.status_code, r.json()["message"]) == (401, message)


def test_ten_minutes_is_the_longest_jwt_lifetime(github: Emulator) -> None:
    assert call(github, "GET", "/app", github.app.jwt(ttl=600, iat_offset=-60)).status_code == 200
    assert call(github, "GET", "/app", github.app.jwt(ttl=610, iat_offset=-60)).status_code == 401


def test_installation_tokens_expire_after_an_hour(github: Emulator, github_repo: RepoHandle) -> None:
    token = github.installation_token()
    assert call(github, "GET", "/repos/acme/support-bot", token).status_code == 200
    github.advance(3601)
    r = call(github, "GET", "/repos/acme/support-bot", token)
    assert (r.status_code, r.json()["message"]) == (401, "Bad credentials")


def test_read_only_token_cannot_create_check_runs(github: Emulator, github_repo: RepoHandle) -> None:
    gh = Github(base_url=github.api_url, auth=Auth.Token(github.read_only_token()), retry=None,
                seconds_between_requests=0, seconds_between_writes=0)
    repo = gh.get_repo("acme/support-bot")
    with pytest.raises(GithubException) as e:
        repo.create_check_run("gating / eval", github_repo.head())
    assert e.value.status == 403
    assert e.value.data["message"] == "Resource not accessible by integration"
    assert e.value.headers["x-accepted-github-permissions"] == "checks=write"
    assert repo.get_branch("main").commit.sha == github_repo.head()  # reading still works


def test_a_check_run_posted_with_github_token_belongs_to_github_actions(github: Emulator,
                                                                         github_repo: RepoHandle) -> None:
    actions, app = github.actions_token(), github.installation_token()
    body = {"name": "gating / eval", "head_sha": github_repo.head(), "status": "completed", "conclusion": "success"}
    ours = call(github, "POST", "/repos/acme/support-bot/check-runs", actions, json=body).json()
    assert (ours["app"]["slug"], ours["app"]["name"]) == ("github-actions", "GitHub Actions")
    theirs = call(github, "POST", "/repos/acme/support-bot/check-runs", app, json=body).json()
    assert theirs["app"]["slug"] == "gating-emulated" and theirs["check_suite"] != ours["check_suite"]
    listed = call(github, "GET", f"/repos/acme/support-bot/commits/{github_repo.head()}/check-runs", app,
                  params={"check_name": "gating / eval", "filter": "all"}).json()["check_runs"]
    assert [r["app"]["slug"] for r in listed] == ["gating-emulated", "github-actions"]
    r = call(github, "PATCH", f"/repos/acme/support-bot/check-runs/{ours['id']}", app, json={"conclusion": "failure"})
    assert r.status_code == 403 and "can only be modified by the GitHub App that created it" in r.json()["message"]


def test_tokens_are_checked_on_every_call(github: Emulator, github_repo: RepoHandle) -> None:
    token = github.installation_token()
    assert call(github, "GET", "/app", token).status_code == 401  # the App's endpoints want the JWT
    assert call(github, "GET", "/repos/acme/support-bot", "ghs_unknown").status_code == 401
    r = call(github, "POST", "/repos/acme/support-bot/git/blobs", None, json={"content": "x"})
    assert (r.status_code, r.json()["message"]) == (401, "Requires authentication")
    r = call(github, "POST", f"/app/installations/{github.app.installation_id}/access_tokens", github.app.jwt(),
             json={"permissions": {"administration": "write"}})
    assert r.status_code == 422
    assert call(github, "GET", "/installation/repositories", token).json()["total_count"] == 1


def test_tokens_limited_to_repositories(github: Emulator, github_repo: RepoHandle, tmp_path) -> None:
    (tmp_path / "f").write_text("x")
    github.create_repo("acme/secret", source_dir=tmp_path, private=True)
    token = github.installation_token(repositories=["support-bot"])
    assert call(github, "GET", "/repos/acme/support-bot", token).status_code == 200
    assert call(github, "GET", "/repos/acme/secret", token).status_code == 404
    assert call(github, "GET", "/repos/acme/secret", github.installation_token()).status_code == 200


def test_user_tokens_follow_repository_roles(github: Emulator, github_repo: RepoHandle) -> None:
    github.add_collaborator(github_repo, "reader", "read")
    github.add_collaborator(github_repo, "writer", "write")
    blob = {"content": "x"}
    r = call(github, "POST", "/repos/acme/support-bot/git/blobs", github.user_token("reader"), json=blob)
    assert (r.status_code, r.json()["message"]) == (403, "Resource not accessible by personal access token")
    assert call(github, "POST", "/repos/acme/support-bot/git/blobs", github.user_token("writer"), json=blob).status_code == 201
    me = call(github, "GET", "/user", github.user_token("writer")).json()
    assert me["login"] == "writer"


def test_check_run_output_limits(github: Emulator, github_repo: RepoHandle) -> None:
    token = github.installation_token()
    base = {"name": "gating / eval", "head_sha": github_repo.head()}
    ok = dict(base, output={"title": "t", "summary": "s" * 65535,
                            "annotations": [{"path": "prompts/answer.md", "start_line": 1, "end_line": 1,
                                             "annotation_level": "notice", "message": "m"}] * 50})
    r = call(github, "POST", "/repos/acme/support-bot/check-runs", token, json=ok)
    assert r.status_code == 201 and r.json()["output"]["annotations_count"] == 50
    too_long = dict(base, output={"title": "t", "summary": "s", "text": "x" * 65536})
    r = call(github, "POST", "/repos/acme/support-bot/check-runs", token, json=too_long)
    assert r.status_code == 422
    assert "Only 65535 characters are allowed; 65536 were supplied." in r.json()["message"]
    too_many = dict(ok, output=dict(ok["output"], summary="s", annotations=ok["output"]["annotations"] * 2))
    run_id = github.list_check_runs(github_repo)[0]["id"]
    r = call(github, "PATCH", f"/repos/acme/support-bot/check-runs/{run_id}", token,
             json={"output": too_many["output"]})
    assert r.status_code == 422 and "Only 50 annotations are allowed per request; 100 were supplied." in r.json()["message"]
    r = call(github, "PATCH", f"/repos/acme/support-bot/check-runs/{run_id}", token,
             json={"output": ok["output"] | {"summary": "more"}})
    assert r.json()["output"]["annotations_count"] == 100  # annotations accumulate across requests
