"""The App as a custom deployment protection rule, end to end: the App under a real WSGI server, the
emulator holding a workflow run on an environment where the App's rule is enabled, sending
`deployment_protection_rule`, and taking the App's review through the endpoint GitHub documents.
Every decision is a signed entry; promotion steps a rollout tool reports are kept as entries too."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from app_support import serve_in_thread
from test_rollback_app import HANDLERS, MANIFEST, World, make_world

from gating.audit import log as audit_log
from gating.audit.entry import Approval, EntryFacts
from gating.audit.keys import keyid
from gating.commands.cli import main
from gating.github import BlobCache, GitDatabaseNotes
from gating.rollback.plan import Request
from gating.server.rollbacks import Audit, execute

GATE_HANDLERS = HANDLERS + ",gating.server.handlers.protection"
DEPLOY = "\ndeploy:\n  environments: [staging, production]\n  exceptions: [preview]\n"


class GateWorld(World):
    def reviewed_merge(self, branch: str, files: dict[str, str | None], title: str, eval_ok: bool = True,
                       approve: bool = True, approval_check: str | None = None) -> str:
        """A pull request with a `gating / eval` run on its head and an approving review, merged; the
        App's `gating / approval` run on the head concluded `approval_check` (default: success when
        approved, failure when not; "none": no run)."""
        head = self.emu.push(self.repo, branch, files, title, user="alice")
        pr = self.emu.create_pull(self.repo, branch, "main", title, "alice")
        self.api().client.request("POST", f"{self.api().path}/check-runs", json={
            "name": "gating / eval", "head_sha": head, "status": "completed",
            "conclusion": "success" if eval_ok else "failure",
            "output": {"title": "evals pass" if eval_ok else "evals fail", "summary": "-"}})
        conclusion = approval_check or ("success" if approve else "failure")
        if conclusion != "none":  # what the approvals handler posts, with the App's token
            self.api().client.request("POST", f"{self.api().path}/check-runs", json={
                "name": "gating / approval", "head_sha": head, "status": "completed", "conclusion": conclusion,
                "output": {"title": "1 of 1 rules approved" if conclusion == "success" else "1 rule pending",
                           "summary": "-"}})
        if approve:
            self.emu.add_review(self.repo, pr["number"], "root", "APPROVED")
        sha = self.emu.merge_pull(self.repo, pr["number"], "root")
        self.settle()
        return sha

    def gate(self, sha: str, environment: str) -> dict[str, Any]:
        """A workflow job deploying `sha` to `environment` starts; the App answers. The run's review."""
        held = self.emu.request_deployment(self.repo, sha, environment)
        self.settle()
        run = self.emu.gate_run(self.repo, held["run_id"])
        (state, comment), = run.reviews.values()
        return {"run": held["run_id"], "deployment": held["deployment"], "state": state, "comment": comment}

    def ship(self, sha: str, environment: str) -> None:
        """The deployment succeeded (the job reports it): known-good there, the monitor being off."""
        d = self.emu.create_deployment(self.repo, sha, environment, user="deployer")
        self.emu.add_deployment_status(self.repo, d["id"], "success", user="deployer")
        self.settle()

    def decisions(self) -> list:
        return [e for e in self.entries() if e.event in ("deploy_approved", "deploy_rejected")]


@pytest.fixture
def world(github, github_repo, tmp_path: Path):
    """main: the example with `deploy:` (staging → production, preview an exception), merged with
    evals passing and an approval; the App's rule enabled on staging, production and preview."""
    app, key = make_world(github, github_repo, tmp_path, GATING_HANDLERS=GATE_HANDLERS)
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = GateWorld(github, github_repo, app, key, tmp_path)
        w.url = url
        for env in ("staging", "production", "preview", "qa"):
            github.enable_protection_rule(github_repo, env)
        w.shas["D"] = w.reviewed_merge("gate", {"gating.yml": MANIFEST + DEPLOY}, "Gate deployments")
        yield w


