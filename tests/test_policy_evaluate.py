"""Evaluating approval rules against plain-data facts: every verdict a reviewer would see."""

from __future__ import annotations

import pytest

from gating.policy import (
    EVAL_CHECK,
    Actor,
    CheckState,
    Facts,
    OverrideAct,
    Review,
    Status,
    evaluate,
    glob_match,
    manifest_path_match,
    parse_override,
    parse_policy,
)

HEAD = "h" * 40
OLD = "0" * 40
EVAL_OK = {EVAL_CHECK: CheckState(EVAL_CHECK, "completed", "success", HEAD)}
MODEL_OWNERS = {"name": "model-owners", "if": {"manifest_paths": ["components.models.*.model"]},
                "requires": {"count": 1, "teams": ["acme/ml-platform"]}}
PROMPT_REVIEW = {"name": "prompt-review", "if": {"categories": ["prompt", "retrieval", "tool", "guardrail"]},
                 "requires": {"count": 1, "permission": "write"}, "options": {"invalidate_on_push": True}}


def approve(login: str, sha: str = HEAD, state: str = "APPROVED", type: str = "User") -> Review:
    return Review(Actor(login, type), state, sha, "2024-05-01T10:00:00Z")


def facts(**kw) -> Facts:
    base = dict(author=Actor("alice"), head_sha=HEAD, manifest_paths=["components.models.answer.model"],
                categories=["model"], checks=dict(EVAL_OK), teams={"acme/ml-platform": ["carol", "alice"]},
                permissions={"carol": "write", "dave": "write", "erin": "read", "root": "admin", "bob": "write"})
    base.update(kw)
    return Facts(**base)


def run(rules, **kw):
    return evaluate(parse_policy(rules), facts(**kw))


def rule_result(result, name):
    return next(r for r in result.walk() if r.name == name and r.kind == "rule")


def test_rule_that_does_not_apply_is_skipped_and_says_why():
    r = run([MODEL_OWNERS], manifest_paths=["components.prompts.answer.file"], categories=["prompt"])
    assert r.status == Status.SKIPPED
    assert rule_result(r, "model-owners").description == \
        "does not apply: no change to components.models.*.model"
    assert r.description == "no approval rule applies to this pull request"


def test_no_review_is_pending_and_names_who_can_approve():
    r = run([MODEL_OWNERS], reviews=[])
    rule = rule_result(r, "model-owners")
    assert rule.status == Status.PENDING
    assert rule.description == "has 0 of 1 approvals; needs 1 approval from a member of acme/ml-platform"
    assert rule.missing == "1 approval from a member of acme/ml-platform"
    assert r.description == ("model-owners: has 0 of 1 approvals; needs 1 approval from a member of "
                             "acme/ml-platform")


def test_review_by_a_non_member_does_not_count():
    r = run([MODEL_OWNERS], reviews=[approve("dave")])
    rule = rule_result(r, "model-owners")
    assert rule.status == Status.PENDING
    (note,) = next(c for c in rule.children if c.kind == "approvals").reviews
    assert (note.login, note.counted, note.note) == ("dave", False, "not an eligible approver for this rule")


def test_team_member_approval_waits_for_eval_evidence():
    pending = {EVAL_CHECK: CheckState(EVAL_CHECK, "in_progress", None, HEAD)}
    rule = rule_result(run([MODEL_OWNERS], reviews=[approve("carol")], checks=pending), "model-owners")
    assert rule.status == Status.PENDING
    assert rule.description == "`gating / eval` is in progress on hhhhhhh"
    assert rule.missing == "`gating / eval` to succeed on hhhhhhh"


@pytest.mark.parametrize("checks, status, sentence", [
    pytest.param({}, Status.PENDING, "waiting for `gating / eval` on hhhhhhh", id="missing"),
    pytest.param({EVAL_CHECK: CheckState(EVAL_CHECK, "completed", "success", OLD)}, Status.PENDING,
                 "waiting for `gating / eval` on hhhhhhh", id="success-on-an-older-sha"),
    pytest.param({EVAL_CHECK: CheckState(EVAL_CHECK, "queued", None, HEAD)}, Status.PENDING,
                 "`gating / eval` is queued on hhhhhhh", id="queued"),
    pytest.param({EVAL_CHECK: CheckState(EVAL_CHECK, "completed", "failure", HEAD)}, Status.BLOCKED,
                 "`gating / eval` concluded failure on hhhhhhh", id="failure"),
    pytest.param({EVAL_CHECK: CheckState(EVAL_CHECK, "completed", "neutral", HEAD)}, Status.BLOCKED,
                 "`gating / eval` concluded neutral on hhhhhhh", id="neutral-is-not-success"),
    pytest.param(EVAL_OK, Status.APPROVED, "approved by @carol; `gating / eval` succeeded on hhhhhhh",
                 id="success"),
])
def test_eval_evidence(checks, status, sentence):
    rule = rule_result(run([MODEL_OWNERS], reviews=[approve("carol")], checks=checks), "model-owners")
    assert (rule.status, rule.description) == (status, sentence)


