"""The deployment gate's core: `deploy:` in gating.yml (schema errors with line and column, the
semantic diff, the built-in policy-change rule), the decision over audit entries, and the traffic
weight a rollout tool reports."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gating.audit import keys as keymod
from gating.audit.entry import Approval, EntryFacts, make_line, parse_line, sha256_line
from gating.commands.diff import compute
from gating.deploy.gate import Chain, chain_of, decide, weight_of
from gating.git.repository import Git, commit_all
from gating.system.manifest import ManifestError, parse_manifest

HEAD = "version: 1\nname: bot\ncomponents:\n  prompts: {}\n"


@pytest.mark.parametrize(("section", "message"), [
    ("deploy:\n  environments: staging\n",
     "gating.yml:6:17: deploy.environments: expected a list, got 'staging' (a string)"),
    ("deploy:\n  environments: []\n", "gating.yml:6:3: deploy.environments: must not be empty"),
    ("deploy:\n  environments: [staging, staging]\n",
     "gating.yml:6:3: deploy.environments: lists 'staging' more than once"),
    ("deploy:\n  environmnets: [staging]\n",
     "gating.yml:6:3: unknown key 'environmnets' in deploy (did you mean 'environments'?)"),
])
def test_a_bad_deploy_section_names_the_key(section: str, message: str):
    with pytest.raises(ManifestError) as e:
        parse_manifest((HEAD + section).encode())
    assert str(e.value).startswith(message), str(e.value)


def test_a_deploy_section_parses():
    m = parse_manifest((HEAD + "deploy:\n  environments: [staging, production]\n  exceptions: [preview]\n").encode())
    assert chain_of(m.deploy) == Chain(("staging", "production"), ("preview",))
    assert chain_of(m.deploy).previous("production") == "staging" and chain_of(m.deploy).previous("staging") is None


def _change(repo: Git, old: str, new: str) -> tuple[str, str]:
    base = repo.rev_parse("HEAD")
    path = repo.root / "gating.yml"
    path.write_text(path.read_text().replace(old, new) if old else path.read_text() + new)
    return base, commit_all(repo, "deploy")


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("[staging, production]", "[production]", [("high", "deploy loosened: `staging` no longer gated")]),
    ("exceptions: [preview]", "exceptions: [preview, production]",
     [("high", "deploy loosened: `production` approved without checks")]),
    ("[staging, production]", "[production, staging]",
     [("high", "deploy loosened: promotion order staging → production → production → staging")]),
    ("[staging, production]", "[dev, staging, production]", [("low", "deploy: `dev` gated")]),
], ids=["env-removed", "exception-added", "order-swapped", "env-added"])
def test_deploy_changes_are_policy_changes_and_loosening_is_high_risk(example_repo: Git, old: str, new: str,
                                                                      expected: list[tuple[str, str]]):
    _change(example_repo, "", "\ndeploy:\n  environments: [staging, production]\n  exceptions: [preview]\n")
    base, head = _change(example_repo, old, new)
    cs = compute(example_repo, base, head)
    assert [(c.category, c.risk, c.summary) for c in cs.changes] == [("policy", r, s) for r, s in expected]
    assert all(p.startswith("deploy.") for p in cs.paths())


# -- the decision over entries -------------------------------------------------------------------

KEY = keymod.generate()
C = "c" * 40
DIGEST = "sha256:" + "d" * 64
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def entries(*facts: EntryFacts) -> list:
    out, prev = [], None
    for seq, f in enumerate(facts, 1):
        line = make_line(f, NOW, seq, prev, KEY)
        prev = sha256_line(line)
        out.append(parse_line(line, f.commit))
    return out


APP_ID = 7


def approval_run(conclusion: str | None = "success", app_id: int = APP_ID, status: str = "completed") -> dict:
    return {"conclusion": conclusion, "status": status, "check_run_id": 11, "head_sha": "h" * 40, "app_id": app_id,
            "app": "gating" if app_id == APP_ID else "ci-bot", "title": "2 of 2 rules approved"}


def merged(commit: str = C, verdict: str = "pass", snapshot: dict | None = None,
           approval: dict | None | str = "success") -> EntryFacts:
    """A merged entry; `approval` the recorded gating / approval run ("success": the App's, passed;
    "absent": an entry older than the field)."""
    run = approval_run() if approval == "success" else approval
    return EntryFacts("merged", commit, "acme/bot", "root", pull_request=3, snapshot=snapshot or {"name": "bot"},
                      evals={"verdict": verdict, "source": "eval note"},
                      approvals=[Approval("root", "APPROVED", "", commit)],
                      checks=None if run == "absent" else {"gating / approval": run, "gating / eval": None})


HOW = ("Get the approvals gating / approval asks for before merging, or have an admin record `/gating override "
       "<reason>` on the pull request before merging")


@pytest.mark.parametrize(("approval", "reason"), [
    (None, f"approval missing: no gating / approval check run of the App was on the head of #3 at merge. {HOW}"),
    (approval_run("failure"), "approval missing: gating / approval on the head of #3 was failure at merge (2 of 2 "
                              f"rules approved). {HOW}"),
    (approval_run(None, status="in_progress"), "approval missing: gating / approval on the head of #3 was "
                                               f"in_progress at merge (2 of 2 rules approved). {HOW}"),
    (approval_run(app_id=99), "approval missing: the gating / approval run recorded at merge of #3 was posted by "
                              f"ci-bot (app id 99), not by this App. {HOW}"),
    ("absent", "approval not recorded: the merged entry of #3 (audit seq 1) predates recording gating / approval at "
               "merge, so whether the required approvals were present is unknown. Merge the change through a new pull "
               "request (its merge records gating / approval), or deploy a rollback to a known-good snapshot "
               "(/rollback last-good)"),
], ids=["no-run", "failed", "pending", "another-app", "older-entry"])
def test_a_merge_without_a_successful_approval_check_of_the_app_is_rejected(approval: dict | None | str,
                                                                           reason: str):
    """An approving review alone is not the approval: the rules may ask for more (two reviewers, a
    team, an admin for policy changes); only the App's own gating / approval says they were met."""
    from gating.audit.entry import snapshot_digest
    d = decide(entries(merged(approval=approval)), C, "staging", Chain(("staging",)), snapshot_digest({"name": "bot"}),
               app_id=APP_ID)
    assert not d.approved and d.reasons == (reason,)
    assert d.comment(C, "staging") == f"gating: {C[:12]} rejected for staging:\n- {reason}"


