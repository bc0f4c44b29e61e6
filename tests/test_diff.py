"""Semantic diff between two real git revisions of the example system."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gating.commands.cli import main
from gating.commands.diff import compute
from gating.diff.semantic import is_pinned
from gating.git.repository import Git, commit_all
from gating.testing.example import edit


def change(repo: Git, message: str, fn) -> tuple[str, str]:
    base = repo.rev_parse("HEAD")
    fn(repo.root)
    return base, commit_all(repo, message)


def summaries(repo: Git, base: str, head: str) -> list[tuple[str, str, str]]:
    return [(c.category, c.risk, c.summary) for c in compute(repo, base, head).changes]


def test_model_repin(example_repo: Git) -> None:
    base, head = change(example_repo, "repin", lambda r: edit(r / "gating.yml", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20"))
    cs = compute(example_repo, base, head)
    assert [(c.category, c.path, c.before, c.after, c.risk) for c in cs.changes] == [
        ("model", "components.models.answer.model", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20", "high")
    ]
    assert cs.changes[0].summary == "model pin changed: `answer` gpt-4o-2024-08-06 → gpt-4o-2024-11-20"
    assert cs.affected_prompts() == {"answer", "classify"}


def test_unpinned_alias_is_an_error_and_exit_1(example_repo: Git, capsys) -> None:
    base, head = change(example_repo, "alias", lambda r: edit(r / "gating.yml", "gpt-4o-2024-08-06", "gpt-4o"))
    assert main(["-C", str(example_repo.root), "diff", base, head]) == 1
    out, err = capsys.readouterr()
    assert "**Policy error:** unpinned alias introduced: `answer` moves from gpt-4o-2024-08-06 to gpt-4o" in out
    assert err.startswith("gating: policy error: unpinned alias introduced")


def test_moving_from_one_alias_to_another_is_still_an_alias_introduced(example_repo: Git) -> None:
    change(example_repo, "alias", lambda r: edit(r / "gating.yml", "gpt-4o-2024-08-06", "gpt-4o"))
    base, head = change(example_repo, "other alias", lambda r: edit(r / "gating.yml", "model: gpt-4o\n", "model: gpt-4o-mini\n"))
    assert summaries(example_repo, base, head) == [
        ("model", "error", "unpinned alias introduced: `answer` moves from gpt-4o to gpt-4o-mini; pin a dated snapshot")
    ]


@pytest.mark.parametrize(
    ("model", "pinned"),
    [("gpt-4o-2024-08-06", True), ("gpt-4o", False), ("claude-3-5-sonnet-20241022", True),
     ("claude-3-5-sonnet-latest", False), ("gpt-4-0613", True), ("llama3@sha256:" + "a" * 64, True),
     ("mistral-large-latest", False)],
)
def test_is_pinned(model: str, pinned: bool) -> None:
    assert is_pinned({"model": model}) is pinned


@pytest.mark.parametrize("model", [
    "gpt-4-1106-preview", "gpt-4-0125-preview", "ft:gpt-4o-mini-2024-07-18:acme::9abcDEF1",
    "anthropic.claude-3-5-sonnet-20241022-v2:0", "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
    "anthropic.claude-3-haiku-20240307-v1:0:200k", "meta.llama3-1-70b-instruct-v1:0",
    "mistral.mistral-7b-instruct-v0:2", "amazon.nova-pro-v1:0", "claude-3-5-sonnet-v2@20241022",
    "mistral-large@2407", "jamba-1.5-large@001", "gemini-1.5-pro-002", "gemini-2.0-flash-001",
    "gemini-2.5-pro-preview-03-25", "mistral-large-2407", "claude-sonnet-4-20250514",
])
def test_real_pinned_ids_are_not_called_aliases(model: str) -> None:
    assert is_pinned({"model": model}) is True


@pytest.mark.parametrize("model", [
    "gpt-4-turbo", "gpt-4-turbo-preview", "chatgpt-4o-latest", "o3-mini", "claude-opus-4-0", "claude-sonnet-4-5",
    "gemini-1.5-pro", "gemini-2.0-flash", "gemini-flash-latest", "open-mistral-nemo", "llama3.1:8b",
    "llama3:latest", "llama3.1:70b-instruct-q4_K_M", "gemini-pro@latest", "meta-llama/llama-3.1-70b-instruct:free",
    "LLAMA3:LATEST",
])
def test_real_aliases_do_not_pass_as_pinned(model: str) -> None:
    assert is_pinned({"model": model}) is False


def test_retrieval_change_requires_full_reevaluation(example_repo: Git) -> None:
    base, head = change(example_repo, "emb", lambda r: edit(r / "gating.yml", "text-embedding-3-large", "text-embedding-3-small"))
    cs = compute(example_repo, base, head)
    assert summaries(example_repo, base, head) == [
        ("retrieval", "high",
         "retrieval embedding model: text-embedding-3-large → text-embedding-3-small; requires full re-evaluation")
    ]
    assert cs.affected_prompts() is None and cs.full_reeval


def test_prompt_change_lines_and_excerpt(example_repo: Git) -> None:
    def fn(r: Path) -> None:
        edit(r / "prompts/system.md", "Keep answers under 120 words", "Keep answers under 60 words")
        with (r / "prompts/system.md").open("a") as f:
            f.write("Always greet the customer by name.\n")

    base, head = change(example_repo, "prompt", fn)
    [c] = compute(example_repo, base, head).changes
    assert (c.category, c.risk, c.lines_added, c.lines_removed) == ("prompt", "medium", 2, 1)
    assert c.summary == "prompt `system` changed: +2 −1 lines in prompts/system.md"
    assert c.affects == ("answer", "system")  # answer uses system as its system prompt
    assert "-Keep answers under 120 words and use the customer's language." in c.detail
    assert "+Always greet the customer by name." in c.detail
    assert c.changed_lines == (5, 6)


@pytest.mark.parametrize(("rewrite", "what"), [
    pytest.param(lambda b: b.replace(b"\n", b"\r\n"), "line endings only (LF → CRLF)", id="to-crlf"),
    pytest.param(lambda b: b.rstrip(b"\n"), "final newline removed", id="final-newline"),
])
def test_line_ending_only_prompt_change_claims_no_changed_lines(example_repo: Git, rewrite, what) -> None:
    def fn(r: Path) -> None:
        p = r / "prompts/system.md"
        p.write_bytes(rewrite(p.read_bytes()))

    base, head = change(example_repo, "eol", fn)
    [c] = compute(example_repo, base, head).changes
    assert (c.risk, c.summary) == ("low", f"prompt `system` changed: {what} in prompts/system.md; no line's text changed")
    assert (c.lines_added, c.lines_removed, c.changed_lines, c.detail) == (0, 0, (), "")
    assert c.affects == ("answer", "system")  # the bytes sent may differ: its cases still re-run


def test_crlf_file_with_one_edited_line_counts_that_line(example_repo: Git) -> None:
    def fn(r: Path) -> None:
        p = r / "prompts/system.md"
        p.write_bytes(p.read_bytes().replace(b"\n", b"\r\n").replace(b"120 words", b"60 words"))

    base, head = change(example_repo, "eol and edit", fn)
    [c] = compute(example_repo, base, head).changes
    assert (c.lines_added, c.lines_removed, c.changed_lines) == (1, 1, (5,))
    assert c.summary == "prompt `system` changed: +1 −1 lines in prompts/system.md (line endings also changed)"


def test_renamed_prompt_file(example_repo: Git) -> None:
    def fn(r: Path) -> None:
        (r / "prompts/answer.md").rename(r / "prompts/answer_v2.md")
        edit(r / "gating.yml", "file: prompts/answer.md", "file: prompts/answer_v2.md")

    base, head = change(example_repo, "rename", fn)
    assert summaries(example_repo, base, head) == [
        ("prompt", "low", "prompt `answer` file renamed prompts/answer.md → prompts/answer_v2.md (content unchanged)")
    ]
    assert compute(example_repo, base, head).affected_prompts() == set()


def test_tool_breaking_changes(example_repo: Git) -> None:
    def fn(r: Path) -> None:
        doc = json.loads((r / "tools/lookup_order.json").read_text())
        del doc["parameters"]["properties"]["include_items"]
        doc["parameters"]["properties"]["email"] = {"type": "string"}
        doc["parameters"]["required"].append("email")
        (r / "tools/lookup_order.json").write_text(json.dumps(doc, indent=2))
        doc2 = json.loads((r / "tools/open_ticket.json").read_text())
        doc2["parameters"]["properties"]["tags"] = {"type": "array"}
        (r / "tools/open_ticket.json").write_text(json.dumps(doc2))

    base, head = change(example_repo, "tools", fn)
    assert summaries(example_repo, base, head) == [
        ("tool", "breaking", "tool `lookup_order`: parameter `include_items` removed (breaking)"),
        ("tool", "breaking", "tool `lookup_order`: parameter `email` is newly required (breaking)"),
        ("tool", "low", "tool `open_ticket`: optional parameter `tags` added"),
    ]


def test_tool_parameter_narrowed_is_breaking(example_repo: Git) -> None:
    def fn(r: Path) -> None:
        doc = json.loads((r / "tools/open_ticket.json").read_text())
        props = doc["parameters"]["properties"]
        props["priority"]["enum"] = ["low", "normal"]
        props["summary"]["type"] = "integer"
        (r / "tools/open_ticket.json").write_text(json.dumps(doc, indent=2))
        doc = json.loads((r / "tools/lookup_order.json").read_text())
        doc["parameters"]["properties"]["include_items"]["enum"] = [True]
        doc["parameters"]["properties"]["order_id"]["type"] = ["string", "null"]
        (r / "tools/lookup_order.json").write_text(json.dumps(doc, indent=2))

    base, head = change(example_repo, "narrow", fn)
    assert summaries(example_repo, base, head) == [
        ("tool", "breaking", "tool `lookup_order`: parameter `include_items` now only accepts True (breaking)"),
        ("tool", "low", "tool `lookup_order`: parameter `order_id` now also accepts type null"),
        ("tool", "breaking", "tool `open_ticket`: parameter `priority` no longer accepts high (breaking)"),
        ("tool", "breaking", "tool `open_ticket`: parameter `summary` type changed string → integer (breaking)"),
    ]


def test_tool_enum_widened_is_not_breaking(example_repo: Git) -> None:
    def fn(r: Path) -> None:
        doc = json.loads((r / "tools/open_ticket.json").read_text())
        doc["parameters"]["properties"]["priority"]["enum"].append("urgent")
        (r / "tools/open_ticket.json").write_text(json.dumps(doc, indent=2))

    base, head = change(example_repo, "widen", fn)
    assert summaries(example_repo, base, head) == [
        ("tool", "low", "tool `open_ticket`: parameter `priority` now also accepts urgent"),
    ]


def test_tool_removed_and_component_removed(example_repo: Git) -> None:
    def fn(r: Path) -> None:
        (r / "tools/open_ticket.json").unlink()
        text = (r / "gating.yml").read_text()
        text = text.replace("    classify: {file: prompts/classify.yml, model: answer}\n", "")
        (r / "gating.yml").write_text(text)
        (r / "prompts/classify.yml").unlink()
        (r / "evals/golden.jsonl").write_text(
            "\n".join(line for line in (r / "evals/golden.jsonl").read_text().splitlines() if "classify" not in line)
            + "\n"
        )

    base, head = change(example_repo, "remove", fn)
    got = summaries(example_repo, base, head)
    assert ("prompt", "high", "prompt `classify` removed (prompts/classify.yml)") in got
    assert ("tool", "breaking", "tool `open_ticket` removed: breaking for callers") in got
    assert ("evals", "high", "eval case `classify-billing` removed") in got


def test_guardrail_and_orchestration(example_repo: Git) -> None:
    def fn(r: Path) -> None:
        edit(r / "guardrails/pii.yml", "action: redact", "action: block")
        edit(r / "gating.yml", "retries: 2", "retries: 0")

    base, head = change(example_repo, "guard", fn)
    assert summaries(example_repo, base, head) == [
        ("guardrail", "medium", "guardrail `pii` action: redact → block"),
        ("orchestration", "medium", "orchestration retries: 2 → 0"),
    ]


def test_loosened_thresholds_and_rules(example_repo: Git) -> None:
    def fn(r: Path) -> None:
        edit(r / "gating.yml", 'pass_rate: ">= 0.80"', 'pass_rate: ">= 0.60"')
        edit(r / "gating.yml", 'latency_p95_ms: "<= 3000"', 'latency_p95_ms: "<= 2000"')
        edit(r / "gating.yml", "max_drop: 0.05", "max_drop: 0.2")
        edit(r / "gating.yml", "options: {invalidate_on_push: true}", "options: {invalidate_on_push: false}")
        edit(r / "gating.yml", "requires: {count: 1, teams: [\"acme/ml-platform\"]}", "requires: {count: 0, teams: [\"acme/ml-platform\"]}")

    base, head = change(example_repo, "loosen", fn)
    got = summaries(example_repo, base, head)
    assert ("evals", "high", "threshold loosened: pass_rate >= 0.80 → >= 0.60") in got
    assert ("evals", "low", "threshold latency_p95_ms: <= 3000 → <= 2000") in got
    assert ("evals", "high", "regression rule loosened: max_drop 0.05 → 0.2") in got
    assert ("policy", "high", "approval rule loosened: `model-owners` needs 0 approvals (was 1)") in got
    assert ("policy", "high", "approval rule loosened: `prompt-review` invalidate_on_push True → False") in got


def test_regression_rule_removed_whole_is_loosened(example_repo: Git) -> None:
    base, head = change(example_repo, "no regression rule", lambda r: edit(
        r / "gating.yml", "  regression: {max_drop: 0.05, alpha: 0.05}\n", ""))
    assert summaries(example_repo, base, head) == [
        ("evals", "high", "regression rule loosened: evals.regression removed"),
    ]


def test_approval_rules_loosened_in_other_ways(example_repo: Git) -> None:
    def fn(r: Path) -> None:
        edit(r / "gating.yml", "requires: {count: 1, permission: write}", "requires: {count: 1, permission: read}")
        edit(r / "gating.yml", "    options: {invalidate_on_push: true}\n", "")

    base, head = change(example_repo, "loosen", fn)
    assert summaries(example_repo, base, head) == [
        ("policy", "high", "approval rule loosened: `prompt-review` invalidate_on_push True → None"),
        ("policy", "high", "approval rule loosened: `prompt-review` permission write → read"),
    ]


def test_dropping_an_option_that_was_already_its_default_loosens_nothing(example_repo: Git) -> None:
    base, head = change(example_repo, "explicit", lambda r: edit(
        r / "gating.yml", "options: {invalidate_on_push: true}",
        "options: {invalidate_on_push: true, allow_author: false, require_evidence: true}"))
    base, head = head, change(example_repo, "implicit", lambda r: edit(
        r / "gating.yml", ", allow_author: false, require_evidence: true}", "}"))[1]
    assert [risk for _, risk, _ in summaries(example_repo, base, head)] == ["medium", "medium"]


def test_condition_added_to_a_rule_without_one_narrows_it(example_repo: Git) -> None:
    base, head = change(example_repo, "narrow", lambda r: edit(
        r / "gating.yml", "  - name: model-owners\n    if: {manifest_paths: [\"components.models.*.model\"]}\n",
        "  - name: model-owners\n"))
    base, head = head, change(example_repo, "narrow again", lambda r: edit(
        r / "gating.yml", "  - name: model-owners\n", "  - name: model-owners\n    if: {labels: [models]}\n"))[1]
    assert summaries(example_repo, base, head) == [
        ("policy", "high", "approval rule loosened: `model-owners` applies to fewer changes (if: None → {'labels': ['models']})"),
    ]


def test_no_changes_is_explicit(example_repo: Git, capsys) -> None:
    base, head = change(example_repo, "readme", lambda r: (r / "README.md").write_text("docs only\n"))
    assert main(["-C", str(example_repo.root), "diff", base, head]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Compared `{base[:7]}` with `{head[:7]}`.\n\n### LLM system: no changes")
    assert main(["-C", str(example_repo.root), "diff", base, head, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["empty"] is True and doc["changes"] == []


def test_default_base_is_merge_base_with_default_branch(example_repo: Git, capsys) -> None:
    g = example_repo
    fork_point = g.rev_parse("HEAD")
    g.run("checkout", "-q", "-b", "feature")
    edit(g.root / "gating.yml", "top_k: 5", "top_k: 6")
    commit_all(g, "feature: top_k")
    g.run("checkout", "-q", "main")
    edit(g.root / "prompts/system.md", "Acme's", "ACME's")
    commit_all(g, "main moves on")
    g.run("checkout", "-q", "feature")
    assert main(["-C", str(g.root), "diff", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["base"] == fork_point
    assert [c["path"] for c in doc["changes"]] == ["components.retrieval.top_k"]  # main's prompt edit is not ours


def test_manifest_invalid_only_at_head(example_repo: Git, capsys) -> None:
    base, head = change(example_repo, "break", lambda r: edit(r / "gating.yml", "top_k: 5", "top_k: five"))
    assert main(["-C", str(example_repo.root), "diff", base, head]) == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        "gating.yml:20:12: components.retrieval.top_k: expected a whole number, got 'five' (a string)"
    )


def test_base_without_manifest_counts_as_empty_system(git_repo: Git, tmp_path: Path, capsys) -> None:
    import shutil

    from gating.testing.example import example_dir

    (git_repo.root / "README.md").write_text("app\n")
    base = commit_all(git_repo, "before gating")
    shutil.copytree(example_dir(), git_repo.root, dirs_exist_ok=True)
    head = commit_all(git_repo, "adopt gating")
    cs = compute(git_repo, base, head)
    assert {c.kind for c in cs.changes} == {"added"}, [c for c in cs.changes if c.kind != "added"]
    assert ("prompt", "components.prompts.answer") in [(c.category, c.path) for c in cs.changes]


def test_no_change_names_short_revisions(example_repo: Git) -> None:
    from gating.diff.render import render_diff_markdown

    base, head = change(example_repo, "readme", lambda r: (r / "README.md").write_text("docs\n"))
    text = render_diff_markdown(compute(example_repo, base, head))
    assert text.endswith(f"Nothing in the LLM system changed between `{base[:7]}` and `{head[:7]}`.\n")


def test_change_that_affects_no_eval_case_says_so(example_repo: Git) -> None:
    from gating.diff.render import render_diff_markdown

    base, head = change(example_repo, "spare model", lambda r: edit(
        r / "gating.yml", "    judge:\n", "    spare: {provider: openai, model: gpt-4o-mini-2024-07-18}\n    judge:\n"))
    text = render_diff_markdown(compute(example_repo, base, head))
    assert "Re-evaluate: no eval cases (nothing evaluated changed)." in text


def test_narrowed_approval_condition_is_loosening(example_repo: Git) -> None:
    base, head = change(example_repo, "narrow", lambda r: edit(
        r / "gating.yml", 'manifest_paths: ["components.models.*.model"]',
        'manifest_paths: ["components.models.*.model"], labels: [models]'))
    assert summaries(example_repo, base, head) == [
        ("policy", "high", "approval rule loosened: `model-owners` applies to fewer changes (if.labels: None → ['models'])")
    ]


def test_reordered_approval_lists_are_no_change(example_repo: Git) -> None:
    base, head = change(example_repo, "reorder", lambda r: edit(
        r / "gating.yml", "categories: [prompt, retrieval, tool, guardrail]", "categories: [tool, guardrail, prompt, retrieval]"))
    assert compute(example_repo, base, head).is_empty


@pytest.mark.parametrize("before, after, risk, summary", [
    ("ignore: [docs/**]", "ignore: [docs/**, prompts/**]", "high",
     "approval rule loosened: `prompt-review` applies to fewer changes (if.ignore[1]: None → prompts/**)"),
    ("ignore: [docs/**, prompts/**]", "ignore: [docs/**]", "medium",
     "approval rule `prompt-review` applies more widely: condition if.ignore[1] removed"),
], ids=["ignore-more", "ignore-less"])
def test_ignore_works_the_other_way_round(example_repo: Git, before: str, after: str, risk: str, summary: str) -> None:
    rule = "if: {categories: [prompt, retrieval, tool, guardrail]"
    edit(example_repo.root / "gating.yml", rule, f"{rule}, {before}")
    commit_all(example_repo, "an ignore list")
    base, head = change(example_repo, "ignore", lambda r: edit(r / "gating.yml", before, after))
    assert summaries(example_repo, base, head) == [("policy", risk, summary)]


def test_a_strict_threshold_made_inclusive_is_loosened(example_repo: Git) -> None:
    edit(example_repo.root / "gating.yml", 'pass_rate: ">= 0.80"', 'pass_rate: "> 0.80"')
    commit_all(example_repo, "strict")
    base, head = change(example_repo, "inclusive", lambda r: edit(r / "gating.yml", '"> 0.80"', '">= 0.80"'))
    assert summaries(example_repo, base, head) == [("evals", "high", "threshold loosened: pass_rate > 0.80 → >= 0.80")]


COMBINED = """  - name: release
    or:
      - {name: two-maintainers, requires: {count: 2, permission: maintain}}
      - {name: an-owner, requires: {users: ["@alice"]}}
