"""The semantic diff of how a change would be judged: eval cases one by one (added, removed, an
assertion weakened), thresholds, judge and target, each with a risk, between real git revisions of
the example system."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gating.commands.cli import main
from gating.commands.diff import compute
from gating.diff.datasets import CaseChange, case_changes
from gating.git.repository import Git, commit_all
from gating.testing.example import edit


def change(repo: Git, message: str, fn) -> tuple[str, str]:
    base = repo.rev_parse("HEAD")
    fn(repo.root)
    return base, commit_all(repo, message)


def rows(repo: Git, base: str, head: str) -> list[tuple[str, str, str]]:
    return [(c.path, c.risk, c.summary) for c in compute(repo, base, head).changes]


def edit_cases(root: Path, fn) -> None:
    path = root / "evals/golden.jsonl"
    cases = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    cases = fn({c["id"]: c for c in cases})
    path.write_text("".join(json.dumps(c) + "\n" for c in cases.values()))


def test_cases_removed_weakened_and_added_are_listed_one_by_one(example_repo: Git) -> None:
    def fn(cases):
        del cases["refund-window"]
        cases["shipping-time"]["assert"] = [{"type": "icontains", "value": "business days"},
                                            {"type": "max-tokens", "value": 400}]
        cases["unknown-answer"]["assert"] = cases["unknown-answer"]["assert"][:0]
        cases["classify-billing"]["expected"] = "refunds"
        cases["gift-cards"] = {"id": "gift-cards", "prompt": "answer", "vars": {"question": "Gift cards?",
                                                                               "context": ""},
                               "assert": [{"type": "icontains", "value": "gift"}]}
        return cases

    base, head = change(example_repo, "cases", lambda r: edit_cases(r, fn))
    got = rows(example_repo, base, head)
    assert got == [
        ("evals.cases.classify-billing.expected", "high",
         "eval case `classify-billing`: expected answer changed: None → refunds"),
        ("evals.cases.refund-window", "high", "eval case `refund-window` removed"),
        ("evals.cases.shipping-time.assert[0].value", "high",
         "eval case `shipping-time`: assertion icontains changed: 3 to 5 business days → business days (weakened)"),
        ("evals.cases.shipping-time.assert[1].value", "high",
         "eval case `shipping-time`: assertion max-tokens changed: 160 → 400 (weakened)"),
        ("evals.cases.unknown-answer.assert[0]", "high",
         "eval case `unknown-answer`: assertion icontains-any [\"don't know\", 'do not know', 'ticket'] removed"),
        ("evals.cases.unknown-answer.assert[1]", "high",
         "eval case `unknown-answer`: assertion not-icontains gift cards in removed"),
        ("evals.cases.gift-cards", "low", "eval case `gift-cards` added (prompt `answer`)"),
    ]
    cs = compute(example_repo, base, head)
    assert cs.affected_prompts() == {"answer"}  # only the added case runs again: the base judges the rest


def test_the_diff_says_judging_changes_take_effect_after_merge(example_repo: Git, capsys) -> None:
    base, head = change(example_repo, "loosen", lambda r: edit(r / "gating.yml", 'pass_rate: ">= 0.80"',
                                                               'pass_rate: ">= 0.50"'))
    assert main(["-C", str(example_repo.root), "diff", base, head]) == 0
    out = capsys.readouterr().out
    assert ("> 1 change to how pull requests are judged or approved (evals, approval rules, rollback, monitor): they "
            "take effect only after merge, so the base's settings judge this pull request.") in out
    assert "| evals | threshold loosened: pass_rate >= 0.80 → >= 0.50 | `evals.thresholds.pass_rate` | **high** |" in out


def test_judge_target_and_calibration_changes_are_high_risk(example_repo: Git) -> None:
    def fn(r: Path) -> None:
        edit(r / "gating.yml", "  judge: judge\n", "  judge: answer\n")
        edit(r / "gating.yml", "target: {type: prompt}", "target: {type: command, run: python3 app.py, code: []}")
        edit(r / "gating.yml", "min_agreement: 0.8", "min_agreement: 0.5")

    base, head = change(example_repo, "judging", fn)
    got = rows(example_repo, base, head)
    assert ("evals.calibration.min_agreement", "high",
            "judge calibration loosened: calibration.min_agreement 0.8 → 0.5") in got
    assert ("evals.judge", "high", "judge changed: judge → answer (grades every model-graded case)") in got
    assert ("evals.target.type", "high", "eval target target.type: prompt → command (what the cases run)") in got
    assert compute(example_repo, base, head).affected_prompts() == set()


def test_a_whole_new_dataset_is_one_row_and_its_cases_run(example_repo: Git) -> None:
    def fn(r: Path) -> None:
        edit(r / "gating.yml", "datasets: [evals/golden.jsonl]", "datasets: [evals/golden.jsonl, evals/more.jsonl]")
        (r / "evals/more.jsonl").write_text(json.dumps(
            {"id": "m1", "prompt": "classify", "vars": {"message": "hi"}, "assert": [{"type": "equals", "value": "other"}]})
            + "\n")

    base, head = change(example_repo, "more", fn)
    got = rows(example_repo, base, head)
    assert ("evals.dataset_digests.evals/more.jsonl", "low", "eval dataset evals/more.jsonl added: 1 case (m1)") in got
    assert not any(p.startswith("evals.cases.") for p, _, _ in got)
    assert compute(example_repo, base, head).affected_prompts() == {"classify"}


def test_a_dataset_reordered_changes_no_case(example_repo: Git) -> None:
    base, head = change(example_repo, "order", lambda r: edit_cases(r, lambda c: dict(reversed(c.items()))))
    assert rows(example_repo, base, head) == [
        ("evals.dataset_digests.evals/golden.jsonl", "low",
         "eval dataset evals/golden.jsonl changed: no case changed (formatting, comments or order)")]


def test_a_broken_dataset_at_head_is_named_in_the_diff(example_repo: Git) -> None:
    base, head = change(example_repo, "broken", lambda r: (r / "evals/golden.jsonl").write_text("{nope\n"))
    got = rows(example_repo, base, head)
    assert ("evals.datasets", "high", "eval dataset cannot be read at head: evals/golden.jsonl:1: invalid JSON at "
            "column 2: Expecting property name enclosed in double quotes") in got


@pytest.mark.parametrize(("before", "after", "weaker"), [
    ({"type": "icontains", "value": "30 days"}, {"type": "icontains", "value": "thirty days"}, None),
    ({"type": "icontains", "value": "30 days"}, {"type": "icontains", "value": "within 30 DAYS"}, False),
    ({"type": "icontains", "value": "30 days"}, {"type": "icontains", "value": "Days"}, True),
    ({"type": "contains", "value": "days"}, {"type": "contains", "value": "30 days"}, False),
    ({"type": "not-contains", "value": "password"}, {"type": "not-contains", "value": "password:"}, True),
    ({"type": "latency", "value": 3000}, {"type": "latency", "value": 2000}, False),
    ({"type": "cost", "value": 0.01}, {"type": "cost", "value": 0.02}, True),
    ({"type": "icontains-any", "value": ["a", "b"]}, {"type": "icontains-any", "value": ["a", "b", "c"]}, True),
    ({"type": "contains-all", "value": ["a", "b"]}, {"type": "contains-all", "value": ["a"]}, True),
    ({"type": "rubric", "value": "polite", "threshold": 0.8}, {"type": "rubric", "value": "polite", "threshold": 0.6},
     True),
    ({"type": "rubric", "value": "polite", "threshold": 0.6}, {"type": "rubric", "value": "polite", "threshold": 0.8},
     False),
    ({"type": "equals", "value": "billing"}, {"type": "equals", "value": "refunds"}, None),
], ids=["icontains-other", "icontains-longer", "icontains-part", "contains-more", "not-contains-more", "latency-lower", "cost-higher",
        "any-grown", "all-shrunk", "threshold-lower", "threshold-higher", "equals"])
def test_which_way_an_assertion_changed(before, after, weaker) -> None:
    [c] = case_changes("c1", {"id": "c1", "assert": [before]}, {"id": "c1", "assert": [after]})
    assert isinstance(c, CaseChange) and c.weaker is weaker


@pytest.mark.parametrize(("before", "after", "summary"), [
    ("min_agreement: 0.8, metric: exact", "min_agreement: 0.8",
     "judge calibration loosened: calibration.metric exact → kappa (exact agreement no longer required)"),
    ("min_agreement: 0.8, metric: exact", "min_agreement: 0.8, metric: within_one",
     "judge calibration loosened: calibration.metric exact → within_one (within-one agreement admits answers one "
     "point off)"),
    ("min_agreement: 0.8, metric: kappa", "min_agreement: 0.8, metric: exact",
     "judge calibration criterion changed: calibration.metric kappa → exact (weighted kappa stays required "
     "beside exact agreement)"),
], ids=["exact-to-default-kappa", "exact-to-within-one", "kappa-to-exact"])
def test_a_calibration_metric_change_is_high_risk_and_says_which_way(example_repo: Git, before: str, after: str,
                                                                    summary: str) -> None:
    edit(example_repo.root / "gating.yml", "min_agreement: 0.8", before)
    commit_all(example_repo, "calibration metric")
    base, head = change(example_repo, "metric", lambda r: edit(r / "gating.yml", before, after))
    got = [row for row in rows(example_repo, base, head) if row[0].startswith("evals.calibration")]
    assert got == [("evals.calibration.metric", "high", summary)]


@pytest.mark.parametrize(("key", "before", "after", "weaker", "summary"), [
    ("weight", 3, 1, True, "eval case `c1` weight: 3 → 1 (counts less)"),
    ("weight", None, 0.5, True, "eval case `c1` weight: 1 → 0.5 (counts less)"),
    ("weight", 1, 2, None, "eval case `c1` weight: 1 → 2 (counts more; the other cases count less)"),
    ("threshold", 0.9, 0.5, True, "eval case `c1` threshold: 0.9 → 0.5 (weakened)"),
    ("threshold", 0.5, None, False, "eval case `c1` threshold: 0.5 → None (stricter)"),
    ("threshold", None, 0.9, True, "eval case `c1` threshold: None → 0.9 (weakened)"),
    ("threshold", 0.5, 0.9, False, "eval case `c1` threshold: 0.5 → 0.9 (stricter)"),
])
def test_a_case_weight_or_threshold_change_says_which_way(key, before, after, weaker, summary) -> None:
    b = {"id": "c1", **({key: before} if before is not None else {})}
    h = {"id": "c1", **({key: after} if after is not None else {})}
    [c] = case_changes("c1", b, h)
    assert (c.where, c.weaker, c.summary) == ((key,), weaker, summary)