def test_rule_may_waive_the_evidence():
    rules = [{**MODEL_OWNERS, "options": {"require_evidence": False}}]
    r = run(rules, reviews=[approve("carol")], checks={})
    assert r.status == Status.APPROVED
    assert rule_result(r, "model-owners").description == "approved by @carol"


def test_push_invalidates_approvals_when_the_rule_says_so():
    reviews = [approve("bob", sha=OLD)]
    kw = dict(manifest_paths=["components.prompts.answer.file"], categories=["prompt"], reviews=reviews)
    rule = rule_result(run([PROMPT_REVIEW], **kw), "prompt-review")
    assert rule.status == Status.PENDING
    note = next(c for c in rule.children if c.kind == "approvals").reviews[0]
    assert (note.sha, note.note) == (OLD, "approved before the last push")
    kept = rule_result(run([{**PROMPT_REVIEW, "options": {}}], **kw), "prompt-review")
    assert kept.status == Status.APPROVED


def test_author_approving_their_own_pull_request_does_not_count():
    r = run([MODEL_OWNERS], reviews=[approve("alice")])
    rule = rule_result(r, "model-owners")
    assert rule.status == Status.PENDING
    note = next(c for c in rule.children if c.kind == "approvals").reviews[0]
    assert note.note == "the author's own review does not count"
    allowed = run([{**MODEL_OWNERS, "options": {"allow_author": True}}], reviews=[approve("alice")])
    assert allowed.status == Status.APPROVED


def test_bots_are_ignored_unless_the_rule_says_otherwise():
    rules = [{"name": "any", "requires": {"count": 1}}]
    assert run(rules, reviews=[approve("renovate[bot]", type="Bot")]).status == Status.PENDING
    rules[0]["options"] = {"ignore_bots": False}
    assert run(rules, reviews=[approve("renovate[bot]", type="Bot")]).status == Status.APPROVED


def test_changes_requested_by_a_required_approver_blocks():
    r = run([MODEL_OWNERS], reviews=[approve("dave"), approve("carol", state="CHANGES_REQUESTED")])
    assert r.status == Status.BLOCKED
    rule = rule_result(r, "model-owners")
    assert rule.description == "changes requested by @carol"
    assert rule.missing == "@carol to approve or dismiss their review"


def test_changes_requested_by_someone_not_required_does_not_block():
    r = run([MODEL_OWNERS], reviews=[approve("carol"), approve("erin", state="CHANGES_REQUESTED")])
    assert r.status == Status.APPROVED


@pytest.mark.parametrize("later, status", [
    pytest.param("APPROVED", Status.APPROVED, id="re-approved"),
    pytest.param("COMMENTED", Status.BLOCKED, id="comment-keeps-the-block"),
    pytest.param("DISMISSED", Status.PENDING, id="dismissed"),
])
def test_latest_review_per_reviewer_counts(later, status):
    reviews = [approve("carol", state="CHANGES_REQUESTED"), approve("carol", state=later)]
    assert run([MODEL_OWNERS], reviews=reviews).status == status


def test_minimum_permission():
    rules = [{"name": "admins", "requires": {"permission": "maintain"}}]
    assert run(rules, reviews=[approve("bob")]).status == Status.PENDING
    assert run(rules, reviews=[approve("root")]).status == Status.APPROVED


def test_count_counts_distinct_eligible_reviewers():
    rules = [{"name": "two", "requires": {"count": 2, "users": ["bob", "carol", "dave"]}}]
    r = run(rules, reviews=[approve("bob"), approve("bob")])
    assert rule_result(r, "two").description == ("has 1 of 2 approvals; needs 1 approval from @carol or @dave")
    assert run(rules, reviews=[approve("bob"), approve("dave")]).status == Status.APPROVED


