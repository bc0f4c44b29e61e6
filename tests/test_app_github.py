"""gating/github/ (PyGithub underneath): the App's JWT, installation tokens, rate limits that never sleep,
pagination, writes that are safe to retry, and reading a revision over the API."""

from __future__ import annotations

import base64
import json
import logging
import threading
from pathlib import Path

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
    commit_sha,
    load_private_key,
    token_client,
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
    app = GitHubApp(12345, private_key_pem(), "http://127.0.0.1:9", clock=lambda: NOW)
    token = app.jwt()
    public = serialization.load_pem_private_key(private_key_pem().encode(), None).public_key()
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(token, public, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
    assert claims == {"iat": NOW - 60, "exp": NOW + 540, "iss": "12345"}
    assert claims["exp"] - NOW < 600


# -- installation tokens against the emulator -----------------------------------------------------


@pytest.fixture
def no_sleep(monkeypatch):
    """Any sleep in a job thread fails the test: PyGithub's (time.sleep, urllib3's) and ours."""
    def refuse(seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s in a job thread")
    monkeypatch.setattr("time.sleep", refuse)
    return refuse


def make_app(emu, **kw) -> GitHubApp:
    return GitHubApp(emu.app.app_id, emu.app.private_key_pem, emu.api_url, clock=emu.now, **kw)


def installed(app: GitHubApp, emu, repo) -> Repo:
    """The repository through the emulator's installation of the App."""
    return Repo(app.installation(emu.app.installation_id), repo.full_name)


def token_requests(emu) -> int:
    return sum(1 for r in emu.requests if r.operation == "apps/create-installation-access-token")


def test_installation_token_is_reused_across_clients_until_shortly_before_it_expires(github, github_repo):
    app = make_app(github)
    for _ in range(3):  # each job has a client of its own; they share the App's token
        assert installed(app, github, github_repo).branch_sha("main") == github_repo.head("main")
    assert token_requests(github) == 1
    repo = installed(app, github, github_repo)
    github.advance(3600 - 200)  # 200 s left: still outside the refresh margin
    repo.branch_sha("main")
    assert token_requests(github) == 1
    github.advance(100)  # 100 s left: renewed before GitHub would refuse it
    repo.branch_sha("main")
    assert token_requests(github) == 2
    github.advance(3600)  # long expired: renewed, and the call goes through
    assert repo.branch_sha("main") == github_repo.head("main")
    assert token_requests(github) == 3
    assert [r.status for r in github.requests if r.operation == "repos/get-branch"] == [200] * 6


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
    assert "/repos/acme/support-bot/branches/main -> 200" in text
    assert token not in text and "PRIVATE KEY" not in text and app.jwt()[:40] not in text


# -- errors, retries and rate limits: never a sleep in a job thread --------------------------------


def test_a_server_error_on_a_read_is_tried_again_at_once(github, github_repo, no_sleep):
    repo = installed(make_app(github), github, github_repo)
    github.faults.add(method="GET", path=r"/branches/", kind="5xx", times=2, status=502)
    assert repo.branch_sha("main") == github_repo.head("main")
    assert [r.status for r in github.requests if "/branches/" in r.path] == [502, 502, 200]


def test_server_errors_give_up_after_the_retries_for_the_job_queue(github, github_repo, no_sleep):
    repo = installed(make_app(github, retry=RetryPolicy(retries=1)), github, github_repo)
    github.faults.add(method="GET", path=r"/branches/", kind="5xx", times=None, status=503)
    with pytest.raises(GitHubError) as e:
        repo.branch_sha("main")
    assert e.value.status == 503 and not isinstance(e.value, RateLimited)
    assert str(e.value).startswith("GitHub 503 (GET /repos/acme/support-bot/branches/main): ")
    assert len([r for r in github.requests if "/branches/" in r.path]) == 2


def test_a_connection_reset_on_a_read_is_tried_again_at_once(github, github_repo, no_sleep):
    repo = installed(make_app(github), github, github_repo)
    github.faults.add(path=r"/branches/", kind="reset", times=1)
    assert repo.branch_sha("main") == github_repo.head("main")


@pytest.mark.parametrize("retry_after", [3, 120])
def test_a_secondary_rate_limit_goes_back_to_the_job_queue_without_sleeping(github, github_repo, no_sleep,
                                                                            retry_after):
    repo = installed(make_app(github), github, github_repo)
    github.faults.add(path=r"/branches/", kind="secondary_rate_limit", retry_after=retry_after)
    with pytest.raises(RateLimited) as e:
        repo.branch_sha("main")
    assert (e.value.status, e.value.retry_after) == (403, float(retry_after))
    assert str(e.value).startswith("GitHub 403 (GET /repos/acme/support-bot/branches/main): ")
    assert repo.branch_sha("main") == github_repo.head("main")  # the job's next run goes through


def test_not_found_and_permission_lookups(github, github_repo):
    app = make_app(github)
    repo = installed(app, github, github_repo)
    github.add_collaborator(github_repo, "carol", "maintain")
    github.add_team_member("acme", "ml-platform", "carol")
    assert repo.permission("carol") == "maintain"
    assert repo.permission("nobody-here") == "none"
    assert repo.is_team_member("acme/ml-platform", "carol") is True
    assert repo.is_team_member("acme/ml-platform", "dave") is False
    with pytest.raises(NotFound) as e:
        repo.pull(999)
    assert str(e.value) == "GitHub 404 (GET /repos/acme/support-bot/pulls/999): Not Found"


def test_names_with_slashes_and_commit_prefixes(github, github_repo):
    repo = installed(make_app(github), github, github_repo)
    github.push(github_repo, "feature/x", {"a.txt": "a"}, "a", user="alice")
    assert repo.branch_sha("feature/x") == github_repo.head("feature/x")
    assert repo.merge_base("main", "feature/x") == github_repo.head("main")
    assert commit_sha(repo, github_repo.head("main")[:10]) == github_repo.head("main")
    assert commit_sha(repo, "0000000000") is None


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


def test_pagination_over_more_than_a_hundred_items(github, github_repo):
    repo = installed(make_app(github), github, github_repo)
    github.push(github_repo, "x", {"a.txt": "a"}, "a", user="alice")
    pr = github.create_pull(github_repo, "x", "main", "t", "alice")
    for i in range(230):
        github.add_comment(github_repo, pr["number"], "bob", f"comment {i}")
    github.reset_requests()
    assert [c["body"] for c in repo.issue_comments(pr["number"])] == [f"comment {i}" for i in range(230)]
    pages = [r for r in github.requests if r.operation == "issues/list-comments"]
    assert len(pages) == 3 and all(r.query.get("per_page") == "100" for r in pages)
    assert len(list(repo.client.paginate(f"{repo.path}/issues/{pr['number']}/comments", limit=150))) == 150


def test_a_page_that_waited_out_a_rate_limit_is_fetched_again_without_losing_the_first(github, github_repo):
    github.push(github_repo, "x", {"a.txt": "a"}, "a", user="alice")
    pr = github.create_pull(github_repo, "x", "main", "t", "alice")
    for i in range(120):
        github.add_comment(github_repo, pr["number"], "bob", f"comment {i}")
    client = token_client(github.api_url, github.installation_token(), RetryPolicy(wait_budget=5))
    sleeps: list[float] = []
    client.sleep = sleeps.append
    listing = client.paginate(f"/repos/acme/support-bot/issues/{pr['number']}/comments")
    first = [next(listing) for _ in range(100)]
    github.faults.add(path=r"/comments", kind="secondary_rate_limit", retry_after=1, times=1)
    rest = list(listing)
    assert [c["body"] for c in first + rest] == [f"comment {i}" for i in range(120)]
    assert sleeps == [1.0]


# -- writes that are safe to retry ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["5xx_after_write", "reset_after_write"])
def test_a_check_run_made_before_the_error_is_found_not_made_twice(github, github_repo, no_sleep, kind):
    repo = installed(make_app(github), github, github_repo)
    sha = github_repo.head("main")
    github.faults.add(method="POST", path=r"/check-runs$", kind=kind, status=502)
    made = repo.create_check_run({"name": "gating / approvals", "head_sha": sha, "status": "in_progress",
                                  "started_at": "2026-01-01T00:00:00Z", "output": {"title": "T", "summary": "S"}})
    runs = [r for r in github.list_check_runs(github_repo, sha) if r["name"] == "gating / approvals"]
    assert [r["id"] for r in runs] == [made["id"]]
    assert runs[0]["started_at"] == "2026-01-01T00:00:00Z" and runs[0]["external_id"].startswith("gating-")
    posts = [r.operation for r in github.requests if r.method == "POST" and r.path.endswith("/check-runs")]
    assert posts == ["checks/create", f"fault/{kind}"]  # made once; the failure after it was not a second write
    github.take_problems()


def test_a_write_that_failed_before_it_happened_is_made_once_more(github, github_repo, no_sleep):
    repo = installed(make_app(github), github, github_repo)
    github.push(github_repo, "x", {"a.txt": "a"}, "a", user="alice")
    pr = github.create_pull(github_repo, "x", "main", "t", "alice")
    github.faults.add(method="POST", path=r"/comments$", kind="5xx", times=1, status=502)
    repo.create_comment(pr["number"], "once")
    assert [c["body"] for c in github.list_comments(github_repo, pr["number"])] == ["once"]
    assert [r.status for r in github.requests if r.method == "POST" and r.path.endswith("/comments")] == [502, 201]


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
    pytest.param(Response('{"message": "Service Unavailable"}', 503, {"Retry-After": "3600"}), 3600.0,
                 id="5xx-retry-after"),
])
def test_rate_limit_forms_are_handed_back_without_sleeping(first, wait, no_sleep):
    wsgi = scripted([first])
    with serve_in_thread(wsgi) as url:
        client = GitHubClient(url, None, clock=lambda: NOW)
        with pytest.raises(RateLimited) as e:
            client.get("/x")
    assert e.value.retry_after == wait
    assert str(e.value).startswith(f"GitHub {first.status_code} (GET /x): ")


