"""The notes store on a real local repository: appends, idempotency, races, fanout, history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gating.audit import entry as audit
from gating.audit import keys
from gating.audit import log as audit_log
from gating.audit.entry import EntryFacts
from gating.audit.log import append_entry, history, read_log
from gating.git.notes import AUDIT_REF, LocalNotes
from gating.git.repository import Git, commit_all

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
KEY = keys.generate()
TRUSTED = {keys.keyid(KEY): KEY.public_key()}


@pytest.fixture
def commits(git_repo: Git) -> list[str]:
    out = []
    for i in range(4):
        (git_repo.root / "f.txt").write_text(f"{i}\n")
        out.append(commit_all(git_repo, f"change {i}"))
    return out


def merged(c: str, actor: str = "alice", **kw) -> EntryFacts:
    return EntryFacts(event="merged", commit=c, repository="acme/support-bot", actor=actor, **kw)


def notes_commits(g: Git) -> list[str]:
    return g.run("rev-list", AUDIT_REF).split()


def test_append_writes_one_line_per_notes_commit(git_repo, commits):
    store = LocalNotes(git_repo)
    r1 = append_entry(store, merged(commits[0]), KEY, NOW)
    r2 = append_entry(store, merged(commits[1]), KEY, NOW + timedelta(minutes=1))
    r3 = append_entry(store, EntryFacts("known_good", commits[0], "acme/support-bot", "deploy-bot",
                                        discriminator="deployment 1"), KEY, NOW + timedelta(minutes=2))
    assert [r.entry.seq for r in (r1, r2, r3)] == [1, 2, 3] and all(r.created for r in (r1, r2, r3))
    assert r2.entry.prev == audit.sha256_line(r1.entry.line) and r1.entry.prev is None
    # git itself reads the notes; the note only grew
    assert git_repo.notes_show(AUDIT_REF, commits[0]) == r1.entry.line + b"\n" + r3.entry.line + b"\n"
    assert git_repo.notes_show(AUDIT_REF, commits[1]) == r2.entry.line + b"\n"
    assert len(notes_commits(git_repo)) == 3
    assert git_repo.run("log", "-1", "--format=%s%n%an <%ae>", AUDIT_REF) == (
        f"audit: known_good seq 3 on {commits[0]}\ngating <gating@users.noreply.github.com>")
    assert audit_log.verify(store, TRUSTED).ok


def test_same_key_twice_is_one_entry(git_repo, commits):
    store = LocalNotes(git_repo)
    first = append_entry(store, merged(commits[0]), KEY, NOW)
    again = append_entry(store, merged(commits[0], actor="someone-else"), KEY, NOW + timedelta(hours=1))
    assert not again.created and again.entry.line == first.entry.line
    assert len(notes_commits(git_repo)) == 1


class Racing(LocalNotes):
    """A second writer gets in between our read of the tip and our ref update (once)."""

    def __init__(self, git: Git, competitor: EntryFacts):
        super().__init__(git)
        self.competitor: EntryFacts | None = competitor

    def write(self, tip, path, data, message, now):
        if self.competitor is not None:
            facts, self.competitor = self.competitor, None
            append_entry(LocalNotes(self.git), facts, KEY, now + timedelta(seconds=1))
        return super().write(tip, path, data, message, now)


def test_a_racing_writer_makes_us_reread_and_chain_after_it(git_repo, commits):
    append_entry(LocalNotes(git_repo), merged(commits[0]), KEY, NOW)
    result = append_entry(Racing(git_repo, merged(commits[2])), merged(commits[1]), KEY, NOW)
    assert result.created and result.attempts == 2 and result.entry.seq == 3
    log = read_log(LocalNotes(git_repo))
    assert [(e.seq, e.commit) for e in log] == [(1, commits[0]), (2, commits[2]), (3, commits[1])]
    assert audit_log.verify(LocalNotes(git_repo), TRUSTED).ok


def test_a_racing_replica_with_the_same_event_leaves_one_entry(git_repo, commits):
    result = append_entry(Racing(git_repo, merged(commits[0])), merged(commits[0]), KEY, NOW)
    assert not result.created and result.attempts == 2
    assert [e.seq for e in read_log(LocalNotes(git_repo))] == [1]
    assert len(notes_commits(git_repo)) == 1


def test_read_log_with_keys_drops_entries_no_trusted_key_signed(git_repo, commits):
    store = LocalNotes(git_repo)
    append_entry(store, merged(commits[0]), KEY, NOW)
    append_entry(store, merged(commits[1]), keys.generate(), NOW)
    assert [e.seq for e in read_log(store)] == [1, 2]
    assert [e.seq for e in read_log(store, TRUSTED)] == [1]


def fast_import_notes(g: Git, ref: str, n: int) -> list[str]:
    """n commits, each with a note, written by git fast-import (which chooses a fanout for many notes)."""
    stream = []
    for i in range(1, n + 1):
        msg = f"c{i}".encode()
        stream += [b"commit refs/heads/many", b"mark :%d" % i,
                   b"committer t <t@e> %d +0000" % (1700000000 + i), b"data %d" % len(msg), msg]
        stream.append(b"")
    for i in range(1, n + 1):
        body = f"note {i}\n".encode()
        stream += [f"commit {ref}".encode(), b"committer t <t@e> 1700000000 +0000", b"data 1", b"x"]
        stream += [b"N inline :%d" % i, b"data %d" % len(body), body, b""]
    g.fast_import(b"\n".join(stream) + b"\n")
    return g.run("rev-list", "--reverse", "refs/heads/many").split()


def test_existing_fanout_is_kept(git_repo):
    ref = "refs/notes/other"
    shas = fast_import_notes(git_repo, ref, 300)
    root = git_repo.ls_tree_level(ref)
    assert all(len(e.path) == 2 and e.type == "tree" for e in root)  # git chose 2-character fanout
    store = LocalNotes(git_repo, ref=ref)
    (git_repo.root / "new.txt").write_text("new\n")
    fresh = commit_all(git_repo, "a commit with no note yet")
    append_entry(store, merged(fresh), KEY, NOW)
    append_entry(store, merged(shas[5]), KEY, NOW)
    paths = {e.path for e in git_repo.ls_tree(ref)}
    assert f"{fresh[:2]}/{fresh[2:]}" in paths and f"{shas[5][:2]}/{shas[5][2:]}" in paths
    assert not any("/" not in p for p in paths)
    assert git_repo.notes_show(ref, shas[5]).startswith(b"note 6\n{")
    assert git_repo.notes_show(ref, fresh).count(b"\n") == 1


def test_flat_layout_stays_flat(git_repo, commits):
    store = LocalNotes(git_repo)
    for c in commits:
        append_entry(store, merged(c), KEY, NOW)
    assert sorted(e.path for e in git_repo.ls_tree(AUDIT_REF)) == sorted(commits)


def test_history_walks_every_notes_commit_in_one_pass(git_repo, commits):
    store = LocalNotes(git_repo)
    for c in commits[:3]:
        append_entry(store, merged(c), KEY, NOW)
    append_entry(store, EntryFacts("known_good", commits[0], "r", "a", discriminator="1"), KEY, NOW)
    hist = history(store, store.tip())
    assert [len(h.changes) for h in hist] == [1, 1, 1, 1]
    assert [h.changes[0].commit for h in hist] == commits[:3] + commits[:1]
    lines = audit.split_lines(git_repo.notes_show(AUDIT_REF, commits[0]))
    # appends are recognised by blob id: the line and its number, no need to read each version
    assert (hist[3].changes[0].appended, hist[3].changes[0].line_no) == (lines[1], 2)
    # a step that is not an append of the tip's note comes with both versions, read from git
    git_repo.notes_add(AUDIT_REF, commits[0], lines[1] + b"\n")
    last = history(store, store.tip())[-1].changes[0]
    assert (last.old, last.new, last.appended) == (lines[0] + b"\n" + lines[1] + b"\n", lines[1] + b"\n", None)