@pytest.mark.parametrize("users, count, reviews, missing", [
    pytest.param(["alice"], 1, [], "1 approval, but no listed approver can give it (@alice is the author)",
                 id="only-the-author-listed"),
    pytest.param(["alice", "bob"], 2, ["bob"],
                 "1 approval, but no listed approver can give it (@alice is the author; @bob has approved)",
                 id="the-others-have-approved"),
])
def test_missing_never_says_anyone_when_only_listed_users_qualify(users, count, reviews, missing):
    rules = [{"name": "owners", "requires": {"count": count, "users": users}}]
    rule = rule_result(run(rules, reviews=[approve(x) for x in reviews]), "owners")
    assert rule.status == Status.PENDING
    assert rule.missing == missing


@pytest.mark.parametrize("op, reviews, status", [
    pytest.param("and", ["carol"], Status.PENDING, id="and-needs-both"),
    pytest.param("and", ["carol", "root"], Status.APPROVED, id="and-both"),
    pytest.param("or", ["root"], Status.APPROVED, id="or-either"),
    pytest.param("or", [], Status.PENDING, id="or-none"),
])
def test_and_or_composition(op, reviews, status):
    rules = [{"name": "combo", op: [{"name": "ml", "requires": {"teams": ["acme/ml-platform"]}},
                                    {"name": "admin", "requires": {"permission": "admin"}}]}]
    assert run(rules, reviews=[approve(x) for x in reviews]).status == status


def test_composite_sentences_say_what_is_missing():
    rules = [{"name": "combo", "or": [{"name": "ml", "requires": {"teams": ["acme/ml-platform"]}},
                                      {"name": "admin", "requires": {"permission": "admin"}}]}]
    combo = rule_result(run(rules), "combo")
    assert combo.description == "needs one of: ml, admin"
    assert combo.missing == "1 approval from a member of acme/ml-platform or 1 approval from anyone with admin permission"
    combo = rule_result(run(rules, reviews=[approve("root")]), "combo")
    assert combo.description == "approved by way of admin"
    rules[0]["and"] = rules[0].pop("or")
    assert rule_result(run(rules, reviews=[approve("root")]), "combo").description == "waiting on ml"


def test_block_inside_or_still_blocks():
    rules = [{"name": "combo", "or": [{"name": "ml", "requires": {"teams": ["acme/ml-platform"]}},
                                      {"name": "admin", "requires": {"permission": "admin"}}]}]
    r = run(rules, reviews=[approve("root"), approve("carol", state="CHANGES_REQUESTED")])
    assert r.status == Status.BLOCKED
    assert rule_result(r, "combo").description == "blocked by ml"


@pytest.mark.parametrize("cond, kw, applies", [
    pytest.param({"changed_files": ["prompts/**"]}, {"changed_files": ["prompts/a/b.md"]}, True, id="glob-deep"),
    pytest.param({"changed_files": ["prompts/*"]}, {"changed_files": ["prompts/a/b.md"]}, False, id="glob-shallow"),
    pytest.param({"changed_files": ["*.md"], "ignore": ["docs/**"]}, {"changed_files": ["docs/x.md"]}, False,
                 id="ignored"),
    pytest.param({"changed_files": ["*.md"], "ignore": ["docs/**"]}, {"changed_files": ["docs/x.md", "a/y.md"]},
                 True, id="one-not-ignored"),
    pytest.param({"labels": ["cost-review"]}, {"labels": ["Cost-Review"]}, True, id="label-any-case"),
    pytest.param({"labels": ["cost-review"]}, {"labels": ["bug"]}, False, id="label-missing"),
    pytest.param({"target_branches": ["release/*"]}, {"base_branch": "release/2"}, True, id="branch-glob"),
    pytest.param({"target_branches": ["main"]}, {"base_branch": "dev"}, False, id="branch-other"),
    # as in GitHub's branch protection rules: `*` stops at `/`, `**` does not
    pytest.param({"target_branches": ["release/*"]}, {"base_branch": "release/2/hotfix"}, False,
                 id="branch-star-stays-in-its-segment"),
    pytest.param({"target_branches": ["release/**"]}, {"base_branch": "release/2/hotfix"}, True,
                 id="branch-double-star"),
    pytest.param({"target_branches": ["release-[0-9]*"]}, {"base_branch": "release-2"}, True, id="branch-class"),
    pytest.param({"authors": {"users": ["@Alice"]}}, {}, True, id="author-user"),
    pytest.param({"authors": {"teams": ["acme/ml-platform"]}}, {}, True, id="author-team"),
    pytest.param({"authors": {"users": ["bob"]}}, {}, False, id="author-other"),
    pytest.param({"categories": ["tool"], "labels": ["x"]}, {"categories": ["tool"], "labels": ["x"]}, True,
                 id="all-conditions"),
    pytest.param({"categories": ["tool"], "labels": ["x"]}, {"categories": ["tool"]}, False,
                 id="one-condition-fails"),
])
def test_conditions(cond, kw, applies):
    r = run([{"name": "r", "if": cond, "requires": {"count": 0}}], **kw)
    assert (r.status != Status.SKIPPED) == applies


