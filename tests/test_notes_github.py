"""The notes store through the GitHub Git Database API (emulator) and through git push over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gating.audit import keys
from gating.audit import log as audit_log
from gating.audit.entry import EntryFacts
from gating.audit.log import append_entry, read_log
from gating.git.notes import AUDIT_REF, LocalNotes, PushNotes
from gating.git.repository import Git, init_repo
from gating.github import GitDatabaseNotes, Repo, token_client

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
KEY = keys.generate()
TRUSTED = {keys.keyid(KEY): KEY.public_key()}


def merged(c: str, actor: str = "alice") -> EntryFacts:
    return EntryFacts("merged", c, "acme/support-bot", actor, pull_request=1)


@pytest.fixture
def api(github_repo) -> GitDatabaseNotes:
    emu = github_repo.emulator
    return GitDatabaseNotes(Repo(token_client(emu.api_url, emu.installation_token()), github_repo.full_name))


@pytest.fixture
def shas(github_repo) -> list[str]:
    return [github_repo.head()] + [github_repo.commit_files("main", {"f.txt": f"{i}\n"}, f"change {i}")
                                   for i in range(3)]


def tree_of(g: Git) -> str:
    return g.run("rev-parse", f"{AUDIT_REF}^{{tree}}")


def test_api_and_local_git_write_identical_trees(github_repo, api, shas, tmp_path):
    local = LocalNotes(init_repo(tmp_path / "local.git", bare=True))
    facts = [merged(c) for c in shas] + [EntryFacts("known_good", shas[1], "acme/support-bot", "deployer",
                                                    discriminator="deployment 1")]
    for i, f in enumerate(facts):
        ra = append_entry(api, f, KEY, NOW + timedelta(minutes=i))
        rl = append_entry(local, f, KEY, NOW + timedelta(minutes=i))
        assert ra.created and ra.entry.line == rl.entry.line  # Ed25519 signatures are deterministic
        assert tree_of(github_repo.git) == tree_of(local.git)
    assert github_repo.note(AUDIT_REF, shas[1]).count(b"\n") == 2
    assert github_repo.git.run("rev-list", "--count", AUDIT_REF) == "5"
    assert audit_log.verify(LocalNotes(github_repo.git), TRUSTED).ok
    assert [e.seq for e in read_log(api, TRUSTED)] == [1, 2, 3, 4, 5]


def test_api_keeps_an_existing_fanout(github_repo, api, shas, tmp_path):
    # a notes tree in 2-character fanout, as git makes it for many notes, already on the server
    work = Git(tmp_path)
    work.run("clone", "-q", "--bare", github_repo.clone_url, str(tmp_path / "w.git"))
    w = Git(tmp_path / "w.git")
    blob = w.hash_object(b"older note\n")
    layout = {f"{c[:2]}/{c[2:]}": blob for c in shas[1:]}
    w.update_ref(AUDIT_REF, w.commit_tree(w.write_tree_with(None, layout), [], "notes\n",
                                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e",
                                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}), None)
    w.run("push", "-q", github_repo.authed_url(github_repo.emulator.installation_token()), AUDIT_REF)
    append_entry(api, merged(shas[0]), KEY, NOW)
    append_entry(api, merged(shas[2]), KEY, NOW)
    paths = {e.path for e in github_repo.git.ls_tree(AUDIT_REF)}
    assert paths == {f"{c[:2]}/{c[2:]}" for c in shas}
    assert github_repo.note(AUDIT_REF, shas[2]).startswith(b"older note\n{")


def test_ref_update_fails_with_5xx_then_loses_the_race_and_the_entry_lands_once(github_repo, api, shas):
    emu = github_repo.emulator
    append_entry(api, merged(shas[0]), KEY, NOW)
    other = GitDatabaseNotes(Repo(token_client(emu.api_url, emu.installation_token()), github_repo.full_name))
    raced = []

    def pause(_seconds: float) -> None:  # the log's pause after the 5xx: another replica writes
        if not raced:
            raced.append(append_entry(other, merged(shas[2], "replica-b"), KEY, NOW + timedelta(seconds=1)))

    emu.faults.add(method="PATCH", path=r"/git/refs/notes/gating/audit", kind="5xx", times=1, status=502)
    emu.reset_requests()
    result = append_entry(api, merged(shas[1]), KEY, NOW + timedelta(seconds=2), sleep=pause)
    patches = [r.status for r in emu.requests if r.method == "PATCH" and "/git/refs/" in r.path]
    assert patches == [502, 200, 200]  # ours 5xx (a write is never retried blind), the replica's, ours after re-reading
    assert result.created and result.attempts == 2 and result.entry.seq == 3
    log = read_log(LocalNotes(github_repo.git), TRUSTED)
    assert [(e.seq, e.commit) for e in log] == [(1, shas[0]), (2, shas[2]), (3, shas[1])]
    assert audit_log.verify(LocalNotes(github_repo.git), TRUSTED).ok


def test_first_entry_races_on_creating_the_ref(github_repo, api, shas):
    class CreateRace(GitDatabaseNotes):
        def write(self, tip, path, data, message, now):
            if not getattr(self, "done", False):
                self.done = True
                append_entry(GitDatabaseNotes(self.repo), merged(shas[3]), KEY, now)
            return super().write(tip, path, data, message, now)

    result = append_entry(CreateRace(api.repo), merged(shas[0]), KEY, NOW)
    assert result.attempts == 2 and result.entry.seq == 2
    assert audit_log.verify(LocalNotes(github_repo.git), TRUSTED).ok


def test_push_backend_over_smart_http_with_the_installation_token(github_repo, shas, tmp_path):
    emu = github_repo.emulator
    token = emu.installation_token()
    a = PushNotes(tmp_path / "replica-a", github_repo.clone_url, token)
    b = PushNotes(tmp_path / "replica-b", github_repo.clone_url, token)
    append_entry(a, merged(shas[0]), KEY, NOW)

    class Racing(PushNotes):
        def write(self, tip, path, data, message, now):
            if not getattr(self, "done", False):
                self.done = True
                append_entry(b, merged(shas[2], "replica-b"), KEY, now + timedelta(seconds=1))
            return super().write(tip, path, data, message, now)

    result = append_entry(Racing(tmp_path / "replica-a", github_repo.clone_url, token), merged(shas[1]), KEY, NOW)
    assert result.attempts == 2 and result.entry.seq == 3
    assert [e.commit for e in read_log(LocalNotes(github_repo.git))] == [shas[0], shas[2], shas[1]]
    assert audit_log.verify(LocalNotes(github_repo.git), TRUSTED).ok
    again = append_entry(b, merged(shas[1], "replica-b"), KEY, NOW)
    assert not again.created
    assert "x-access-token" not in (tmp_path / "replica-a" / "config").read_text()


def test_push_backend_without_a_token_is_refused(github_repo, shas, tmp_path):
    store = PushNotes(tmp_path / "anon", github_repo.clone_url, None)
    with pytest.raises(audit_log.AppendError):
        append_entry(store, merged(shas[0]), KEY, NOW, max_attempts=2, sleep=lambda _s: None)
    assert github_repo.git.resolve(AUDIT_REF) is None
