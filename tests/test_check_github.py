"""The check-run and comment calls of gating/github/checks.py, against the emulator (OpenAPI-validated)."""

from __future__ import annotations

import subprocess
import sys

from gating.github import (
    COMMENT_MARKER,
    Repo,
    finish_check_run,
    start_check_run,
    token_client,
    upsert_comment,
)


def api(github, repo) -> Repo:
    return Repo(token_client(github.api_url, github.installation_token()), repo.full_name)


def notes(n: int) -> list[dict]:
    return [{"path": "prompts/answer.md", "start_line": i, "end_line": i, "annotation_level": "warning",
             "message": f"note {i}"} for i in range(1, n + 1)]


def test_finish_without_a_started_run_creates_it_completed_then_adds_annotations(github, github_repo):
    sha = github_repo.head()
    run_id = finish_check_run(api(github, github_repo), None, name="gating / eval", head_sha=sha,
                              conclusion="neutral", completed_at="2026-01-01T00:00:00Z", title="T", summary="S",
                              text="details", annotations=notes(120))
    calls = [(r.operation, r.status, len((r.json.get("output") or {}).get("annotations", [])))
             for r in github.requests if r.operation in ("checks/create", "checks/update")]
    assert calls == [("checks/create", 201, 50), ("checks/update", 200, 50), ("checks/update", 200, 20)]
    [run] = github.list_check_runs(github_repo, head_sha=sha)
    assert (run["id"], run["status"], run["conclusion"], run["output"]["annotations_count"]) == \
        (run_id, "completed", "neutral", 120)
    assert (run["output"]["title"], run["output"]["summary"], run["output"]["text"]) == ("T", "S", "details")


def test_start_then_finish_without_annotations_is_two_requests(github, github_repo):
    repo = api(github, github_repo)
    sha = github_repo.head()
    run_id = start_check_run(repo, "gating / eval", sha, started_at="2026-01-01T00:00:00Z", title="…",
                             summary="running", details_url="http://ci.example/run/1", external_id="x")
    assert github.list_check_runs(github_repo, head_sha=sha)[0]["status"] == "in_progress"
    assert finish_check_run(repo, run_id, name="gating / eval", head_sha=sha, conclusion="success",
                            completed_at="2026-01-01T00:00:05Z", title="Pass", summary="ok") == run_id
    assert [r.operation for r in github.requests if r.operation.startswith("checks/")] == \
        ["checks/create", "checks/update"]
    assert github.list_check_runs(github_repo, head_sha=sha)[0]["conclusion"] == "success"


def test_one_sticky_comment_per_pull_request(github, github_repo):
    sha = github_repo.commit_files("tweak", {"README.md": "x\n"}, "tweak", base=github_repo.head())
    pr = github.create_pull(github_repo, "tweak", "main", "Tweak", "alice")
    github.add_comment(github_repo, pr["number"], "alice", f"quoting the bot: {COMMENT_MARKER}")
    repo = api(github, github_repo)
    first = upsert_comment(repo, pr["number"], "first summary")
    second = upsert_comment(repo, pr["number"], "second summary")
    assert first == second
    bodies = [c["body"] for c in github.list_comments(github_repo, pr["number"])]
    assert bodies == [f"quoting the bot: {COMMENT_MARKER}", f"{COMMENT_MARKER}\nsecond summary"]
    assert sha


def test_an_annotation_batch_github_appended_before_the_error_is_not_appended_twice(github, github_repo):
    """GitHub appends annotations on every update: a PATCH retried after a 5xx that came after the write
    would add its batch twice, so the retry first asks how many the run already holds."""
    sha = github_repo.head()
    github.faults.add(method="PATCH", path=r"/check-runs/\d+$", kind="5xx_after_write", status=502)
    finish_check_run(api(github, github_repo), None, name="gating / eval", head_sha=sha, conclusion="neutral",
                     completed_at="2026-01-01T00:00:00Z", title="T", summary="S", annotations=notes(120))
    [run] = github.list_check_runs(github_repo, head_sha=sha)
    assert (run["status"], run["conclusion"], run["output"]["annotations_count"]) == ("completed", "neutral", 120)
    github.take_problems()


def test_the_check_step_loads_without_pygithub():
    """The core reaches GitHub through the CheckGitHub seam; naming an error or the API URL needs no client."""
    code = ("import sys, gating.check.run, gating.check.fork, gating.commands.check_github\n"
            "gating.commands.check_github.GitHub()\n"
            "from gating.github import GitHubError, DEFAULT_API_URL, load_private_key\n"
            "print('github' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