def test_an_audited_merge_deploys_to_staging_then_production(world: GateWorld):
    d = world.shas["D"]
    got = world.gate(d, "staging")
    assert got["state"] == "approved"
    merged = [e for e in world.entries() if e.event == "merged" and e.commit == d][0]
    assert got["comment"] == (f"gating: {d[:12]} approved for staging: merged through #1 (audit seq {merged.seq}), "
                              "evals pass, snapshot unchanged")
    (entry,) = world.decisions()
    p = entry.predicate
    assert (entry.event, entry.commit, p["actor"]) == ("deploy_approved", d, "gating (deployment protection rule)")
    dep = p["deployment"]
    assert (dep["environment"], dep["run_id"], dep["state"], dep["basis"]) == ("staging", got["run"], "approved",
                                                                               "merged")
    assert dep["evidence"]["merged"] == merged.seq and dep["evidence"]["snapshot_digest"] == \
        merged.predicate["snapshot_digest"]

    world.ship(d, "staging")
    got = world.gate(d, "production")
    assert got["state"] == "approved"
    good = [e for e in world.entries() if e.event == "known_good" and e.commit == d][0]
    assert got["comment"].endswith(f", known-good in staging (audit seq {good.seq})")


def test_a_snapshot_never_deployed_to_staging_is_rejected_for_production(world: GateWorld):
    d = world.shas["D"]
    got = world.gate(d, "production")
    assert got["state"] == "rejected"
    assert got["comment"] == (
        f"gating: {d[:12]} rejected for production:\n"
        "- promotion order: not deployed and healthy in staging: no known_good entry for this snapshot there. "
        f"Deploy {d[:12]} to staging first and let its bake pass")
    (entry,) = world.decisions()
    assert entry.event == "deploy_rejected" and entry.predicate["deployment"]["reasons"][0].startswith(
        "promotion order: not deployed and healthy in staging")

    # deployed to staging but failed there: still not promotable, and it says why
    dep = world.emu.create_deployment(world.repo, d, "staging", user="deployer")
    world.emu.add_deployment_status(world.repo, dep["id"], "failure", user="deployer")
    world.settle()
    got = world.gate(d, "production")
    assert got["state"] == "rejected" and "not healthy in staging: deployed there (audit seq" in got["comment"]
    assert "but its deployment failed" in got["comment"]


def test_a_commit_pushed_around_the_road_is_rejected(world: GateWorld):
    c = world.emu.push(world.repo, "main", {"prompts/system.md": "Hot-fixed.\n"}, "Hot-fix", user="alice")
    world.settle()
    got = world.gate(c, "staging")
    assert got["state"] == "rejected"
    assert got["comment"] == (
        f"gating: {c[:12]} rejected for staging:\n"
        f"- not an audited merge: the audit log has no merged entry for {c[:12]} (pushed around the pull request "
        "road?). Merge the change through a pull request so gating / eval and gating / approval run and the App "
        "records it, or deploy a rollback (/rollback last-good)")


def test_a_failed_eval_and_a_missing_approval_are_rejected_with_both_reasons(world: GateWorld):
    f = world.reviewed_merge("worse", {"prompts/system.md": "Be terse.\n"}, "Terse", eval_ok=False, approve=False)
    got = world.gate(f, "staging")
    assert got["state"] == "rejected"
    lines = got["comment"].splitlines()
    assert lines[0] == f"gating: {f[:12]} rejected for staging:"
    assert lines[1] == ("- eval evidence missing: the eval verdict recorded at merge is fail (gating / eval check run "
                        f"by {world.emu.app.slug}). Merge a change whose gating / eval passes, or have an admin record "
                        "`/gating override <reason>` on the pull request before merging")
    assert lines[2] == ("- approval missing: gating / approval on the head of #2 was failure at merge (1 rule pending). "
                        "Get the approvals gating / approval asks for before merging, or have an admin record "
                        "`/gating override <reason>` on the pull request before merging")


