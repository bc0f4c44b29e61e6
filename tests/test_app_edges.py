"""The App at GitHub's edges, under a real server against the emulator: empty repositories in an
alert's fan-out and under `/rollback`, GitHub Enterprise's deployment statuses without an action, and
replies longer than GitHub takes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from app_support import serve_in_thread
from test_rollback_alerts import ALERT, HANDLERS, RULES, TOKEN, post
from test_rollback_app import World, make_world

from gating.testing.pytest_plugin import EXAMPLE
from gating.testing.webhooks import sign


@pytest.fixture
def fanout(github, tmp_path: Path):
    """Two installed repositories, the empty one listed first: an alert naming neither reaches both."""
    github.create_repo("acme/aaa-empty")
    repo = github.create_repo("acme/support-bot", source_dir=EXAMPLE)
    app, key = make_world(github, repo, tmp_path, GATING_HANDLERS=HANDLERS, GATING_ALERTS_TOKEN=TOKEN)
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = World(github, repo, app, key, tmp_path)
        w.url = url
        w.good_then_bad(RULES.replace("      repository: acme/support-bot\n", ""))
        w.deploy(w.shas["M2"])
        yield w


def test_an_alert_fanning_out_skips_an_empty_repository_and_rolls_back_the_others(fanout: World, caplog):
    caplog.set_level(logging.INFO, logger="gating.app.handlers")
    r = post(fanout, ALERT)
    assert r.status_code == 202
    (pr,) = fanout.rollback_pulls()
    assert pr["title"] == f"Rollback LLM system to {fanout.shas['M1'][:7]} (last-good)"
    (job,) = [j for j in fanout.queue.list() if j.handler == "alerts.on_alert"]
    assert (job.status, job.attempts) == ("done", 1)
    skipped = [rec.getMessage() for rec in caplog.records if "aaa-empty" in rec.getMessage()]
    assert skipped == ["acme/aaa-empty: alert 6b3f1c0e2a9d4f57 skipped: acme/aaa-empty is empty (no commit yet): "
                       "there is no LLM system to roll back."]


def test_an_alert_naming_an_empty_repository_reports_it_and_does_not_fail(fanout: World, caplog):
    caplog.set_level(logging.INFO, logger="gating.app.handlers")
    named = json.loads(json.dumps(ALERT))
    named["alerts"][0]["labels"]["repository"] = "acme/aaa-empty"
    assert post(fanout, named).status_code == 202
    assert fanout.rollback_pulls() == []
    (job,) = [j for j in fanout.queue.list() if j.handler == "alerts.on_alert"]
    assert job.status == "done"
    assert any("acme/aaa-empty: alert 6b3f1c0e2a9d4f57 skipped: acme/aaa-empty is empty" in rec.getMessage()
               for rec in caplog.records)


def test_rollback_in_an_empty_repository_replies_that_there_is_nothing_to_roll_back(fanout: World):
    empty = fanout.emu.repo("acme/aaa-empty")
    issue = fanout.emu.create_issue(empty, "Roll back please", "root")["number"]
    comment = fanout.emu.add_comment(empty, issue, "root", "/rollback")
    fanout.settle()
    replies = [c["body"] for c in fanout.emu.list_comments(empty, issue) if c["user"]["login"] == fanout.emu.app.bot_login]
    assert replies == ["Rollback refused: acme/aaa-empty is empty (no commit yet): there is no LLM system to roll "
                       "back.\n"]
    assert [x["content"] for x in fanout.emu.list_reactions(empty, comment_id=comment["id"])] == ["eyes", "confused"]


# -- GitHub Enterprise Server 3.x: deployment_status without `action` ---------------------------------


def test_a_deployment_status_without_an_action_is_still_a_deployment_status(github, github_repo, tmp_path: Path):
    app, key = make_world(github, github_repo, tmp_path)
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = World(github, github_repo, app, key, tmp_path)
        m1 = w.merge("good", {"prompts/system.md": "Be careful.\n"}, "Good")
        github.webhook_url = None  # deliver the status by hand, as GitHub Enterprise Server 3.x sends it
        dep = github.create_deployment(github_repo, m1, "production", user="deployer")
        status = github.add_deployment_status(github_repo, dep["id"], "success", user="deployer")
        d = github.webhook("deployment_status", "created", repo=github_repo, deployment_id=dep["id"])
        payload = {k: v for k, v in d.payload.items() if k != "action"}
        assert payload["deployment_status"]["id"] == status["id"]
        body = json.dumps(payload).encode()
        headers = {**d.headers, "X-Hub-Signature-256": sign(github.app.webhook_secret, body)}
        headers.pop("X-Hub-Signature", None)
        import httpx

        r = httpx.post(url + "/webhooks", content=body, headers=headers)
        assert r.status_code == 202 and r.json()["status"] == "queued", r.text
        w.settle()
        assert [e.event for e in w.entries()] == ["merged", "known_good"]


# -- replies longer than GitHub takes ------------------------------------------------------------------


def _wide_manifest(n: int) -> str:
    """The example's manifest with `n` orchestration settings, so a rollback's diff has n changes."""
    keys = "".join(f"    step_{i:04d}_{'x' * 32}: {i}\n" for i in range(n))
    return RULES.replace("  orchestration:\n", "  orchestration:\n" + keys)


def test_a_rollback_reply_longer_than_github_takes_is_cut_with_a_note(github, github_repo, tmp_path: Path):
    app, key = make_world(github, github_repo, tmp_path)
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = World(github, github_repo, app, key, tmp_path)
        w.good_then_bad(_wide_manifest(700))
        w.deploy(w.shas["M2"])
        w.issue = github.create_issue(github_repo, "Roll back", "alice")["number"]
        comment = w.say("alice", "/rollback last-good")
        (pr,) = w.rollback_pulls()
        (reply,) = w.replies()
        assert len(reply) <= 65535
        assert reply.startswith(f"Opened #{pr['number']} to roll the LLM system back to `{w.shas['M1'][:7]}` ")
        assert "✂️ **Truncated**" in reply and "GitHub allows 65,535" in reply
        assert reply.endswith(f"<!-- gating: reply to comment {comment['id']} -->\n")
        assert w.reactions(comment) == ["eyes", "rocket"]
        assert len(pr["body"]) <= 65535


def test_fit_keeps_the_marker_closes_the_fence_and_says_it_cut():
    from gating.github.limits import fit, fit_output

    body = "lead\n```diff\n" + "+ line\n" * 20_000 + "```\n<!-- gating: reply to comment 7 -->\n"
    out = fit(body)
    assert len(out.encode()) <= 65_535 and out.startswith("lead\n```diff\n")
    assert "\n```\n\n---\n✂️ **Truncated**: showing " in out
    assert out.endswith("(GitHub allows 65,535 here).\n<!-- gating: reply to comment 7 -->\n")
    assert fit("short\n") == "short\n"
    fitted = fit_output({"name": "n", "output": {"title": "t" * 300, "summary": "s" * 70_000, "text": "x"}})
    assert len(fitted["output"]["title"]) == 255 and fitted["output"]["title"].endswith("…")
    assert len(fitted["output"]["summary"]) <= 65_535 and fitted["output"]["text"] == "x"


# -- pull requests with more files than GitHub lists -----------------------------------------------------


def test_a_path_rule_stays_pending_when_github_does_not_list_every_file(github, github_repo, tmp_path: Path):
    from test_app_approvals import MANIFEST as BASE
    from test_app_approvals import World as ApprovalWorld
    from test_app_approvals import rows

    from gating.server import create_app

    rules = BASE.replace("rollback:\n", "  - name: dataset-owners\n    if: {changed_files: [\"evals/**\"]}\n"
                                        "    requires: {count: 1, users: [carol]}\nrollback:\n")
    github_repo.commit_files("main", {"gating.yml": rules}, "Dataset owners")
    for login, perm in [("alice", "write"), ("carol", "write"), ("root", "admin")]:
        github.add_collaborator(github_repo, login, perm)
    app = create_app({"APP_ID": github.app.app_id, "PRIVATE_KEY": github.app.private_key_pem,
                      "WEBHOOK_SECRET": github.app.webhook_secret, "GITHUB_API_URL": github.api_url,
                      "GATING_DB": str(tmp_path / "jobs.db"), "GATING_POLL_SECONDS": 0.05})
    github.limits.pull_files = 5  # GitHub: 3,000
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = ApprovalWorld(github, github_repo, app, url)
        golden = (EXAMPLE / "evals" / "golden.jsonl").read_text()
        files = {f"data/part-{i}.txt": f"{i}\n" for i in range(8)}  # listed first; evals/ falls past the limit
        pr = w.open_pull({**files, "evals/golden.jsonl": golden + golden.splitlines()[0] + "\n"})
        w.settle()
        run = w.approval(pr["number"])
        assert (run["status"], run["conclusion"]) == ("in_progress", None)
        row = rows(run)["dataset-owners"]
        assert "⏳ pending | cannot evaluate so many files: GitHub did not list 4 of this pull request's changed " \
               "files (it lists at most 3,000), and none of the listed ones match evals/**, so this rule stays " \
               "pending" in row
        github.add_review(github_repo, pr["number"], "carol", "APPROVED")
        w.settle()
        assert w.approval(pr["number"])["status"] == "in_progress"  # an approval cannot tell whether it applies
        github.add_comment(github_repo, pr["number"], "root", "/gating override vendored data, checked by hand")
        w.settle()
        run = w.approval(pr["number"])
        assert (run["status"], run["conclusion"]) == ("completed", "success")
        github.webhook_url = None
    app.extensions["gating"].worker.stop()


# -- repositories larger than one recursive tree -----------------------------------------------------------


def _recursive_tree_calls(github) -> list[str]:
    return [r.path for r in github.requests if r.operation == "git/get-tree" and r.query.get("recursive")]


def test_the_approval_check_reads_only_the_directories_the_manifest_names(github, github_repo, tmp_path: Path):
    from test_app_approvals import NEW_PIN
    from test_app_approvals import World as ApprovalWorld

    from gating.server import create_app

    github.add_team_member("acme", "ml-platform", "carol")
    github.add_collaborator(github_repo, "alice", "write")
    app = create_app({"APP_ID": github.app.app_id, "PRIVATE_KEY": github.app.private_key_pem,
                      "WEBHOOK_SECRET": github.app.webhook_secret, "GITHUB_API_URL": github.api_url,
                      "GATING_DB": str(tmp_path / "jobs.db"), "GATING_POLL_SECONDS": 0.05})
    github.limits.tree_entries = 3  # every recursive tree of the repository comes back truncated
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = ApprovalWorld(github, github_repo, app, url)
        github.reset_requests()
        pr = w.open_pull({"gating.yml": NEW_PIN, **{f"vendor/lib-{i}/x.py": "x = 1\n" for i in range(6)}})
        w.settle()
        run = w.approval(pr["number"])
        assert run["output"]["title"].startswith("Pending: model-owners: has 0 of 1 approvals")
        assert _recursive_tree_calls(github) == []
        github.webhook_url = None
    app.extensions["gating"].worker.stop()


def test_a_rollback_works_when_every_recursive_tree_is_truncated(github, github_repo, tmp_path: Path):
    from test_rollback_app import MANIFEST

    app, key = make_world(github, github_repo, tmp_path)
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = World(github, github_repo, app, key, tmp_path)
        w.good_then_bad(MANIFEST)
        w.deploy(w.shas["M2"])
        w.issue = github.create_issue(github_repo, "Roll back", "alice")["number"]
        github.limits.tree_entries = 1
        comment = w.say("alice", "/rollback last-good")
        (pr,) = w.rollback_pulls()
        assert w.reactions(comment) == ["eyes", "rocket"]
        assert "tools/refund.json" not in w.files(pr["head"]["sha"])
        assert [e.event for e in w.entries()].count("rolled_back") == 1


def test_the_audit_backfill_passes_over_an_empty_repository(github):
    from datetime import UTC, datetime

    from gating.audit import keys
    from gating.audit import record as audit_record
    from gating.github import GitDatabaseNotes, Repo, token_client
    from gating.github.facts import RepoFacts

    empty = github.create_repo("acme/empty")
    repo = Repo(token_client(github.api_url, github.installation_token()), empty.full_name)
    assert audit_record.backfill(RepoFacts(repo), GitDatabaseNotes(repo), keys.generate(), datetime.now(UTC)) == []
