"""The approval check end to end: the App under a real WSGI server on loopback, driven by the
emulator's webhooks (built from real example payloads) as people review, push and comment."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from app_support import serve_in_thread, wait_settled

from gating.audit import keys
from gating.audit.entry import parse_line, split_lines
from gating.git.notes import AUDIT_REF
from gating.policy import APPROVAL_CHECK, EVAL_CHECK
from gating.server import create_app
from gating.testing.pytest_plugin import EXAMPLE

MANIFEST = (EXAMPLE / "gating.yml").read_text()
NEW_PIN = MANIFEST.replace("gpt-4o-2024-08-06", "gpt-4o-2024-11-20")
PROMPT = (EXAMPLE / "prompts" / "answer.md").read_text()
AUDIT_KEY = keys.generate()


class World:
    """The emulator, the repository with its people, and the App listening for its webhooks."""

    def __init__(self, emu: Any, repo: Any, app: Any, url: str):
        self.emu, self.repo, self.app, self.url = emu, repo, app, url
        self.queue = app.extensions["gating"].queue

    def settle(self, timeout: float = 15.0) -> None:
        """Until every webhook is delivered and every job done (jobs cause webhooks and vice versa)."""
        wait_settled(self.emu, self.queue, timeout)

    def open_pull(self, files: dict[str, str], author: str = "alice", branch: str = "change") -> dict[str, Any]:
        self.emu.push(self.repo, branch, files, "Change the LLM system", user=author)
        return self.emu.create_pull(self.repo, branch, "main", "Change the LLM system", author)

    def head(self, number: int) -> str:
        return self.emu.get_pull(self.repo, number)["head"]["sha"]

    def approval(self, number: int) -> dict[str, Any]:
        runs = [r for r in self.emu.list_check_runs(self.repo, self.head(number)) if r["name"] == APPROVAL_CHECK]
        assert runs, "no gating / approval check run on the head SHA"
        return max(runs, key=lambda r: r["id"])

    def edit(self, comment: dict[str, Any], editor: str, body: str) -> None:
        """`editor` edits someone's comment through the REST API, as anyone with write access may."""
        r = httpx.patch(f"{self.emu.api_url}/repos/{self.repo.full_name}/issues/comments/{comment['id']}",
                        json={"body": body}, headers={"Authorization": f"token {self.emu.user_token(editor)}"})
        assert r.status_code == 200, r.text

    def notes(self, number: int) -> list[str]:
        return [line[len("Note: "):] for line in self.approval(number)["output"]["summary"].splitlines()
                if line.startswith("Note: ")]

    def delivery(self, event: str, action: str, **match: Any) -> Any:
        """The last delivery the emulator sent of `event.action` whose payload has these objects' ids."""
        return next(d for d, _ in reversed(self.emu.deliveries) if (d.event, d.action) == (event, action)
                    and all((d.payload.get(k) or {}).get("id") == v for k, v in match.items()))

    def eval_check(self, number: int, conclusion: str | None, token: str | None = None) -> None:
        """Post `gating / eval` on the head SHA as the Action would, through the REST API."""
        api = httpx.Client(base_url=self.emu.api_url, headers={
            "Authorization": f"token {token or self.emu.installation_token()}",
            "Accept": "application/vnd.github+json"})
        run = api.post(f"/repos/{self.repo.full_name}/check-runs",
                       json={"name": EVAL_CHECK, "head_sha": self.head(number), "status": "in_progress"})
        assert run.status_code == 201, run.text
        if conclusion:
            r = api.patch(f"/repos/{self.repo.full_name}/check-runs/{run.json()['id']}",
                          json={"status": "completed", "conclusion": conclusion})
            assert r.status_code == 200, r.text


@pytest.fixture
def world(github, github_repo, tmp_path: Path):
    emu = github
    emu.add_team_member("acme", "ml-platform", "carol")
    emu.add_team_member("acme", "ml-platform", "alice")
    for login, perm in [("alice", "write"), ("carol", "write"), ("dave", "write"), ("erin", "read"),
                        ("root", "admin")]:
        emu.add_collaborator(github_repo, login, perm)
    app = create_app({"APP_ID": emu.app.app_id, "PRIVATE_KEY": emu.app.private_key_pem,
                      "WEBHOOK_SECRET": emu.app.webhook_secret, "GITHUB_API_URL": emu.api_url,
                      "GATING_DB": str(tmp_path / "jobs.db"), "GATING_POLL_SECONDS": 0.05,
                      "GATING_AUDIT_KEY": keys.private_pem(AUDIT_KEY).decode()})
    with serve_in_thread(app) as url:
        emu.webhook_url = url + "/webhooks"
        yield World(emu, github_repo, app, url)
        emu.webhook_url = None
    app.extensions["gating"].worker.stop()