def test_an_approving_review_without_the_apps_approval_check_is_rejected(world: GateWorld):
    """The rules may ask for more than one review (or an admin's): the App's own gating / approval,
    recorded at merge, is what says the required approvals were present. A run of that name posted
    by another app (a workflow's token) does not count."""
    head = world.emu.push(world.repo, "unchecked", {"prompts/system.md": "Be kind.\n"}, "Kind", user="alice")
    n = world.emu.create_pull(world.repo, "unchecked", "main", "Kind", "alice")["number"]
    for token, name in ((world.emu.installation_token(), "gating / eval"),
                        (world.emu.actions_token(), "gating / approval")):  # the second one forged by a workflow
        r = httpx.post(f"{world.emu.api_url}/repos/{world.repo.full_name}/check-runs", timeout=10,
                       headers={"Authorization": f"Bearer {token}"},
                       json={"name": name, "head_sha": head, "status": "completed", "conclusion": "success"})
        assert r.status_code == 201, r.text
    world.emu.add_review(world.repo, n, "root", "APPROVED")
    f = world.emu.merge_pull(world.repo, n, "root")
    world.settle()
    got = world.gate(f, "staging")
    assert got["state"] == "rejected"
    assert got["comment"].splitlines()[1:] == [
        f"- approval missing: no gating / approval check run of the App was on the head of #{n} at merge. Get the "
        "approvals gating / approval asks for before merging, or have an admin record `/gating override <reason>` "
        "on the pull request before merging"]
    merged = [e for e in world.entries() if e.event == "merged" and e.commit == f][0]
    assert merged.predicate["checks"]["gating / approval"] is None  # the workflow's run is not the App's
    ev = merged.predicate["checks"]["gating / eval"]
    assert (ev["conclusion"], ev["head_sha"], ev["app"]) == ("success", head, world.emu.app.slug)


def test_a_commit_whose_system_changed_after_merge_is_rejected(world: GateWorld):
    """A merged entry whose recorded snapshot is not the system at its commit (written from another
    tree: a backfill with the wrong manifest, a replayed entry) does not let the commit through."""
    c = world.emu.push(world.repo, "main", {"prompts/system.md": "Changed after review.\n"}, "Direct", user="alice")
    world.settle()
    d = world.shas["D"]
    merged_d = [e for e in world.entries() if e.event == "merged" and e.commit == d][0]
    store = GitDatabaseNotes(world.api())
    audit_log.append_entry(store, EntryFacts(
        event="merged", commit=c, repository=world.repo.full_name, actor="root", pull_request=1,
        snapshot=merged_d.predicate["snapshot"], evals={"verdict": "pass", "source": "eval note"},
        approvals=[Approval("root", "APPROVED", "", c)], backfilled=True, checks=merged_d.predicate["checks"]),
        world.key, datetime.now(UTC))
    got = world.gate(c, "staging")
    assert got["state"] == "rejected"
    (_, reason) = got["comment"].splitlines()  # evals and approval recorded: the snapshot alone is wrong
    assert reason.startswith("- system changed after merge: the merged entry (audit seq ")
    assert f"recorded snapshot {merged_d.predicate['snapshot_digest'][:19]}, the system at {c[:12]} is sha256:" in reason
    assert reason.endswith("Deploy the commit that was merged, or merge the change through a pull request")


def test_a_rollback_to_a_known_good_snapshot_is_approved(world: GateWorld):
    d = world.shas["D"]
    world.ship(d, "production")  # known-good in production
    bad = world.reviewed_merge("bad", {"prompts/system.md": "Regressed.\n"}, "Regress")
    world.ship(bad, "production")
    audit = Audit(GitDatabaseNotes(world.api()), world.key, {keyid(world.key): world.key.public_key()})
    out = execute(world.api(), audit, d, Request("@root", "regressed", "cli", "cli"), datetime.now(UTC), BlobCache())
    rollback = world.emu.merge_pull(world.repo, out.number, "root")  # merged without evals or reviews
    world.settle()
    got = world.gate(rollback, "production")
    assert got["state"] == "approved"
    rb = [e for e in world.entries() if e.event == "rolled_back"][0]
    assert got["comment"] == (f"gating: {rollback[:12]} approved for production: a rollback to the known-good "
                              f"snapshot of {d[:12]} (audit seq {rb.seq})")


