"""The emulator's OAuth web flow for the App's user-to-server tokens, as github.com answers it."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest


def authorize(github, login: str, redirect: str = "http://127.0.0.1:9/cb", state: str = "s1") -> str:
    r = httpx.post(f"{github.web_url}/login/oauth/authorize", data={
        "client_id": github.app.client_id, "redirect_uri": redirect, "state": state, "login": login})
    assert r.status_code == 302, r.text
    q = parse_qs(urlsplit(r.headers["Location"]).query)
    assert q["state"] == [state]
    return q["code"][0]


def exchange(github, code: str, secret: str | None = None, json: bool = True) -> httpx.Response:
    return httpx.post(f"{github.web_url}/login/oauth/access_token",
                      data={"client_id": github.app.client_id, "client_secret": secret or github.app.client_secret,
                            "code": code, "redirect_uri": "http://127.0.0.1:9/cb"},
                      headers={"Accept": "application/json"} if json else {})


def test_the_authorize_page_names_the_app_and_asks_who_signs_in(github):
    r = httpx.get(f"{github.web_url}/login/oauth/authorize",
                  params={"client_id": github.app.client_id, "redirect_uri": "http://127.0.0.1:9/cb", "state": "x"})
    assert r.status_code == 200 and "Authorize gating" in r.text and "name='login'" in r.text
    unknown = httpx.get(f"{github.web_url}/login/oauth/authorize", params={"client_id": "Iv1.nope"})
    assert unknown.status_code == 404


def test_a_code_becomes_an_expiring_user_token_that_reads_the_user_and_the_repository(github, github_repo):
    github.add_user("carol")
    github.add_collaborator(github_repo, "carol", "read")
    token = exchange(github, authorize(github, "carol")).json()
    assert token["token_type"] == "bearer" and token["access_token"].startswith("ghu_")
    assert token["expires_in"] == 28800 and token["refresh_token"].startswith("ghr_")
    auth = {"Authorization": f"Bearer {token['access_token']}"}
    assert httpx.get(f"{github.api_url}/user", headers=auth).json()["login"] == "carol"
    repo = httpx.get(f"{github.api_url}/repos/{github_repo.full_name}", headers=auth).json()
    assert repo["permissions"]["pull"] is True and repo["permissions"]["push"] is False


def test_a_private_repository_is_404_to_a_user_without_access(github):
    github.create_repo("acme/secret", private=True)
    github.add_user("mallory")
    token = exchange(github, authorize(github, "mallory")).json()["access_token"]
    r = httpx.get(f"{github.api_url}/repos/acme/secret", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 404


@pytest.mark.parametrize("case", ["wrong secret", "reused code", "unknown code"])
def test_bad_exchanges_answer_200_with_an_error_as_github_does(github, case):
    github.add_user("carol")
    code = authorize(github, "carol")
    if case == "reused code":
        exchange(github, code)
    r = exchange(github, "nope" if case == "unknown code" else code, secret="x" * 40 if case == "wrong secret" else None)
    assert r.status_code == 200
    assert r.json()["error"] == ("incorrect_client_credentials" if case == "wrong secret" else "bad_verification_code")


def test_the_token_endpoint_answers_form_encoded_unless_json_is_accepted(github):
    github.add_user("carol")
    r = exchange(github, authorize(github, "carol"), json=False)
    assert r.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert parse_qs(r.text)["token_type"] == ["bearer"]


def test_an_unknown_login_is_refused_on_the_authorize_page(github):
    r = httpx.post(f"{github.web_url}/login/oauth/authorize", data={
        "client_id": github.app.client_id, "redirect_uri": "http://127.0.0.1:9/cb", "login": "nobody"})
    assert r.status_code == 401
