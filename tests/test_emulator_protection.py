"""Branch protection in the emulator: the rule's endpoints, and ref updates refused as GitHub refuses them."""

from __future__ import annotations

import httpx
import pytest
from github import Auth, Github

from gating.testing import Emulator, RepoHandle

REPO = "/repos/acme/support-bot"
RULE = {"required_status_checks": None, "enforce_admins": False, "restrictions": None,
        "required_pull_request_reviews": {"required_approving_review_count": 1, "dismiss_stale_reviews": True}}


def call(emu: Emulator, method: str, path: str, token: str, **kw) -> httpx.Response:
    return httpx.request(method, f"{emu.api_url}{REPO}{path}", headers={"Authorization": f"Bearer {token}"},
                         timeout=10, **kw)


@pytest.fixture
def root(github: Emulator, github_repo: RepoHandle) -> str:
    """A token of a repository admin (alice has write)."""
    github.add_collaborator(github_repo, "root", "admin")
    github.add_collaborator(github_repo, "alice", "write")
    return github.user_token("root")


def ahead(repo: RepoHandle, name: str = "next") -> str:
    """A commit on top of main (on a side branch), so moving main to it is a fast forward."""
    return repo.commit_files(name, {"notes.txt": f"{name}\n"}, f"Add {name}", base=repo.head())


def move_main(emu: Emulator, token: str, sha: str, force: bool = False) -> httpx.Response:
    return call(emu, "PATCH", "/git/refs/heads/main", token, json={"sha": sha, "force": force})


def test_put_get_delete_round_trip(github: Emulator, github_repo: RepoHandle, root: str) -> None:
    r = call(github, "GET", "/branches/main/protection", root)
    assert (r.status_code, r.json()["message"]) == (404, "Branch not protected")
    body = RULE | {"required_status_checks": {"strict": True, "contexts": ["gating / eval"]}, "allow_deletions": True}
    put = call(github, "PUT", "/branches/main/protection", root, json=body)
    assert put.status_code == 200
    got = call(github, "GET", "/branches/main/protection", root).json()
    for rule in (put.json(), got):
        assert rule["url"] == f"{github.api_url}{REPO}/branches/main/protection"
        assert rule["required_pull_request_reviews"]["required_approving_review_count"] == 1
        assert rule["required_pull_request_reviews"]["dismiss_stale_reviews"] is True
        checks = rule["required_status_checks"]
        assert (checks["strict"], checks["contexts"], checks["checks"]) == (
            True, ["gating / eval"], [{"context": "gating / eval", "app_id": None}])
        assert (rule["enforce_admins"]["enabled"], rule["allow_deletions"], rule["allow_force_pushes"]) == (
            False, {"enabled": True}, {"enabled": False})
        assert "restrictions" not in rule
    assert call(github, "DELETE", "/branches/main/protection", root).status_code == 204
    r = call(github, "GET", "/branches/main/protection", root)
    assert (r.status_code, r.json()["message"]) == (404, "Branch not protected")
    r = call(github, "DELETE", "/branches/main/protection", root)
    assert (r.status_code, r.json()["message"]) == (404, "Branch not protected")
    r = call(github, "PUT", "/branches/nope/protection", root, json=RULE)
    assert (r.status_code, r.json()["message"]) == (404, "Branch not found")


def test_only_admins_manage_protection(github: Emulator, github_repo: RepoHandle, root: str) -> None:
    for token in (github.installation_token(), github.user_token("alice")):
        r = call(github, "PUT", "/branches/main/protection", token, json=RULE)
        assert (r.status_code, r.headers["X-Accepted-GitHub-Permissions"]) == (403, "administration=write")
    r = call(github, "PUT", "/branches/main/protection", root, json={"enforce_admins": True})
    assert r.status_code == 422 and "required_status_checks" in r.json()["message"]  # the four keys are required
    assert github_repo.record.protections == {}


def test_branch_json_says_whether_it_is_protected(github: Emulator, github_repo: RepoHandle, root: str) -> None:
    ahead(github_repo, "side")
    github.protect_branch(github_repo, "main", contexts=["gating / eval"], enforce_admins=True)
    repo = Github(base_url=github.api_url, auth=Auth.Token(github.installation_token()), retry=None,
                  seconds_between_requests=0, seconds_between_writes=0).get_repo("acme/support-bot")
    main, side = repo.get_branch("main"), repo.get_branch("side")
    assert (main.protected, side.protected) == (True, False)
    assert main.raw_data["protection"] == {"enabled": True, "required_status_checks": {
        "enforcement_level": "everyone", "contexts": ["gating / eval"],
        "checks": [{"context": "gating / eval", "app_id": None}]}}
    assert side.raw_data["protection"]["enabled"] is False
    assert [(b.name, b.protected) for b in repo.get_branches()] == [("main", True), ("side", False)]
    listed = call(github, "GET", "/branches", root, params={"protected": "true"}).json()
    assert [b["name"] for b in listed] == ["main"]
    github.unprotect_branch(github_repo, "main")
    assert repo.get_branch("main").protected is False