def test_condition_sentences():
    r = run([{"name": "r", "if": {"labels": ["a", "b"]}}])
    assert rule_result(r, "r").description == "does not apply: not labelled a or b"
    r = run([{"name": "r", "if": {"target_branches": ["main"]}}], base_branch="dev")
    assert rule_result(r, "r").description == "does not apply: targets dev, not main"
    r = run([{"name": "r", "if": {"categories": ["tool"]}}], categories=["model", "prompt"])
    assert rule_result(r, "r").description == "does not apply: no tool change (changes: model, prompt)"


@pytest.mark.parametrize("pattern, path, expected", [
    ("prompts/**", "prompts/a.md", True),
    ("prompts/", "prompts/x/a.md", True),
    ("prompts", "prompts/a.md", True),
    ("*.md", "a/b/c.md", True),
    ("/README.md", "docs/README.md", False),
    ("tools/*.json", "tools/a.json", True),
    ("tools/*.json", "tools/x/a.json", False),
    ("prompts/*", "prompts/a/b.md", False),
    ("**/*.json", "a.json", True),
    ("src/**/test_*.py", "src/a/b/test_x.py", True),
    # a folder named with a wildcard covers what is under it; only a trailing `/*` stays in the folder
    ("src/*-service/", "src/billing-service/api.py", True),
    ("src/*-service", "src/billing-service/api.py", True),
    ("docs/*", "docs/build/x.md", False),
    ("foo/**/", "foo/a/b.md", True),
    # a trailing slash names a folder, never a file of that name
    ("docs/", "docs", False),
    ("docs/", "a/docs/x.md", True),
    ("docs", "docs", True),
    ("/*", "a/b.md", False),
])
def test_glob_match(pattern, path, expected):
    assert glob_match(pattern, path) is expected


@pytest.mark.parametrize("pattern, path, expected", [
    ("components.models.*.model", "components.models.answer.model", True),
    ("components.models.*.model", "components.models.answer.params.temperature", False),
    ("components.models.*.model", "components.models.answer", True),  # a model added whole
    ("components.models", "components.models.judge.provider", True),
    ("components.prompts.*", "components.models.answer.model", False),
    ("approvals.**", "approvals.prompt-review.requires.count", True),
    ("**.thresholds.*", "evals.thresholds.pass_rate", True),
    # list items: the diff names them `evals.datasets[1]`
    ("evals.datasets", "evals.datasets[1]", True),
    ("components.orchestration.fallback", "components.orchestration.fallback[0]", True),
    ("components.orchestration.fallback[0]", "components.orchestration.fallback[0]", True),
    ("components.orchestration.fallback[0]", "components.orchestration.fallback[1]", False),
    ("**.datasets", "evals.datasets[0]", True),
    ("rollback.who", "rollback.whom", False),
])
def test_manifest_path_match(pattern, path, expected):
    assert manifest_path_match(pattern, path) is expected


def act(login: str, reason: str, **kw) -> OverrideAct:
    """An override as the App recorded it when it saw the comment created, on HEAD by default."""
    base = dict(head_sha=HEAD, permission={"root": "admin"}.get(login, "write"), created_at="2024-05-01T11:00:00Z",
                url=f"https://example.test/c/{login}")
    return OverrideAct(login, reason, **(base | kw))


def test_admin_override_passes_and_keeps_the_reason():
    r = run([MODEL_OWNERS], reviews=[], overrides=[act("root", "hotfix for INC-7")])
    assert r.status == Status.APPROVED
    assert (r.override.login, r.override.reason, r.override.head_sha) == ("root", "hotfix for INC-7", HEAD)
    assert r.description == "overridden by @root: hotfix for INC-7 (rules alone: pending)"


