"""Snapshots read straight from git objects, or from the working tree, with a stable digest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gating.commands.cli import main
from gating.commands.common import WORKTREE
from gating.commands.diff import compute
from gating.git.repository import Git, commit_all
from gating.git.revision import GitRevision, WorkTree
from gating.system.canonical import sha256_hex
from gating.system.manifest import ManifestError
from gating.system.snapshot import build_snapshot
from gating.testing.example import edit, make_example_repo


def test_snapshot_records_every_file_with_sha256(example_repo: Git) -> None:
    snap = build_snapshot(GitRevision(example_repo, "HEAD"))
    root = example_repo.root
    expected = [
        "evals/cassettes/golden.jsonl", "evals/golden.jsonl", "gating.yml", "guardrails/pii.yml", "prompts/answer.md", "prompts/classify.yml",
        "prompts/system.md", "tools/lookup_order.json", "tools/open_ticket.json",
    ]
    assert sorted(snap.files) == expected
    for path in expected:
        assert snap.files[path] == sha256_hex((root / path).read_bytes())
    assert "app/answer.py" not in snap.files
    assert snap.data["cassettes"] == {"evals/cassettes/golden.jsonl": snap.files["evals/cassettes/golden.jsonl"]}
    assert "evals/cassettes/human_ratings.jsonl" not in snap.files  # `gating calibrate` replays it, not the evals
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


def test_symlinked_prompt_is_refused_the_same_in_work_tree_and_git(example_repo: Git) -> None:
    root = example_repo.root
    (root / "prompts/link.md").symlink_to("/etc/passwd")
    text = (root / "gating.yml").read_text().replace(
        "    system: {file: prompts/system.md}", "    system: {file: prompts/system.md}\n    linked: {file: prompts/link.md}")
    (root / "gating.yml").write_text(text)
    message = ("prompts/link.md:1:1: file is a symbolic link (to '/etc/passwd'), and git keeps only the path a "
               "link points to: commit the file itself in its place, or name its target in gating.yml")
    with pytest.raises(ManifestError) as work:  # neither the link's text nor the file outside the repo
        build_snapshot(WorkTree(root, example_repo))
    commit_all(example_repo, "linked prompt")
    with pytest.raises(ManifestError) as head:
        build_snapshot(GitRevision(example_repo, "HEAD"))
    assert [str(p) for p in work.value.problems] == [str(p) for p in head.value.problems] == [message]


def test_yaml_dates_in_guardrails_stay_text(example_repo: Git, capsys) -> None:
    with (example_repo.root / "guardrails/pii.yml").open("a") as f:
        f.write("reviewed: 2024-01-01\n")
    commit_all(example_repo, "dated guardrail")
    snap = build_snapshot(GitRevision(example_repo, "HEAD"))
    assert snap.components["guardrails"]["pii"]["config"]["reviewed"] == "2024-01-01"
    assert main(["-C", str(example_repo.root), "snapshot", "HEAD", "--digest"]) == 0
    assert capsys.readouterr().out.strip() == snap.digest


def _symlink_tool(root: Path, target: str) -> None:
    (root / "tools/open_ticket.json").unlink()
    (root / "tools/open_ticket.json").symlink_to(target)


@pytest.mark.parametrize("target", ["../shared/open_ticket.json", "/etc/hostname", "missing.json"])
def test_a_symlinked_system_file_is_refused_alike_in_the_work_tree_and_git(example_repo: Git, target: str,
                                                                          capsys) -> None:
    root = example_repo.root
    (root / "shared").mkdir()
    (root / "shared/open_ticket.json").write_bytes((root / "tools/open_ticket.json").read_bytes())
    _symlink_tool(root, target)
    expected = (f"tools/open_ticket.json:1:1: file is a symbolic link (to {target!r}), and git keeps only the "
                "path a link points to: commit the file itself in its place, or name its target in gating.yml\n"
                "gating: 1 problem in the LLM system manifest\n")
    assert main(["-C", str(root), "snapshot", "--digest"]) == 2
    assert capsys.readouterr().err == expected
    commit_all(example_repo, "linked tool")
    assert main(["-C", str(root), "snapshot", "HEAD", "--digest"]) == 2
    assert capsys.readouterr().err == expected


def test_a_git_lfs_pointer_is_not_taken_for_the_prompt(example_repo: Git, capsys) -> None:
    (example_repo.root / "prompts/system.md").write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69f22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")
    commit_all(example_repo, "system prompt in LFS")
    assert main(["-C", str(example_repo.root), "snapshot", "HEAD", "--digest"]) == 2
    assert capsys.readouterr().err == (
        "prompts/system.md:1:1: file is a Git LFS pointer, not the file: gating reads system files from git "
        "objects, where LFS keeps only the pointer; keep system files out of LFS "
        "(git lfs untrack 'prompts/system.md', then git add --renormalize prompts/system.md)\n"
        "gating: 1 problem in the LLM system manifest\n")


def test_a_file_name_that_is_not_utf8_is_named_not_a_traceback(example_repo: Git, capsys) -> None:
    root = example_repo.root
    os.rename(root / "tools/open_ticket.json", os.fsencode(root / "tools") + b"/op\xe9n.json")
    expected = ("tools/op\\xe9n.json:1:1: file name is not UTF-8; rename the file "
                "(the names of system files are recorded as UTF-8 text)\n"
                "gating: 1 problem in the LLM system manifest\n")
    assert main(["-C", str(root), "snapshot", "--digest"]) == 2
    assert capsys.readouterr().err == expected
    commit_all(example_repo, "latin-1 name")
    assert main(["-C", str(root), "snapshot", "HEAD", "--digest"]) == 2
    assert capsys.readouterr().err == expected


def test_a_file_in_a_submodule_is_named_as_such(example_repo: Git, tmp_path: Path, capsys) -> None:
    other = make_example_repo(tmp_path / "other")
    example_repo.run("-c", "protocol.file.allow=always", "submodule", "add", "--quiet", str(other.root), "vendor")
    edit(example_repo.root / "gating.yml", "{file: prompts/system.md}", "{file: vendor/prompts/system.md}")
    edit(example_repo.root / "gating.yml", '"tools/*.json"', '"vendor/tools/*.json"')
    expected = ("gating.yml:13:20: components.prompts.system.file: 'vendor/prompts/system.md' is inside the git "
                "submodule 'vendor', whose files are not part of this repository's revisions: copy the file "
                "into the repository\n"
                "gating.yml:22:13: components.tools.files[0]: 'vendor/tools/*.json' is inside the git "
                "submodule 'vendor', whose files are not part of this repository's revisions: copy the file "
                "into the repository\n"
                "gating: 2 problems in the LLM system manifest\n")
    assert main(["-C", str(example_repo.root), "snapshot", "--digest"]) == 2
    assert capsys.readouterr().err == expected
    commit_all(example_repo, "prompt in a submodule")
    assert main(["-C", str(example_repo.root), "snapshot", "HEAD", "--digest"]) == 2
    assert capsys.readouterr().err == expected


def test_a_crlf_checkout_has_the_snapshot_of_its_commit(example_repo: Git, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    Git(tmp_path).run("clone", "--quiet", "-c", "core.autocrlf=true", str(example_repo.root), str(clone))
    assert b"\r\n" in (clone / "prompts/system.md").read_bytes()  # as a Windows checkout has it
    g = Git(clone)
    head = build_snapshot(GitRevision(g, "HEAD"))
    assert build_snapshot(WorkTree(clone, g)).digest == head.digest
    edit(clone / "prompts/system.md", "Keep answers under 120 words", "Keep answers under 90 words")
    cs = compute(g, "HEAD", WORKTREE)
    assert [c.summary for c in cs.changes] == ["prompt `system` changed: +1 −1 lines in prompts/system.md"]