def test_exceptions_and_ungated_environments(world: GateWorld):
    c = world.emu.push(world.repo, "main", {"app/x.py": "1\n"}, "Code", user="alice")
    world.settle()
    assert world.gate(c, "preview")["state"] == "approved"
    got = world.gate(c, "qa")
    assert got["state"] == "rejected"
    assert got["comment"].splitlines()[1] == (
        "- environment not gated: qa is not in deploy.environments of gating.yml on main (gated: staging, "
        "production). Add it to deploy.environments (or deploy.exceptions), or disable the App's rule on the "
        "environment")


def test_a_redelivered_event_answers_once_with_the_recorded_decision(world: GateWorld):
    d = world.shas["D"]
    held = world.emu.request_deployment(world.repo, d, "staging")
    world.settle()
    run = world.emu.gate_run(world.repo, held["run_id"])
    assert run.state == "approved"
    world.emu._emit("deployment_protection_rule", "requested", world.emu.repo_record(world.repo),
                    deployment_id=held["deployment"]["id"], gate_run_id=held["run_id"])
    world.settle()  # the second review is GitHub's 422 (no pending request), which the App takes as done
    assert len(world.decisions()) == 1
    assert world.queue.list("failed") == []


def test_no_audit_key_rejects_with_the_reason(github, github_repo, tmp_path: Path):
    app, _key = make_world(github, github_repo, tmp_path, GATING_HANDLERS=GATE_HANDLERS, GATING_AUDIT_KEY="")
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = GateWorld(github, github_repo, app, _key, tmp_path)
        github.enable_protection_rule(github_repo, "production")
        held = github.request_deployment(github_repo, "main", "production")
        w.settle()
        (state, comment), = github.gate_run(github_repo, held["run_id"]).reviews.values()
        assert state == "rejected"
        assert comment.startswith(f"gating: {held['deployment']['sha'][:12]} rejected for production:\n- the App "
                                  "cannot check this deployment: ")


def test_promotion_steps_are_kept_and_shown_by_audit_log(world: GateWorld, tmp_path: Path, capsys):
    d = world.shas["D"]
    dep = world.emu.create_deployment(world.repo, d, "production", user="argo")
    for w in (5, 25, 100):
        world.emu.add_deployment_status(world.repo, dep["id"], "in_progress", user="argo",
                                        description=f"canary step gating.weight={w}")
    world.settle()
    steps = [e for e in world.entries() if e.event == "promoted"]
    assert [(e.commit, e.predicate["deployment"]["weight"], e.predicate["deployment"]["environment"])
            for e in steps] == [(d, 5, "production"), (d, 25, "production"), (d, 100, "production")]
    clone = world.repo.clone(tmp_path / "clone", world.emu.installation_token())
    assert main(["-C", str(clone.root), "audit", "log"]) == 0
    out = [x for x in capsys.readouterr().out.splitlines() if " promoted " in x]
    assert [x.split("(env ")[1] for x in out] == ["production 5%)", "production 25%)", "production 100%)"]
    assert all(x.endswith(f"@argo  (env production {w}%)") for x, w in zip(out, [5, 25, 100], strict=True))