@pytest.mark.parametrize("override, note", [
    pytest.param(act("bob", "trust me"), "override by @bob ignored: needs admin permission (has write)",
                 id="not-admin"),
    pytest.param(act("root", ""), "override by @root ignored: it needs a reason", id="no-reason"),
    pytest.param(act("root", "x", void="its comment was edited by @bob"),
                 "override by @root ignored: its comment was edited by @bob", id="void"),
    pytest.param(act("root", "x", head_sha=OLD), "override by @root ignored: given on `0000000`, before the last "
                 "push; a push voids an override, so it needs a new one on `hhhhhhh`", id="older-head"),
    pytest.param(act("root", "x", pushed_after=True), "override by @root ignored: given on `hhhhhhh`, before the "
                 "last push; a push voids an override, so it needs a new one on `hhhhhhh`", id="push-received-after"),
])
def test_override_acts_that_do_not_count(override, note):
    r = run([MODEL_OWNERS], reviews=[], overrides=[override])
    assert r.status == Status.PENDING and r.override is None
    assert [c.description for c in r.children if c.kind == "override"] == [note]


def test_an_override_the_rules_did_not_need_is_only_noted():
    r = run([MODEL_OWNERS], reviews=[approve("carol")], overrides=[act("root", "just in case")])
    assert (r.status, r.override) == (Status.APPROVED, None)
    assert [c.description for c in r.children if c.kind == "override"] == [
        "override by @root not needed: just in case"]


def test_a_rule_may_keep_an_override_across_pushes_but_only_if_every_rule_it_decides_does():
    keeps = {**MODEL_OWNERS, "options": {"invalidate_override_on_push": False}}
    stale = [act("root", "outage", head_sha=OLD)]
    assert run([keeps], reviews=[], overrides=stale).status == Status.APPROVED
    both = run([keeps, PROMPT_REVIEW], reviews=[], overrides=stale, categories=["model", "prompt"])
    assert both.status == Status.PENDING and both.override is None


@pytest.mark.parametrize("body, reason", [
    pytest.param("Outage.\n/gating override hotfix for INC-7", "hotfix for INC-7", id="after-a-line"),
    pytest.param("/gating override", "", id="no-reason"),
    pytest.param("> /gating override x\nno", None, id="quoted"),
    pytest.param("> an old comment\n/gating override x", None, id="lazy-continuation-of-a-quote"),
    pytest.param("> quoted\n\n/gating override after the quote", "after the quote", id="after-a-quote"),
    pytest.param("<!-- /gating override hidden -->", None, id="html-comment"),
    pytest.param("ok <!--\n/gating override hidden\n-->\n", None, id="multi-line-html-comment"),
    pytest.param("<!--\n/gating override never closed\n", None, id="unclosed-html-comment"),
    pytest.param("<!-- x -->/gating override glued", None, id="after-a-comment-on-its-line"),
    pytest.param("<!-- x -->\n/gating override seen", "seen", id="after-a-closed-comment"),
    pytest.param("/gating\noverride hotfix", None, id="command-split-over-two-lines"),
    pytest.param("An admin can write:\n```\n/gating override <reason>\n```", None, id="in-a-code-block"),
    pytest.param("~~~text\n/gating override x\n~~~\n", None, id="in-a-tilde-code-block"),
    pytest.param("    /gating override indented", None, id="indented-code"),
    pytest.param("Example:\r\n```\r\n/gating override x\r\n```\r\n/gating override INC-9 outage\r\n", "INC-9 outage",
                 id="after-a-closed-code-block"),
])
def test_parse_override_reads_only_what_a_reader_sees_as_a_command(body, reason):
    assert parse_override(body) == reason


def test_rule_change_with_no_applicable_rule_needs_an_admin():
    kw = dict(manifest_paths=["approvals.model-owners.requires.count"], categories=["policy"])
    r = run([MODEL_OWNERS], reviews=[approve("bob")], **kw)
    assert r.status == Status.PENDING
    builtin = rule_result(r, "policy-change (built in)")
    assert builtin.missing == "1 approval from anyone with admin permission"
    assert run([MODEL_OWNERS], reviews=[approve("root")], **kw).status == Status.APPROVED


