"""gating/github/: the App's JWT, installation tokens, retries, and reading a revision over the API."""

from __future__ import annotations

import base64
import json
import logging
import threading
from pathlib import Path

import httpx
import jwt
import pytest
from app_support import private_key_pem, serve_in_thread
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from werkzeug.wrappers import Request, Response

from gating.git.revision import GitRevision
from gating.github import (
    ApiRevision,
    GitHubApp,
    GitHubClient,
    GitHubError,
    NotFound,
    PrivateKeyError,
    RateLimited,
    Repo,
    RetryPolicy,
    Token,
    app_jwt,
    load_private_key,
)
from gating.server.settings import Settings
from gating.system.manifest import ManifestError
from gating.system.snapshot import build_snapshot

NOW = 1_750_000_000


# -- the private key ------------------------------------------------------------------------------


def test_private_key_from_a_file_an_escaped_value_or_base64(tmp_path: Path):
    pem = private_key_pem()
    (tmp_path / "app.pem").write_text(pem)
    assert load_private_key(path=str(tmp_path / "app.pem")) == pem
    assert load_private_key(value=pem.replace("\n", "\\n")) == pem.strip()
    assert load_private_key(value=base64.b64encode(pem.encode()).decode()) == pem


@pytest.mark.parametrize("kw, message", [
    pytest.param({}, "no private key: set PRIVATE_KEY_PATH (a .pem file) or PRIVATE_KEY", id="none"),
    pytest.param({"value": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"},
                 "PRIVATE_KEY does not hold a PEM private key", id="garbage-pem"),
    pytest.param({"value": "hunter2"}, "PRIVATE_KEY is neither PEM text nor base64-encoded PEM", id="not-pem"),
])
def test_bad_private_keys_are_named_but_never_shown(kw, message):
    with pytest.raises(PrivateKeyError) as e:
        load_private_key(**kw)
    assert str(e.value) == message


def test_an_ec_key_is_refused_because_apps_sign_with_rs256():
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(PrivateKeyError) as e:
        load_private_key(value=pem)
    assert str(e.value) == "PRIVATE_KEY is not an RSA key; GitHub Apps sign with RS256"


def test_secrets_stay_out_of_reprs():
    s = Settings.load({"APP_ID": "7", "PRIVATE_KEY": private_key_pem(), "WEBHOOK_SECRET": "shh"}, environ={})
    assert "BEGIN" not in repr(s) and "shh" not in repr(s)
    app = GitHubApp("7", private_key_pem(), "http://127.0.0.1:9")
    assert repr(app) == "GitHubApp(app_id='7', base_url='http://127.0.0.1:9')"
    assert "abc" not in repr(Token("abc", 1.0))


# -- the App JWT ----------------------------------------------------------------------------------


def test_app_jwt_is_rs256_backdated_and_short_lived():
    token = app_jwt(12345, private_key_pem(), NOW)
    public = serialization.load_pem_private_key(private_key_pem().encode(), None).public_key()
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(token, public, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
    assert claims == {"iat": NOW - 60, "exp": NOW + 540, "iss": "12345"}
    assert claims["exp"] - NOW < 600


# -- installation tokens against the emulator -----------------------------------------------------


def make_app(emu, **kw) -> GitHubApp:
    sleeps: list[float] = []
    app = GitHubApp(emu.app.app_id, emu.app.private_key_pem, emu.api_url, clock=emu.now, sleep=sleeps.append,
                    **kw)
    app.sleeps = sleeps  # type: ignore[attr-defined]
    return app


def installed(app: GitHubApp, emu, repo) -> Repo:
    """The repository through the emulator's installation of the App."""
    return Repo(app.installation(emu.app.installation_id), repo.full_name)


def token_requests(emu) -> int:
    return sum(1 for r in emu.requests if r.operation == "apps/create-installation-access-token")


def test_installation_token_is_cached_until_shortly_before_it_expires(github, github_repo):
    app = make_app(github)
    repo = installed(app, github, github_repo)
    for _ in range(3):
        assert repo.branch_sha("main") == github_repo.head("main")
    assert token_requests(github) == 1
    github.advance(3600 - 200)  # 200 s left: still outside the refresh margin
    repo.branch_sha("main")
    assert token_requests(github) == 1
    github.advance(100)  # 100 s left: renewed before GitHub would refuse it
    repo.branch_sha("main")
    assert token_requests(github) == 2


def test_a_refused_token_is_refreshed_once(github, github_repo):
    app = make_app(github)
    inst = github.app.installation_id
    app._tokens[inst] = Token("ghs_revoked0000000000000000000000000000", github.now() + 3000)
    repo = Repo(app.installation(inst), github_repo.full_name)
    assert repo.branch_sha("main") == github_repo.head("main")
    assert [r.status for r in github.requests if r.operation == "repos/get-branch"] == [401, 200]
    assert token_requests(github) == 1


def test_token_and_key_never_reach_the_log(github, github_repo, caplog):
    caplog.set_level(logging.DEBUG)
    app = make_app(github)
    repo = installed(app, github, github_repo)
    repo.branch_sha("main")
    token = app.token(github.app.installation_id).token
    text = caplog.text
    assert "installation" in text and "new token" in text
    assert token not in text and "PRIVATE KEY" not in text and app.jwt()[:40] not in text


# -- retries --------------------------------------------------------------------------------------


def test_server_errors_are_retried_with_backoff(github, github_repo):
    app = make_app(github)
    repo = installed(app, github, github_repo)
    github.faults.add(method="GET", path=r"/branches/", kind="5xx", times=2, status=502)
    assert repo.branch_sha("main") == github_repo.head("main")
    assert app.sleeps == [0.5, 1.0]


def test_server_errors_give_up_after_the_retries(github, github_repo):
    app = make_app(github, retry=RetryPolicy(retries=2))
    repo = installed(app, github, github_repo)
    github.faults.add(method="GET", path=r"/branches/", kind="5xx", times=None, status=503)
    with pytest.raises(GitHubError) as e:
        repo.branch_sha("main")
    assert e.value.status == 503
    assert str(e.value).startswith("GitHub 503 (GET /repos/acme/support-bot/branches/main): ")
    assert app.sleeps == [0.5, 1.0]


def test_secondary_rate_limit_waits_for_retry_after(github, github_repo):
    app = make_app(github)
    repo = installed(app, github, github_repo)
    github.faults.add(path=r"/branches/", kind="secondary_rate_limit", retry_after=3)
    assert repo.branch_sha("main") == github_repo.head("main")
    assert app.sleeps == [3.0]


def test_a_long_retry_after_goes_back_to_the_job_queue(github, github_repo):
    app = make_app(github)
    repo = installed(app, github, github_repo)
    github.faults.add(path=r"/branches/", kind="secondary_rate_limit", retry_after=120)
    with pytest.raises(RateLimited) as e:
        repo.branch_sha("main")
    assert (e.value.status, e.value.retry_after) == (403, 120.0)
    assert app.sleeps == []


def test_connection_resets_are_retried(github, github_repo):
    app = make_app(github)
    repo = installed(app, github, github_repo)
    github.faults.add(path=r"/branches/", kind="reset", times=1)
    assert repo.branch_sha("main") == github_repo.head("main")
    assert app.sleeps == [0.5]


def test_not_found_and_permission_lookups(github, github_repo):
    app = make_app(github)
    repo = installed(app, github, github_repo)
    github.add_collaborator(github_repo, "carol", "maintain")
    github.add_team_member("acme", "ml-platform", "carol")
    assert repo.permission("carol") == "maintain"
    assert repo.permission("nobody-here") == "none"
    assert repo.is_team_member("acme/ml-platform", "carol") is True
    assert repo.is_team_member("acme/ml-platform", "dave") is False
    with pytest.raises(NotFound):
        repo.pull(999)


def test_pagination_follows_link_headers(github, github_repo):
    app = make_app(github)
    repo = installed(app, github, github_repo)
    github.push(github_repo, "x", {"a.txt": "a"}, "a", user="alice")
    pr = github.create_pull(github_repo, "x", "main", "t", "alice")
    for i in range(5):
        github.add_comment(github_repo, pr["number"], "bob", f"comment {i}")
    bodies = [c["body"] for c in repo.client.paginate(f"{repo.path}/issues/{pr['number']}/comments", per_page=2)]
    assert bodies == [f"comment {i}" for i in range(5)]
    assert [c["body"] for c in repo.issue_comments(pr["number"])] == bodies


# -- rate limit headers GitHub sends that the emulator has no fault for ----------------------------


def scripted(responses: list[Response]):
    """A loopback server answering each request with the next scripted response."""
    lock = threading.Lock()

    @Request.application
    def wsgi(request: Request) -> Response:
        with lock:
            return responses.pop(0)

    return wsgi


@pytest.mark.parametrize("first, wait", [
    pytest.param(Response('{"message": "slow down"}', 429, {"Retry-After": "2"}), 2.0, id="429-retry-after"),
    pytest.param(Response('{"message": "You have exceeded a secondary rate limit"}', 429), 60.0,
                 id="429-without-retry-after"),
    pytest.param(Response('{"message": "API rate limit exceeded"}', 403,
                          {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(NOW + 9)}), 10.0,
                 id="primary-limit-until-reset"),
])
def test_rate_limit_forms(first, wait):
    wsgi = scripted([first, Response(json.dumps({"ok": True}), 200)])
    sleeps: list[float] = []
    with serve_in_thread(wsgi) as url:
        client = GitHubClient(url, lambda _f: "token t", httpx.Client(), RetryPolicy(max_wait=90),
                              sleep=sleeps.append, clock=lambda: NOW)
        assert client.get("/x") == {"ok": True}
    assert sleeps == [wait]


def test_a_server_error_asking_for_a_long_wait_goes_back_to_the_job_queue():
    """A 503 with Retry-After beyond max_wait is not slept through in a job thread (once per retry)."""
    wsgi = scripted([Response('{"message": "Service Unavailable"}', 503, {"Retry-After": "3600"})])
    sleeps: list[float] = []
    with serve_in_thread(wsgi) as url:
        client = GitHubClient(url, None, httpx.Client(), RetryPolicy(max_wait=30), sleep=sleeps.append)
        with pytest.raises(RateLimited) as e:
            client.get("/x")
    assert sleeps == []
    assert (e.value.status, e.value.retry_after) == (503, 3600.0)
    assert str(e.value) == "GitHub 503 (GET /x): Service Unavailable"


def test_plain_403_is_not_retried():
    wsgi = scripted([Response('{"message": "Resource not accessible by integration"}', 403)])
    with serve_in_thread(wsgi) as url:
        client = GitHubClient(url, None, httpx.Client(), sleep=lambda s: None)
        with pytest.raises(GitHubError) as e:
            client.get("/x")
    assert str(e.value) == "GitHub 403 (GET /x): Resource not accessible by integration"


# -- a revision read over the API -----------------------------------------------------------------


def test_api_revision_builds_the_same_snapshot_as_git(github, github_repo):
    app = make_app(github)
    repo = installed(app, github, github_repo)
    sha = github_repo.head("main")
    over_api = ApiRevision(repo, sha)
    from_git = GitRevision(github_repo.git, sha)
    assert over_api.list_files() == from_git.list_files()
    assert build_snapshot(over_api).digest == build_snapshot(from_git).digest
    assert over_api.read_many(["nope.txt"]) == {"nope.txt": None}
    github.reset_requests()
    again = ApiRevision(repo, sha, over_api.blobs)
    assert build_snapshot(again).digest == build_snapshot(from_git).digest
    assert github.requests == []  # the tree and the blobs of a SHA never change: both came from the cache
    by_name = ApiRevision(repo, "main", over_api.blobs)
    by_name.list_files()
    assert [r.operation for r in github.requests] == ["git/get-tree"]  # a branch moves: read again


def test_api_revision_refuses_a_symlinked_system_file_as_git_does(github, github_repo, tmp_path: Path):
    clone = github_repo.clone(tmp_path / "clone", github.installation_token())
    (clone.root / "tools" / "link.json").symlink_to("open_ticket.json")
    clone.run("add", "-A")
    clone.run("commit", "-q", "-m", "a linked tool")
    clone.run("push", "-q", "origin", "HEAD:main")
    sha = github_repo.head("main")
    over_api = ApiRevision(installed(make_app(github), github, github_repo), sha)
    from_git = GitRevision(github_repo.git, sha)
    assert over_api.links(["tools/link.json", "tools/open_ticket.json"]) == {"tools/link.json": "open_ticket.json"}
    assert over_api.submodules() == from_git.submodules() == []
    problems = []
    for reader in (over_api, from_git):
        with pytest.raises(ManifestError) as e:
            build_snapshot(reader)
        problems.append([str(p) for p in e.value.problems])
    assert problems[0] == problems[1] == [
        "tools/link.json:1:1: file is a symbolic link (to 'open_ticket.json'), and git keeps only the path a link "
        "points to: commit the file itself in its place, or name its target in gating.yml"]