def test_a_successful_approval_check_of_the_app_is_the_approval():
    from gating.audit.entry import snapshot_digest
    log = entries(merged())
    assert decide(log, C, "staging", Chain(("staging",)), snapshot_digest({"name": "bot"}), app_id=APP_ID).approved
    # the App's id as the settings give it (a string) is the same App
    assert decide(log, C, "staging", Chain(("staging",)), snapshot_digest({"name": "bot"}), app_id="7").approved


def test_a_rule_firing_after_staging_went_known_good_stops_the_promotion():
    from gating.audit.entry import snapshot_digest
    digest = snapshot_digest({"name": "bot"})
    log = entries(merged(), EntryFacts("known_good", C, "acme/bot", "m", deployment={"environment": "staging"}),
                  EntryFacts("monitor_alert", C, "acme/bot", "m", health={"rule": {"rule": "error-rate"}}))
    chain = Chain(("staging", "production"))
    d = decide(log, C, "production", chain, digest)
    assert not d.approved
    assert d.reasons == ("promotion order: not healthy in staging: monitor rule error-rate fired on it (audit seq 3) "
                         "after it became known-good. Fix the regression and promote a new change through staging",)
    assert decide(log[:2], C, "production", chain, digest).approved
    assert decide(log, C, "staging", chain, digest).approved  # the first environment has no predecessor


def test_a_known_good_snapshot_in_staging_counts_for_another_commit_with_the_same_system():
    """A code-only merge after staging went known-good carries the same snapshot: promotable."""
    from gating.audit.entry import snapshot_digest
    digest, other = snapshot_digest({"name": "bot"}), "e" * 40
    log = entries(merged(other), EntryFacts("known_good", other, "acme/bot", "m", deployment={"environment": "staging"}),
                  merged())
    assert decide(log, C, "production", Chain(("staging", "production")), digest).approved


