"""The App at GitHub's edges, under a real WSGI server driven by the emulator's webhooks: custom
repository roles, rate limits and a skewed clock, writes that fail after they happened, a permission
the installation lacks, and the re-run buttons."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_support import serve_in_thread
from test_app_approvals import NEW_PIN, PROMPT, World, rows
from test_rollback_app import MANIFEST as ROLLBACK_MANIFEST
from test_rollback_app import World as RollbackWorld
from test_rollback_app import make_world

from gating.policy import APPROVAL_CHECK
from gating.server import create_app

PROMPT_EDIT = {"prompts/answer.md": PROMPT + "\nBe brief.\n"}  # prompt-review: 1 approval, write or higher


def start(emu, repo, tmp_path: Path, **settings):
    emu.add_team_member("acme", "ml-platform", "carol")
    for login, perm in [("alice", "write"), ("carol", "write"), ("dave", "write"), ("root", "admin")]:
        emu.add_collaborator(repo, login, perm)
    app = create_app({"APP_ID": emu.app.app_id, "PRIVATE_KEY": emu.app.private_key_pem,
                      "WEBHOOK_SECRET": emu.app.webhook_secret, "GITHUB_API_URL": emu.api_url,
                      "GATING_DB": str(tmp_path / "jobs.db"), "GATING_POLL_SECONDS": 0.05, **settings})
    return app


@pytest.fixture
def world(github, github_repo, tmp_path: Path):
    app = start(github, github_repo, tmp_path)
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        yield World(github, github_repo, app, url)
        github.webhook_url = None
    app.extensions["gating"].worker.stop()


# -- custom repository roles ----------------------------------------------------------------------


def test_an_approval_by_a_custom_role_counts_as_its_base_permission(world: World):
    world.emu.add_custom_role("acme", "release-manager", "maintain")
    world.emu.add_custom_role("acme", "auditor", "triage")
    world.emu.add_collaborator(world.repo, "rita", "release-manager")
    world.emu.add_collaborator(world.repo, "tess", "auditor")
    pr = world.open_pull(PROMPT_EDIT)
    n = pr["number"]
    world.eval_check(n, "success")
    world.emu.add_review(world.repo, n, "tess", "APPROVED")  # triage underneath: not enough
    world.settle()
    assert "~~@tess on" in rows(world.approval(n))["prompt-review"]
    world.emu.add_review(world.repo, n, "rita", "APPROVED")  # maintain underneath: counts
    world.settle()
    run = world.approval(n)
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    assert rows(run)["prompt-review"].startswith("| prompt-review | ✅ approved | approved by @rita;")


# -- rate limits and the clock --------------------------------------------------------------------


def test_rate_limits_do_not_use_up_a_jobs_attempts(github, github_repo, tmp_path: Path):
    """With one attempt allowed, a job GitHub rate-limits twice (past the client's own retries) still
    runs to the end: a rate limit hands the job back to the queue without counting as a failure."""
    app = start(github, github_repo, tmp_path, GATING_MAX_ATTEMPTS=1, GATING_RETRY_BASE_SECONDS=0.05)
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = World(github, github_repo, app, url)
        github.faults.add(method="GET", path=r"/pulls/\d+$", kind="secondary_rate_limit", retry_after=0, times=8)
        pr = w.open_pull(PROMPT_EDIT)
        w.settle(30)
        assert w.approval(pr["number"])["status"] == "in_progress"
        (job,) = [j for j in w.queue.list() if j.handler == "approvals.on_pull_event"]
        assert (job.status, job.attempts) == ("done", 1)
        assert len([r for r in github.requests if r.operation == "fault/secondary_rate_limit"]) == 8
    app.extensions["gating"].worker.stop()


def test_an_app_jwt_refused_for_clock_skew_is_retried_on_githubs_time(world: World):
    world.emu.advance(-120)  # GitHub's clock is two minutes behind the App's: exp looks 11 minutes away
    pr = world.open_pull(PROMPT_EDIT)
    world.settle()
    assert world.approval(pr["number"])["status"] == "in_progress"
    minted = [(r.status, r.json) for r in world.emu.requests if r.operation == "apps/create-installation-access-token"]
    assert [s for s, _ in minted] == [401, 201]


# -- writes that happened before the error --------------------------------------------------------


@pytest.mark.parametrize("kind", ["5xx_after_write", "reset_after_write"])
def test_an_approval_check_made_before_the_error_is_not_made_twice(world: World, kind: str):
    world.emu.faults.add(method="POST", path=r"/check-runs$", kind=kind, status=502)
    pr = world.open_pull(PROMPT_EDIT)
    world.settle()
    runs = [r for r in world.emu.list_check_runs(world.repo, world.head(pr["number"])) if r["name"] == APPROVAL_CHECK]
    assert len(runs) == 1 and runs[0]["status"] == "in_progress"
    world.emu.take_problems()


# -- a permission the installation lacks ----------------------------------------------------------


def test_a_missing_members_permission_is_on_the_check_and_accepting_it_re_evaluates(world: World):
    del world.emu.installation_permissions["members"]
    pr = world.open_pull({"gating.yml": NEW_PIN})  # model-owners: a member of acme/ml-platform
    n = pr["number"]
    world.eval_check(n, "success")
    world.emu.add_review(world.repo, n, "carol", "APPROVED")
    world.settle()  # no failed job
    run = world.approval(n)
    assert (run["status"], run["conclusion"]) == ("completed", "failure")
    assert run["output"]["title"] == "Cannot evaluate the approval rules: the App needs `members: read`"
    summary = run["output"]["summary"]
    assert "read team membership (GET /orgs/acme/teams/ml-platform/memberships/carol)" in summary
    assert "403: Resource not accessible by integration" in summary
    assert "- Organization permissions → Members: **Read**" in summary

    world.emu.accept_permissions({"members": "read"}, user="root")
    world.settle()
    run = world.approval(n)
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    assert rows(run)["model-owners"].startswith("| model-owners | ✅ approved | approved by @carol;")


# -- re-run buttons -------------------------------------------------------------------------------


@pytest.mark.parametrize("button", ["check_run", "check_suite"])
def test_rerun_re_evaluates_what_no_webhook_announced(world: World, button: str):
    pr = world.open_pull({"gating.yml": NEW_PIN})
    n = pr["number"]
    world.eval_check(n, "success")
    world.emu.add_review(world.repo, n, "dave", "APPROVED")  # not in acme/ml-platform (yet)
    world.settle()
    run = world.approval(n)
    assert run["status"] == "in_progress"
    world.emu.add_team_member("acme", "ml-platform", "dave")  # GitHub sends the App nothing for this
    if button == "check_run":
        world.emu.rerequest_check_run(world.repo, run["id"], "dave")
    else:
        world.emu.rerequest_check_suite(world.repo, run["check_suite"]["id"], "dave")
    world.settle()
    run = world.approval(n)
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    assert rows(run)["model-owners"].startswith("| model-owners | ✅ approved | approved by @dave;")


# -- /rollback ------------------------------------------------------------------------------------


@pytest.fixture
def rollback_world(github, github_repo, tmp_path: Path):
    """M1 (good, deployed), M2 (deployed), an issue to comment on (as in test_rollback_app)."""
    app, key = make_world(github, github_repo, tmp_path)
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = RollbackWorld(github, github_repo, app, key, tmp_path)
        w.good_then_bad(ROLLBACK_MANIFEST)
        w.deploy(w.shas["M2"])
        w.issue = github.create_issue(github_repo, "Answers cite the wrong article", "alice")["number"]
        w.settle()
        yield w
    app.extensions["gating"].worker.stop()


def test_a_custom_role_may_roll_back_and_writes_that_failed_after_they_happened_are_not_repeated(
        rollback_world: RollbackWorld):
    w = rollback_world
    w.emu.add_custom_role("acme", "release-manager", "maintain")
    w.emu.add_custom_role("acme", "auditor", "triage")
    w.emu.add_collaborator(w.repo, "rita", "release-manager")
    w.emu.add_collaborator(w.repo, "tess", "auditor")
    w.say("tess", "/rollback last-good")  # rollback.who: [write]; triage underneath
    assert w.replies()[-1].startswith("Rollback refused: @tess may not roll back acme/support-bot: rollback.who allows write "
                                      "permission (or higher), and @tess has triage permission.")
    w.emu.faults.add(method="POST", path=r"/pulls$", kind="5xx_after_write", status=502)
    w.emu.faults.add(method="POST", path=r"/git/refs$", kind="reset_after_write")
    w.emu.faults.add(method="POST", path=r"/issues/\d+/comments$", kind="reset_after_write")
    comment = w.say("rita", "/rollback last-good")  # maintain underneath
    assert len(w.emu.faults) == 0  # each write was done, then failed
    (pr,) = w.rollback_pulls()
    assert w.replies()[-1].startswith(f"Opened #{pr['number']} to roll the LLM system back to "
                                      f"`{w.shas['M1'][:7]}` (last-good): {pr['html_url']}\n")
    assert len(w.replies()) == 2  # the refusal, and one reply to rita
    assert w.reactions(comment) == ["eyes", "rocket"]
    assert [e.event for e in w.entries()].count("rolled_back") == 1
    w.emu.take_problems()
