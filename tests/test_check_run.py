"""`gating check` end to end: the GitHub emulator, real git over smart HTTP, the local test LLM server.

Every request the check makes is validated against GitHub's OpenAPI description by the emulator;
the `github` fixture fails a test on any violation.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from check_support import ANSWER_CASES, GREET_CASES, Harness, answer_prompt, greet_prompt, write_system

from gating.check.output import footer
from gating.commands.cli import main
from gating.evals.records import load_run
from gating.git.notes import EVALS_REF
from gating.git.repository import Git, init_repo

ALL_CASES = len(ANSWER_CASES) + len(GREET_CASES)


def test_prompt_edit_posts_the_check_run_with_diff_and_deltas(h: Harness):
    pr = h.open_pr("greet-warmly", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")
    ran = h.run(pr)
    assert ran.rc == 0, ran.stderr
    [run] = h.check_runs(pr["head"]["sha"])
    assert (run["name"], run["status"], run["conclusion"]) == ("gating / eval", "completed", "success")
    summary = run["output"]["summary"]
    assert summary.splitlines()[0].startswith("✅ **Pass**: the 1 threshold met; 12 paired cases")
    assert "### LLM system: 1 change (highest risk: medium)" in summary
    assert "| prompt | prompt `greet` changed: +1 −1 lines in prompts/greet.md |" in summary
    assert "| Metric | Base | Head | Δ | Interval | Threshold | Status |" in summary
    assert "| `pass_rate` | 1.000 | 1.000 | ±0.000 |" in summary
    assert "| `tokens_out_per_request` |" in summary and "#### Tokens and cost" in summary
    assert "| cost / day at 1,000 requests |" in summary and "#### Latency (ms)" in summary
    assert "| total |" in summary
    assert "#### Errors\n\nNone: every case of base and head was evaluated." in summary
    # the check run is opened in_progress at once and completed at the end, by the same token
    create, *updates = [r for r in h.emu.requests if r.operation in ("checks/create", "checks/update")]
    assert create.json["status"] == "in_progress" and create.json["head_sha"] == pr["head"]["sha"]
    assert create.json["details_url"].endswith("/acme/tiny-bot/actions/runs/4242")
    assert [u.json.get("conclusion") for u in updates] == ["success"]
    assert "### Cases (12)" in run["output"]["text"] and "carried from base" in run["output"]["text"]
    # only the greet cases ran on head; base was re-run in full (no note yet)
    assert ran.llm_requests == ALL_CASES + len(GREET_CASES)
    assert ran.outputs["verdict"] == "pass" and ran.outputs["conclusion"] == "success"
    assert ran.outputs["check-run-id"] == str(run["id"])
    assert ran.outputs["report-json"].endswith("/report.json") and ran.outputs["junit"].endswith("/junit.xml")
    assert ran.report["verdict"] == "pass" and ran.report["check_run_id"] == run["id"]
    assert ran.report["changes"]["affected_prompts"] == ["greet"]
    assert ran.junit.count("<testcase ") == ALL_CASES
    assert ran.summary.startswith("## gating / eval: Pass: the 1 threshold met")
    assert ran.stdout.startswith("gating / eval: Pass: ")


def test_regression_beyond_max_drop_fails_and_names_the_flipped_cases(h: Harness):
    pr = h.open_pr("terse", {"prompts/answer.md": answer_prompt("no")}, "Terser answers")
    ran = h.run(pr)
    assert ran.rc == 1
    [run] = h.check_runs(pr["head"]["sha"])
    assert run["conclusion"] == "failure"
    assert run["output"]["title"] == ("Fail: 10 cases regressed (answer-01, answer-02, answer-03, answer-04, "
                                      "answer-05 and 5 more)")
    summary = run["output"]["summary"]
    assert "pass rate fell by 0.833 on 12 paired cases (more than max_drop 0.05); McNemar exact p = 0.00195" in summary
    assert "#### Regressions (10)" in summary
    for cid in ANSWER_CASES:
        assert f"| `{cid}` | answer | pass | fail | icontains: " in summary
    [note_req] = [r for r in h.requests("checks/update") if r.json.get("conclusion")]
    [ann] = note_req.json["output"]["annotations"]
    assert (ann["path"], ann["start_line"], ann["end_line"], ann["annotation_level"]) == \
        ("prompts/answer.md", 2, 2, "failure")
    assert ann["title"] == "10 eval cases regressed after this change"
    assert ann["message"].startswith("answer-01 (answer): pass → fail: icontains: ")
    assert ran.outputs["verdict"] == "fail" and ran.outputs["conclusion"] == "failure"
    assert 'failures="10"' in ran.junit


def test_fail_on_threshold_reports_a_regression_without_blocking(h: Harness):
    pr = h.open_pr("terse", {"prompts/answer.md": answer_prompt("no")}, "Terser answers")
    ran = h.run(pr, args=("--fail-on", "threshold"))
    assert ran.rc == 0
    [run] = h.check_runs(pr["head"]["sha"])
    assert run["conclusion"] == "neutral"
    assert run["output"]["title"].startswith("Fail (not blocking: fail-on threshold): 10 cases regressed")
    [update] = [r for r in h.requests("checks/update") if r.json.get("conclusion")]
    assert update.json["output"]["annotations"][0]["annotation_level"] == "warning"


def test_improvement_concludes_success(h: Harness):
    h.repo.commit_files("main", {"prompts/answer.md": answer_prompt("no idea")}, "Worse answers on main")
    pr = h.open_pr("fix-answers", {"prompts/answer.md": answer_prompt("yes, it is")}, "Fix answers")
    ran = h.run(pr)
    assert ran.rc == 0
    [run] = h.check_runs(pr["head"]["sha"])
    assert run["conclusion"] == "success"
    summary = run["output"]["summary"]
    assert "| `pass_rate` | 0.167 | 1.000 | +0.833 |" in summary
    assert "#### Fixed (10)" in summary and "#### Regressions" not in summary
    assert "| ok · improved |" in summary  # the threshold is met, and the pass rate's test confirms the rise


def test_readme_only_pull_request_is_a_quick_success_without_llm_calls(h: Harness):
    pr = h.open_pr("docs", {"README.md": "# tiny-bot\n\nNow with docs.\n"}, "Docs")
    ran = h.run(pr)
    assert ran.rc == 0
    assert ran.seconds < 2.0
    assert ran.llm_requests == 0
    [run] = h.check_runs(pr["head"]["sha"])
    assert (run["conclusion"], run["output"]["title"]) == ("success", "No LLM system changes")
    assert run["output"]["summary"].startswith("✅ **No LLM system changes** · conclusion `success`")
    base, head = pr["base"]["sha"][:7], pr["head"]["sha"][:7]
    lines = run["output"]["summary"].splitlines()
    assert re.fullmatch(rf"<sub>base `{base}` → head `{head}` · \d+\.\d s</sub>", lines[2])
    assert lines[3:] == ["", "### LLM system: no changes", "",
                         f"Nothing in the LLM system changed between `{base}` and `{head}`.", "", footer()]
    for text in (run["output"]["summary"], run["output"]["text"], ran.summary, ran.stdout):
        assert not re.search(r"[0-9a-f]{40}", text)  # commits as 7 characters, as everywhere else
    assert ran.outputs["verdict"] == "unchanged"
    assert ran.outputs["junit"].endswith("/junit.xml") and 'tests="0"' in ran.junit  # a reporter finds a file
    assert h.repo.note(EVALS_REF, pr["head"]["sha"]) is None


def test_second_run_of_the_same_pull_request_evaluates_the_head_again_from_the_base_note(h: Harness):
    # the base's note is the baseline; the head's own note is not evidence for its pull request (whoever
    # can push the branch can push the notes ref), so each run evaluates the head's affected cases
    pr = h.open_pr("greet-warmly", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")
    first = h.run(pr)
    assert first.llm_requests == ALL_CASES + len(GREET_CASES)
    again = h.run(pr, action="synchronize", clone=first.clone)  # same runner: the response cache answers
    assert again.llm_requests == 0 and again.rc == 0
    fresh = h.run(pr, action="synchronize")  # a new runner: no cache, the base's note alone
    assert fresh.llm_requests == len(GREET_CASES) and fresh.rc == 0
    assert fresh.report["baseline"] == f"eval note on base `{pr['base']['sha'][:7]}`"
    assert fresh.report["head_source"] == "ran 2 affected cases (prompts: greet), carried 10 from base"
    assert ("the eval note already on the head commit was not used: in a pull request it is not evidence (anyone "
            "who can push the branch can push refs/notes/gating/evals), so the head was evaluated") in fresh.stdout
    assert [r["conclusion"] for r in h.check_runs(pr["head"]["sha"])] == ["success"] * 3


def test_a_note_the_author_pushes_onto_the_head_cannot_pass_the_pull_request(h: Harness):
    pr = h.open_pr("rude", {"prompts/greet.md": greet_prompt("go away")}, "Rude greeting")
    first = h.run(pr)
    assert first.rc == 1 and first.outputs["verdict"] == "inconclusive"  # two cases dropped: blocking
    head = pr["head"]["sha"]
    note = json.loads(h.repo.note(EVALS_REF, head))
    for case in note["cases"]:  # every case "passed", every figure as good as the base's
        case["passed"] = True
        for a in case.get("asserts") or []:
            a["passed"] = True
    note["verdict"], note["metrics"] = "pass", json.loads(h.repo.note(EVALS_REF, pr["base"]["sha"]))["metrics"]
    author = h.clone()
    author.run("fetch", "origin", f"{EVALS_REF}:{EVALS_REF}")
    author.run("notes", "--ref", EVALS_REF, "add", "-f", "-m", json.dumps(note), head)
    author.run("push", "origin", f"+{EVALS_REF}:{EVALS_REF}")
    assert json.loads(h.repo.note(EVALS_REF, head))["verdict"] == "pass"  # the forged note is on GitHub
    again = h.run(pr, action="synchronize")
    assert again.rc == 1 and again.outputs["verdict"] == "inconclusive" and again.llm_requests == len(GREET_CASES)
    assert "eval note already on the head commit was not used" in again.stdout
    assert h.check_runs(head)[-1]["conclusion"] == "failure"


def test_rerun_baseline_uses_the_cache_for_zero_calls(h: Harness):
    pr = h.open_pr("greet-warmly", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")
    first = h.run(pr, args=("--baseline", "rerun", "--concurrency", "3"))
    again = h.run(pr, args=("--baseline", "rerun"), clone=first.clone)
    assert first.report["head_run"]["config"]["concurrency"] == 3
    assert first.llm_requests == ALL_CASES + len(GREET_CASES)
    assert again.llm_requests == 0
    assert again.report["comparison"]["verdict"] == "pass"
    assert again.report["baseline"].startswith("re-ran base") and "(baseline: rerun)" in again.report["baseline"]


def test_base_with_an_eval_note_is_not_reevaluated_and_without_one_it_is(h: Harness):
    base = h.repo.head("main")
    first = h.open_pr("greet-warmly", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")
    ran = h.run(first)
    assert ran.report["baseline"] == f"re-ran base `{base[:7]}` (no eval note on it)"
    assert ran.llm_requests == ALL_CASES + len(GREET_CASES)
    note = json.loads(h.repo.note(EVALS_REF, base))
    assert note["role"] == "base" and len(note["cases"]) == ALL_CASES
    second = h.open_pr("answer-more", {"prompts/answer.md": answer_prompt("yes indeed")}, "Answer more")
    ran2 = h.run(second)
    assert ran2.report["baseline"] == f"eval note on base `{base[:7]}`"
    assert ran2.llm_requests == len(ANSWER_CASES)
    assert ran2.report["head_source"] == "ran 10 affected cases (prompts: answer), carried 2 from base"


def test_head_note_is_the_run_result_with_verdict_and_digests_on_top(h: Harness):
    pr = h.open_pr("greet-warmly", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")
    ran = h.run(pr)
    data = h.repo.note(EVALS_REF, pr["head"]["sha"])
    doc = json.loads(data)
    assert doc["verdict"] == "pass" and doc["role"] == "head" and doc["compared_with"] == pr["base"]["sha"]
    assert doc["dataset_digest"].startswith("sha256:") and doc["snapshot_digest"].startswith("sha256:")
    assert doc["metrics"]["pass_rate"] == 1.0 and doc["metrics"]["cases"] == ALL_CASES
    run = load_run(data)
    assert run.rev == pr["head"]["sha"] and {c.id for c in run.cases if c.carried} == set(ANSWER_CASES)
    assert ran.report["notes"] == {"written": True, "pushed": True, "attempts": 1,
                                   "commits": sorted([pr["head"]["sha"], pr["base"]["sha"]])}
    assert data == json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def test_fork_pull_request_writes_nothing_and_says_why(h: Harness):
    pr = h.open_pr("from-fork", {"prompts/answer.md": answer_prompt("no")}, "Fork change", user="mallory")
    ran = h.run(pr, token=h.emu.read_only_token(), fork=True)
    assert ran.rc == 1  # the exit code carries the verdict
    assert h.check_runs(pr["head"]["sha"]) == []
    assert h.requests("checks/create") == [] and h.requests("checks/update") == []
    assert h.repo.note(EVALS_REF, pr["head"]["sha"]) is None and h.repo.note(EVALS_REF, pr["base"]["sha"]) is None
    assert ("> **Nothing was posted to the pull request:** this pull request comes from a fork: its GITHUB_TOKEN "
            "is read-only and repository secrets are withheld, so no check run, comment or eval note was "
            "written. This job's exit code carries the verdict (1).") in ran.summary
    assert "#### Regressions (10)" in ran.summary
    assert ran.outputs["verdict"] == "fail" and ran.outputs["check-run-id"] == ""
    assert "gating: nothing posted: this pull request comes from a fork" in ran.stderr


def test_read_only_token_on_a_same_repo_pull_request_degrades_without_crashing(h: Harness):
    pr = h.open_pr("greet-warmly", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")
    ran = h.run(pr, token=h.emu.read_only_token())
    assert ran.rc == 0, ran.stderr
    assert [r.status for r in h.requests("checks/create")] == [403]
    assert h.requests("checks/update") == []
    assert "GitHub refused to create the check run (403" in ran.summary
    assert "grant `checks: write`" in ran.summary
    assert ran.report["notes"]["pushed"] is False
    assert "the eval note was not pushed to refs/notes/gating/evals" in ran.summary


def credential_free_clone(h: Harness, name: str) -> Git:
    """A checkout as `actions/checkout` leaves it with `persist-credentials: false`: nothing stored."""
    g = h.repo.clone(h.tmp / name, h.token)
    g.run("remote", "set-url", "origin", h.repo.clone_url)
    return g


def assert_token_not_kept(ran, token: str) -> None:
    config = (ran.clone.root / ".git" / "config").read_text(encoding="utf-8")
    assert token not in config and "extraheader" not in config.lower()
    for text in (ran.stdout, ran.stderr, ran.summary, json.dumps(ran.report)):
        assert token not in text


def test_the_given_token_fetches_and_pushes_the_notes_from_a_clone_without_credentials(github, llm, tmp_path,
                                                                                          monkeypatch):
    repo = github.create_repo("acme/private-bot", source_dir=write_system(tmp_path / "src"), private=True)
    h = Harness(github, repo, llm, tmp_path, monkeypatch)
    pr = h.open_pr("greet-warmly", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")
    ran = h.run(pr, clone=credential_free_clone(h, "checkout-1"))
    assert ran.rc == 0, ran.stderr
    assert ran.report["notes"]["pushed"] is True
    assert "not pushed" not in ran.summary
    assert json.loads(h.repo.note(EVALS_REF, pr["head"]["sha"]))["verdict"] == "pass"
    assert_token_not_kept(ran, h.token)
    # a new runner, no stored credentials either: the notes are fetched with the token, and the base's
    # is the baseline (the head is evaluated again: its own note is no evidence for its pull request)
    again = h.run(pr, action="synchronize", clone=credential_free_clone(h, "checkout-2"))
    assert again.rc == 0 and again.llm_requests == len(GREET_CASES)
    assert again.report["baseline"] == f"eval note on base `{pr['base']['sha'][:7]}`"


def test_the_given_token_outranks_a_read_only_header_the_checkout_persisted(h: Harness):
    clone = credential_free_clone(h, "checkout")
    basic = base64.b64encode(f"x-access-token:{h.emu.read_only_token()}".encode()).decode()
    clone.run("config", "--local", f"http.{h.emu.web_url}/.extraheader", f"AUTHORIZATION: basic {basic}")
    pr = h.open_pr("greet-warmly", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")
    ran = h.run(pr, clone=clone)
    assert ran.rc == 0, ran.stderr
    assert ran.report["notes"]["pushed"] is True
    assert h.repo.note(EVALS_REF, pr["head"]["sha"]) is not None


def test_a_read_only_token_from_a_clone_without_credentials_degrades_as_before(h: Harness):
    token = h.emu.read_only_token()
    pr = h.open_pr("greet-warmly", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")
    ran = h.run(pr, token=token, clone=credential_free_clone(h, "checkout"))
    assert ran.rc == 0, ran.stderr
    assert ran.report["notes"]["pushed"] is False
    assert ran.report["notes"]["attempts"] == 1
    assert h.repo.note(EVALS_REF, pr["head"]["sha"]) is None
    assert ("> the eval note was not pushed to refs/notes/gating/evals: remote: Permission to "
            "acme/tiny-bot.git denied to gating-emulated[bot].") in ran.summary.splitlines()
    assert_token_not_kept(ran, token)


def test_crash_still_completes_the_check_run_with_the_error(h: Harness):
    pr = h.open_pr("bad-data", {"evals/cases.jsonl": "{not json\n"}, "Broken dataset")
    ran = h.run(pr)
    assert ran.rc == 2
    [run] = h.check_runs(pr["head"]["sha"])
    assert (run["status"], run["conclusion"]) == ("completed", "failure")
    assert run["output"]["title"].startswith("Error: DatasetError: evals/cases.jsonl:1: ")
    assert run["output"]["summary"].startswith("💥 **Error**: DatasetError: evals/cases.jsonl:1: ")
    assert "gating: error: bad eval dataset:\n  evals/cases.jsonl:1: " in ran.stderr
    assert ran.outputs["verdict"] == "error" and ran.outputs["conclusion"] == "failure"


def test_huge_summary_is_cut_with_a_note_and_120_annotations_go_in_3_requests(h: Harness):
    # a prompt of 240 lines of which every other one changes: 120 changed blocks, all regressing;
    # plus 300 more prompts with long names, all changed: the diff table alone is over 65,535 characters
    long_base = "".join(f"line {i}: keep\n" for i in range(239)) + "[[answer: yes]] {{ n }}\n"
    long_head = "".join(f"line {i}: {'keep' if i % 2 else 'changed'}\n" for i in range(239)) + "[[answer: no]] {{ n }}\n"
    names = [f"reply_template_number_{i:03d}_for_the_support_flow" for i in range(300)]
    extra = "".join(f"    {n}: {{file: prompts/support/flows/{n}.md, model: bot}}\n" for n in names)
    manifest = h.repo.git.show_file("main", "gating.yml").decode().replace(
        "    greet: {file: prompts/greet.md, model: bot}\n", "    greet: {file: prompts/greet.md, model: bot}\n" + extra)
    files = {f"prompts/support/flows/{n}.md": f"prompt {n}\n" for n in names}
    h.repo.commit_files("main", {**files, "gating.yml": manifest, "prompts/answer.md": long_base}, "Many prompts")
    changed = {f"prompts/support/flows/{n}.md": f"prompt {n}, reworded\n" for n in names}
    pr = h.open_pr("rewrite-all", {**changed, "prompts/answer.md": long_head}, "Rewrite every prompt")
    ran = h.run(pr)
    assert ran.rc == 1
    [run] = h.check_runs(pr["head"]["sha"])
    summary, text = run["output"]["summary"], run["output"]["text"]
    assert len(summary.encode()) <= 65_535 and len(text.encode()) <= 65_535
    assert summary.startswith("❌ **Fail**: 10 cases regressed")
    assert "✂️ **Truncated**: showing " in summary and "the full report is in the job summary and the JSON report" \
        in summary
    assert len(ran.report["changes"]["changes"]) == 301  # the JSON report keeps everything
    updates = [r for r in h.requests("checks/update")]
    assert [len(u.json["output"].get("annotations", [])) for u in updates] == [50, 50, 20]
    assert [u.json.get("conclusion") for u in updates] == [None, None, "failure"]
    assert all(u.status == 200 for u in updates)
    starts = [a["start_line"] for u in updates for a in u.json["output"]["annotations"]]
    assert starts == list(range(1, 240, 2))  # the last block is lines 239-240


def test_comment_true_keeps_one_summary_comment_on_the_pull_request(h: Harness):
    pr = h.open_pr("greet-warmly", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")
    first = h.run(pr, args=("--comment", "true"))
    h.run(pr, args=("--comment", "true"), action="synchronize", clone=first.clone)
    [comment] = h.emu.list_comments(h.repo, pr["number"])
    assert comment["body"].startswith("<!-- gating:eval -->\n✅ **Pass**: the 1 threshold met")
    assert [r.operation for r in h.emu.requests if r.operation.startswith("issues/")] == \
        ["issues/list-comments", "issues/create-comment", "issues/list-comments", "issues/update-comment"]


def test_push_to_main_evaluates_the_pushed_commit_against_the_one_before(h: Harness):
    before = h.repo.head("main")
    after = h.repo.commit_files("main", {"prompts/greet.md": greet_prompt("hello, friend")}, "Friendlier")
    payload = h.emu.webhook("push", repo=h.repo, ref="refs/heads/main", before=before, after=after).payload
    ran = h.run_event("push", payload, after)
    assert ran.rc == 0, ran.stderr
    assert (ran.report["base"], ran.report["head"], ran.report["pull_request"]) == (before, after, None)
    [run] = h.check_runs(after)
    assert run["conclusion"] == "success"
    assert json.loads(h.repo.note(EVALS_REF, after))["verdict"] == "pass"


def test_an_unchanged_system_inherits_the_base_note(h: Harness):
    first = h.open_pr("greet-warmly", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")
    h.run(first)  # leaves an eval note on main's tip (its baseline)
    docs = h.open_pr("docs", {"README.md": "# tiny-bot\n\nDocs.\n"}, "Docs")
    ran = h.run(docs)
    assert ran.llm_requests == 0 and ran.outputs["verdict"] == "unchanged"
    base_note, head_note = (json.loads(h.repo.note(EVALS_REF, docs[k]["sha"])) for k in ("base", "head"))
    assert head_note["role"] == "same-system" and head_note["compared_with"] == docs["base"]["sha"]
    assert head_note["cases"] == base_note["cases"] and head_note["snapshot_digest"] == base_note["snapshot_digest"]


def test_removing_the_manifest_is_an_error_and_no_manifest_anywhere_is_nothing_to_check(h: Harness):
    gone = h.open_pr("drop", {"gating.yml": None}, "Drop the manifest")
    ran = h.run(gone)
    assert ran.rc == 2 and "gating.yml:1:1: no gating.yml at " in ran.stderr
    assert h.check_runs(gone["head"]["sha"])[0]["conclusion"] == "failure"
    h.repo.commit_files("main", {"gating.yml": None}, "No manifest on main either")
    later = h.open_pr("docs", {"README.md": "docs\n"}, "Docs")
    ran = h.run(later)
    assert ran.rc == 0
    assert h.check_runs(later["head"]["sha"])[0]["output"]["summary"].startswith(
        "✅ **No LLM system changes** · conclusion `success`")
    assert ran.report["reasons"] == ["there is no gating.yml at base or head, so there is no LLM system to check"]


@pytest.mark.parametrize("verdict, rows, policy, fail_on, want", [
    ("pass", [], False, "regression", ("pass", "success")),
    ("fail", ["regressed"], False, "regression", ("fail", "failure")),
    ("fail", ["regressed"], False, "threshold", ("fail", "neutral")),
    ("fail", ["fail"], False, "threshold", ("fail", "failure")),
    ("fail", ["fail"], False, "never", ("fail", "neutral")),
    ("inconclusive", ["inconclusive"], False, "regression", ("inconclusive", "failure")),  # not waved through
    ("inconclusive", ["inconclusive"], False, "threshold", ("inconclusive", "neutral")),
    ("pass", [], True, "threshold", ("fail", "failure")),
    ("pass", [], True, "never", ("fail", "neutral")),
], ids=["pass", "regression", "regression-threshold-only", "threshold", "never", "inconclusive",
                                "inconclusive-threshold-only", "policy",
        "policy-never"])
def test_decide(verdict: str, rows: list[str], policy: bool, fail_on: str, want: tuple[str, str]):
    from gating.check.run import decide
    from gating.diff.changes import Change, ChangeSet
    from gating.evals.records import Comparison, MetricRow

    cmp = Comparison(verdict, ["why"], [MetricRow(f"m{i}", 1, 0, -1, status=s) for i, s in enumerate(rows)], [],
                     "b", "h", "s1", "s2", "d")
    changes = [Change("model", "components.models.a.model", "changed", "x-2024-01-01", "x", "error",
                      "unpinned alias introduced")] if policy else []
    got_verdict, conclusion, reasons = decide(cmp, ChangeSet("b", "h", "s1", "s2", changes), fail_on)
    assert (got_verdict, conclusion) == want
    if policy:
        assert reasons[0] == "policy error: unpinned alias introduced"


def test_provider_errors_are_counted_by_category_and_make_the_verdict_inconclusive(h: Harness):
    pr = h.open_pr("filtered", {"prompts/greet.md": "Say hello to {{ name }}.\n[[fault:content_filter]]\n"},
                   "Trip the content filter")
    ran = h.run(pr)
    assert ran.rc == 1  # two of the suite's cases fail now: too few to confirm, too many to wave through
    [run] = h.check_runs(pr["head"]["sha"])
    assert run["conclusion"] == "failure" and run["output"]["title"].startswith(
        "Inconclusive (blocking: a drop it could not confirm needs a person or more cases): ")
    summary = run["output"]["summary"]
    assert "#### Errors\n\n| Category | Base | Head |\n|---|---|---|\n| content_filter | 0 | 2 |" in summary
    assert "| `greet-1` | greet | pass | error:content_filter |" in summary


@pytest.mark.parametrize("argv, message", [
    (["--base", "v1.4"], "gating: error: unknown revision 'v1.4': no such branch, tag or commit in this clone\n"),
    (["--head", "nosuch"], "gating: error: unknown revision 'nosuch': no such branch, tag or commit in this clone\n"),
], ids=["base", "head"])
def test_local_check_names_a_revision_that_does_not_exist(example_repo: Git, capsys, argv, message):
    """A name is not fetched (only a sha is), so `fetch-depth: 0` is not the advice to give."""
    assert main(["-C", str(example_repo.root), "check", *argv]) == 2
    assert capsys.readouterr().err == message


def test_local_check_in_a_repository_without_commits(tmp_path: Path, capsys):
    g = init_repo(tmp_path / "new")
    assert main(["-C", str(g.root), "check"]) == 2
    assert capsys.readouterr().err == "gating: error: HEAD: the current branch has no commits yet\n"


@pytest.mark.parametrize("argv", [
    ["check", "--repository", "notarepo"],
    ["check", "--repository", "acme/"],
    ["audit", "backfill", "--repo", "acme bot/x", "--key", "audit.key"],
], ids=["check-no-slash", "check-no-name", "backfill-space"])
def test_a_repository_that_is_not_owner_name_is_refused_before_any_request(example_repo: Git, capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(["-C", str(example_repo.root), *argv])
    assert e.value.code == 2
    flag = "--repository" if argv[0] == "check" else "--repo"
    value = argv[argv.index(flag) + 1]
    assert capsys.readouterr().err.endswith(f"error: argument {flag}: {value!r} is not a GitHub repository; "
                                            "expected OWNER/NAME, e.g. acme/support-bot\n")


def test_a_head_commit_that_cannot_be_fetched_still_writes_the_outputs_and_the_report(h: Harness):
    """The Action's outputs say `error` (not nothing) and the job summary says why."""
    pr = h.open_pr("greet-warmly", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")
    payload = h.event(pr)
    gone = "1234567" * 5 + "12345"
    payload["pull_request"]["head"]["sha"] = gone
    ran = h.run_event("pull_request", payload, gone)
    message = (f"commit {gone} is not in this clone and could not be fetched (check out with `fetch-depth: 0`)")
    assert (ran.rc, ran.stderr) == (2, f"gating: error: {message}\n")
    assert (ran.outputs["verdict"], ran.outputs["conclusion"]) == ("error", "failure")
    assert ran.outputs["report-json"].endswith("/report.json") and ran.outputs["junit"].endswith("/junit.xml")
    assert 'tests="0" failures="0" errors="0"' in ran.junit  # no eval ran: an empty suite, not a missing file
    assert (ran.report["verdict"], ran.report["head"], ran.report["error"]) == ("error", gone, f"ContextError: {message}")
    assert f"ContextError: {message}" in ran.summary
    assert [r.operation for r in h.emu.requests][-1] == "checks/create"  # tried; GitHub refuses an unknown sha
    assert h.check_runs(gone) == []


def test_a_cancelled_job_completes_the_check_run_as_cancelled_and_says_so_in_the_outputs(h: Harness):
    """Actions cancels a job with SIGTERM: the check run must not keep spinning."""
    import signal
    import subprocess
    import sys
    import time

    from check_support import clean_env, parse_outputs

    pr = h.open_pr("slow", {"prompts/greet.md": "Say hello to {{ name }}.\n[[fault:slow delay=30]]\n"}, "Slow model")
    clone = h.clone()
    work = h.tmp / "cancel"
    work.mkdir()
    event = work / "event.json"
    event.write_text(json.dumps(h.event(pr)), encoding="utf-8")
    env = {**clean_env(), **h.env(pr["head"]["sha"], h.token, event, work)}
    before = h.llm.requests
    proc = subprocess.Popen([sys.executable, "-m", "gating", "-C", str(clone.root), "check", "--json",
                             str(work / "report.json")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while not (h.check_runs(pr["head"]["sha"]) and h.llm.requests > before):  # evaluating, check run open
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.endswith("gating: cancelled; the check run was completed as cancelled\n")
    [run] = h.check_runs(pr["head"]["sha"])
    assert (run["status"], run["conclusion"]) == ("completed", "cancelled")
    outputs = parse_outputs((work / "output.txt").read_text(encoding="utf-8"))
    assert (outputs["verdict"], outputs["conclusion"]) == ("cancelled", "cancelled")
    assert json.loads((work / "report.json").read_text(encoding="utf-8"))["verdict"] == "cancelled"


def test_an_input_refused_before_the_check_runs_still_sets_the_outputs(h: Harness):
    """`concurrency: 0` in the workflow: exit 2, and the step outputs and job summary say so."""
    pr = h.open_pr("greet-warmly", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")
    ran = h.run(pr, args=("--concurrency", "0"))
    assert (ran.rc, ran.stderr) == (2, "gating: error: concurrency must be a positive number, not 0\n")
    assert ran.outputs == {"verdict": "error", "conclusion": "failure", "report-json": "", "junit": "",
                           "check-run-id": "", "shard-report": ""}
    assert ran.summary == "## gating / eval: error\n\nThe check did not run: concurrency must be a positive number, not 0\n"
    assert h.check_runs(pr["head"]["sha"]) == []
