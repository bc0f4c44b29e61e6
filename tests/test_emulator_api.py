"""PyGithub against the emulator: check runs, pull requests, reviews, notes through the Git Database API."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from github import Auth, Github, GithubException, GithubIntegration, InputGitTreeElement

from gating.testing import Emulator, RepoHandle


def gh(emu: Emulator, token: str | None = None) -> Github:
    return Github(base_url=emu.api_url, auth=Auth.Token(token or emu.installation_token()), retry=None,
                  seconds_between_requests=0, seconds_between_writes=0)


@pytest.fixture
def pr(github: Emulator, github_repo: RepoHandle) -> dict:
    github_repo.commit_files("tune", {"prompts/answer.md": "Be brief.\n", "notes.txt": "new\n"}, "Tune answers")
    return github.create_pull(github_repo, "tune", "main", "Tune answers", "alice", body="please review")


def test_check_run_created_and_completed_through_pygithub(github: Emulator, github_repo: RepoHandle) -> None:
    repo = gh(github).get_repo("acme/support-bot")
    run = repo.create_check_run("gating / eval", github_repo.head(), status="in_progress",
                                output={"title": "Evaluating", "summary": "running 12 cases"})
    assert run.status == "in_progress"
    run.edit(conclusion="success", output={"title": "All good", "summary": "12/12 passed"})
    again = repo.get_check_run(run.id)
    assert (again.status, again.conclusion, again.output.title) == ("completed", "success", "All good")
    runs = list(repo.get_commit(github_repo.head()).get_check_runs())
    assert [r.name for r in runs] == ["gating / eval"]
    assert github.list_check_runs(github_repo, github_repo.head())[0]["output"]["summary"] == "12/12 passed"


def test_pull_files_reviews_and_comments(github: Emulator, github_repo: RepoHandle, pr: dict) -> None:
    github.add_collaborator(github_repo, "bob", "write")
    github.add_review(github_repo, pr["number"], "bob", "APPROVED")
    repo = gh(github).get_repo("acme/support-bot")
    pull = repo.get_pull(pr["number"])
    assert (pull.title, pull.user.login, pull.head.ref, pull.base.ref) == ("Tune answers", "alice", "tune", "main")
    files = {f.filename: f for f in pull.get_files()}
    assert sorted(files) == ["notes.txt", "prompts/answer.md"]
    assert files["notes.txt"].status == "added"
    assert files["prompts/answer.md"].status == "modified"
    assert "+Be brief." in files["prompts/answer.md"].patch
    reviews = list(pull.get_reviews())
    assert [(r.user.login, r.state, r.commit_id) for r in reviews] == [("bob", "APPROVED", pull.head.sha)]
    carol = gh(github, github.user_token("carol"))
    carol.get_repo("acme/support-bot").get_pull(pr["number"]).create_review(body="needs work", event="REQUEST_CHANGES")
    assert [r["state"] for r in github.list_reviews(github_repo, pr["number"])] == ["APPROVED", "CHANGES_REQUESTED"]
    comment = pull.create_issue_comment("gating: 12/12 passed")
    comment.create_reaction("rocket")
    assert [c["body"] for c in github.list_comments(github_repo, pr["number"])] == ["gating: 12/12 passed"]
    assert github.list_reactions(github_repo, comment_id=comment.id)[0]["content"] == "rocket"
    assert pull.get_issue_comments()[0].user.login == "gating-emulated[bot]"


def test_create_pull_and_merge_make_a_real_merge_commit(github: Emulator, github_repo: RepoHandle) -> None:
    github_repo.commit_files("feature", {"a.txt": "a\n"}, "Add a")
    repo = gh(github, github.user_token("alice")).get_repo("acme/support-bot")
    github.add_collaborator(github_repo, "alice", "write")
    pull = repo.create_pull(base="main", head="feature", title="Add a", body="")
    base_before = github_repo.head()
    sha = github.merge_pull(github_repo, pull.number, "alice")
    assert github_repo.git.run("rev-list", "--parents", "-n", "1", sha).split() == [sha, base_before,
                                                                                    github_repo.head("feature")]
    assert github_repo.head() == sha
    merged = repo.get_pull(pull.number)
    assert (merged.merged, merged.merge_commit_sha, merged.state, merged.merged_by.login) == (True, sha, "closed", "alice")
    assert [f.filename for f in merged.get_files()] == ["a.txt"]


def test_merge_through_the_api(github: Emulator, github_repo: RepoHandle, pr: dict) -> None:
    repo = gh(github).get_repo("acme/support-bot")
    status = repo.get_pull(pr["number"]).merge(merge_method="squash")
    assert status.merged
    info = github_repo.git.run("log", "-1", "--format=%P%n%s", "main").splitlines()
    assert info == [github.get_pull(github_repo, pr["number"])["base"]["sha"], f"Tune answers (#{pr['number']})"]


def test_note_written_through_git_database_api_is_fetched_by_git(github: Emulator, github_repo: RepoHandle,
                                                                 tmp_path: Path) -> None:
    token = github.installation_token()
    repo = gh(github, token).get_repo("acme/support-bot")
    target = github_repo.head()
    blob = repo.create_git_blob('{"verdict": "pass"}\n', "utf-8")
    tree = repo.create_git_tree([InputGitTreeElement(target, "100644", "blob", sha=blob.sha)])
    commit = repo.create_git_commit("gating: eval results", tree, [])
    repo.create_git_ref("refs/notes/gating/evals", commit.sha)

    clone = github_repo.clone(tmp_path / "clone", token=token)
    assert clone.fetch("origin", "refs/notes/*:refs/notes/*")
    shown = subprocess.run(["git", "notes", "--ref", "gating/evals", "show", target], cwd=clone.root,
                           capture_output=True, text=True, check=True).stdout
    assert shown == '{"verdict": "pass"}\n'
    assert github_repo.note("gating/evals", target) == b'{"verdict": "pass"}\n'


def test_what_git_pushes_the_api_reads(github: Emulator, github_repo: RepoHandle, tmp_path: Path) -> None:
    token = github.installation_token()
    clone = github_repo.clone(tmp_path / "c", token=token)
    clone.notes_add("gating/audit", "HEAD", b"entry 1\n")
    ok, out = clone.push("origin", "refs/notes/gating/audit")
    assert ok, out
    ref = httpx.get(f"{github.api_url}/repos/acme/support-bot/git/ref/notes/gating/audit",
                    headers={"Authorization": f"token {token}"}).json()
    notes_commit = gh(github, token).get_repo("acme/support-bot").get_git_commit(ref["object"]["sha"])
    tree = gh(github, token).get_repo("acme/support-bot").get_git_tree(notes_commit.tree.sha)
    assert [e.path for e in tree.tree] == [github_repo.head()]


def test_contents_compare_branch_and_commit(github: Emulator, github_repo: RepoHandle, pr: dict) -> None:
    repo = gh(github).get_repo("acme/support-bot")
    content = repo.get_contents("gating.yml", ref="main")
    assert content.decoded_content == (Path(__file__).parent.parent / "examples/support-bot/gating.yml").read_bytes()
    cmp = repo.compare("main", "tune")
    assert (cmp.status, cmp.ahead_by, cmp.behind_by) == ("ahead", 1, 0)
    assert sorted(f.filename for f in cmp.files) == ["notes.txt", "prompts/answer.md"]
    assert repo.get_branch("tune").commit.sha == github_repo.head("tune")
    assert repo.get_commit("tune").commit.message == "Tune answers"
    with pytest.raises(GithubException) as e:
        repo.get_contents("missing.txt")
    assert e.value.status == 404


def test_update_ref_that_is_not_a_fast_forward_is_refused(github: Emulator, github_repo: RepoHandle) -> None:
    base = github_repo.head()
    side = github_repo.commit_files("side", {"x": "1"}, "side", base=base)
    github_repo.commit_files("main", {"y": "2"}, "main moves")
    repo = gh(github).get_repo("acme/support-bot")
    ref = repo.get_git_ref("heads/main")
    with pytest.raises(GithubException) as e:
        ref.edit(side, force=False)
    assert (e.value.status, e.value.data["message"]) == (422, "Update is not a fast forward")
    ref.edit(side, force=True)
    assert github_repo.head() == side


def test_deployments_and_statuses(github: Emulator, github_repo: RepoHandle) -> None:
    repo = gh(github).get_repo("acme/support-bot")
    dep = repo.create_deployment("main", environment="production", required_contexts=[], auto_merge=False)
    dep.create_status("success", environment_url="https://support.example.invalid")
    assert [s.state for s in dep.get_statuses()] == ["success"]
    assert [d.sha for d in repo.get_deployments()] == [github_repo.head()]


def test_permissions_and_team_membership(github: Emulator, github_repo: RepoHandle) -> None:
    github.add_collaborator(github_repo, "bob", "maintain")
    github.add_team_member("acme", "ml-reviewers", "dana")
    client = gh(github)
    repo = client.get_repo("acme/support-bot")
    assert repo.get_collaborator_permission("bob") == "write"
    assert repo.get_collaborator_role_name("bob") == "maintain"
    github.add_user("erin")
    assert repo.get_collaborator_permission("erin") == "read"
    r = httpx.get(f"{github.api_url}/orgs/acme/teams/ml-reviewers/memberships/dana",
                  headers={"Authorization": f"token {github.installation_token()}"})
    assert (r.status_code, r.json()["state"], r.json()["role"]) == (200, "active", "member")
    r = httpx.get(f"{github.api_url}/orgs/acme/teams/ml-reviewers/memberships/erin",
                  headers={"Authorization": f"token {github.installation_token()}"})
    assert r.status_code == 404
    assert client.get_user("bob").type == "User"
    assert client.get_user("gating-emulated[bot]").type == "Bot"


def test_pagination_link_headers(github: Emulator, github_repo: RepoHandle) -> None:
    head = github_repo.head()
    token = github.installation_token()
    client = gh(github, token)
    repo = client.get_repo("acme/support-bot")
    for n in range(7):
        repo.create_check_run(f"check {n}", head, status="completed", conclusion="success")
    r = httpx.get(f"{github.api_url}/repos/acme/support-bot/commits/{head}/check-runs",
                  params={"per_page": 3, "page": 2}, headers={"Authorization": f"token {token}"})
    link = r.headers["Link"]
    base = f"{github.api_url}/repos/acme/support-bot/commits/{head}/check-runs"
    assert f'<{base}?per_page=3&page=3>; rel="next"' in link
    assert f'<{base}?per_page=3&page=3>; rel="last"' in link
    assert f'<{base}?per_page=3&page=1>; rel="prev"' in link
    assert r.json()["total_count"] == 7 and len(r.json()["check_runs"]) == 3
    client.per_page = 2
    names = [c.name for c in client.get_repo("acme/support-bot").get_commit(head).get_check_runs()]
    assert sorted(names) == [f"check {n}" for n in range(7)]
    assert r.headers["X-RateLimit-Limit"] == "5000"
    assert int(r.headers["X-RateLimit-Remaining"]) < 5000


def test_requests_are_recorded(github: Emulator, github_repo: RepoHandle) -> None:
    github.reset_requests()
    gh(github).get_repo("acme/support-bot").create_check_run("lint", github_repo.head(), status="queued")
    calls = [(q.method, q.path, q.status, q.operation) for q in github.requests]
    assert calls == [("GET", "/repos/acme/support-bot", 200, "repos/get"),
                     ("POST", "/repos/acme/support-bot/check-runs", 201, "checks/create")]
    assert github.requests[1].json == {"name": "lint", "head_sha": github_repo.head(), "status": "queued"}
    assert "Authorization" not in github.requests[1].headers


def test_the_rest_of_the_subset_through_pygithub(github: Emulator, github_repo: RepoHandle, pr: dict) -> None:
    """Every response here is validated against the description (the fixture fails on a violation)."""
    github.add_label(github_repo, pr["number"], "llm")
    comment = github.add_comment(github_repo, pr["number"], "bob", "hi")
    client = gh(github)
    repo = client.get_repo("acme/support-bot")
    assert [p.number for p in repo.get_pulls(state="all", base="main")] == [pr["number"]]
    assert [b.name for b in repo.get_branches()] == ["main", "tune"]
    assert [c.commit.message for c in repo.get_commits(sha="tune")] == ["Tune answers", "Initial commit"]
    issue = repo.get_issue(pr["number"])
    issue.add_to_labels("risky")
    assert [label.name for label in repo.get_issue(pr["number"]).labels] == ["llm", "risky"]
    issue.get_comment(comment["id"]).create_reaction("+1")
    issue.create_reaction("eyes")
    assert [x.content for x in issue.get_reactions()] == ["eyes"]
    mine = issue.create_comment("mine")
    mine.edit("mine, edited")
    assert issue.get_comment(mine.id).body == "mine, edited"
    assert [x.path for x in repo.get_contents("prompts")] == ["prompts/answer.md", "prompts/classify.yml",
                                                              "prompts/system.md"]
    assert [x.ref for x in repo.get_git_matching_refs("heads/")] == ["refs/heads/main", "refs/heads/tune"]
    repo.create_git_ref("refs/heads/tmp", github_repo.head()).delete()
    assert github_repo.git.try_run("rev-parse", "--verify", "refs/heads/tmp") is None
    run = repo.create_check_run("lint", github_repo.head(), status="completed", conclusion="failure", output={
        "title": "t", "summary": "s", "annotations": [{"path": "prompts/answer.md", "start_line": 1, "end_line": 1,
                                                       "annotation_level": "failure", "message": "too long"}]})
    assert [a.message for a in run.get_annotations()] == ["too long"]
    assert [s.conclusion for s in repo.get_commit(github_repo.head()).get_check_suites()] == ["failure"]
    pull = repo.get_pull(pr["number"])
    pull.edit(title="Tune answers, v2")
    assert github.get_pull(github_repo, pr["number"])["title"] == "Tune answers, v2"
    review = pull.create_review(body="looks fine", event="COMMENT")
    assert pull.get_review(review.id).state == "COMMENTED"
    assert client.get_rate_limit().resources.core.limit == 5000
    merged = repo.merge("main", "tune", "Merge tune")
    assert github_repo.head() == merged.sha
    integration = GithubIntegration(auth=Auth.AppAuth(github.app.app_id, github.app.private_key_pem),
                                    base_url=github.api_url, seconds_between_requests=0, seconds_between_writes=0)
    assert [i.id for i in integration.get_installations()] == [github.app.installation_id]
    assert [r.full_name for r in integration.get_installations()[0].get_repos()] == ["acme/support-bot"]
    tree = repo.get_git_tree(github_repo.head(), recursive=True)
    assert "prompts/answer.md" in [e.path for e in tree.tree]
    assert repo.get_git_blob(repo.get_contents("gating.yml").sha).encoding == "base64"
    assert client.get_user("alice").login == "alice"


def test_listing_a_repositorys_issues_filters_as_github_does(github: Emulator, github_repo: RepoHandle,
                                                             pr: dict) -> None:
    # GET /repos/{owner}/{repo}/issues: open ones by default, newest first, pull requests among them
    # (marked by a `pull_request` key), filtered by state, creator and labels, paginated
    repo = gh(github).get_repo("acme/support-bot")
    by_app = repo.create_issue("Drill failed", body="why")
    github.create_issue(github_repo, "Typo in the README", "alice")
    closed = github.create_issue(github_repo, "Old bug", "alice")
    github.repo_record(github_repo).issues[closed["number"]].state = "closed"
    listed = [(i.number, i.title, i.pull_request is not None) for i in repo.get_issues()]
    assert listed == [(by_app.number + 1, "Typo in the README", False), (by_app.number, "Drill failed", False),
                      (pr["number"], "Tune answers", True)]
    assert [i.title for i in repo.get_issues(state="closed")] == ["Old bug"]
    assert len(list(repo.get_issues(state="all"))) == 4
    mine = repo.get_issues(creator="gating-emulated[bot]")
    assert [(i.title, i.user.type) for i in mine] == [("Drill failed", "Bot")]
    assert [i.title for i in repo.get_issues(direction="asc")][0] == "Tune answers"
    repo.get_issue(by_app.number).add_to_labels("drill")
    assert [i.title for i in repo.get_issues(labels=["drill"])] == ["Drill failed"]
    page = httpx.get(f"{github.api_url}/repos/acme/support-bot/issues", params={"per_page": 1, "state": "all"},
                     headers={"Authorization": f"token {github.installation_token()}"})
    assert page.status_code == 200 and len(page.json()) == 1 and 'rel="next"' in page.headers["link"]