def test_rule_change_covered_by_a_configured_rule_still_needs_an_admin_as_well():
    rules = [MODEL_OWNERS, {"name": "policy", "if": {"categories": ["policy"]}, "requires": {"users": ["bob"]}}]
    kw = dict(manifest_paths=["approvals.x"], categories=["policy"])
    r = run(rules, reviews=[approve("bob")], **kw)
    assert r.status == Status.PENDING
    assert [c.name for c in r.children] == ["model-owners", "policy", "policy-change (built in)"]
    assert rule_result(r, "policy").status == Status.APPROVED
    builtin = rule_result(r, "policy-change (built in)")
    assert builtin.status == Status.PENDING
    assert builtin.children[0].description == "changes how pull requests are judged or approved: approvals.x"
    assert run(rules, reviews=[approve("bob"), approve("root")], **kw).status == Status.APPROVED


@pytest.mark.parametrize(("changed", "what"), [
    (dict(manifest_paths=["evals.thresholds.pass_rate", "components.prompts.answer.file"],
          categories=["evals", "prompt"]), "evals.thresholds.pass_rate"),
    (dict(manifest_paths=["evals.cases.refund-window"], categories=["evals"]), "evals.cases.refund-window"),
    (dict(manifest_paths=["rollback.who[0]"], categories=["policy"]), "rollback.who[0]"),
    (dict(manifest_paths=["monitor.rules.error-rate.threshold"], categories=["policy"]),
     "monitor.rules.error-rate.threshold"),
    (dict(manifest_paths=["deploy.exceptions.production"], categories=["policy"]), "deploy.exceptions.production"),
    (dict(manifest_paths=[], categories=[], changed_files=[".gating/audit.pub"]), ".gating/audit.pub"),
    (dict(manifest_paths=[], categories=[], changed_files=[".github/workflows/gating.yml", "README.md"]),
     ".github/workflows/gating.yml"),
], ids=["threshold", "eval-case", "rollback", "monitor", "deploy", "audit-key", "workflow"])
def test_a_change_to_what_decides_a_gate_needs_an_admin_beside_the_matched_rules(changed, what):
    rules = [PROMPT_REVIEW, {"name": "anything", "requires": {"count": 1, "permission": "write"}}]
    r = run(rules, reviews=[approve("carol")], **changed)
    assert r.status == Status.PENDING
    builtin = rule_result(r, "policy-change (built in)")
    assert builtin.status == Status.PENDING
    assert builtin.children[0].description == f"changes how pull requests are judged or approved: {what}"
    assert builtin.missing == "1 approval from anyone with admin permission"
    assert r.missing.startswith("policy-change (built in): 1 approval from anyone with admin permission")
    assert rule_result(r, "anything").status == Status.APPROVED
    assert run(rules, reviews=[approve("carol"), approve("root")], **changed).status == Status.APPROVED


def test_a_system_change_alone_does_not_call_for_the_built_in_rule():
    r = run([PROMPT_REVIEW], reviews=[approve("carol")], manifest_paths=["components.prompts.answer.file"],
            categories=["prompt"], changed_files=["prompts/answer.md", "docs/gating.md"])
    assert r.status == Status.APPROVED
    assert [c.name for c in r.children] == ["prompt-review"]


def test_several_rules_all_must_approve():
    kw = dict(manifest_paths=["components.models.answer.model", "components.prompts.answer.file"],
              categories=["model", "prompt"])
    r = run([MODEL_OWNERS, PROMPT_REVIEW], reviews=[approve("carol")], **kw)
    assert r.status == Status.APPROVED  # carol is in the team and has write
    r = run([MODEL_OWNERS, PROMPT_REVIEW], reviews=[approve("dave")], **kw)
    assert r.status == Status.PENDING
    assert r.description.startswith("model-owners: has 0 of 1 approvals")
    r = run([MODEL_OWNERS, PROMPT_REVIEW], reviews=[approve("carol"), approve("dave")], **kw)
    assert r.description == "all 2 applicable rules approved"


def test_result_tree_serialises_for_the_audit_trail():
    d = run([MODEL_OWNERS], reviews=[approve("carol")]).to_dict()
    assert d["status"] == "approved"
    rule = d["children"][0]
    assert rule["name"] == "model-owners"
    approvals = next(c for c in rule["children"] if c["kind"] == "approvals")
    assert approvals["reviews"] == [{"login": "carol", "state": "approved", "sha": HEAD, "counted": True,
                                     "note": ""}]
