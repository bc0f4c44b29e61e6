"""Webhook deliveries from the real example payloads, signed, adapted, and sent when state changes."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator

import httpx
import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from gating.testing import Emulator, RepoHandle
from gating.testing.webhooks import examples


class Receiver:
    """A real HTTP endpoint that checks X-Hub-Signature-256 the way a GitHub App must."""

    def __init__(self, secret: str):
        self.secret = secret
        self.received: list[tuple[str, dict, bool]] = []
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @Request.application
    def app(self, request: Request) -> Response:
        body = request.get_data()
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(request.headers.get("X-Hub-Signature-256", ""), expected)
        payload = json.loads(body)
        self.received.append((f"{request.headers['X-GitHub-Event']}.{payload.get('action', '')}".rstrip("."),
                              payload, ok))
        return Response("ok" if ok else "bad signature", status=200 if ok else 401)

    def events(self) -> list[str]:
        return [e for e, _p, _ok in self.received]


@pytest.fixture
def receiver(github: Emulator) -> Iterator[Receiver]:
    rec = Receiver(github.app.webhook_secret)
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


@pytest.fixture
def pr(github: Emulator, github_repo: RepoHandle) -> dict:
    github_repo.commit_files("tune", {"prompts/answer.md": "Be brief.\n"}, "Tune answers")
    return github.create_pull(github_repo, "tune", "main", "Tune answers", "alice")


def test_delivery_verifies_with_the_right_secret_only(github: Emulator, github_repo: RepoHandle, pr: dict,
                                                      receiver: Receiver) -> None:
    delivery = github.webhook("pull_request", "opened", github_repo, number=pr["number"])
    assert delivery.verify(github.app.webhook_secret)
    assert not delivery.verify("wrong-secret")
    assert github.deliver(receiver.url, delivery).status_code == 200
    forged = github.webhook("pull_request", "opened", github_repo, number=pr["number"], secret="wrong-secret")
    assert github.deliver(receiver.url, forged).status_code == 401
    assert [ok for _e, _p, ok in receiver.received] == [True, False]
    headers = delivery.headers
    assert headers["X-GitHub-Event"] == "pull_request" and len(headers["X-GitHub-Delivery"]) == 36
    assert headers["X-Hub-Signature-256"] == "sha256=" + hmac.new(
        github.app.webhook_secret.encode(), delivery.body_bytes, hashlib.sha256).hexdigest()


def test_payload_is_the_real_example_adapted_to_the_emulated_repository(github: Emulator, github_repo: RepoHandle,
                                                                       pr: dict) -> None:
    d = github.webhook("pull_request", "opened", github_repo, number=pr["number"])
    p = d.payload
    example = examples()["pull_request"]["opened"]
    assert set(example) <= set(p)  # every top-level field of the real payload is there
    assert set(example["pull_request"]) <= set(p["pull_request"])
    assert p["repository"]["full_name"] == "acme/support-bot"
    assert p["organization"]["login"] == "acme"
    assert p["installation"]["id"] == github.app.installation_id
    assert (p["number"], p["pull_request"]["head"]["sha"], p["pull_request"]["base"]["sha"]) == (
        pr["number"], github_repo.head("tune"), github_repo.head("main"))
    assert p["pull_request"]["user"]["login"] == "alice" and p["sender"]["login"] == "alice"
    assert "Codertocat" not in json.dumps({k: p[k] for k in ("repository", "sender", "installation")})
    assert json.loads(d.body_bytes) == p


@pytest.mark.parametrize("event_action", sorted(f"{e}.{a}".rstrip(".") for e, acts in examples().items() for a in acts))
def test_every_vendored_event_builds_from_state(github: Emulator, github_repo: RepoHandle, pr: dict,
                                                event_action: str) -> None:
    event, _, action = event_action.partition(".")
    github.add_review(github_repo, pr["number"], "bob", "APPROVED")
    github.add_comment(github_repo, pr["number"], "bob", "/rollback last-good")
    github.request_deployment(github_repo, "main", "production")  # a held run (no rule enabled: no event)
    dep = github.create_deployment(github_repo, "main")
    github.add_deployment_status(github_repo, dep["id"], "success")
    run = github.new_check_run(github.repo_record(github_repo), github_repo.head(), "gating / eval")
    run.status, run.conclusion = "completed", "success"
    d = github.webhook(event, action or None, github_repo)
    assert d.verify(github.app.webhook_secret)
    assert d.payload.get("action") == (action or d.payload.get("action"))
    if "repository" in d.payload:
        assert d.payload["repository"]["full_name"] == "acme/support-bot"


def test_fields_deep_merge_into_the_payload(github: Emulator, github_repo: RepoHandle, pr: dict) -> None:
    c = github.add_comment(github_repo, pr["number"], "bob", "hello")
    d = github.webhook("issue_comment", "created", github_repo, comment_id=c["id"], comment={"body": "/rollback"})
    assert d.payload["comment"]["body"] == "/rollback"
    assert d.payload["comment"]["id"] == c["id"] and d.payload["comment"]["user"]["login"] == "bob"
    assert d.payload["issue"]["pull_request"]["url"].endswith(f"/pulls/{pr['number']}")


def test_state_changes_emit_webhooks_to_the_configured_url(github: Emulator, github_repo: RepoHandle,
                                                           receiver: Receiver) -> None:
    github.webhook_url = receiver.url
    github_repo.commit_files("tune", {"prompts/answer.md": "Be brief.\n"}, "Tune answers")
    pr = github.create_pull(github_repo, "tune", "main", "Tune answers", "alice")
    github.push(github_repo, "tune", {"prompts/answer.md": "Be briefer.\n"}, "Again", user="alice")
    token = github.user_token("bob")
    github.add_collaborator(github_repo, "bob", "write")
    httpx.post(f"{github.api_url}/repos/acme/support-bot/pulls/{pr['number']}/reviews",
               headers={"Authorization": f"token {token}"}, json={"event": "APPROVE"}).raise_for_status()
    inst = github.installation_token()
    run = httpx.post(f"{github.api_url}/repos/acme/support-bot/check-runs", headers={"Authorization": f"token {inst}"},
                     json={"name": "gating / eval", "head_sha": github_repo.head("tune"), "status": "in_progress"}).json()
    httpx.patch(f"{github.api_url}/repos/acme/support-bot/check-runs/{run['id']}",
                headers={"Authorization": f"token {inst}"}, json={"conclusion": "success"}).raise_for_status()
    github.add_comment(github_repo, pr["number"], "bob", "/rollback")
    merge_sha = github.merge_pull(github_repo, pr["number"], "bob")
    dep = github.create_deployment(github_repo, "main")
    github.add_deployment_status(github_repo, dep["id"], "success")
    assert github.wait_for_deliveries(timeout=10)
    assert receiver.events() == [
        "pull_request.opened", "push", "pull_request.synchronize", "pull_request_review.submitted",
        "check_run.created", "check_run.completed", "issue_comment.created", "pull_request.closed", "push",
        "deployment_status.created",
    ]
    assert all(ok for _e, _p, ok in receiver.received)
    by_event = {e: p for e, p, _ok in receiver.received}
    assert by_event["pull_request.closed"]["pull_request"]["merged"] is True
    assert by_event["pull_request.closed"]["pull_request"]["merge_commit_sha"] == merge_sha
    assert by_event["pull_request_review.submitted"]["review"]["state"] == "approved"  # lower case in webhooks
    assert by_event["check_run.completed"]["check_run"]["conclusion"] == "success"
    assert by_event["check_run.completed"]["check_run"]["pull_requests"][0]["number"] == pr["number"]
    assert by_event["deployment_status.created"]["deployment"]["sha"] == merge_sha
    assert [status for _d, status in github.deliveries] == [200] * 10


def test_git_push_over_smart_http_emits_push_and_synchronize(github: Emulator, github_repo: RepoHandle,
                                                             receiver: Receiver, tmp_path) -> None:
    github_repo.commit_files("tune", {"a.txt": "1\n"}, "a")
    pr = github.create_pull(github_repo, "tune", "main", "Tune", "alice")
    github.webhook_url = receiver.url
    clone = github_repo.clone(tmp_path / "c", token=github.installation_token())
    clone.run("checkout", "-q", "tune")
    (tmp_path / "c" / "a.txt").write_text("2\n")
    clone.run("commit", "-qam", "b")
    clone.notes_add("gating/evals", "HEAD", b"n\n")
    ok, out = clone.push("origin", "tune", "refs/notes/gating/evals")
    assert ok, out
    assert github.wait_for_deliveries(timeout=10)
    assert receiver.events() == ["push", "pull_request.synchronize"]  # notes refs send no push event
    sync = receiver.received[1][1]
    assert sync["number"] == pr["number"] and sync["after"] == clone.rev_parse("HEAD")


def test_payloads_are_checked_against_githubs_documented_webhook_schemas(github: Emulator, github_repo: RepoHandle,
                                                                        pr: dict) -> None:
    review = github.add_review(github_repo, pr["number"], "bob", "APPROVED")
    d = github.webhook("pull_request_review", "submitted", github_repo, review_id=review["id"])
    assert d.payload["review"]["state"] == "approved"
    assert d.payload["repository"]["owner"]["followers_url"]  # the long tail a schema requires is there
    assert github.problems == []
    run = github.new_check_run(github.repo_record(github_repo), github_repo.head(), "gating / eval")
    run.status, run.conclusion = "completed", "exploded"
    github.webhook("check_run", "completed", github_repo, check_run_id=run.id)
    problems = github.take_problems()
    assert problems and all(p.startswith("webhook check_run.completed: payload violates the documented schema: ")
                            and "'exploded' is not one of" in p for p in problems)


def test_anyone_with_write_access_may_edit_anyones_comment_and_the_edit_is_sent_as_theirs(
        github: Emulator, github_repo: RepoHandle, pr: dict, receiver: Receiver) -> None:
    """GitHub: "You must be the author or have write access to this repository to edit this comment"."""
    github.add_collaborator(github_repo, "root", "admin")
    github.add_collaborator(github_repo, "dave", "write")
    github.add_collaborator(github_repo, "erin", "read")
    comment = github.add_comment(github_repo, pr["number"], "root", "Looks risky.")
    github.webhook_url = receiver.url
    url = f"{github.api_url}/repos/{github_repo.full_name}/issues/comments/{comment['id']}"

    def edit(login: str, body: str) -> httpx.Response:
        return httpx.patch(url, json={"body": body}, headers={"Authorization": f"token {github.user_token(login)}"})

    refused = edit("erin", "/gating override")
    assert refused.status_code == 403
    assert refused.json()["message"] == ("You must be the author or have write access to this repository to edit "
                                         "this comment.")
    assert edit("dave", "/gating override ship it").json()["body"] == "/gating override ship it"
    github.wait_for_deliveries()
    (event, payload, _ok), = receiver.received
    assert event == "issue_comment.edited"
    assert (payload["sender"]["login"], payload["comment"]["user"]["login"]) == ("dave", "root")
    assert payload["changes"] == {"body": {"from": "Looks risky."}}


@pytest.mark.parametrize("event, action", [("check_run", "completed"), ("check_suite", "rerequested"),
                                           ("deployment_status", "created"), ("workflow_run", "completed")])
def test_an_event_about_a_repository_needs_one(github: Emulator, event: str, action: str) -> None:
    if action not in examples().get(event, {}):
        pytest.skip(f"no vendored example for {event}.{action}")
    with pytest.raises(ValueError, match=f"^{event} needs a repository$"):
        github.webhook(event, action)