def test_no_manifest_at_the_commit_is_rejected():
    d = decide([], C, "staging", Chain(("staging",)), None)
    assert d.reasons == (f"no LLM system: {C[:12]} has no valid gating.yml, so there is no snapshot to check. Deploy a "
                         "commit merged through a pull request",)
    assert decide([], C, "staging", Chain(), DIGEST).reasons[0].startswith(
        "environment not gated: staging is not in deploy.environments of gating.yml on main (gated: none)")


def test_an_override_recorded_at_merge_stands_in_for_failed_evals():
    from gating.audit.entry import Override, snapshot_digest
    f = merged(verdict="fail", approval=approval_run("failure"))
    f = EntryFacts(**{**f.__dict__, "overrides": [Override("root", "hotfix for outage", "2026-01-05T11:00:00Z")]})
    d = decide(entries(f), C, "staging", Chain(("staging",)), snapshot_digest({"name": "bot"}), app_id=APP_ID)
    assert d.approved and d.evidence["summary"] == "merged through #3 (audit seq 1), evals fail, 1 override(s), " \
                                                   "snapshot unchanged"


def test_a_rejection_comment_fits_githubs_limit_and_says_what_it_left_out():
    from gating.deploy.gate import MAX_COMMENT, Decision
    reasons = tuple(f"reason {i}: " + "x" * 300 for i in range(5))
    text = Decision(False, "", reasons).comment(C, "production")
    assert len(text) <= MAX_COMMENT == 1024
    lines = text.splitlines()
    assert lines[0] == f"gating: {C[:12]} rejected for production:"
    assert lines[1:-1] == [f"- {r}" for r in reasons[:2]]
    assert lines[-1] == "- ... 3 more reasons: every reason is in the signed deploy_rejected entry (gating audit log)"
    one = Decision(False, "", ("y" * 2000,)).comment(C, "production")
    assert len(one) == 1024 and one.endswith("...")
    assert Decision(False, "", reasons[:2]).comment(C, "production").count("\n") == 2  # fits: all of it


@pytest.mark.parametrize(("status", "weight"), [
    ({"description": "canary gating.weight=25"}, 25.0),
    ({"log_url": "https://argo.example/rollouts/bot?gating.weight=5"}, 5.0),
    ({"environment_url": "https://bot.example/?x=1&gating.weight=100", "description": "done"}, 100.0),
    ({"description": "canary at 25%"}, None),
    ({"description": "gating.weight=250"}, None),
])
def test_the_weight_a_rollout_tool_reports(status: dict, weight: float | None):
    assert weight_of(status) == weight


def test_the_example_workflow_uses_an_environment(tmp_path: Path):
    import yaml
    wf = yaml.safe_load(Path("examples/workflows/deploy.yml").read_text())
    jobs = wf["jobs"]
    assert [jobs[j]["environment"]["name"] if isinstance(jobs[j]["environment"], dict) else jobs[j]["environment"]
            for j in jobs] == ["staging", "production"]
    assert jobs["production"]["needs"] == "staging"


def test_only_the_rollbacks_own_commit_is_a_rollback():
    """A commit pushed around the road with a known-good system (and any code beside it) is not a
    rollback, even after a rollback to that system happened."""
    from gating.audit.entry import RollbackRecord, snapshot_digest
    good, rolled, pushed = "a" * 40, "b" * 40, "f" * 40
    digest = snapshot_digest({"name": "bot"})
    log = entries(merged(good), EntryFacts("known_good", good, "acme/bot", "m", deployment={"environment": "production"}),
                  EntryFacts("rolled_back", rolled, "acme/bot", "@root", pull_request=9, snapshot={"name": "bot"},
                             rollback=RollbackRecord(good, "last-good", "@root", "", "comment")),
                  EntryFacts("merged", C, "acme/bot", "root", pull_request=9, snapshot={"name": "bot"}))
    chain = Chain(("staging", "production"))
    assert decide(log, rolled, "production", chain, digest).basis == "rollback"  # the rollback commit itself
    assert decide(log, C, "production", chain, digest).basis == "rollback"  # the merge of its pull request
    d = decide(log, pushed, "production", chain, digest)
    assert not d.approved and d.reasons[0].startswith("not an audited merge")
