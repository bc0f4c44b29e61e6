"""Snapshots read straight from git objects, or from the working tree, with a stable digest."""

from __future__ import annotations

import json
from pathlib import Path

from gating.cli import main
from gating.git import Git, commit_all
from gating.revision import GitRevision, WorkTree
from gating.snapshot import build_snapshot, sha256_hex


def test_snapshot_records_every_file_with_sha256(example_repo: Git) -> None:
    snap = build_snapshot(GitRevision(example_repo, "HEAD"))
    root = example_repo.root
    expected = [
        "evals/golden.jsonl", "gating.yml", "guardrails/pii.yml", "prompts/answer.md", "prompts/classify.yml",
        "prompts/system.md", "tools/lookup_order.json", "tools/open_ticket.json",
    ]
    assert sorted(snap.files) == expected
    for path in expected:
        assert snap.files[path] == sha256_hex((root / path).read_bytes())
    assert "app/answer.py" not in snap.files
    assert snap.components["prompts"]["answer"] == {
        "file": "prompts/answer.md", "model": "answer", "system": "system",
        "sha256": sha256_hex((root / "prompts/answer.md").read_bytes()),
    }
    assert snap.components["tools"]["lookup_order"]["config"]["parameters"]["required"] == ["order_id"]
    assert snap.components["models"]["answer"]["model"] == "gpt-4o-2024-08-06"


def test_digest_is_stable_and_content_addressed(example_repo: Git, tmp_path: Path) -> None:
    a = build_snapshot(GitRevision(example_repo, "HEAD"))
    b = build_snapshot(WorkTree(example_repo.root, example_repo))
    assert a.digest == b.digest
    assert a.digest.startswith("sha256:") and len(a.digest) == 71
    (example_repo.root / "prompts/system.md").write_text("Be brief.\n")
    c = build_snapshot(WorkTree(example_repo.root, example_repo))
    assert c.digest != a.digest
    assert build_snapshot(GitRevision(example_repo, "HEAD")).digest == a.digest


def test_snapshot_at_old_revision_without_checkout(example_repo: Git) -> None:
    first = example_repo.rev_parse("HEAD")
    (example_repo.root / "prompts/system.md").write_text("Changed.\n")
    commit_all(example_repo, "change system prompt")
    old = build_snapshot(GitRevision(example_repo, first))
    assert old.text("prompts/system.md").startswith("You are Acme's customer support assistant.")


def test_cli_snapshot_worktree_sees_uncommitted_edits(example_repo: Git, capsys) -> None:
    assert main(["-C", str(example_repo.root), "snapshot", "--digest"]) == 0
    clean = capsys.readouterr().out.strip()
    (example_repo.root / "prompts/answer.md").write_text("Just answer: {{ question }}\n")
    assert main(["-C", str(example_repo.root), "snapshot", "--digest"]) == 0
    dirty = capsys.readouterr().out.strip()
    assert main(["-C", str(example_repo.root), "snapshot", "HEAD", "--digest"]) == 0
    head = capsys.readouterr().out.strip()
    assert clean == head != dirty


def test_cli_snapshot_lock_file(example_repo: Git, tmp_path: Path, capsys) -> None:
    lock = tmp_path / "gating.lock"
    assert main(["-C", str(example_repo.root), "snapshot", "HEAD", "--lock", str(lock)]) == 0
    doc = json.loads(lock.read_text())
    assert doc["name"] == "support-bot"
    assert doc["digest"] == build_snapshot(GitRevision(example_repo, "HEAD")).digest
    assert "wrote" in capsys.readouterr().err


def test_one_cat_file_process_per_snapshot(example_repo: Git, spawned: list[list[str]]) -> None:
    build_snapshot(GitRevision(example_repo, "HEAD"))
    batch = [c for c in spawned if c[:2] == ["git", "cat-file"]]
    assert batch == [["git", "cat-file", "--batch"]]  # one process answers every read
    assert len(spawned) == 3  # rev-parse (commit and tree), ls-tree, cat-file


def test_symlinked_prompt_reads_the_same_from_work_tree_and_git(example_repo: Git) -> None:
    root = example_repo.root
    (root / "prompts/link.md").symlink_to("/etc/passwd")
    text = (root / "gating.yml").read_text().replace(
        "    system: {file: prompts/system.md}", "    system: {file: prompts/system.md}\n    linked: {file: prompts/link.md}")
    (root / "gating.yml").write_text(text)
    work = build_snapshot(WorkTree(root, example_repo))
    assert work.contents["prompts/link.md"] == b"/etc/passwd"  # the link, never the file outside the repo
    commit_all(example_repo, "linked prompt")
    assert build_snapshot(GitRevision(example_repo, "HEAD")).digest == work.digest


def test_yaml_dates_in_guardrails_stay_text(example_repo: Git, capsys) -> None:
    with (example_repo.root / "guardrails/pii.yml").open("a") as f:
        f.write("reviewed: 2024-01-01\n")
    commit_all(example_repo, "dated guardrail")
    snap = build_snapshot(GitRevision(example_repo, "HEAD"))
    assert snap.components["guardrails"]["pii"]["config"]["reviewed"] == "2024-01-01"
    assert main(["-C", str(example_repo.root), "snapshot", "HEAD", "--digest"]) == 0
    assert capsys.readouterr().out.strip() == snap.digest
