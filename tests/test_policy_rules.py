"""Parsing approval rules: defaults, inheritance, and errors that list the allowed values."""

from __future__ import annotations

import pytest

from gating.policy import MAX_DEPTH, PolicyError, parse_policy
from gating.policy.rules import Options, Requires
from gating.system.manifest import parse_manifest
from gating.testing.example import EXAMPLE_DIR


def test_example_rules_parse_with_defaults():
    m = parse_manifest((EXAMPLE_DIR / "gating.yml").read_bytes())
    policy = parse_policy(m.approvals)
    names = [r.name for r in policy.rules]
    assert names[:2] == ["model-owners", "prompt-review"]
    owners = policy.rules[0]
    assert owners.requires == Requires(count=1, teams=("acme/ml-platform",))
    assert owners.options == Options(allow_author=False, invalidate_on_push=False, ignore_bots=True,
                                     require_evidence=True)
    assert owners.condition.manifest_paths == ("components.models.*.model",)
    assert policy.rules[1].options.invalidate_on_push is True


def test_composite_children_inherit_options_and_may_override_them():
    policy = parse_policy([{
        "name": "both", "options": {"invalidate_on_push": True, "require_evidence": False},
        "and": [{"name": "a", "requires": {"users": ["@alice"]}},
                {"name": "b", "options": {"require_evidence": True}, "requires": {"count": 2}}],
    }])
    a, b = policy.rules[0].children
    assert policy.rules[0].op == "and"
    assert a.options.invalidate_on_push and not a.options.require_evidence
    assert a.requires.users == ("alice",)
    assert b.options.invalidate_on_push and b.options.require_evidence
    assert b.requires.count == 2


def test_missing_requires_means_one_approval_from_anyone():
    (rule,) = parse_policy([{"name": "any"}]).rules
    assert rule.requires == Requires(count=1)


@pytest.mark.parametrize("rules, message", [
    pytest.param([{"name": "x", "iff": {}}], "approvals[0] (x): unknown key 'iff' (allowed: name, if, requires, options, and, or)",
                 id="unknown-rule-key"),
    pytest.param([{"name": "x", "if": {"lables": ["a"]}}],
                 "approvals[0] (x).if: unknown key 'lables' (allowed: changed_files, ignore, manifest_paths, "
                 "categories, labels, target_branches, authors)", id="unknown-condition"),
    pytest.param([{"name": "x", "if": {"categories": ["models"]}}],
                 "approvals[0] (x).if.categories: 'models' is not one of: model, prompt, retrieval, tool, "
                 "guardrail, orchestration, code, cassette, evals, policy", id="bad-category"),
    pytest.param([{"name": "x", "requires": {"permission": "owner"}}],
                 "approvals[0] (x).requires.permission: 'owner' is not one of: read, triage, write, maintain, admin",
                 id="bad-permission"),
    pytest.param([{"name": "x", "options": {"allow_authors": True}}],
                 "approvals[0] (x).options: unknown key 'allow_authors' (allowed: allow_author, "
                 "invalidate_on_push, ignore_bots, require_evidence, invalidate_override_on_push)", id="unknown-option"),
    pytest.param([{"name": "x", "options": {"allow_author": "yes"}}],
                 "approvals[0] (x).options.allow_author: expected true or false, got 'yes'", id="option-type"),
    pytest.param([{"name": "x", "requires": {"count": -1}}],
                 "approvals[0] (x).requires.count: expected a whole number >= 0, got -1", id="negative-count"),
    pytest.param([{"name": "x", "requires": {"teams": ["ml-platform"]}}],
                 "approvals[0] (x).requires.teams: team 'ml-platform' must be written org/team-slug", id="team-form"),
    pytest.param([{"name": "x", "and": [{"name": "a"}], "or": [{"name": "b"}]}],
                 "approvals[0] (x): use either 'and' or 'or', not both (nest a rule to combine them)", id="and-or"),
    pytest.param([{"name": "x", "requires": {"count": 1}, "or": [{"name": "b"}]}],
                 "approvals[0] (x): a rule with 'or' takes its requirements from its children; "
                 "move 'requires' into them", id="requires-on-composite"),
    pytest.param([{"name": "x"}, {"name": "x"}], "approvals: duplicate rule name 'x'", id="duplicate"),
    pytest.param([{"if": {}}], "approvals[0]: every rule needs a name", id="no-name"),
    pytest.param([{}], "approvals[0]: every rule needs a name", id="empty-rule"),
    pytest.param([{"name": "x", "and": [{}]}], "approvals[0] (x).and[0]: every rule needs a name",
                 id="empty-child-rule"),
    pytest.param("rules", "approvals: expected a list of rules", id="not-a-list"),
    pytest.param([{"name": "x", "requires": {"count": 2, "users": ["@bob"]}}],
                 "approvals[0] (x).requires.count: 2 approvals can never come from 1 listed user; list more "
                 "users, add teams or a permission, or lower the count", id="count-over-users"),
])
def test_parse_errors_name_the_place_and_the_allowed_values(rules, message):
    with pytest.raises(PolicyError) as e:
        parse_policy(rules)
    assert message in e.value.problems


def test_nesting_is_limited():
    rule: dict = {"name": "leaf"}
    for i in range(MAX_DEPTH + 1):
        rule = {"name": f"level{i}", "and": [rule]}
    with pytest.raises(PolicyError) as e:
        parse_policy([rule])
    assert any(f"rules nest at most {MAX_DEPTH} levels deep" in p for p in e.value.problems)
    ok: dict = {"name": "leaf"}
    for i in range(MAX_DEPTH - 1):
        ok = {"name": f"level{i}", "or": [ok]}
    assert parse_policy([ok]).rules[0].op == "or"


def test_every_problem_is_reported_at_once():
    with pytest.raises(PolicyError) as e:
        parse_policy([{"name": "a", "if": {"lables": []}}, {"name": "b", "requires": {"permission": "root"}}])
    assert len(e.value.problems) == 2