def rows(run: dict[str, Any]) -> dict[str, str]:
    """Rule name -> its table row, from the check run summary."""
    out = {}
    for line in run["output"]["summary"].splitlines():
        if line.startswith("| ") and not line.startswith(("| Rule", "|---")):
            out[line.split(" | ")[0][2:].strip()] = line
    return out


def test_review_road_from_open_to_approved_and_back_after_a_push(world: World):
    pr = world.open_pull({"gating.yml": NEW_PIN, "prompts/answer.md": PROMPT + "\nBe brief.\n"})
    n = pr["number"]
    world.settle()
    run = world.approval(n)
    sha = world.head(n)[:7]
    assert (run["status"], run["conclusion"]) == ("in_progress", None)
    assert run["output"]["title"] == (
        "Pending: model-owners: has 0 of 1 approvals; needs 1 approval from a member of acme/ml-platform; "
        f"waiting for `gating / eval` on {sha} (and 1 more rule pending)")
    assert "| Rule | Status | Detail | Reviews | Missing (and who can give it) |" in run["output"]["summary"]

    world.emu.add_review(world.repo, n, "dave", "APPROVED")  # write access, not in the team
    world.settle()
    run = world.approval(n)
    assert run["status"] == "in_progress"
    assert f"~~@dave on `{sha}`~~ (not an eligible approver for this rule)" in rows(run)["model-owners"]
    assert rows(run)["prompt-review"].startswith(
        f"| prompt-review | ⏳ pending | waiting for `gating / eval` on {sha} | @dave on `{sha}` |")

    world.eval_check(n, None)  # the evals are running...
    world.settle()
    world.emu.add_review(world.repo, n, "carol", "APPROVED")  # ...when a team member approves
    world.settle()
    run = world.approval(n)
    assert run["status"] == "in_progress"
    assert run["output"]["title"] == (f"Pending: model-owners: `gating / eval` is in progress on {sha} "
                                      "(and 1 more rule pending)")

    world.eval_check(n, "success")
    world.settle()
    run = world.approval(n)
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    assert run["output"]["title"] == "Approved: all 2 applicable rules approved"
    assert rows(run)["model-owners"].startswith(
        f"| model-owners | ✅ approved | approved by @carol; `gating / eval` succeeded on {sha} |")

    world.emu.push(world.repo, "change", {"prompts/answer.md": PROMPT + "\nBe very brief.\n"}, "Tighten", user="alice")
    world.settle()
    new = world.head(n)[:7]
    run = world.approval(n)
    assert run["status"] == "in_progress"
    world.eval_check(n, "success")
    world.settle()
    run = world.approval(n)
    assert run["output"]["title"] == ("Pending: prompt-review: has 0 of 1 approvals; needs 1 approval from "
                                      "anyone with write permission or higher")
    assert f"~~@dave on `{sha}`~~ (approved before the last push)" in rows(run)["prompt-review"]
    assert rows(run)["model-owners"].startswith("| model-owners | ✅ approved |")  # no invalidate_on_push

    world.emu.add_review(world.repo, n, "dave", "APPROVED")
    world.settle()
    run = world.approval(n)
    assert (run["status"], run["conclusion"], run["head_sha"][:7]) == ("completed", "success", new)


def test_the_author_approving_their_own_pull_request_does_not_count(world: World):
    pr = world.open_pull({"gating.yml": NEW_PIN})  # alice is in acme/ml-platform herself
    world.eval_check(pr["number"], "success")
    world.emu.add_review(world.repo, pr["number"], "alice", "APPROVED")
    world.settle()
    run = world.approval(pr["number"])
    assert run["status"] == "in_progress"
    assert "(the author's own review does not count)" in rows(run)["model-owners"]
    assert rows(run)["model-owners"].endswith("| 1 approval from a member of acme/ml-platform |")


