"""The `gating / approval` check run as a reviewer reads it: verdict line, then the rule table."""

from __future__ import annotations

from gating.policy import Actor, CheckState, Facts, OverrideAct, Review, evaluate, parse_policy, render_check

HEAD = "1234567" + "a" * 33
OLD = "7654321" + "b" * 33
RULES = [
    {"name": "model-owners", "if": {"manifest_paths": ["components.models.*.model"]},
     "requires": {"teams": ["acme/ml-platform"]}},
    {"name": "prompt-review", "if": {"categories": ["prompt"]}, "requires": {"permission": "write"},
     "options": {"invalidate_on_push": True}},
    {"name": "cost", "if": {"labels": ["cost"]}},
]
SOURCE = "`gating.yml` on `main` at `abcdef0`"


def facts(reviews=(), conclusion="success", overrides=()) -> Facts:
    return Facts(author=Actor("alice"), head_sha=HEAD, categories=["model", "prompt"],
                 manifest_paths=["components.models.answer.model", "components.prompts.answer.file"],
                 reviews=list(reviews), overrides=list(overrides),
                 checks={"gating / eval": CheckState("gating / eval", "completed", conclusion, HEAD)},
                 teams={"acme/ml-platform": ["carol"]}, permissions={"carol": "read", "dave": "write",
                                                                     "root": "admin"})


def render(f: Facts):
    return render_check(evaluate(parse_policy(RULES), f), HEAD, SOURCE)


def test_pending_is_in_progress_with_a_table_of_rules():
    out = render(facts([Review(Actor("dave"), "APPROVED", OLD), Review(Actor("carol"), "APPROVED", HEAD)]))
    assert (out.status, out.conclusion) == ("in_progress", None)
    assert out.title == ("Pending: prompt-review: has 0 of 1 approvals; needs 1 approval from anyone with "
                         "write permission or higher")
    lines = out.summary.splitlines()
    assert lines[0] == f"**{out.title}**"
    assert lines[2] == ("Evaluated on `1234567` with the rules from `gating.yml` on `main` at `abcdef0`; "
                        "a pull request cannot change its own rules.")
    assert "| model-owners | ✅ approved | approved by @carol; `gating / eval` succeeded on 1234567 | " \
           "@carol on `1234567`<br>~~@dave on `7654321`~~ (not an eligible approver for this rule) |   |" in lines
    row = next(x for x in lines if x.startswith("| prompt-review |"))
    assert "~~@carol on `1234567`~~ (not an eligible approver for this rule)<br>" \
           "~~@dave on `7654321`~~ (approved before the last push)" in row
    assert row.endswith("| 1 approval from anyone with write permission or higher |")
    assert "| cost | ➖ skipped | does not apply: not labelled cost |   |   |" in lines


def test_approved_is_success():
    out = render(facts([Review(Actor("carol"), "APPROVED", HEAD), Review(Actor("dave"), "APPROVED", HEAD)]))
    assert (out.status, out.conclusion, out.title) == ("completed", "success", "Approved: all 2 applicable rules approved")


def test_blocked_is_failure():
    out = render(facts([Review(Actor("carol"), "APPROVED", HEAD), Review(Actor("dave"), "APPROVED", HEAD)],
                      conclusion="failure"))
    assert (out.status, out.conclusion) == ("completed", "failure")
    assert out.title == "Blocked: model-owners: `gating / eval` concluded failure on 1234567 (and 1 more rule blocked)"


def test_override_is_success_marked_overridden_with_the_reason():
    act = OverrideAct("root", "eval flake, see INC-9", HEAD, "admin", "t", "https://example.test/c/1")
    out = render(facts(conclusion="failure", overrides=[act]))
    assert (out.status, out.conclusion) == ("completed", "success")
    assert out.title == "Overridden by @root: eval flake, see INC-9"
    assert "Override recorded by @root on `1234567` (https://example.test/c/1): eval flake, see INC-9" in out.summary


def test_text_holds_the_full_tree():
    out = render(facts([Review(Actor("carol"), "APPROVED", HEAD), Review(Actor("dave"), "APPROVED", HEAD)]))
    assert out.text.splitlines()[:3] == [
        "- ✅ **policy** (approved): all 2 applicable rules approved",
        "  - ✅ **model-owners** (approved): approved by @carol; `gating / eval` succeeded on 1234567",
        "    - ✅ **manifest_paths** (approved): components.models.answer.model changed",
    ]


def test_fields_for_the_api_omit_conclusion_while_pending():
    out = render(facts())
    assert out.as_fields() == {"status": "in_progress",
                               "output": {"title": out.title, "summary": out.summary, "text": out.text}}
