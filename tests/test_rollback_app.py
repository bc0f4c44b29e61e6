"""`/rollback` end to end: the App under a real WSGI server, the emulator delivering real payloads,
the audit log written by the App's own merge and deployment handlers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from app_support import serve_in_thread, wait_settled

from gating.audit import keys as keymod
from gating.audit import log as audit_log
from gating.commands.cli import main
from gating.github import BlobCache, GitDatabaseNotes, Repo, token_client
from gating.rollback.plan import Request
from gating.server import create_app
from gating.server.rollbacks import Audit, execute
from gating.testing.pytest_plugin import EXAMPLE

HANDLERS = "gating.server.handlers.merge_audit,gating.server.handlers.deployments,gating.server.handlers.rollback_command"
MANIFEST = (EXAMPLE / "gating.yml").read_text()
ANSWER = (EXAMPLE / "prompts" / "answer.md").read_text()
REFUND = '{"name": "refund", "description": "Refund an order.", "parameters": {"type": "object", ' \
         '"properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}\n'
SYSTEM = ("gating.yml", "prompts/answer.md", "prompts/system.md", "prompts/classify.yml",
          "tools/lookup_order.json", "tools/open_ticket.json", "guardrails/pii.yml", "evals/golden.jsonl")


class World:
    def __init__(self, emu: Any, repo: Any, app: Any, key: Any, tmp: Path):
        self.emu, self.repo, self.app, self.key, self.tmp = emu, repo, app, key, tmp
        self.queue = app.extensions["gating"].queue
        self.shas: dict[str, str] = {}

    def settle(self, timeout: float = 20.0) -> None:
        wait_settled(self.emu, self.queue, timeout)

    def merge(self, branch: str, files: dict[str, str | None], title: str) -> str:
        self.emu.push(self.repo, branch, files, title, user="alice")
        pr = self.emu.create_pull(self.repo, branch, "main", title, "alice")
        sha = self.emu.merge_pull(self.repo, pr["number"], "root")
        self.settle()
        return sha

    def good_then_bad(self, manifest: str) -> None:
        """M1 (good, deployed, known good), then M2 merged: a new tool, a prompt edit, and `manifest`
        with the answer model re-pinned."""
        self.shas["M1"] = self.merge("good", {"prompts/system.md": "You are a careful support assistant.\n"}, "Good")
        self.deploy(self.shas["M1"])
        self.shas["M2"] = self.merge("bad", {
            "tools/refund.json": REFUND,
            "prompts/answer.md": ANSWER.replace("Cite the article title in brackets.", "Be brief."),
            "gating.yml": manifest.replace("gpt-4o-2024-08-06", "gpt-4o-2024-11-20")}, "Refunds, brief answers")

    def deploy(self, sha: str, state: str = "success") -> None:
        d = self.emu.create_deployment(self.repo, sha, "production", user="deployer")
        self.emu.add_deployment_status(self.repo, d["id"], state, user="deployer")
        self.settle()

    def say(self, user: str, body: str, number: int | None = None) -> dict[str, Any]:
        number = number or self.issue
        c = self.emu.add_comment(self.repo, number, user, body)
        self.settle()
        return c

    def replies(self, number: int | None = None) -> list[str]:
        return [c["body"] for c in self.emu.list_comments(self.repo, number or self.issue)
                if c["user"]["login"] == self.emu.app.bot_login]

    def reactions(self, comment: dict[str, Any]) -> list[str]:
        return [r["content"] for r in self.emu.list_reactions(self.repo, comment_id=comment["id"])]

    def api(self) -> Repo:
        return Repo(token_client(self.emu.api_url, self.emu.installation_token()), self.repo.full_name)

    def entries(self) -> list:
        pub = self.key.public_key()
        return audit_log.read_log(GitDatabaseNotes(self.api()), {keymod.keyid(pub): pub})

    def files(self, rev: str) -> dict[str, bytes]:
        g = self.repo.git
        return {e.path: g.show_file(rev, e.path) or b"" for e in g.ls_tree(rev)}

    def rollback_pulls(self) -> list[dict[str, Any]]:
        return [p for p in self.api().client.get(f"{self.api().path}/pulls", state="all")
                if p["head"]["ref"].startswith("gating/rollback-")]


def make_world(emu, repo, tmp: Path, **settings: Any):
    for login, perm in [("alice", "write"), ("erin", "read"), ("root", "admin")]:
        emu.add_collaborator(repo, login, perm)
    key = keymod.generate()
    app = create_app({"APP_ID": emu.app.app_id, "PRIVATE_KEY": emu.app.private_key_pem,
                      "WEBHOOK_SECRET": emu.app.webhook_secret, "GITHUB_API_URL": emu.api_url,
                      "GATING_DB": str(tmp / "jobs.db"), "GATING_POLL_SECONDS": 0.05,
                      "GATING_AUDIT_KEY": keymod.private_pem(key).decode(), "GATING_HANDLERS": HANDLERS,
                      **settings})
    return app, key


@pytest.fixture
def world(github, github_repo, tmp_path: Path):
    """main: M1 (good, deployed, known good), M2 (a new tool, a prompt edit, a re-pin; deployed), then C
    (a code-only push, not a merge). An issue to comment on."""
    app, key = make_world(github, github_repo, tmp_path)
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = World(github, github_repo, app, key, tmp_path)
        w.good_then_bad(MANIFEST)
        w.deploy(w.shas["M2"])
        w.shas["C"] = github.push(github_repo, "main", {"app/answer.py": "print('v2')\n"}, "Code only", user="alice")
        w.issue = github.create_issue(github_repo, "Answers cite the wrong article", "alice")["number"]
        w.settle()
        yield w


def test_rollback_comment_restores_the_last_known_good_snapshot(world: World, tmp_path: Path):
    m1, m2, c = world.shas["M1"], world.shas["M2"], world.shas["C"]
    comment = world.say("alice", "/rollback last-good answers cite the wrong article")
    assert world.reactions(comment) == ["eyes", "rocket"]
    (pr,) = world.rollback_pulls()
    assert pr["title"] == f"Rollback LLM system to {m1[:7]} (last-good)"
    assert pr["head"]["ref"] == f"gating/rollback-{m1[:12]}" and pr["base"]["ref"] == "main"
    body = pr["body"]
    assert "- Requested by: @alice (comment " in body and "- Reason: answers cite the wrong article\n" in body
    assert f"- Computed against: main at `{c[:12]}`" in body
    assert f"| `tools/refund.json` | removed (not in the system at {m1[:7]}) |" in body
    assert "model pin changed: `answer` gpt-4o-2024-11-20 → gpt-4o-2024-08-06" in body
    assert "tool `refund` removed" in body
    assert f"| known_good | `{m1[:12]}` |" in body and f"| known_good | `{m2[:12]}` |" in body
    (reply,) = world.replies()
    assert reply.startswith(f"Opened #{pr['number']} to roll the LLM system back to `{m1[:7]}` (last-good): "
                            f"{pr['html_url']}\n")

    head = pr["head"]["sha"]
    assert world.repo.git.run("rev-parse", f"{head}^") == c  # one commit on the tip of main
    after, at_m1, at_c = world.files(head), world.files(m1), world.files(c)
    for path in SYSTEM:
        assert after[path] == at_m1[path], path  # the target's system files, byte for byte
    assert "tools/refund.json" not in after  # the tool added after the target is deleted
    assert after["app/answer.py"] == at_c["app/answer.py"] == b"print('v2')\n"  # code stays as on main
    assert set(after) == set(at_c) - {"tools/refund.json"}

    rolled = [e for e in world.entries() if e.event == "rolled_back"]
    assert len(rolled) == 1 and rolled[0].commit == head
    p = rolled[0].predicate
    assert (p["actor"], p["pull_request"], p["rollback"]["previous_known_good"]) == ("@alice", pr["number"], m1)
    assert p["snapshot_digest"] == [e for e in world.entries() if e.event == "merged" and e.commit == m1][0] \
        .predicate["snapshot_digest"]
    assert p["overrides"] == []
    assert p["rollback"] == {"previous_known_good": m1, "target": m1, "target_ref": "last-good",
                             "requested_by": "@alice", "reason": "answers cite the wrong article",
                             "trigger": "comment", "source": f"comment {comment['html_url']}"}

    # a second request for the same state meets the same pull request, and records nothing new
    again = world.say("root", "/rollback")
    assert world.reactions(again) == ["eyes", "rocket"]
    assert world.replies()[-1].startswith(f"A rollback to `{m1[:7]}` (last-good) is already open: "
                                          f"#{pr['number']} {pr['html_url']}\n")
    assert len(world.rollback_pulls()) == 1
    assert len([e for e in world.entries() if e.event == "rolled_back"]) == 1

    # the local CLI on a clone builds the same plan: the same tree, byte for byte
    pub = tmp_path / "audit.pub"
    pub.write_bytes(keymod.public_pem(world.key))
    clone = world.repo.clone(tmp_path / "clone", world.emu.installation_token())
    clone.run("config", "user.name", "oncall")
    clone.run("config", "user.email", "oncall@example.invalid")
    assert main(["-C", str(clone.root), "rollback", "--key", str(pub), "--branch", "local-rollback"]) == 0
    clone.fetch("origin", f"+refs/heads/{pr['head']['ref']}:refs/remotes/origin/app-rollback")
    assert clone.tree_of("local-rollback") == clone.tree_of("origin/app-rollback")
    assert main(["-C", str(clone.root), "audit", "verify", "--key", str(pub)]) == 0


REFUSALS = [
    ("erin", "/rollback", "Rollback refused: @erin may not roll back acme/support-bot: rollback.who allows write "
                          "permission (or higher), and @erin has read permission.\n"),
    ("alice", "/rollback yesterday", "Rollback refused: unknown target `yesterday`. Use `/rollback last-good`, "
                                     "`/rollback previous` or `/rollback <commit sha>`, optionally followed by a "
                                     "reason.\n"),
    ("alice", "/rollback 0123456789ab", "Rollback refused: unknown target `0123456789ab`: no such commit in this "
                                        "repository. Use `/rollback last-good`, `/rollback previous` or "
                                        "`/rollback <commit sha>`, optionally followed by a reason.\n"),
    ("alice", "/rollback {C}", "Rollback to `{C}` refused: {c} is not an audited merge: the audit log has no "
                               "merged entry for it, so there is no recorded snapshot, evidence or approval to "
                               "return to.\n"),
    ("alice", "/rollback {M2} code only since", "Rollback to `{M2}` refused: nothing to restore: the LLM system "
                                                "on main ({c}) is already the snapshot of {m2} ({M2}).\n"),
]


def test_refusals_are_replies_that_say_why(world: World):
    """No permission, unknown target (a word, a sha), not an audited merge, nothing to restore."""
    s = world.shas
    fill = {"C": s["C"], "c": s["C"][:7], "M2": s["M2"][:10], "m2": s["M2"][:7]}
    for i, (user, body, expected) in enumerate(REFUSALS):
        comment = world.say(user, body.format(**fill))
        assert world.replies()[i:] == [expected.format(**fill)]
        assert world.reactions(comment) == ["eyes", "confused"]
    assert world.rollback_pulls() == []


def test_no_known_good_state_yet(github, github_repo, tmp_path: Path):
    app, _key = make_world(github, github_repo, tmp_path)
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = World(github, github_repo, app, _key, tmp_path)
        m1 = w.merge("good", {"prompts/system.md": "Be careful.\n"}, "Good")
        w.deploy(m1, "failure")
        pr = github.create_pull(github_repo, *_branch(github, github_repo), "Another change", "alice")
        comment = w.say("alice", "/rollback", pr["number"])
        assert w.replies(pr["number"]) == [
            "Rollback to `last-good` refused: no known-good state yet: the audit log has no known_good entry older than the "
            f"current deployed state, {m1[:7]} (deploy_failed, audit seq 2). Mark a deployment known good first, "
            "or name a commit: `/rollback <commit sha>`.\n"]
        assert w.reactions(comment) == ["eyes", "confused"]


def _branch(emu, repo) -> tuple[str, str]:
    emu.push(repo, "other", {"prompts/system.md": "Be bold.\n"}, "Other", user="alice")
    return "other", "main"


def test_bots_and_edits_are_ignored(world: World):
    world.emu.add_user("deploy-helper[bot]", type="Bot")
    bot = world.say("deploy-helper[bot]", "/rollback")
    human = world.say("alice", "looks fine")
    world.emu.edit_comment(world.repo, human["id"], "/rollback last-good")
    world.settle()
    assert world.replies() == []
    assert world.reactions(bot) == [] and world.reactions(human) == []
    assert world.rollback_pulls() == []


def test_a_rollback_delivery_replayed_under_a_new_delivery_id_does_nothing_new(world: World):
    comment = world.say("alice", "/rollback last-good answers cite the wrong article")
    (pr,) = world.rollback_pulls()
    first = next(d for d, _ in world.emu.deliveries
                 if d.event == "issue_comment" and d.payload["comment"]["id"] == comment["id"])
    entries = len(world.entries())
    for _ in range(2):
        replay = first.replayed()
        assert replay.id != first.id
        r = world.emu.deliver(world.emu.webhook_url, replay)
        assert (r.status_code, r.json()["status"]) == (202, "queued")  # a new id: the door cannot tell
        world.settle()
    assert [p["number"] for p in world.rollback_pulls()] == [pr["number"]]
    assert len(world.replies()) == 1
    assert world.reactions(comment) == ["eyes", "rocket"]
    assert len(world.entries()) == entries


def test_a_tool_added_after_the_target_is_deleted_by_a_sha_rollback(world: World):
    m1 = world.shas["M1"]
    world.say("root", f"/rollback {m1[:8]} refunds misfire")
    (pr,) = world.rollback_pulls()
    assert pr["title"] == f"Rollback LLM system to {m1[:7]} ({m1[:8]})"
    assert "tools/refund.json" not in world.files(pr["head"]["sha"])


def test_two_rollbacks_at_once_give_one_pull_request(world: World):
    """Two workers racing past the queue's per-repository order still meet on one branch and PR."""
    audit_key = world.key
    results, errors = [], []

    def one(who: str) -> None:
        try:
            store = GitDatabaseNotes(world.api())
            audit = Audit(store, audit_key, {keymod.keyid(audit_key): audit_key.public_key()})
            results.append(execute(world.api(), audit, "last-good", Request(who, "", "test", "comment"),
                                   datetime.now(UTC), BlobCache()))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(f"@user{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(world.rollback_pulls()) == 1
    assert {r.number for r in results} == {world.rollback_pulls()[0]["number"]}
    assert sorted(r.existing for r in results) == [False, True]
    assert len({r.commit for r in results}) == 1
    assert len([e for e in world.entries() if e.event == "rolled_back"]) == 1


def test_a_rollback_run_again_after_its_reply_failed_still_says_it_opened_the_pull_request(world: World):
    """GitHub fails the reply until the client gives up: the job runs again, meets the pull request its
    first run opened, and says it opened it (not that another rollback is already open)."""
    world.queue.retry_base = 0.1
    world.emu.faults.add(method="POST", path=r"/issues/\d+/comments$", kind="5xx", times=4, status=502)
    comment = world.say("alice", "/rollback last-good")
    (pr,) = world.rollback_pulls()
    (reply,) = world.replies()
    assert reply.startswith(f"Opened #{pr['number']} to roll the LLM system back to `{world.shas['M1'][:7]}` "
                            f"(last-good): {pr['html_url']}\n")
    assert world.reactions(comment) == ["eyes", "rocket"]
    assert [e.event for e in world.entries()].count("rolled_back") == 1
    (job,) = [j for j in world.queue.list() if j.handler == "rollback_command.on_comment"]
    assert (job.status, job.attempts) == ("done", 2)
    world.emu.take_problems()  # the injected 502s


def test_a_run_cut_off_after_its_reply_does_not_reply_twice(world: World):
    comment = world.say("alice", "/rollback last-good")
    (job,) = [j for j in world.queue.list() if j.handler == "rollback_command.on_comment"]
    # As after a SIGKILL between the reply and the job's completion: running, its lease run out.
    world.queue._write("UPDATE jobs SET status = 'running', owner = 'dead', lease_until = 0 WHERE id = ?", (job.id,))
    world.app.extensions["gating"].worker.wake()
    world.settle()
    assert world.queue.get(job.id).attempts == 2
    (pr,) = world.rollback_pulls()
    (reply,) = world.replies()
    assert reply.startswith(f"Opened #{pr['number']} to roll the LLM system back to `{world.shas['M1'][:7]}` ")
    assert reply.endswith(f"<!-- gating: reply to comment {comment['id']} -->\n")  # invisible on GitHub
    assert [e.event for e in world.entries()].count("rolled_back") == 1


def test_direct_mode_commits_to_the_default_branch(world: World):
    direct = MANIFEST.replace("mode: pull_request", "mode: direct")
    m3 = world.merge("direct", {"gating.yml": direct.replace("gpt-4o-2024-08-06", "gpt-4o-2024-11-20")},
                     "Emergency mode")
    world.deploy(m3)  # m3 is deployed and known good; last-good is m2, whose manifest is not direct mode
    before = world.repo.head()
    world.say("alice", "/rollback previous")
    after = world.repo.head()
    assert world.repo.git.run("rev-parse", f"{after}^") == before
    reply = world.replies()[-1]
    assert reply.startswith(f"Rolled the LLM system back to `{world.shas['M2'][:7]}` (previous) with a commit on "
                            f"main: {world.emu.web_url}/acme/support-bot/commit/{after}\n")
    assert world.rollback_pulls() == []
    assert world.files(after)["gating.yml"] == world.files(world.shas["M2"])["gating.yml"]
    rolled = [e for e in world.entries() if e.event == "rolled_back"]
    assert rolled[-1].commit == after and rolled[-1].predicate["pull_request"] is None


def test_direct_mode_opens_a_pull_request_when_branch_protection_refuses(world: World):
    direct = MANIFEST.replace("mode: pull_request", "mode: direct")
    m3 = world.merge("direct", {"gating.yml": direct.replace("gpt-4o-2024-08-06", "gpt-4o-2024-11-20")},
                     "Emergency mode")
    world.deploy(m3)
    world.emu.protect_branch(world.repo, "main", required_reviews=1)
    before, m2 = world.repo.head(), world.shas["M2"]
    comment = world.say("alice", "/rollback previous")
    assert world.repo.head() == before  # nothing landed on main
    assert world.reactions(comment) == ["eyes", "rocket"]
    (pr,) = world.rollback_pulls()
    assert (pr["title"], pr["head"]["ref"], pr["base"]["ref"], pr["state"]) == (
        f"Rollback LLM system to {m2[:7]} (previous)", f"gating/rollback-{m2[:12]}", "main", "open")
    head = pr["head"]["sha"]
    assert world.repo.git.run("rev-parse", f"{head}^") == before
    assert world.files(head)["gating.yml"] == world.files(m2)["gating.yml"]
    assert world.replies()[-1].startswith(
        f"Opened #{pr['number']} to roll the LLM system back to `{m2[:7]}` (previous): {pr['html_url']}\n\n"
        "Branch protection on main refused a direct commit from the App (GitHub 422 (PATCH "
        "/repos/acme/support-bot/git/refs/heads/main): Changes must be made through a pull request.); "
        "opened a pull request instead.\n\n")
    rolled = [e for e in world.entries() if e.event == "rolled_back"]
    assert len(rolled) == 1 and rolled[0].commit == head
    assert (rolled[0].predicate["pull_request"], rolled[0].predicate["rollback"]["target"]) == (pr["number"], m2)


def test_a_permission_the_app_lacks_is_one_reply_not_silent_retries(world: World):
    for token in world.emu.tokens.values():  # the installation's grant is cut to read-only contents
        if token.kind == "installation":
            token.permissions["contents"] = "read"
    world.emu.installation_permissions["contents"] = "read"
    entries, before = len(world.entries()), world.repo.head()
    comment = world.emu.add_comment(world.repo, world.issue, "alice", "/rollback previous")
    world.emu.wait_for_deliveries(timeout=20)
    assert world.queue.wait_idle(20)
    (failed,) = world.queue.list("failed")
    assert failed.attempts == 1 and "403" in failed.last_error  # failed at once: a retry cannot help
    (reply,) = world.replies()
    assert reply.startswith("Rollback to `previous` failed: GitHub refused a request it needs (GitHub 403 (POST "
                            "/repos/acme/support-bot/git/")
    assert reply.endswith("Resource not accessible by integration). The App's installation needs contents: write "
                          "and pull requests: write on this repository (and issues: write to reply).\n")
    assert world.reactions(comment) == ["eyes", "confused"]
    assert world.repo.head() == before and world.rollback_pulls() == []
    assert len(world.entries()) == entries  # nothing recorded


@pytest.mark.parametrize("status, message, repo, protected", [
    (422, "Protected branch update failed for refs/heads/main.", "acme/support-bot", True),
    (403, "Resource not accessible by integration", "acme/support-bot", True),
    (422, "Changes must be made through a pull request.", "acme/support-bot", True),
    (422, 'Required status check "gating / eval" is expected.', "acme/support-bot", True),
    (422, "2 of 3 required status checks are expected.", "acme/support-bot", True),
    (422, "Repository rule violations found\n\nChanges must be made through a pull request.\n\n",
     "acme/support-bot", True),
    (422, "Update is not a fast forward", "acme/support-bot", False),
    (422, "Update is not a fast forward", "acme/protected-bot", False),
    (500, "Server Error", "acme/support-bot", False),
    (502, "Server Error", "acme/protected-bot", False),
], ids=["protected", "forbidden", "pull-request-required", "status-check", "status-checks", "ruleset",
        "not-fast-forward", "not-fast-forward-in-a-repo-named-protected", "server-error", "bad-gateway"])
def test_which_refusals_of_a_direct_commit_fall_back_to_a_pull_request(status, message, repo, protected):
    from gating.github import GitHubError
    from gating.server.rollbacks import _protected

    assert _protected(GitHubError(status, message, "PATCH", f"/repos/{repo}/git/refs/heads/main")) is protected
