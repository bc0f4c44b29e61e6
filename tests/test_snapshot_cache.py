"""Snapshots stored by git tree id give the same diffs as snapshots built afresh, at the cost of the change."""

from __future__ import annotations

import marshal
from pathlib import Path

import pytest

from gating.commands.common import WORKTREE
from gating.commands.diff import compute
from gating.diff.semantic import diff_snapshots
from gating.git.repository import Git, GitError, commit_all
from gating.git.revision import GitRevision, WorkTree
from gating.git.snapshot_store import DiskSnapshotCache
from gating.system import manifest, snapshot
from gating.system.snapshot import build_snapshot, differing_prompts
from gating.testing.example import edit


def many_prompts(repo: Git, n: int) -> None:
    """Add n generated prompts to the example system, spread over both models and the system prompt."""
    root = repo.root
    (root / "prompts/gen").mkdir()
    lines = []
    for i in range(n):
        (root / f"prompts/gen/g{i}.md").write_text(f"Prompt {i}.\nRule: be exact.\n{{{{ question }}}}\n")
        extra = ", system: system" if i % 7 == 0 else ""
        lines.append(f"    g{i}: {{file: prompts/gen/g{i}.md, model: answer{extra}}}")
    edit(root / "gating.yml", "    classify: {file: prompts/classify.yml, model: answer}\n",
         "    classify: {file: prompts/classify.yml, model: answer}\n" + "\n".join(lines) + "\n")
    commit_all(repo, f"{n} generated prompts")