def test_a_rule_change_inside_the_pull_request_has_no_effect_on_it(world: World):
    loosened = NEW_PIN.replace("requires: {count: 1, teams: [\"acme/ml-platform\"]}", "requires: {count: 0}")
    assert loosened != NEW_PIN
    pr = world.open_pull({"gating.yml": loosened})
    world.eval_check(pr["number"], "success")
    world.settle()
    run = world.approval(pr["number"])
    main = world.repo.head("main")[:7]
    assert run["status"] == "in_progress"
    assert run["output"]["title"] == ("Pending: model-owners: has 0 of 1 approvals; needs 1 approval from a "
                                      "member of acme/ml-platform (and 1 more rule pending)")
    assert f"with the rules from `gating.yml` on `main` at `{main}`" in run["output"]["summary"]
    assert rows(run)["policy-change (built in)"].startswith("| policy-change (built in) | ⏳ pending |")


def test_loosening_the_evals_needs_an_admin_beside_the_rule_the_change_matches(world: World):
    """A pull request that edits the prompt, loosens its threshold and deletes eval cases: the
    prompt-review rule applies, and the built-in policy-change rule applies as well."""
    golden = (EXAMPLE / "evals" / "golden.jsonl").read_text().splitlines(keepends=True)
    loosened = MANIFEST.replace('pass_rate: ">= 0.80"', 'pass_rate: ">= 0.10"')
    pr = world.open_pull({"gating.yml": loosened, "prompts/answer.md": PROMPT + "\nBe brief.\n",
                          "evals/golden.jsonl": "".join(golden[2:])})
    n, sha = pr["number"], world.head(pr["number"])[:7]
    world.eval_check(n, "success")
    world.emu.add_review(world.repo, n, "dave", "APPROVED")  # write permission: enough for prompt-review
    world.settle()
    run = world.approval(n)
    assert (run["status"], run["conclusion"]) == ("in_progress", None)
    assert run["output"]["title"] == ("Pending: policy-change (built in): has 0 of 1 approvals; needs 1 approval "
                                      "from anyone with admin permission")
    assert rows(run)["prompt-review"].startswith("| prompt-review | ✅ approved |")
    assert rows(run)["policy-change (built in)"].startswith("| policy-change (built in) | ⏳ pending |")
    assert "evals.thresholds.pass_rate" in run["output"]["text"]

    world.emu.add_review(world.repo, n, "root", "APPROVED")
    world.settle()
    run = world.approval(n)
    assert (run["status"], run["conclusion"], run["head_sha"][:7]) == ("completed", "success", sha)


def test_changes_requested_by_a_required_approver_blocks(world: World):
    pr = world.open_pull({"gating.yml": NEW_PIN})
    world.eval_check(pr["number"], "success")
    world.emu.add_review(world.repo, pr["number"], "carol", "CHANGES_REQUESTED")
    world.settle()
    run = world.approval(pr["number"])
    assert (run["status"], run["conclusion"]) == ("completed", "failure")
    assert run["output"]["title"] == "Blocked: model-owners: changes requested by @carol"


def test_an_admin_override_passes_the_check_and_keeps_the_reason(world: World):
    pr = world.open_pull({"gating.yml": NEW_PIN})
    world.eval_check(pr["number"], "failure")
    world.emu.add_comment(world.repo, pr["number"], "dave", "/gating override let me")
    world.settle()
    run = world.approval(pr["number"])
    assert run["conclusion"] == "failure"
    assert "Note: override by @dave ignored: needs admin permission (has write)" in run["output"]["summary"]
    comment = world.emu.add_comment(world.repo, pr["number"], "root", "/gating override eval infra down, see INC-42")
    world.settle()
    run = world.approval(pr["number"])
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    assert run["output"]["title"] == "Overridden by @root: eval infra down, see INC-42"
    assert (f"Override recorded by @root on `{world.head(pr['number'])[:7]}` ({comment['html_url']}): eval infra "
            "down, see INC-42") in run["output"]["summary"]


def test_a_redelivery_does_nothing_new_and_an_unchanged_verdict_writes_nothing(world: World):
    pr = world.open_pull({"gating.yml": NEW_PIN})
    world.settle()
    opened = next(d for d, _ in world.emu.deliveries if d.headers["X-GitHub-Event"] == "pull_request")
    before = len(world.emu.list_check_runs(world.repo))
    world.emu.reset_requests()
    r = world.emu.deliver(world.url + "/webhooks", opened)
    assert (r.status_code, r.json()["status"]) == (200, "duplicate")
    world.settle()
    assert world.emu.requests == []
    fresh = world.emu.webhook("pull_request", "labeled", world.repo, number=pr["number"])
    assert world.emu.deliver(world.url + "/webhooks", fresh).status_code == 202
    world.settle()
    writes = [r.operation for r in world.emu.requests if r.method != "GET"]
    assert writes == []
    assert len(world.emu.list_check_runs(world.repo)) == before


