"""Path rules when GitHub did not list every changed file (it lists at most 3,000 of a pull request):
a rule that may apply is never skipped or approved on the listed files alone (fail closed)."""

from __future__ import annotations

from test_policy_evaluate import approve, rule_result, run

from gating.policy import Status

DATA = {"name": "dataset-owners", "if": {"changed_files": ["evals/**"]}, "requires": {"count": 1, "users": ["carol"]}}
LISTED = ["data/a.txt", "data/b.txt"]
SENTENCE = ("cannot evaluate so many files: GitHub did not list 412 of this pull request's changed files (it lists "
            "at most 3,000), and none of the listed ones match evals/**")


def test_a_path_rule_that_may_apply_stays_pending_and_says_why():
    result = run([DATA], changed_files=LISTED, unlisted_files=412)
    rule = rule_result(result, "dataset-owners")
    assert rule.status == Status.PENDING == result.status
    assert rule.description == (f"{SENTENCE}, so this rule stays pending; has 0 of 1 approvals; needs 1 approval "
                                "from @carol")
    assert rule.missing.startswith("a pull request with fewer changed files (GitHub lists at most 3,000), or an "
                                   "admin's `/gating override <reason>`; 1 approval from @carol")
    assert result.description.startswith(f"dataset-owners: {SENTENCE}")


def test_its_approvals_do_not_approve_it_but_a_block_blocks():
    approved = rule_result(run([DATA], changed_files=LISTED, unlisted_files=412, reviews=[approve("carol")]),
                           "dataset-owners")
    assert approved.status == Status.PENDING
    assert "so this rule stays pending; approved by @carol" in approved.description
    blocked = rule_result(run([DATA], changed_files=LISTED, unlisted_files=412,
                              reviews=[approve("carol", state="CHANGES_REQUESTED")]), "dataset-owners")
    assert blocked.status == Status.BLOCKED


def test_inside_an_or_it_cannot_approve_the_other_branch_away():
    """or(path rule, other): the path rule held pending cannot stand in for the other rule's approval."""
    rules = [{"name": "combo", "or": [{**DATA, "requires": {"count": 1, "users": ["root"]}},
                                      {"name": "ml", "requires": {"count": 2, "teams": ["acme/ml-platform"]}}]}]
    result = run(rules, changed_files=LISTED, unlisted_files=412, reviews=[approve("root")])
    assert result.status == Status.PENDING


def test_a_listed_match_or_another_condition_decides_as_usual():
    applies = rule_result(run([DATA], changed_files=[*LISTED, "evals/golden.jsonl"], unlisted_files=412,
                              reviews=[approve("carol")]), "dataset-owners")
    assert applies.status == Status.APPROVED and applies.description.startswith("approved by @carol")
    labelled = {**DATA, "if": {"changed_files": ["evals/**"], "labels": ["datasets"]}}
    skipped = rule_result(run([labelled], changed_files=LISTED, unlisted_files=412), "dataset-owners")
    assert (skipped.status, skipped.description) == (Status.SKIPPED, "does not apply: not labelled datasets")
    complete = rule_result(run([DATA], changed_files=LISTED), "dataset-owners")
    assert complete.status == Status.SKIPPED


def test_rules_without_paths_are_not_affected():
    result = run([{"name": "model-owners", "if": {"manifest_paths": ["components.models.*.model"]},
                   "requires": {"count": 1, "teams": ["acme/ml-platform"]}}],
                 changed_files=LISTED, unlisted_files=412, reviews=[approve("carol")])
    assert result.status == Status.APPROVED