def test_the_review_endpoint_validates_shapes_and_answers_githubs_errors(world: GateWorld):
    held = world.emu.request_deployment(world.repo, world.shas["D"], "staging")
    world.settle()  # the App approved
    api = world.api()
    url = f"{world.emu.api_url}{api.path}/actions/runs/{held['run_id']}/deployment_protection_rule"
    auth = {"Authorization": f"token {world.emu.installation_token()}"}

    def post(body: Any, run: int | None = None, headers: dict[str, str] = auth) -> httpx.Response:
        target = url if run is None else url.replace(f"/runs/{held['run_id']}/", f"/runs/{run}/")
        return httpx.post(target, json=body, headers=headers)

    def not_pending(run: int) -> str:
        return f"No pending custom deployment requests in workflow run `{run}` to approve or reject"

    r = post({"environment_name": "staging", "state": "maybe"})
    assert r.status_code == 422 and r.json()["message"].startswith("Invalid request.")
    r = post({"state": "approved"})
    assert r.status_code == 422 and r.json()["message"].startswith("Invalid request.")
    r = post({"environment_name": "staging", "state": "approved"}, run=999999)
    assert (r.status_code, r.json()["message"]) == (404, "Not Found")
    r = post({"environment_name": "staging", "state": "approved"})  # reviewed already
    assert (r.status_code, r.json()["message"]) == (422, not_pending(held["run_id"]))
    assert r.json()["documentation_url"].endswith("#review-custom-deployment-protection-rules-for-a-workflow-run")
    other = world.emu.request_deployment(world.repo, world.shas["D"], "unprotected")  # no rule: no event
    r = post({"environment_name": "unprotected", "state": "approved"}, run=other["run_id"])
    assert (r.status_code, r.json()["message"]) == (422, not_pending(other["run_id"]))
    # only a GitHub App answers here: a person's token finds nothing
    r = post({"environment_name": "staging", "state": "approved"},
             headers={"Authorization": f"token {world.emu.user_token('root')}"})
    assert (r.status_code, r.json()["message"]) == (404, "Not Found")

    # a comment without a state is posted on the run and leaves it waiting for the App's decision
    world.emu.webhook_url, hook = None, world.emu.webhook_url
    quiet = world.emu.request_deployment(world.repo, world.shas["D"], "staging")
    world.emu.webhook_url = hook
    r = post({"environment_name": "staging", "comment": "checking the audit log"}, run=quiet["run_id"])
    run = world.emu.gate_run(world.repo, quiet["run_id"])
    assert r.status_code == 204 and (run.state, run.comments) == ("waiting", ["checking the audit log"])
    r = post({"environment_name": "staging", "state": "rejected", "comment": "x" * 1025}, run=quiet["run_id"])
    assert (r.status_code, r.json()["message"]) == (422, "Comment exceeded maximum length of 1024 characters.")
    r = post({"environment_name": "staging", "comment": ""}, run=quiet["run_id"])  # neither state nor comment
    assert (r.status_code, r.json()["message"]) == (422, "Invalid state provided")
    for i in range(9):
        assert post({"environment_name": "staging", "comment": f"still checking {i}"}, run=quiet["run_id"]) \
            .status_code == 204
    r = post({"environment_name": "staging", "comment": "one too many"}, run=quiet["run_id"])
    assert (r.status_code, r.json()["message"]) == (422, "You have exceeded the maximum allowed comments of 10 for the "
                                                         "pending approval in environment staging.")
    run.failing_reviews = 1
    r = post({"environment_name": "staging", "state": "rejected", "comment": "no"}, run=quiet["run_id"])
    assert (r.status_code, r.json()["message"]) == (422, "There was a problem approving one of the gates")
    assert run.state == "waiting"
    r = post({"environment_name": "staging", "state": "rejected", "comment": "no"}, run=quiet["run_id"])
    assert r.status_code == 204 and run.state == "rejected"
    r = post({"environment_name": "staging", "state": "approved"}, run=quiet["run_id"])  # the run is rejected
    assert (r.status_code, r.json()["message"]) == (422, not_pending(quiet["run_id"]))
    assert all("deployment_protection_rule" in p for p in world.emu.take_problems())  # the invalid bodies, on purpose