def test_a_pull_request_no_rule_covers_is_approved_at_once(world: World):
    pr = world.open_pull({"README.md": "# support bot\n"})
    world.settle()
    run = world.approval(pr["number"])
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    assert run["output"]["title"] == "Skipped: no approval rule applies to this pull request"


def test_a_pull_request_to_a_branch_without_a_manifest_says_there_are_no_rules_there(world: World):
    bare = world.repo.commit_files("legacy", {"gating.yml": None}, "No LLM system here", base=world.repo.head("main"))
    world.emu.push(world.repo, "tweak", {"prompts/answer.md": PROMPT + "\nBe brief.\n"}, "Tweak", user="alice")
    n = world.emu.create_pull(world.repo, "tweak", "legacy", "Tweak the prompt", "alice")["number"]
    world.settle()
    run = world.approval(n)
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    assert run["output"]["title"] == "Skipped: no approval rule applies to this pull request"
    assert (f"with the rules from `gating.yml` on `legacy` at `{bare[:7]}` (there is no such file there, so no "
            "rules); a pull request cannot change its own rules.") in run["output"]["summary"]


def test_a_burst_of_deliveries_about_one_pull_request_costs_one_evaluation(world: World):
    pr = world.open_pull({"gating.yml": NEW_PIN})
    world.settle()
    state = world.app.extensions["gating"]
    state.worker.stop()
    time.sleep(0.1)
    world.emu.reset_requests()
    for label in ("a", "b", "c"):
        world.emu.add_label(world.repo, pr["number"], label)
    world.emu.wait_for_deliveries()
    assert state.queue.counts()["queued"] == 3
    state.worker._pid = None  # start the job threads again
    state.worker.ensure_started()
    world.settle()
    labeled = [j for j in state.queue.list() if j.action == "labeled"]
    assert sorted((j.status, j.coalesced_into is not None) for j in labeled) == [
        ("done", False), ("done", True), ("done", True)]
    assert sum(1 for r in world.emu.requests if r.operation == "pulls/get") == 1


def test_the_actions_eval_check_outranks_a_newer_one_from_another_app(world: World):
    n = world.open_pull({"prompts/answer.md": PROMPT + "\nBe brief.\n"})["number"]
    world.emu.add_review(world.repo, n, "dave", "APPROVED")
    world.eval_check(n, "failure", token=world.emu.actions_token())
    world.eval_check(n, "success")  # posted later under the same name by another app with checks: write
    world.settle()
    run = world.approval(n)
    assert (run["status"], run["conclusion"]) == ("completed", "failure")
    assert "`gating / eval`" in run["output"]["title"]


# -- overrides: only what the App saw created counts ------------------------------------------------


def overridden(run: dict[str, Any]) -> bool:
    return run["output"]["title"].startswith("Overridden")


def test_an_admin_comment_a_writer_edits_into_an_override_is_no_override(world: World):
    n = world.open_pull({"gating.yml": NEW_PIN})["number"]
    world.eval_check(n, "failure")
    old = world.emu.add_comment(world.repo, n, "root", "Looks risky, let's wait for the evals.")
    world.settle()
    world.edit(old, "dave", "/gating override ship it")
    world.settle()
    run = world.approval(n)
    assert (run["conclusion"], overridden(run)) == ("failure", False)
    assert world.notes(n) == ["override by @dave ignored: written into @root's comment by an edit; only a newly "
                              "posted comment counts"]


def test_a_writer_editing_an_admins_override_voids_it_and_cannot_change_its_reason(world: World):
    n = world.open_pull({"gating.yml": NEW_PIN})["number"]
    world.eval_check(n, "failure")
    c = world.emu.add_comment(world.repo, n, "root", "/gating override eval infra down, see INC-42")
    world.settle()
    assert world.approval(n)["output"]["title"] == "Overridden by @root: eval infra down, see INC-42"
    world.edit(c, "dave", "/gating override anything goes")
    world.settle()
    run = world.approval(n)
    assert (run["conclusion"], overridden(run)) == ("failure", False)
    assert world.notes(n) == ["override by @root ignored: its comment was edited by @dave after it was posted; an "
                              "edited override never counts, so it needs a new comment"]