@pytest.mark.parametrize("first, wait", [
    pytest.param(Response('{"message": "slow down"}', 429, {"Retry-After": "2"}), 2.0, id="429-retry-after"),
    pytest.param(Response('{"message": "API rate limit exceeded"}', 403,
                          {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(NOW + 9)}), 10.0,
                 id="primary-limit-until-reset"),
])
def test_a_client_with_a_wait_budget_waits_in_place(first, wait):
    """The Action's client (no job queue) waits as long as GitHub asks, within its budget."""
    wsgi = scripted([first, Response(json.dumps({"ok": True}), 200)])
    sleeps: list[float] = []
    with serve_in_thread(wsgi) as url:
        client = GitHubClient(url, None, RetryPolicy(wait_budget=300), sleep=sleeps.append, clock=lambda: NOW)
        assert client.get("/x") == {"ok": True}
    assert sleeps == [wait] and client.waited == wait


def test_a_commands_token_client_waits_up_to_thirty_seconds_in_all():
    wsgi = scripted([Response('{"message": "slow down"}', 429, {"Retry-After": "20"}),
                     Response('{"message": "slow down"}', 429, {"Retry-After": "20"}),
                     Response('{"message": "slow down"}', 429, {"Retry-After": "20"})])
    sleeps: list[float] = []
    with serve_in_thread(wsgi) as url:
        client = token_client(url, "t")
        client.sleep = sleeps.append
        with pytest.raises(RateLimited) as e:
            client.get("/x")
    assert sleeps == [20.0, 10.0] and e.value.retry_after == 20.0


def test_plain_403_is_not_retried():
    wsgi = scripted([Response('{"message": "Resource not accessible by integration"}', 403,
                              {"X-Accepted-GitHub-Permissions": "members=read"})])
    with serve_in_thread(wsgi) as url:
        client = token_client(url, "t")
        with pytest.raises(GitHubError) as e:
            client.get("/x")
    assert str(e.value) == "GitHub 403 (GET /x): Resource not accessible by integration"
    assert e.value.accepted == ["members=read"]


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
