"""The emulator's git side: notes refs under concurrent writers, smart HTTP fetch/push and its auth."""

from __future__ import annotations

import base64
import subprocess
import threading
from pathlib import Path

import httpx

from gating.git.repository import Git, init_repo
from gating.testing import Emulator, RepoHandle

NOTES = "refs/notes/gating/audit"


def api(emu: Emulator, token: str) -> httpx.Client:
    return httpx.Client(base_url=emu.api_url, headers={"Authorization": f"token {token}"}, timeout=10)


def append_note(c: httpx.Client, target: str, line: str, barrier: threading.Barrier | None = None) -> list[int]:
    """Append a line to the note on `target`, retrying on 422 like a careful client; the statuses of
    each PATCH attempt are returned."""
    statuses = []
    for _attempt in range(5):
        ref = c.get(f"/repos/acme/support-bot/git/ref/{NOTES[5:]}").json()
        parent = ref["object"]["sha"]
        base_tree = c.get(f"/repos/acme/support-bot/git/commits/{parent}").json()["tree"]["sha"]
        entries = {e["path"]: e["sha"] for e in c.get(f"/repos/acme/support-bot/git/trees/{base_tree}").json()["tree"]}
        old = b""
        if target in entries:
            old = base64.b64decode(c.get(f"/repos/acme/support-bot/git/blobs/{entries[target]}").json()["content"])
        blob = c.post("/repos/acme/support-bot/git/blobs",
                      json={"content": (old + line.encode() + b"\n").decode(), "encoding": "utf-8"}).json()["sha"]
        tree = c.post("/repos/acme/support-bot/git/trees", json={
            "base_tree": base_tree, "tree": [{"path": target, "mode": "100644", "type": "blob", "sha": blob}]}).json()
        commit = c.post("/repos/acme/support-bot/git/commits",
                        json={"message": f"audit: {line}", "tree": tree["sha"], "parents": [parent]}).json()
        if barrier is not None:
            barrier.wait(timeout=10)
            barrier = None
        r = c.patch(f"/repos/acme/support-bot/git/refs/{NOTES[5:]}", json={"sha": commit["sha"], "force": False})
        statuses.append(r.status_code)
        if r.status_code == 200:
            return statuses
        assert r.json()["message"] == "Update is not a fast forward"
    return statuses