def test_an_admin_editing_a_writers_comment_or_their_own_makes_no_override(world: World):
    n = world.open_pull({"gating.yml": NEW_PIN})["number"]
    world.eval_check(n, "failure")
    asked = world.emu.add_comment(world.repo, n, "dave", "Could an admin override this?")
    own = world.emu.add_comment(world.repo, n, "root", "/gating override eval flake")
    world.settle()
    world.edit(asked, "root", "/gating override fine by me")
    world.edit(own, "root", "/gating override eval flake, see INC-9")
    world.settle()
    run = world.approval(n)
    assert (run["conclusion"], overridden(run)) == ("failure", False)
    assert world.notes(n) == [  # in the order the App saw them
        "override by @root ignored: its comment was edited after it was posted; an edited override never counts, "
        "so it needs a new comment",
        "override by @root ignored: written into @dave's comment by an edit; only a newly posted comment counts"]
    world.emu.add_comment(world.repo, n, "root", "/gating override eval flake, see INC-9")  # a new comment counts
    world.settle()
    assert world.approval(n)["output"]["title"] == "Overridden by @root: eval flake, see INC-9"


def test_a_push_after_an_override_makes_the_check_pending_again(world: World):
    n = world.open_pull({"gating.yml": NEW_PIN})["number"]
    world.eval_check(n, "failure")
    world.emu.add_comment(world.repo, n, "root", "/gating override eval infra down, see INC-42")
    world.settle()
    given_on = world.head(n)
    assert overridden(world.approval(n))
    world.emu.push(world.repo, "change", {"prompts/answer.md": PROMPT + "\nNew.\n"}, "More", user="alice")
    world.settle()
    run = world.approval(n)
    head = world.head(n)
    assert (run["status"], run["head_sha"], overridden(run)) == ("in_progress", head, False)
    assert world.notes(n) == [f"override by @root ignored: given on `{given_on[:7]}`, before the last push; a push "
                              f"voids an override, so it needs a new one on `{head[:7]}`"]
    # GitHub (or anyone holding the signed body) sends the override's delivery again, under a new id
    replay = world.delivery("issue_comment", "created").replayed()
    assert world.emu.deliver(world.url + "/webhooks", replay).status_code == 202
    world.settle()
    assert world.approval(n)["status"] == "in_progress"


@pytest.mark.parametrize("body", [
    pytest.param("<!-- /gating override hidden -->\nLooks fine.", id="html-comment"),
    pytest.param("Looks fine.\n<!--\n/gating override hidden\n-->", id="multi-line-html-comment"),
    pytest.param("> /gating override as root said\nagreed", id="quote"),
    pytest.param("> earlier:\n/gating override continues the quote", id="quote-continued"),
    pytest.param("```\n/gating override example\n```", id="code-fence"),
])
def test_an_override_a_reader_cannot_see_as_a_command_is_ignored(world: World, body: str):
    n = world.open_pull({"gating.yml": NEW_PIN})["number"]
    world.eval_check(n, "failure")
    world.emu.add_comment(world.repo, n, "root", body)
    world.settle()
    run = world.approval(n)
    assert (run["conclusion"], overridden(run)) == ("failure", False)


def test_the_merged_entry_records_the_override_the_app_saw_created(world: World):
    n = world.open_pull({"gating.yml": NEW_PIN})["number"]
    world.eval_check(n, "failure")
    c = world.emu.add_comment(world.repo, n, "root", "/gating override eval infra down, see INC-42")
    forged = world.emu.add_comment(world.repo, n, "root", "Thanks all.")
    world.settle()
    world.edit(forged, "dave", "/gating override forged by a writer")
    world.edit(c, "root", "/gating override eval infra down, see INC-42")  # edits the record never reads
    world.emu.add_comment(world.repo, n, "root", "/gating override eval infra down, see INC-42 (again)")
    world.settle()
    head = world.head(n)
    merge = world.emu.merge_pull(world.repo, n, "root")
    world.settle()
    (entry,) = [parse_line(line, merge) for line in split_lines(world.repo.note(AUDIT_REF, merge))]
    assert entry.predicate["overrides"] == [{
        "actor": "root", "reason": "eval infra down, see INC-42 (again)", "time": entry.predicate["overrides"][0]["time"],
        "scope": f"approvals and evals on {head[:12]}"}]
