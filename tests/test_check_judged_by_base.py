"""`gating check` judges the head's system by the base's rules: thresholds, regression rule, judge,
target and the cases (with their assertions) that exist on the base. A pull request cannot pass by
loosening its own threshold, deleting the cases it fails or weakening their assertions; what it
adds is run and reported. The GitHub emulator, real git and the local test LLM server, as the
Action runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from check_support import (
    ANSWER_CASES,
    GATING_YML,
    GREET_CASES,
    Harness,
    answer_prompt,
    cases_jsonl,
    write_system,
)

STRICT = GATING_YML.replace('pass_rate: ">= 0.1"', 'pass_rate: ">= 0.9"')
LOOSE = GATING_YML.replace('pass_rate: ">= 0.1"', 'pass_rate: ">= 0.05"')


def only_greet_cases() -> str:
    return "".join(line + "\n" for line in cases_jsonl().splitlines() if '"greet"' in line)


@pytest.fixture
def h(github, llm, tmp_path: Path, monkeypatch) -> Harness:
    src = write_system(tmp_path / "src")
    (src / "gating.yml").write_text(STRICT, encoding="utf-8")
    repo = github.create_repo("acme/tiny-bot", source_dir=src)
    return Harness(github, repo, llm, tmp_path, monkeypatch)


def test_loosening_the_threshold_and_deleting_the_failing_cases_is_judged_by_the_base(h: Harness):
    pr = h.open_pr("cheat", {"prompts/answer.md": answer_prompt("no"), "gating.yml": LOOSE,
                             "evals/cases.jsonl": only_greet_cases()}, "Terser answers")
    ran = h.run(pr, args=("--no-post",))
    assert ran.rc == 1, ran.stdout + ran.stderr
    assert ran.stdout.startswith("gating / eval: Fail: ")
    # the base's threshold and the base's cases judged the head's prompt
    assert "pass_rate is 0.167, threshold >= 0.9" in ran.stdout
    assert ran.report["comparison"]["paired"] == len(ANSWER_CASES) + len(GREET_CASES)
    assert sorted(c["id"] for c in ran.report["head_run"]["cases"] if not c["passed"]) == ANSWER_CASES
    assert f"Judged by the base's evals (`gating.yml` at `{ran.report['base'][:7]}`)" in ran.stdout
    # the head's changes to how it is judged are in the diff, high risk, and wait for the merge
    assert "| evals | threshold loosened: pass_rate >= 0.9 → >= 0.05 | `evals.thresholds.pass_rate` | **high** |" \
        in ran.stdout
    assert "| evals | eval case `answer-01` removed | `evals.cases.answer-01` | **high** |" in ran.stdout
    assert "take effect only after merge" in ran.stdout
    assert ("This pull request changes its evals (11 changes, 11 high risk): they take effect only after merge, "
            "and the base's evals judged it") in ran.stderr


def test_weakening_the_assertions_of_failing_cases_does_not_help(h: Harness):
    weakened = cases_jsonl().replace('{"type": "icontains", "value": "yes"}', '{"type": "icontains", "value": "o"}')
    pr = h.open_pr("weaken", {"prompts/answer.md": answer_prompt("no"), "evals/cases.jsonl": weakened},
                   "Terser answers, adjusted cases")
    ran = h.run(pr, args=("--no-post",))
    assert ran.rc == 1, ran.stdout + ran.stderr
    assert "pass_rate is 0.167, threshold >= 0.9" in ran.stdout
    changed = [c for c in ran.report["changes"]["changes"] if c["path"].startswith("evals.cases.answer-01")]
    assert [(c["path"], c["risk"], c["summary"]) for c in changed] == [
        ("evals.cases.answer-01.assert[0].value", "high",
         "eval case `answer-01`: assertion icontains changed: yes → o (cannot tell whether it is weaker)")]


def test_cases_the_head_adds_are_run_with_their_own_assertions_and_reported(h: Harness):
    extra = json.dumps({"id": "greet-3", "prompt": "greet", "vars": {"name": "Zoe"},
                        "assert": [{"type": "icontains", "value": "hello"}]})
    pr = h.open_pr("more-cases", {"evals/cases.jsonl": cases_jsonl() + extra + "\n"}, "One more case")
    ran = h.run(pr)
    assert ran.rc == 0, ran.stdout + ran.stderr
    [run] = h.check_runs(pr["head"]["sha"])
    assert run["conclusion"] == "success"
    assert "greet-3" in ran.report["comparison"]["added"]
    assert any(c["id"] == "greet-3" and c["passed"] for c in ran.report["head_run"]["cases"])
    summary = run["output"]["summary"]
    assert "1 case added by this pull request (greet-3) was run and judged with its own assertions from " \
           "the head" in summary
    assert "| evals | eval case `greet-3` added (prompt `greet`) | `evals.cases.greet-3` | low |" in summary
    assert ran.llm_requests == len(ANSWER_CASES) + len(GREET_CASES) + 1  # base in full, then only the new case


def test_removing_the_evals_section_still_evaluates_the_head_with_the_base_evals(h: Harness):
    no_evals = STRICT.split("evals:")[0]
    pr = h.open_pr("no-evals", {"prompts/answer.md": answer_prompt("no"), "gating.yml": no_evals}, "No evals")
    ran = h.run(pr, args=("--no-post",))
    assert ran.rc == 1, ran.stdout + ran.stderr
    assert "pass_rate is 0.167, threshold >= 0.9" in ran.stdout
    assert "| evals | evals section removed: nothing would be evaluated after merge | `evals` | **high** |" \
        in ran.stdout


def test_a_second_run_of_a_push_reuses_the_head_note_judged_by_the_same_rules(h: Harness):
    # after merge (a push) a commit's note stands for it: the job re-run makes no model call; a pull
    # request's head is evaluated each time (its note is no evidence for it: tests/test_check_run.py)
    before = h.repo.head("main")
    after = h.repo.commit_files("main", {"prompts/greet.md": "Say hi to {{ name }}.\n[[answer: hello friend]]\n"},
                                "Hi")
    payload = h.emu.webhook("push", repo=h.repo, ref="refs/heads/main", before=before, after=after).payload
    first = h.run_event("push", payload, after, args=("--notes", "local"))
    assert first.rc == 0, first.stdout + first.stderr
    again = h.run_event("push", payload, after, args=("--notes", "local"), clone=first.clone)
    assert again.llm_requests == 0 and "eval note on head" in again.report["head_source"]
    assert again.report["verdict"] == first.report["verdict"]


def test_first_adoption_is_judged_by_the_head_and_says_why(github, llm, tmp_path: Path, monkeypatch):
    src = write_system(tmp_path / "src")
    (src / "gating.yml").write_text(STRICT.split("evals:")[0], encoding="utf-8")
    repo = github.create_repo("acme/tiny-bot", source_dir=src)
    h = Harness(github, repo, llm, tmp_path, monkeypatch)
    pr = h.open_pr("adopt", {"gating.yml": STRICT}, "Adopt evals")
    ran = h.run(pr, args=("--no-post",))
    assert ran.rc == 0, ran.stdout + ran.stderr
    base = ran.report["base"][:7]
    assert (f"Judged by the head's evals: the base `{base}` has no `evals` in `gating.yml`, so this pull "
            "request adopts them") in ran.stdout
    assert ran.report["head_run"]["config"]["judged_by"]["source"] == "head"


def test_a_target_the_head_points_elsewhere_is_not_what_runs(h: Harness):
    cheat = STRICT.replace("target: {type: prompt}", "target: {type: command, run: python3 always_yes.py, code: [always_yes.py]}")
    pr = h.open_pr("target", {"prompts/answer.md": answer_prompt("no"), "gating.yml": cheat,
                              "always_yes.py": "print('{\"output\": \"yes, hello\"}')\n"}, "Another target")
    ran = h.run(pr, args=("--no-post",))
    assert ran.rc == 1, ran.stdout + ran.stderr
    assert "pass_rate is 0.167, threshold >= 0.9" in ran.stdout
    assert ran.report["head_run"]["config"]["target"] == "prompt"
    assert "| evals | eval target target.run: None → python3 always_yes.py (what the cases run) | " \
           "`evals.target.run` | **high** |" in ran.stdout
    assert "| evals | eval target target.code: None → ['always_yes.py'] (what the cases run) | " \
           "`evals.target.code` | **high** |" in ran.stdout


def test_renaming_a_prompt_does_not_take_its_cases_along(h: Harness):
    renamed = STRICT.replace("greet: {file: prompts/greet.md, model: bot}", "hello: {file: prompts/greet.md, model: bot}")
    pr = h.open_pr("rename", {"gating.yml": renamed, "evals/cases.jsonl": cases_jsonl().replace('"greet"', '"hello"')},
                   "Rename greet")
    ran = h.run(pr, args=("--no-post",))
    assert ran.rc == 1, ran.stdout + ran.stderr
    failed = {c["id"]: c for c in ran.report["head_run"]["cases"] if not c["passed"]}
    assert sorted(failed) == GREET_CASES
    assert failed["greet-1"]["error"] == "render"
    assert "prompt 'greet' is not defined in this revision's manifest" in failed["greet-1"]["error_message"]


def test_a_case_the_base_has_no_judge_for_waits_for_the_merge(h: Harness):
    with_judge = STRICT.replace("    bot: {provider: openai, model: gpt-4o-2024-08-06, params: {temperature: 0}}\n",
                                "    bot: {provider: openai, model: gpt-4o-2024-08-06, params: {temperature: 0}}\n"
                                "    grader: {provider: openai, model: gpt-4o-2024-08-06}\n"
                                ).replace("  target: {type: prompt}\n", "  target: {type: prompt}\n  judge: grader\n")
    graded = json.dumps({"id": "greet-polite", "prompt": "greet", "vars": {"name": "Ann"},
                         "assert": [{"type": "rubric", "value": "is polite"}]})
    pr = h.open_pr("judge", {"gating.yml": with_judge, "evals/cases.jsonl": cases_jsonl() + graded + "\n"}, "Judge")
    ran = h.run(pr, args=("--no-post",))
    assert ran.rc == 0, ran.stdout + ran.stderr
    assert "greet-polite" not in {c["id"] for c in ran.report["head_run"]["cases"]}
    assert ("1 case added by this pull request (greet-polite) needs a judge model the base does not define: "
            "not run; judged after merge.") in ran.stdout
    assert "| evals | judge changed: None → grader" in ran.stdout