def test_two_writers_race_on_a_notes_ref_one_wins_the_other_retries(github: Emulator,
                                                                    github_repo: RepoHandle) -> None:
    target = github_repo.head()
    github_repo.git.notes_add(NOTES, target, b"entry 0\n")
    barrier = threading.Barrier(2)
    results: dict[str, list[int]] = {}

    def writer(name: str) -> None:
        with api(github, github.installation_token()) as c:
            results[name] = append_note(c, target, name, barrier)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("writer-a", "writer-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results.values()) == [[200], [422, 200]]
    note = github_repo.note(NOTES, target)
    assert note is not None
    lines = note.decode().splitlines()
    assert lines[0] == "entry 0" and sorted(lines[1:]) == ["writer-a", "writer-b"]
    log = github_repo.git.run("log", "--format=%s", NOTES).splitlines()
    assert len(log) == 3  # two appends on top of the first entry: nothing lost, nothing rewritten


def test_clone_fetch_and_push_notes_over_smart_http(github: Emulator, github_repo: RepoHandle, tmp_path: Path) -> None:
    token = github.installation_token()
    clone = github_repo.clone(tmp_path / "clone", token=token)
    assert clone.rev_parse("HEAD") == github_repo.head()
    clone.notes_add("gating/evals", "HEAD", b"results\n")
    ok, out = clone.push("origin", "refs/notes/gating/evals")
    assert ok, out
    assert github_repo.note("gating/evals", github_repo.head()) == b"results\n"
    other = init_repo(tmp_path / "other")
    other.run("remote", "add", "origin", github_repo.authed_url(token))
    assert other.fetch("origin", "refs/notes/*:refs/notes/*", "refs/heads/main:refs/remotes/origin/main")
    assert other.notes_show("gating/evals", github_repo.head()) == b"results\n"


def _push(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    g = init_repo(tmp_path / "pusher")
    (tmp_path / "pusher" / "f.txt").write_text("x\n")
    g.run("add", "f.txt")
    g.run("commit", "-qm", "x")
    return subprocess.run(["git", "push", url, "HEAD:refs/heads/intruder"], cwd=g.root, capture_output=True,
                          text=True, env={"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin"})


def test_push_needs_a_token_with_contents_write(github: Emulator, github_repo: RepoHandle, tmp_path: Path) -> None:
    anonymous = _push(tmp_path / "a", github_repo.clone_url)
    assert anonymous.returncode != 0 and "could not read Username" in anonymous.stderr  # 401: asks for one
    read_only = _push(tmp_path / "b", github_repo.authed_url(github.read_only_token()))
    assert read_only.returncode != 0 and "403" in read_only.stderr
    bad = _push(tmp_path / "c", github_repo.authed_url("ghs_not-a-real-token"))
    assert bad.returncode != 0 and "Authentication failed" in bad.stderr
    assert github_repo.git.try_run("rev-parse", "--verify", "refs/heads/intruder") is None
    good = _push(tmp_path / "d", github_repo.authed_url(github.installation_token()))
    assert good.returncode == 0, good.stderr
    assert github_repo.git.try_run("rev-parse", "--verify", "refs/heads/intruder")
    statuses = [q.status for q in github.requests if q.operation == "git/smart-http"]
    assert 401 in statuses and 403 in statuses


def test_private_repository_needs_a_token_to_fetch(github: Emulator, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "README.md").write_text("secret\n")
    repo = github.create_repo("acme/private-bot", source_dir=src, private=True)
    no_token = subprocess.run(["git", "ls-remote", repo.clone_url], capture_output=True, text=True,
                              env={"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin"})
    assert no_token.returncode != 0
    with_token = Git(tmp_path).run("ls-remote", repo.authed_url(github.read_only_token()))
    assert f"{repo.head()}\trefs/heads/main" in with_token
    r = httpx.get(f"{github.api_url}/repos/acme/private-bot")
    assert r.status_code == 404


def test_commit_helpers_make_real_commits(github: Emulator, github_repo: RepoHandle, tmp_path: Path) -> None:
    first = github_repo.head()
    sha = github_repo.commit_files("main", {"prompts/system.md": None, "new/dir/file.txt": b"\x00bin"}, "Edit")
    assert github_repo.git.run("rev-parse", f"{sha}^") == first
    assert github_repo.git.show_file(sha, "new/dir/file.txt") == b"\x00bin"
    assert github_repo.git.show_file(sha, "prompts/system.md") is None
    d = tmp_path / "tree"
    (d / "only").mkdir(parents=True)
    (d / "only" / "file.md").write_text("hello\n")
    sha2 = github_repo.push_dir(d, "main", "Replace everything")
    assert [e.path for e in github_repo.git.ls_tree(sha2)] == ["only/file.md"]


def test_pushing_a_pull_requests_head_into_its_base_marks_it_merged(github: Emulator, github_repo: RepoHandle,
                                                                      tmp_path: Path) -> None:
    github_repo.commit_files("tune", {"a.txt": "1\n"}, "a")
    pr = github.create_pull(github_repo, "tune", "main", "Tune", "alice")
    clone = github_repo.clone(tmp_path / "c", token=github.installation_token())
    clone.run("fetch", "-q", "origin", "tune")
    clone.run("merge", "-q", "--no-ff", "-m", "Merge tune by hand", "FETCH_HEAD")
    ok, out = clone.push("origin", "main")
    assert ok, out
    merged = github.get_pull(github_repo, pr["number"])
    assert (merged["state"], merged["merged"], merged["merge_commit_sha"]) == ("closed", True, clone.rev_parse("HEAD"))
    assert merged["merged_by"]["login"] == "gating-emulated[bot]"
    record = github.repo_record(github_repo)
    assert [f.filename for f in github.pull_files(record, record.issues[pr["number"]])] == ["a.txt"]


def test_create_tree_nested_paths_folder_deletes_and_exact_messages(github: Emulator, github_repo: RepoHandle) -> None:
    with api(github, github.installation_token()) as c:
        base = c.get(f"/repos/acme/support-bot/git/commits/{github_repo.head()}").json()["tree"]["sha"]
        tree = c.post("/repos/acme/support-bot/git/trees", json={"base_tree": base, "tree": [
            {"path": "prompts", "mode": "040000", "type": "tree", "sha": None},
            {"path": "new/deep/file.txt", "mode": "100644", "type": "blob", "content": "deep\n"},
            {"path": "gating.yml/was-a-file.txt", "mode": "100644", "type": "blob", "content": "x"},
        ]}).json()
        top = {e["path"]: e["type"] for e in tree["tree"]}
        assert "prompts" not in top and top["new"] == "tree" and top["gating.yml"] == "tree"
        commit = c.post("/repos/acme/support-bot/git/commits", json={
            "message": "subject\n\nbody\n", "tree": tree["sha"], "parents": [github_repo.head()],
            "author": {"name": "Ada", "email": "ada@example.invalid", "date": "2024-05-01T12:00:00Z"}}).json()
    assert commit["message"] == "subject\n\nbody\n"
    assert github_repo.git.run("log", "-1", "--format=%an <%ae> %aI", commit["sha"]) == \
        "Ada <ada@example.invalid> 2024-05-01T12:00:00+00:00"
    assert github_repo.git.show_file(commit["sha"], "new/deep/file.txt") == b"deep\n"
