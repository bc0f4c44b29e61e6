"""Forks in the emulator, as GitHub has them: a pull request's head in another repository, reachable
from the base only as refs/pull/N/head, and the workflow_run payload of a fork's run."""

from __future__ import annotations

import httpx

from gating.git.repository import Git


def test_a_pull_request_from_a_fork(github, github_repo, tmp_path):
    fork = github.fork_repo(github_repo, "mallory")
    assert fork.head() == github_repo.head()
    first = github.push(fork, "tweak", {"README.md": "from a fork\n"}, "Tweak", user="mallory")
    token = github.installation_token()
    api = httpx.Client(base_url=github.api_url, headers={"Authorization": f"token {token}"})
    made = api.post(f"/repos/{github_repo.full_name}/pulls",
                    json={"head": "mallory:tweak", "base": "main", "title": "From a fork"})
    assert made.status_code == 201, made.text
    number = made.json()["number"]
    pull = api.get(f"/repos/{github_repo.full_name}/pulls/{number}").json()
    assert (pull["head"]["label"], pull["head"]["sha"], pull["head"]["repo"]["full_name"], pull["head"]["repo"]["fork"],
            pull["base"]["repo"]["full_name"]) == ("mallory:tweak", first, "mallory/support-bot", True,
                                                   github_repo.full_name)
    assert pull["changed_files"] == 1
    github.webhook_url = "http://127.0.0.1:9/unused"  # collect deliveries without a receiver
    second = github.push(fork, "tweak", {"README.md": "again\n"}, "Again", user="mallory")
    github.wait_for_deliveries()
    sent = [(d.event, d.action, d.payload["repository"]["full_name"]) for d, _status in github.deliveries]
    assert sent == [("pull_request", "synchronize", github_repo.full_name)]  # no push webhook from the fork
    clone = github_repo.clone(tmp_path / "base", token)  # the fork's commits, from the base repository
    assert clone.fetch("origin", f"refs/pull/{number}/head") and Git(clone.root).resolve("FETCH_HEAD") == second
    github.push(github_repo, "other", {"x.md": "x\n"}, "Other")
    api.post(f"/repos/{github_repo.full_name}/check-runs", json={"name": "c", "head_sha": second})
    [run] = github.list_check_runs(github_repo, head_sha=second)
    assert run["pull_requests"] == []  # GitHub never lists a fork's pull request on a check run
    run_payload = github.webhook("workflow_run", "completed", repo=github_repo, number=number).payload["workflow_run"]
    assert (run_payload["head_sha"], run_payload["head_repository"]["full_name"], run_payload["pull_requests"],
            run_payload["event"]) == (second, "mallory/support-bot", [], "pull_request")
