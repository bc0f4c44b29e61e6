"""The audit trail end to end: the App (real WSGI server) writes entries on merge and on deployment
statuses from the emulator's webhooks; a clone verifies them; redelivery and backfill add nothing twice."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from app_support import serve_in_thread, wait_settled

from gating.audit import keys
from gating.audit.entry import parse_line, split_lines
from gating.commands.cli import main
from gating.git.notes import AUDIT_REF, EVALS_REF
from gating.server import create_app

EVAL_NOTE = {"verdict": "pass", "dataset_digest": "sha256:" + "e" * 64, "metrics": {"pass_rate": 0.96},
             "cases": [{"id": "refund-1", "passed": True}]}


class World:
    def __init__(self, emu: Any, repo: Any, app: Any, key_dir: Path):
        self.emu, self.repo, self.app, self.key_dir = emu, repo, app, key_dir
        self.queue = app.extensions["gating"].queue

    def settle(self, timeout: float = 20.0) -> None:
        wait_settled(self.emu, self.queue, timeout)

    def merged_pull(self, branch: str, text: str, eval_note: bool = True) -> tuple[int, str, str]:
        """A pull request changing the prompt, approved by bob, evaluated, merged by carol."""
        self.emu.push(self.repo, branch, {"prompts/answer.md": text}, "Tune the answer prompt", user="alice")
        n = self.emu.create_pull(self.repo, branch, "main", "Tune the answer prompt", "alice")["number"]
        head = self.emu.get_pull(self.repo, n)["head"]["sha"]
        if eval_note:  # what the Action leaves on the head commit
            self.repo.git.notes_add(EVALS_REF, head, json.dumps(EVAL_NOTE, sort_keys=True).encode() + b"\n")
        self.emu.add_review(self.repo, n, "bob", "APPROVED")
        merge = self.emu.merge_pull(self.repo, n, "carol")
        return n, head, merge

    def entries(self, commit: str) -> list:
        return [parse_line(line, commit) for line in split_lines(self.repo.note(AUDIT_REF, commit))]


@pytest.fixture
def world(github, github_repo, tmp_path: Path):
    for login, perm in [("alice", "write"), ("bob", "write"), ("carol", "maintain")]:
        github.add_collaborator(github_repo, login, perm)
    key_dir = tmp_path / "keys"
    keys.write_keypair(key_dir / "audit.key", key_dir / "audit.pub")
    app = create_app({"APP_ID": github.app.app_id, "PRIVATE_KEY": github.app.private_key_pem,
                      "WEBHOOK_SECRET": github.app.webhook_secret, "GITHUB_API_URL": github.api_url,
                      "GATING_DB": str(tmp_path / "jobs.db"), "GATING_POLL_SECONDS": 0.05,
                      "GATING_HANDLERS": "gating.server.handlers.merge_audit,gating.server.handlers.deployments",
                      "GATING_AUDIT_KEY_PATH": str(key_dir / "audit.key"),
                      "GATING_AUDIT_RECONCILE_SECONDS": 0.01})
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = World(github, github_repo, app, key_dir)
        w.url = url
        yield w
        github.webhook_url = None
    app.extensions["gating"].worker.stop()


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_merge_writes_one_signed_entry_a_clone_verifies_and_deployment_adds_known_good(world, tmp_path, capsys):
    n, head, merge = world.merged_pull("tune", "Answer briefly.\n")
    world.settle()
    (entry,) = world.entries(merge)
    p = entry.predicate
    assert (p["event"], p["pull_request"], p["actor"], p["commit"], p["backfilled"]) == (
        "merged", n, "carol", merge, False)
    assert p["evals"] == {"verdict": "pass", "dataset_digest": "sha256:" + "e" * 64,
                          "metrics": {"pass_rate": 0.96}, "source": "eval note"}
    assert [(a["reviewer"], a["state"], a["sha"]) for a in p["approvals"]] == [("bob", "APPROVED", head)]
    assert p["snapshot"]["files"]["prompts/answer.md"] and p["snapshot_digest"].startswith("sha256:")
    assert entry.statement["subject"][0]["digest"] == {"gitCommit": merge}
    assert p["checks"] == {"gating / approval": None, "gating / eval": None}  # no check runs on the head

    clone = world.repo.clone(tmp_path / "clone", world.emu.installation_token())
    pub = str(world.key_dir / "audit.pub")
    code, out, _ = cli(capsys, "-C", str(clone.root), "audit", "verify", "--key", pub)
    assert code == 0 and out.startswith("ok: 1 entry (seq 1..1), 1 notes commits;")

    dep = world.emu.create_deployment(world.repo, merge, environment="production", user="carol")
    world.emu.add_deployment_status(world.repo, dep["id"], "success", user="carol")
    world.settle()
    merged, good = world.entries(merge)
    assert (good.event, good.seq, good.prev, good.predicate["deployment"]["environment"]) == (
        "known_good", 2, merged.digest, "production")
    code, out, _ = cli(capsys, "-C", str(clone.root), "audit", "log")
    assert [line.split()[2] for line in out.splitlines()] == ["merged", "known_good"]
    assert cli(capsys, "-C", str(clone.root), "audit", "verify", "--key", pub)[0] == 0

    # the next deployment fails: deploy_failed, pointing back at the known-good commit
    n2, _head2, merge2 = world.merged_pull("tune-2", "Answer very briefly.\n")
    dep2 = world.emu.create_deployment(world.repo, merge2, environment="production", user="carol")
    world.emu.add_deployment_status(world.repo, dep2["id"], "failure", user="carol")
    world.settle()
    merged2, failed = world.entries(merge2)
    assert merged2.predicate["rollback"] == {"previous_known_good": merge}
    assert (failed.event, failed.seq, failed.predicate["rollback"]["previous_known_good"]) == (
        "deploy_failed", 4, merge)


def post_eval_check(world, token: str, head: str, conclusion: str, title: str) -> None:
    """A completed `gating / eval` check run on `head`, as the Action posts it with `token`."""
    r = httpx.post(f"{world.emu.api_url}/repos/{world.repo.full_name}/check-runs", timeout=10,
                   headers={"Authorization": f"Bearer {token}"},
                   json={"name": "gating / eval", "head_sha": head, "status": "completed", "conclusion": conclusion,
                         "output": {"title": title, "summary": title}})
    assert r.status_code == 201, r.text


def unmerged_pull(world, branch: str) -> tuple[int, str]:
    world.emu.push(world.repo, branch, {"prompts/answer.md": "Answer briefly.\n"}, "Tune the answer prompt",
                   user="alice")
    n = world.emu.create_pull(world.repo, branch, "main", "Tune the answer prompt", "alice")["number"]
    return n, world.emu.get_pull(world.repo, n)["head"]["sha"]


def test_without_an_eval_note_the_merged_entry_takes_the_evidence_from_the_check_run(world):
    n, head = unmerged_pull(world, "tune")
    post_eval_check(world, world.emu.actions_token(), head, "success",
                    "Pass: all 1 thresholds met; 12 paired cases, no significant regression")
    world.emu.add_review(world.repo, n, "bob", "APPROVED")
    merge = world.emu.merge_pull(world.repo, n, "carol")
    world.settle()
    assert world.repo.note(EVALS_REF, head) is None
    (entry,) = world.entries(merge)
    assert entry.predicate["evals"] == {
        "verdict": "pass", "dataset_digest": None, "source": "gating / eval check run by github-actions",
        "metrics": {"check_title": "Pass: all 1 thresholds met; 12 paired cases, no significant regression"}}


def test_a_passing_note_on_a_head_whose_eval_check_failed_is_not_the_entrys_evidence(world):
    # the Action's check run failed; a writer then pushes a note saying pass onto the head (anyone who may
    # push refs/notes/gating/evals can): the entry, which the deployment gate reads, keeps the failure
    n, head = unmerged_pull(world, "tune")
    post_eval_check(world, world.emu.actions_token(), head, "failure", "Fail: 3 cases regressed (a, b, c)")
    world.repo.git.notes_add(EVALS_REF, head, json.dumps(EVAL_NOTE, sort_keys=True).encode() + b"\n")
    world.emu.add_review(world.repo, n, "bob", "APPROVED")
    merge = world.emu.merge_pull(world.repo, n, "carol")
    world.settle()
    (entry,) = world.entries(merge)
    assert entry.predicate["evals"] == {
        "verdict": "fail", "dataset_digest": None, "metrics": {"check_title": "Fail: 3 cases regressed (a, b, c)"},
        "source": "gating / eval check run by github-actions (the eval note on the head said pass: not taken)"}


def test_a_failing_note_is_kept_beside_a_passing_check_run(world):
    # a note more severe than the check (a run with fail-on: never, say) gains a forger nothing: kept
    n, head = unmerged_pull(world, "tune")
    post_eval_check(world, world.emu.actions_token(), head, "success", "Fail (not blocking): 1 case regressed")
    world.repo.git.notes_add(EVALS_REF, head, json.dumps({**EVAL_NOTE, "verdict": "fail"}).encode() + b"\n")
    merge = world.emu.merge_pull(world.repo, n, "carol")
    world.settle()
    (entry,) = world.entries(merge)
    assert (entry.predicate["evals"]["verdict"], entry.predicate["evals"]["source"]) == ("fail", "eval note")


def test_the_check_run_of_github_actions_is_preferred_over_a_newer_one_from_another_app(world):
    n, head = unmerged_pull(world, "tune")
    post_eval_check(world, world.emu.actions_token(), head, "failure", "Fail: 3 cases regressed (a, b, c)")
    # a later run of the same name from another app that may write checks: not the Action's verdict
    post_eval_check(world, world.emu.installation_token(), head, "success", "Pass: all good")
    world.emu.add_review(world.repo, n, "bob", "APPROVED")
    merge = world.emu.merge_pull(world.repo, n, "carol")
    world.settle()
    (entry,) = world.entries(merge)
    evals = entry.predicate["evals"]
    assert (evals["verdict"], evals["metrics"], evals["source"]) == (
        "fail", {"check_title": "Fail: 3 cases regressed (a, b, c)"}, "gating / eval check run by github-actions")


def test_with_no_check_run_of_github_actions_the_newest_of_any_app_counts_and_says_whose(world):
    n, head = unmerged_pull(world, "tune")
    post_eval_check(world, world.emu.installation_token(), head, "failure", "Fail: 1 case regressed (a)")
    post_eval_check(world, world.emu.installation_token(), head, "success", "Pass: re-run")
    merge = world.emu.merge_pull(world.repo, n, "carol")
    world.settle()
    (entry,) = world.entries(merge)
    evals = entry.predicate["evals"]
    assert (evals["verdict"], evals["source"]) == ("pass", "gating / eval check run by gating-emulated")


def test_the_merged_entry_records_the_apps_own_approval_check_and_the_eval_check(world):
    """gating / approval as the App posted it on the head (a later run of that name from another app
    with checks: write does not replace it), and the gating / eval run that counts."""
    n, head = unmerged_pull(world, "tune")
    post_eval_check(world, world.emu.actions_token(), head, "success", "Pass")
    for token, conclusion in ((world.emu.installation_token(), "success"), (world.emu.actions_token(), "failure")):
        r = httpx.post(f"{world.emu.api_url}/repos/{world.repo.full_name}/check-runs", timeout=10,
                       headers={"Authorization": f"Bearer {token}"},
                       json={"name": "gating / approval", "head_sha": head, "status": "completed",
                             "conclusion": conclusion, "output": {"title": "1 of 1 rules approved", "summary": "-"}})
        assert r.status_code == 201, r.text
    merge = world.emu.merge_pull(world.repo, n, "carol")
    world.settle()
    (entry,) = world.entries(merge)
    approval, ev = entry.predicate["checks"]["gating / approval"], entry.predicate["checks"]["gating / eval"]
    assert (approval["conclusion"], approval["app_id"], approval["head_sha"], approval["title"]) == (
        "success", int(world.emu.app.app_id), head, "1 of 1 rules approved")
    assert (ev["conclusion"], ev["app"], ev["head_sha"]) == ("success", "github-actions", head)


def test_redelivered_merge_event_leaves_one_entry(world):
    n, _head, merge = world.merged_pull("tune", "Answer briefly.\n")
    world.settle()
    delivery = world.emu.webhook("pull_request", "closed", world.repo, number=n)
    for _ in range(2):  # a fresh delivery id each time gets past the queue's de-duplication
        fresh = world.emu.webhook("pull_request", "closed", world.repo, number=n)
        assert world.emu.deliver(world.url + "/webhooks", fresh).status_code == 202
    assert world.emu.deliver(world.url + "/webhooks", delivery).status_code == 202
    world.settle()
    assert [e.event for e in world.entries(merge)] == ["merged"]
    assert world.repo.git.run("rev-list", "--count", AUDIT_REF) == "1"


def test_a_merge_the_app_missed_is_backfilled(world, tmp_path, capsys, monkeypatch):
    world.emu.webhook_url = None  # the App is down for this merge
    n1, _h1, merge1 = world.merged_pull("missed", "Answer briefly.\n", eval_note=False)
    assert world.repo.note(AUDIT_REF, merge1) is None
    monkeypatch.setenv("GITHUB_TOKEN", world.emu.installation_token())
    args = ["audit", "backfill", "--repo", world.repo.full_name, "--key", str(world.key_dir / "audit.key"),
            "--api-url", world.emu.api_url]
    code, out, _ = cli(capsys, *args)
    assert code == 0
    assert out.splitlines() == [f"backfilled seq 1: merged #{n1} at {merge1[:12]}",
                                "1 merged pull request had no audit entry"]
    (entry,) = world.entries(merge1)
    assert entry.predicate["backfilled"] is True and entry.predicate["evals"] is None
    assert cli(capsys, *args)[1] == "0 merged pull requests had no audit entry; the trail is complete\n"


def test_backfill_records_the_approval_check_of_the_app_it_is_told(world, capsys, monkeypatch):
    world.emu.webhook_url = None  # the App is down for this merge
    n, head = unmerged_pull(world, "tune")
    for token, conclusion in ((world.emu.installation_token(), "success"), (world.emu.actions_token(), "failure")):
        r = httpx.post(f"{world.emu.api_url}/repos/{world.repo.full_name}/check-runs", timeout=10,
                       headers={"Authorization": f"Bearer {token}"},
                       json={"name": "gating / approval", "head_sha": head, "status": "completed",
                             "conclusion": conclusion})
        assert r.status_code == 201, r.text
    merge = world.emu.merge_pull(world.repo, n, "carol")
    monkeypatch.setenv("GITHUB_TOKEN", world.emu.installation_token())
    monkeypatch.delenv("GATING_AUDIT_APP_ID", raising=False)
    code, _out, _ = cli(capsys, "audit", "backfill", "--repo", world.repo.full_name, "--key",
                        str(world.key_dir / "audit.key"), "--api-url", world.emu.api_url, "--app-id", world.emu.app.slug)
    assert code == 0
    (entry,) = world.entries(merge)
    approval = entry.predicate["checks"]["gating / approval"]
    assert (approval["conclusion"], approval["app_id"]) == ("success", int(world.emu.app.app_id))


def test_the_app_reconciles_missed_merges_on_its_own(world):
    world.emu.webhook_url = None
    _n1, _h1, merge1 = world.merged_pull("missed", "Answer briefly.\n")
    world.emu.webhook_url = world.url + "/webhooks"
    _n2, _h2, merge2 = world.merged_pull("seen", "Answer very briefly.\n")
    world.settle()
    (late,) = world.entries(merge1)
    (seen,) = world.entries(merge2)
    assert (seen.seq, seen.predicate["backfilled"]) == (1, False)
    assert (late.seq, late.predicate["backfilled"]) == (2, True)


def test_a_missing_signing_key_fails_the_job_naming_the_variable(github, github_repo, tmp_path):
    app = create_app({"APP_ID": github.app.app_id, "PRIVATE_KEY": github.app.private_key_pem,
                      "WEBHOOK_SECRET": github.app.webhook_secret, "GITHUB_API_URL": github.api_url,
                      "GATING_DB": str(tmp_path / "jobs.db"), "GATING_POLL_SECONDS": 0.05,
                      "GATING_HANDLERS": "gating.server.handlers.merge_audit"})
    try:
        with serve_in_thread(app) as url:
            github.webhook_url = url + "/webhooks"
            github.push(github_repo, "b", {"prompts/answer.md": "x\n"}, "x", user="alice")
            n = github.create_pull(github_repo, "b", "main", "x", "alice")["number"]
            github.merge_pull(github_repo, n, "alice")
            github.wait_for_deliveries()
            queue = app.extensions["gating"].queue
            queue.wait_idle(10)
            (job,) = queue.list("failed")
            assert "no audit signing key: set GATING_AUDIT_KEY_PATH or GATING_AUDIT_KEY" in job.last_error
            github.webhook_url = None
    finally:
        app.extensions["gating"].worker.stop()
    assert github_repo.git.resolve(AUDIT_REF) is None


def test_a_missed_merge_is_backfilled_on_the_schedule_with_no_event(github, github_repo, tmp_path):
    key_dir = tmp_path / "keys"
    keys.write_keypair(key_dir / "audit.key", key_dir / "audit.pub")
    github.add_collaborator(github_repo, "alice", "write")
    github.push(github_repo, "quiet", {"prompts/answer.md": "Answer briefly.\n"}, "Tune", user="alice")
    n = github.create_pull(github_repo, "quiet", "main", "Tune", "alice")["number"]
    merge = github.merge_pull(github_repo, n, "alice")  # no App listening: the event is lost
    app = create_app({"APP_ID": github.app.app_id, "PRIVATE_KEY": github.app.private_key_pem,
                      "WEBHOOK_SECRET": github.app.webhook_secret, "GITHUB_API_URL": github.api_url,
                      "GATING_DB": str(tmp_path / "jobs.db"), "GATING_POLL_SECONDS": 0.05,
                      "GATING_HANDLERS": "gating.server.handlers.merge_audit",
                      "GATING_AUDIT_KEY_PATH": str(key_dir / "audit.key"),
                      "GATING_AUDIT_SCHEDULE_SECONDS": 0.3})
    try:
        deadline = time.monotonic() + 15
        while github_repo.note(AUDIT_REF, merge) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        note = github_repo.note(AUDIT_REF, merge)
        assert note is not None, "the scheduled reconciliation never wrote the missed merge"
        (entry,) = [parse_line(line, merge) for line in split_lines(note)]
        assert (entry.event, entry.predicate["backfilled"], entry.seq) == ("merged", True, 1)
        queue = app.extensions["gating"].queue
        jobs = [j for j in queue.list() if j.event == "schedule"]
        assert jobs and all(j.delivery.startswith("schedule:audit_reconcile:") for j in jobs)
    finally:
        app.extensions["gating"].scheduler.stop()
        app.extensions["gating"].worker.stop()