def every_kind_of_change(root: Path) -> None:
    edit(root / "gating.yml", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20")
    edit(root / "gating.yml", "    g3: {file: prompts/gen/g3.md, model: answer}\n", "")  # removed
    edit(root / "gating.yml", "g5: {file: prompts/gen/g5.md, model: answer}",
         "g5: {file: prompts/gen/g5.md, model: judge}")  # re-pointed
    edit(root / "gating.yml", "top_k: 5", "top_k: 8")
    edit(root / "gating.yml", 'pass_rate: ">= 0.80"', 'pass_rate: ">= 0.70"')
    edit(root / "gating.yml", "    system: {file: prompts/system.md}\n",
         "    system: {file: prompts/system.md}\n    fresh: {file: prompts/fresh.md, model: answer}\n")
    (root / "prompts/fresh.md").write_text("New prompt.\n")
    for i in (1, 14, 200):
        edit(root / f"prompts/gen/g{i}.md", "be exact", "be exact and brief")
    edit(root / "prompts/system.md", "Keep answers under 120 words", "Keep answers under 90 words")
    edit(root / "tools/lookup_order.json", '"required": ["order_id"]', '"required": ["order_id", "email"]')


@pytest.fixture
def changed(example_repo: Git) -> tuple[Git, str, str]:
    many_prompts(example_repo, 300)
    base = example_repo.rev_parse("HEAD")
    every_kind_of_change(example_repo.root)
    return example_repo, base, commit_all(example_repo, "every kind of change")


def fresh(repo: Git, base: str, head: str):
    """The diff from snapshots built from git objects, with no cache at all."""
    return diff_snapshots(build_snapshot(GitRevision(repo, base)), build_snapshot(GitRevision(repo, head)), base, head)


def test_diff_of_stored_snapshots_equals_diff_of_fresh_ones(changed) -> None:
    repo, base, head = changed
    cold = compute(repo, base, head).to_dict()  # builds and stores both snapshots and both manifests
    cache = DiskSnapshotCache.for_repo(repo)
    assert all((cache.dir / f"{cache.key(repo.tree_of(rev), 'gating.yml')}.snap").is_file() for rev in (base, head))
    assert len(list(cache.dir.glob("*.snap"))) == 4
    warm = compute(Git(repo.root), base, head).to_dict()  # reads both from the store
    assert warm == cold == fresh(repo, base, head).to_dict()
    summaries = [c["summary"] for c in warm["changes"]]
    assert "model pin changed: `answer` gpt-4o-2024-08-06 → gpt-4o-2024-11-20" in summaries
    assert "prompt `g3` removed (prompts/gen/g3.md)" in summaries
    assert "prompt `g5` now uses model 'judge' (was 'answer')" in summaries
    assert "prompt `fresh` added (prompts/fresh.md, 1 lines)" in summaries
    assert "prompt `g14` changed: +1 −1 lines in prompts/gen/g14.md" in summaries
    system = next(c for c in warm["changes"] if c["summary"].startswith("prompt `system` changed"))
    users = ["answer", "system"] + sorted(f"g{i}" for i in range(0, 300, 7) if i != 3)
    assert sorted(system["affects"]) == sorted(users)  # every prompt that uses it as its system prompt
    repin = next(c for c in warm["changes"] if c["summary"].startswith("model pin changed"))
    assert "g299" in repin["affects"] and "g5" in repin["affects"]  # g5 used `answer` at base


def test_stored_snapshot_unpacks_to_the_same_data(changed) -> None:
    repo, base, head = changed
    cache = DiskSnapshotCache.for_repo(repo)
    built = build_snapshot(GitRevision(repo, head), cache=cache)
    stored = build_snapshot(GitRevision(Git(repo.root), head), cache=cache)
    assert stored.prompt_buckets is not None and built.prompt_buckets is None
    assert stored.digest == built.digest
    assert stored.to_json() == built.to_json()
    assert list(stored.components["prompts"]) == list(built.components["prompts"])  # manifest order kept
    assert stored.text("prompts/gen/g14.md") == built.text("prompts/gen/g14.md")
    assert sorted(stored.contents) == sorted(built.files)


def test_stored_diff_unpacks_only_the_buckets_that_changed(changed) -> None:
    repo, base, head = changed
    cache = DiskSnapshotCache.for_repo(repo)
    for rev in (base, head):
        build_snapshot(GitRevision(repo, rev), cache=cache)
    a, b = (build_snapshot(r, cache=cache) for r in GitRevision.many(Git(repo.root), [base, head]))
    bp, hp, names = differing_prompts(a, b)
    assert names == ["fresh", "g1", "g14", "g200", "g3", "g5", "system"]
    assert len(bp) + len(hp) < 40  # a few buckets of ~300 prompts, not the whole section
    assert a._data is None and b._data is None  # nothing else of either snapshot was unpacked


def test_warm_diff_runs_two_git_processes(changed, spawned: list[list[str]]) -> None:
    repo, base, head = changed
    compute(repo, base, head)
    spawned.clear()
    compute(Git(repo.root), base, head)
    assert [c[:2] for c in spawned] == [["git", "rev-parse"], ["git", "cat-file"]]


def test_damaged_or_foreign_store_entries_are_rebuilt(changed) -> None:
    repo, base, head = changed
    expected = compute(repo, base, head).to_dict()
    cache = DiskSnapshotCache.for_repo(repo)
    entries = [cache.dir / f"{cache.key(repo.tree_of(rev), 'gating.yml')}.snap" for rev in (base, head)]
    entries[0].write_bytes(b"\x00garbage")
    entries[1].write_bytes(marshal.dumps({"data": {}, "digest": "sha256:0"}))  # an older layout
    assert compute(Git(repo.root), base, head).to_dict() == expected
    assert compute(Git(repo.root), base, head).to_dict() == expected  # and stored again, whole


def test_diff_against_the_work_tree_mixes_stored_and_fresh(changed) -> None:
    repo, base, head = changed
    compute(repo, base, head)
    edit(repo.root / "prompts/gen/g7.md", "be exact", "be vague")
    cs = compute(Git(repo.root), head, WORKTREE)
    assert [c.summary for c in cs.changes] == ["prompt `g7` changed: +1 −1 lines in prompts/gen/g7.md"]
    work = build_snapshot(WorkTree(repo.root, repo))
    assert cs.to_dict() == diff_snapshots(build_snapshot(GitRevision(repo, head)), work, head, WORKTREE).to_dict()


def test_unknown_revision_is_named(example_repo: Git) -> None:
    with pytest.raises(GitError, match="unknown revision 'nope'"):
        compute(example_repo, "nope", "HEAD")
    with pytest.raises(GitError, match="unknown revision 'nope'"):
        compute(example_repo, "HEAD", "nope")


def test_a_new_head_reads_only_what_differs_from_the_stored_base(changed, monkeypatch) -> None:
    repo, base, head = changed
    expected = compute(repo, base, head).to_dict()
    cache = DiskSnapshotCache.for_repo(repo)
    (cache.dir / f"{cache.key(repo.tree_of(head), 'gating.yml')}.snap").unlink()
    snapshot._SHA_BY_OID.clear()  # as in a new process
    reads: list[str] = []
    real = GitRevision.read_many

    def spy(self, paths):
        paths = list(paths)
        if self.rev == head:
            reads.extend(paths)
        return real(self, paths)

    monkeypatch.setattr(GitRevision, "read_many", spy)
    assert compute(Git(repo.root), base, head).to_dict() == expected
    tools_and_guardrails = ["guardrails/pii.yml", "tools/lookup_order.json", "tools/open_ticket.json"]
    assert sorted(set(reads)) == sorted(["gating.yml", "prompts/fresh.md", "prompts/system.md",
                                         "prompts/gen/g1.md", "prompts/gen/g14.md", "prompts/gen/g200.md",
                                         *tools_and_guardrails])


def test_a_parsed_manifest_is_stored_by_its_bytes(changed) -> None:
    repo, base, head = changed
    expected = compute(repo, base, head).to_dict()
    cache = DiskSnapshotCache.for_repo(repo)
    for rev in (base, head):
        (cache.dir / f"{cache.key(repo.tree_of(rev), 'gating.yml')}.snap").unlink()
    manifest._parse_manifest_cached.cache_clear()
    assert compute(Git(repo.root), base, head).to_dict() == expected
    assert manifest._parse_manifest_cached.cache_info().misses == 0  # both manifests came from the store
    snap = build_snapshot(GitRevision(Git(repo.root), head), cache=cache)
    line = (repo.root / "gating.yml").read_text().splitlines().index("    top_k: 8") + 1
    assert snap.manifest.position(["components", "retrieval", "top_k"])[0] == line  # positions still found


def test_the_store_forgets_what_nobody_used_for_two_weeks(changed) -> None:
    import os
    import time

    from gating.git import snapshot_store as snapshot_cache

    repo, base, head = changed
    compute(repo, base, head)
    cache = DiskSnapshotCache.for_repo(repo)
    in_use = cache.dir / f"{cache.key(repo.tree_of(head), 'gating.yml')}.snap"
    old = time.time() - (snapshot_cache.KEEP_DAYS + 1) * 86400
    stale = cache.dir / "0123.snap"  # an entry of an older version, or of a tree nobody asks for
    stale.write_bytes(b"x")
    left_over = cache.dir / "tmpabc.tmp"  # a write cut off by a killed process
    left_over.write_bytes(b"x")
    for path in (in_use, stale, left_over):
        os.utime(path, (old, old))
    assert build_snapshot(GitRevision(Git(repo.root), head), cache=cache).digest  # a hit touches its entry
    assert time.time() - in_use.stat().st_mtime < 60
    assert cache.prune() == 2
    assert in_use.exists() and not stale.exists() and not left_over.exists()
    assert len(list(cache.dir.glob("*.snap"))) == 4  # both snapshots and both manifests stay
    stale.write_bytes(b"x")
    os.utime(stale, (old, old))
    snapshot_cache._PRUNED.discard(cache.dir)  # as in a new process: its first write prunes the store
    cache.put("fresh", {"a": 1})
    assert not stale.exists() and (cache.dir / "fresh.snap").exists()