def test_required_reviews_refuse_a_ref_update(github: Emulator, github_repo: RepoHandle, root: str) -> None:
    github.protect_branch(github_repo, "main", required_reviews=1)
    before, new = github_repo.head(), ahead(github_repo)
    for token in (github.installation_token(), github.user_token("alice")):
        r = move_main(github, token, new)
        assert (r.status_code, r.json()["message"]) == (422, "Changes must be made through a pull request.")
    assert github_repo.head() == before
    assert move_main(github, root, new).status_code == 200  # an admin is exempt unless enforce_admins
    assert github_repo.head() == new


def test_enforce_admins_includes_admins(github: Emulator, github_repo: RepoHandle, root: str) -> None:
    github.protect_branch(github_repo, "main", required_reviews=1, enforce_admins=True)
    r = move_main(github, root, ahead(github_repo))
    assert (r.status_code, r.json()["message"]) == (422, "Changes must be made through a pull request.")


def test_required_status_checks_refuse_until_they_pass(github: Emulator, github_repo: RepoHandle, root: str) -> None:
    github.protect_branch(github_repo, "main", contexts=["gating / eval"])
    token = github.installation_token()
    new = ahead(github_repo)
    expected = (422, 'Required status check "gating / eval" is expected.')
    r = move_main(github, token, new)
    assert (r.status_code, r.json()["message"]) == expected
    run = call(github, "POST", "/check-runs", token, json={"name": "gating / eval", "head_sha": new,
                                                            "conclusion": "failure", "status": "completed"})
    assert run.status_code == 201
    r = move_main(github, token, new)
    assert (r.status_code, r.json()["message"]) == expected  # failing counts as not there
    call(github, "POST", "/check-runs", token, json={"name": "gating / eval", "head_sha": new,
                                                     "conclusion": "success", "status": "completed"})
    assert move_main(github, token, new).status_code == 200
    assert github_repo.head() == new


def test_several_missing_checks_are_counted(github: Emulator, github_repo: RepoHandle) -> None:
    github.protect_branch(github_repo, "main", contexts=["gating / eval", "lint"])
    r = move_main(github, github.installation_token(), ahead(github_repo))
    assert (r.status_code, r.json()["message"]) == (422, "2 of 2 required status checks are expected.")


def test_force_push_refused_unless_allowed(github: Emulator, github_repo: RepoHandle) -> None:
    token = github.installation_token()
    old = github_repo.head()
    github.push(github_repo, "main", {"notes.txt": "newer\n"}, "Newer")
    github.protect_branch(github_repo, "main")
    r = move_main(github, token, old, force=True)
    assert (r.status_code, r.json()["message"]) == (422, "Update is not a fast forward")
    github.protect_branch(github_repo, "main", allow_force_pushes=True)
    assert move_main(github, token, old, force=True).status_code == 200
    assert github_repo.head() == old


def test_deleting_a_protected_branch(github: Emulator, github_repo: RepoHandle) -> None:
    token = github.installation_token()
    github.protect_branch(github_repo, "main")
    r = call(github, "DELETE", "/git/refs/heads/main", token)
    assert (r.status_code, r.json()["message"]) == (422, "Cannot delete this protected branch")
    assert github_repo.head()
    ahead(github_repo, "side")
    assert call(github, "DELETE", "/git/refs/heads/side", token).status_code == 204  # not protected


def test_unprotected_branches_and_pull_request_merges_stay_open(github: Emulator, github_repo: RepoHandle) -> None:
    token = github.installation_token()
    github.protect_branch(github_repo, "main", required_reviews=1)
    side = ahead(github_repo, "side")
    more = github_repo.commit_files("other", {"x.txt": "x\n"}, "x", base=side)
    r = call(github, "PATCH", "/git/refs/heads/side", token, json={"sha": more})
    assert r.status_code == 200
    pr = github.create_pull(github_repo, "side", "main", "Side", "alice")
    r = call(github, "PUT", f"/pulls/{pr['number']}/merge", token, json={"merge_method": "merge"})
    assert r.status_code == 200 and r.json()["merged"] is True
    assert github_repo.git.run("rev-parse", f"{github_repo.head()}^2") == more


def test_pygithub_protects_and_unprotects_a_branch(github: Emulator, github_repo: RepoHandle, root: str) -> None:
    """PyGithub sends null switches and `checks` without `contexts`; GitHub takes that, so does the emulator."""
    repo = Github(base_url=github.api_url, auth=Auth.Token(root), retry=None, seconds_between_requests=0,
                  seconds_between_writes=0).get_repo("acme/support-bot")
    repo.get_branch("main").edit_protection(required_approving_review_count=2, contexts=["ci"], strict=True)
    rule = repo.get_branch("main").get_protection()
    assert (rule.required_status_checks.contexts, rule.required_status_checks.strict) == (["ci"], True)
    assert (rule.required_pull_request_reviews.required_approving_review_count, rule.enforce_admins) == (2, False)
    r = move_main(github, github.installation_token(), ahead(github_repo))
    assert (r.status_code, r.json()["message"]) == (422, "Changes must be made through a pull request.")
    repo.get_branch("main").remove_protection()
    assert repo.get_branch("main").protected is False
