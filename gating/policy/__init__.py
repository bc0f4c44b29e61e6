"""Approval rules: parse once, evaluate as a pure function of a pull request's facts.

Every rule and predicate returns a frozen `Result` (name, status, a human sentence, children), so the
check run, the CLI and the audit entry all render one tree. Facts come through the `PullFacts` seam:
the App implements it over the GitHub API, tests and the CLI with the `Facts` dataclass.
"""

from gating.policy.evaluate import (
    EVAL_CHECK,
    OVERRIDE_COMMAND,
    evaluate,
    find_overrides,
    glob_match,
    has_permission,
    latest_reviews,
    manifest_path_match,
    overrides_survive_push,
    parse_override,
)
from gating.policy.facts import Actor, CheckState, Facts, OverrideAct, PullFacts, Review
from gating.policy.render import APPROVAL_CHECK, CheckOutput, render_check
from gating.policy.result import Override, Result, ReviewNote, Status, all_of, any_of
from gating.policy.rules import MAX_DEPTH, POLICY_CHANGE_RULE, Policy, PolicyError, Rule, parse_policy

__all__ = [
    "APPROVAL_CHECK", "EVAL_CHECK", "MAX_DEPTH", "OVERRIDE_COMMAND", "POLICY_CHANGE_RULE", "Actor", "CheckOutput", "CheckState",
    "Facts", "Override", "OverrideAct", "Policy", "PolicyError", "PullFacts", "Result", "Review", "ReviewNote",
    "Rule", "Status", "all_of", "any_of", "evaluate", "find_overrides", "glob_match", "has_permission",
    "latest_reviews", "manifest_path_match", "overrides_survive_push", "parse_override", "parse_policy",
    "render_check",
]