"""


@pytest.mark.parametrize("old, new, risk, summary", [
    ("{count: 2, permission: maintain}", "{count: 1, permission: maintain}", "high",
     "approval rule loosened: `release` › `or[0]` needs 1 approvals (was 2)"),
    ("{count: 2, permission: maintain}", "{count: 2, permission: write}", "high",
     "approval rule loosened: `release` › `or[0]` permission maintain → write"),
    ('      - {name: an-owner, requires: {users: ["@alice"]}}\n',
     '      - {name: an-owner, requires: {users: ["@alice"]}}\n      - {name: anyone, requires: {count: 1}}\n',
     "high", "approval rule loosened: `release` or[2] (`anyone`) added: one more way to be approved"),
    ('      - {name: an-owner, requires: {users: ["@alice"]}}\n', "", "medium",
     "approval rule `release` or[1] (`an-owner`) removed"),
], ids=["child-count", "child-permission", "or-child-added", "or-child-removed"])
def test_child_rules_are_judged_like_rules(example_repo: Git, old: str, new: str, risk: str, summary: str) -> None:
    with (example_repo.root / "gating.yml").open("r+") as f:
        text = f.read().replace("rollback:\n", COMBINED + "rollback:\n", 1)
        f.seek(0), f.write(text), f.truncate()
    commit_all(example_repo, "a combined rule")
    base, head = change(example_repo, "child", lambda r: edit(r / "gating.yml", old, new))
    assert summaries(example_repo, base, head) == [("policy", risk, summary)]


@pytest.mark.parametrize("old, new, risk, summary", [
    ('teams: ["acme/ml-platform"]}', 'teams: ["acme/ml-platform", "acme/everyone"]}', "high",
     "approval rule loosened: `model-owners` may also be approved by acme/everyone"),
    ('teams: ["acme/ml-platform"]}', 'teams: ["acme/ml-platform"], users: ["@carol"]}', "high",
     "approval rule loosened: `model-owners` may also be approved by ['@carol']"),
    ('teams: ["acme/ml-platform"]}', 'teams: []}', "high",
     "approval rule loosened: `model-owners` may now be approved by anyone (no users, teams or permission left)"),
    ('teams: ["acme/ml-platform"]}', 'teams: ["acme/ml-platform-leads"]}', "medium",
     "approval rule `model-owners` requires.teams[0]: acme/ml-platform → acme/ml-platform-leads"),
], ids=["team-added", "users-added", "last-team-dropped", "team-swapped"])
def test_who_may_approve_widened_is_loosening(example_repo: Git, old: str, new: str, risk: str, summary: str) -> None:
    base, head = change(example_repo, "approvers", lambda r: edit(r / "gating.yml", old, new))
    assert summaries(example_repo, base, head) == [("policy", risk, summary)]


def test_unrelated_histories_say_so(example_repo: Git, capsys) -> None:
    g = example_repo
    g.run("checkout", "-q", "--orphan", "other")
    commit_all(g, "unrelated root")
    assert main(["-C", str(g.root), "diff"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("HEAD and main have no common ancestor (unrelated histories); pass BASE explicitly")


def test_prompt_excerpt_is_a_unified_diff_with_one_line_of_context() -> None:
    import difflib
    import random

    from gating.diff.semantic import _text_diff

    rng = random.Random(7)
    for _ in range(500):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 25))]
        b = list(a)
        for _ in range(rng.randint(0, 5)):
            i = rng.randint(0, len(b))
            op = rng.random()
            if op < 0.4:
                b.insert(i, rng.choice("abcdefg"))
            elif b:
                j = min(i, len(b) - 1)
                if op < 0.7:
                    del b[j]
                else:
                    b[j] = rng.choice("xyz")
        added, removed, excerpt, lines = _text_diff("\n".join(a), "\n".join(b), "p.md", "p.md", excerpt_lines=10**6)
        expected = list(difflib.unified_diff(a, b, "a/p.md", "b/p.md", n=1, lineterm=""))[2:]
        assert excerpt == "\n".join(expected), (a, b)
        assert added == sum(1 for x in expected if x.startswith("+"))
        assert removed == sum(1 for x in expected if x.startswith("-"))
        assert [b[n - 1] for n in lines] == [x[1:] for x in expected if x.startswith("+")]


def test_no_default_branch_asks_for_base(example_repo: Git, capsys) -> None:
    example_repo.run("branch", "-m", "main", "work")
    assert main(["-C", str(example_repo.root), "diff"]) == 2
    assert capsys.readouterr().err == "gating: error: no default branch found (origin/HEAD, main or master); pass BASE\n"


def test_a_bare_repository_snapshots_and_diffs_revisions(example_repo: Git, tmp_path: Path, capsys) -> None:
    base, head = change(example_repo, "repin", lambda r: edit(r / "gating.yml", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20"))
    bare = tmp_path / "bare.git"
    Git(tmp_path).run("clone", "--quiet", "--bare", str(example_repo.root), str(bare))
    assert main(["-C", str(example_repo.root), "snapshot", "HEAD", "--digest"]) == 0
    expected = capsys.readouterr().out
    assert main(["-C", str(bare), "snapshot", "HEAD", "--digest"]) == 0
    assert capsys.readouterr().out == expected
    assert main(["-C", str(bare), "diff", base, head]) == 0
    assert "model pin changed: `answer` gpt-4o-2024-08-06 → gpt-4o-2024-11-20" in capsys.readouterr().out
    assert main(["-C", str(bare), "snapshot"]) == 2
    assert capsys.readouterr().err == (f"gating: error: {bare.resolve()} is a bare repository, with no working "
                                       "tree to read: name a revision (gating snapshot HEAD)\n")


def test_a_base_missing_from_a_shallow_clone_says_so(example_repo: Git, tmp_path: Path, capsys) -> None:
    change(example_repo, "repin", lambda r: edit(r / "gating.yml", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20"))
    shallow = tmp_path / "shallow"
    Git(tmp_path).run("clone", "--quiet", "--depth", "1", f"file://{example_repo.root}", str(shallow))
    assert main(["-C", str(shallow), "diff", "HEAD~1", "HEAD"]) == 2
    assert capsys.readouterr().err == (
        "gating: error: git rev-parse HEAD~1 failed (128): unknown revision 'HEAD~1' (this is a shallow clone, "
        "so older commits are not here: fetch them, e.g. git fetch --deepen=50 or git fetch --unshallow)\n")


@pytest.mark.parametrize("old, new, risk, summary", [
    ('threshold: "> 0.02", for: 15m', 'threshold: "> 0.10", for: 15m', "high",
     "monitor loosened: rule `error-rate` threshold > 0.02 → > 0.10 fires later"),
    ('threshold: "> 0.02", for: 15m', 'threshold: "> 0.01", for: 15m', "medium",
     "monitor rule `error-rate` threshold: > 0.02 → > 0.01"),
    ('threshold: "> 0.02", for: 15m', 'threshold: "> 0.02", for: 2h', "high",
     "monitor loosened: rule `error-rate` window 15m → 2h fires later"),
    ("min_requests: 200, action: rollback, severity: critical", "min_requests: 200, action: notify, severity: critical",
     "high", "monitor loosened: rule `error-rate` action rollback → notify: no automatic rollback any more"),
    ("bake_minutes: 30", "bake_minutes: 5", "high", "monitor loosened: bake_minutes 30 → 5"),
    ("    - {name: error-rate, metric: error_rate, threshold: \"> 0.02\", for: 15m, min_requests: 200, action: rollback, "
     "severity: critical}\n", "", "high", "monitor loosened: rule `error-rate` removed"),
    ("  rules:\n", "  rules:\n    - {name: p99, metric: latency_p99, threshold: '> 5000', for: 15m, action: notify}\n",
     "low", "monitor rule `p99` added"),
], ids=["threshold-raised", "threshold-lowered", "longer-window", "no-rollback", "shorter-bake", "rule-removed",
        "rule-added"])
def test_monitor_changes_are_policy_changes_and_loosening_is_high_risk(example_repo: Git, old: str, new: str,
                                                                      risk: str, summary: str) -> None:
    base, head = change(example_repo, "monitor", lambda r: edit(r / "gating.yml", old, new))
    assert summaries(example_repo, base, head) == [("policy", risk, summary)]
    assert all(p.startswith("monitor.") for p in compute(example_repo, base, head).paths())


def test_leaves_of_equal_settings_are_none_and_a_changed_type_is_still_a_change() -> None:
    from gating.diff.changes import leaves

    same = {"model": "m", "params": {"temperature": 0, "stop": ["a", "b"]}, "pinned": True}
    assert leaves(same, {**same}) == []
    got = leaves({"t": 1, "u": [1, 2], "v": True, "w": {"x": 0}}, {"t": 1.0, "u": [1, True], "v": 1, "w": {"x": 0}})
    assert [(path, kind) for path, kind, _, _ in got] == [(["t"], "changed"), (["u", 1], "changed"), (["v"], "changed")]
    assert leaves({"a": [1, 2]}, {"a": [2, 1]}, ignore_order=True) == []