def test_the_app_answers_again_when_github_fails_to_pass_the_review_on(world: GateWorld):
    """GitHub's 422 "There was a problem approving one of the gates" (reviews racing) leaves the run
    waiting: the job retries and answers with the decision it recorded, once."""
    world.emu.webhook_url, hook = None, world.emu.webhook_url
    held = world.emu.request_deployment(world.repo, world.shas["D"], "staging")
    world.emu.webhook_url = hook
    run = world.emu.gate_run(world.repo, held["run_id"])
    run.failing_reviews = 1
    world.emu._emit("deployment_protection_rule", "requested", world.emu.repo_record(world.repo),
                    deployment_id=held["deployment"]["id"], gate_run_id=held["run_id"])
    world.settle()
    assert run.state == "approved" and run.failing_reviews == 0
    assert [e.predicate["deployment"]["run_id"] for e in world.decisions()] == [held["run_id"]]


def test_github_failing_after_the_retries_rejects_with_the_reason(github, github_repo, tmp_path: Path):
    app, key = make_world(github, github_repo, tmp_path, GATING_HANDLERS=GATE_HANDLERS, GATING_MAX_ATTEMPTS=2,
                          GATING_RETRY_BASE_SECONDS=0.05)
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = GateWorld(github, github_repo, app, key, tmp_path)
        github.enable_protection_rule(github_repo, "staging")
        d = w.reviewed_merge("gate", {"gating.yml": MANIFEST + DEPLOY}, "Gate deployments")
        github.faults.add(method="GET", path=r"/git/(ref|matching-refs)/notes", kind="5xx", times=None, status=503)
        held = github.request_deployment(github_repo, d, "staging")
        w.settle()
        (state, comment), = github.gate_run(github_repo, held["run_id"]).reviews.values()
        assert state == "rejected"
        assert comment.startswith(f"gating: {d[:12]} rejected for staging:\n- the App could not read the audit log "
                                  "(GitHub 503 (GET /repos/acme/support-bot/git/ref/notes/gating/audit): ")
        assert comment.endswith("Re-run the deployment job")


def test_with_the_monitor_production_waits_for_the_staging_bake(github, github_repo, tmp_path: Path):
    """Staging deployments bake like production ones; production is approved once staging's bake
    passed with no rule firing (the monitor's known_good entry, with its health evidence)."""
    from test_monitor_app import minutes_of, tick, traffic

    from gating.monitor.rollup import MemoryRollups
    from gating.server import monitoring

    app, key = make_world(github, github_repo, tmp_path, GATING_MONITOR_SECONDS=0,
                          GATING_HANDLERS=GATE_HANDLERS + ",gating.server.handlers.monitor")
    app.extensions["gating"].rollups = MemoryRollups()
    real_clock = monitoring.clock
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = GateWorld(github, github_repo, app, key, tmp_path)
        w.rollups = app.extensions["gating"].rollups
        try:
            for env in ("staging", "production"):
                github.enable_protection_rule(github_repo, env)
            d = w.reviewed_merge("gate", {"gating.yml": MANIFEST + DEPLOY}, "Gate deployments")
            assert w.gate(d, "staging")["state"] == "approved"
            w.ship(d, "staging")
            assert ("deployed", d) in [(e.event, e.commit) for e in w.entries()]
            got = w.gate(d, "production")
            assert got["state"] == "rejected"
            assert "- promotion order: not healthy in staging: deployed there (audit seq " in got["comment"]
            assert got["comment"].endswith("but its bake has not passed yet. Wait for the bake (monitor.bake_minutes) "
                                           "to pass with no rule firing, or fix and deploy again")
            start = minutes_of(w, d)
            traffic(w.rollups, d, start, 40)
            tick(w, start + 31)
            (good,) = [e for e in w.entries() if e.event == "known_good"]
            assert good.predicate["deployment"]["environment"] == "staging"
            assert good.predicate["health"]["verdict"] == "no rule fired in 30 minutes"
            got = w.gate(d, "production")
            assert got["state"] == "approved" and got["comment"].endswith(
                f", known-good in staging (audit seq {good.seq})")
        finally:
            monitoring.clock = real_clock
