"""The emulator at GitHub's edges: empty repositories, the 3,000-file listing of a pull request,
truncated recursive trees, and bodies over GitHub's size limits, answered as GitHub answers them."""

from __future__ import annotations

import httpx
import pytest

from gating.testing import Emulator, RepoHandle

EMPTY = "Git Repository is empty."


def api(github: Emulator) -> httpx.Client:
    return httpx.Client(base_url=github.api_url, timeout=10,
                        headers={"Authorization": f"token {github.installation_token()}"})


@pytest.mark.parametrize("method, path, body, doc", [
    ("GET", "/commits", None, "commits/commits#list-commits"),
    ("GET", "/commits/main", None, "commits/commits#get-a-commit"),
    ("GET", "/git/trees/main?recursive=1", None, "git/trees#get-a-tree"),
    ("GET", "/git/ref/heads/main", None, "git/refs#get-a-reference"),
    ("GET", "/git/matching-refs/notes/", None, "git/refs#list-matching-references"),
    ("GET", "/git/commits/" + "a" * 40, None, "git/commits#get-a-commit-object"),
    ("GET", "/git/blobs/" + "a" * 40, None, "git/blobs#get-a-blob"),
    ("POST", "/git/blobs", {"content": "x", "encoding": "utf-8"}, "git/blobs#create-a-blob"),
    ("POST", "/git/trees", {"tree": [{"path": "a", "mode": "100644", "type": "blob", "content": "x"}]},
     "git/trees#create-a-tree"),
    ("POST", "/git/commits", {"message": "m", "tree": "a" * 40}, "git/commits#create-a-commit"),
    ("POST", "/git/refs", {"ref": "refs/heads/main", "sha": "a" * 40}, "git/refs#create-a-reference"),
], ids=["list-commits", "get-commit", "tree", "ref", "matching-refs", "git-commit", "blob", "create-blob",
        "create-tree", "create-commit", "create-ref"])
def test_an_empty_repository_answers_409_git_repository_is_empty(github: Emulator, method, path, body, doc):
    github.create_repo("acme/empty")
    with api(github) as c:
        r = c.request(method, "/repos/acme/empty" + path, json=body)
    assert r.status_code == 409
    assert r.json() == {"message": EMPTY, "documentation_url": f"https://docs.github.com/rest/{doc}",
                        "status": "409"}


def test_an_empty_repository_has_no_contents_but_is_a_repository(github: Emulator):
    github.create_repo("acme/empty")
    with api(github) as c:
        contents = c.get("/repos/acme/empty/contents/gating.yml")
        repo = c.get("/repos/acme/empty")
        branches = c.get("/repos/acme/empty/branches")
        branch = c.get("/repos/acme/empty/branches/main")
    assert (contents.status_code, contents.json()["message"]) == (404, "This repository is empty.")
    assert contents.json()["documentation_url"] == "https://docs.github.com/rest/repos/contents#get-repository-content"
    assert (repo.status_code, repo.json()["default_branch"]) == (200, "main")
    assert (branches.status_code, branches.json()) == (200, [])
    assert (branch.status_code, branch.json()["message"]) == (404, "Branch not found")


def test_the_first_push_makes_a_repository_non_empty(github: Emulator):
    empty = github.create_repo("acme/empty")
    empty.commit_files("main", {"README.md": "hello\n"}, "Initial commit")
    with api(github) as c:
        assert c.get("/repos/acme/empty/commits").status_code == 200
        assert c.get("/repos/acme/empty/contents/README.md").status_code == 200


def _many_files(github: Emulator, repo: RepoHandle, n: int) -> dict:
    files = {f"data/file-{i:04d}.txt": f"{i}\n" for i in range(n)}
    repo.commit_files("big", files, "Many files")
    return github.create_pull(repo, "big", "main", "Many files", "alice")


def test_pull_request_files_stop_at_the_listing_limit_while_changed_files_counts_all(
        github: Emulator, github_repo: RepoHandle):
    github.limits.pull_files = 7  # GitHub: 3,000
    pr = _many_files(github, github_repo, 12)
    assert pr["changed_files"] == 12
    with api(github) as c:
        first = c.get(f"/repos/acme/support-bot/pulls/{pr['number']}/files", params={"per_page": 5})
        second = httpx.get(first.links["next"]["url"], headers=c.headers)
        beyond = c.get(f"/repos/acme/support-bot/pulls/{pr['number']}/files", params={"per_page": 5, "page": 3})
    assert len(first.json()) == 5 and len(second.json()) == 2
    assert "next" not in second.links
    assert beyond.status_code == 200 and beyond.json() == []


def test_the_default_listing_limit_is_3000_files(github: Emulator):
    assert (github.limits.pull_files, github.limits.tree_entries, github.limits.tree_bytes) == (
        3000, 100_000, 7 * 1024 * 1024)


def test_a_recursive_tree_over_the_limit_is_truncated_and_subtrees_are_not(github: Emulator,
                                                                          github_repo: RepoHandle):
    github.limits.tree_entries = 5
    with api(github) as c:
        whole = c.get("/repos/acme/support-bot/git/trees/main", params={"recursive": "1"}).json()
        top = c.get("/repos/acme/support-bot/git/trees/main").json()
        tools = next(e for e in top["tree"] if e["path"] == "tools")
        sub = c.get(f"/repos/acme/support-bot/git/trees/{tools['sha']}", params={"recursive": "1"}).json()
    assert whole["truncated"] is True and len(whole["tree"]) == 5
    assert top["truncated"] is False and len(top["tree"]) > 5  # one level: no recursive limit
    assert sub["truncated"] is False and [e["path"] for e in sub["tree"]] == ["lookup_order.json",
                                                                               "open_ticket.json"]


def test_a_recursive_tree_over_the_byte_limit_is_truncated(github: Emulator, github_repo: RepoHandle):
    github.limits.tree_bytes = 600
    with api(github) as c:
        whole = c.get("/repos/acme/support-bot/git/trees/main", params={"recursive": "1"}).json()
    assert whole["truncated"] is True and 0 < len(whole["tree"]) < 10


LONG = "x" * 65537


def test_a_comment_over_65536_characters_is_refused_with_githubs_422(github: Emulator, github_repo: RepoHandle):
    issue = github.create_issue(github_repo, "Answers are wrong", "alice")
    with api(github) as c:
        url = f"/repos/acme/support-bot/issues/{issue['number']}/comments"
        too_long = c.post(url, json={"body": LONG})
        at_limit = c.post(url, json={"body": LONG[:-1]})
        edit = c.patch(f"/repos/acme/support-bot/issues/comments/{at_limit.json()['id']}", json={"body": LONG})
    assert too_long.status_code == 422 == edit.status_code
    assert too_long.json()["message"] == "Validation Failed"
    assert too_long.json()["errors"] == [{"resource": "IssueComment", "code": "unprocessable", "field": "data",
                                          "message": "Body is too long (maximum is 65536 characters)"}]
    assert at_limit.status_code == 201
    assert [len(c["body"]) for c in github.list_comments(github_repo, issue["number"])] == [65536]


def test_a_pull_request_body_over_65536_characters_is_refused(github: Emulator, github_repo: RepoHandle):
    github_repo.commit_files("tune", {"prompts/answer.md": "Be brief.\n"}, "Tune")
    with api(github) as c:
        r = c.post("/repos/acme/support-bot/pulls", json={"title": "Tune", "head": "tune", "base": "main",
                                                           "body": LONG})
    assert r.status_code == 422
    assert r.json()["errors"][0]["message"] == "Body is too long (maximum is 65536 characters)"
