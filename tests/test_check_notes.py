"""Eval notes: the document, reading it back, and pushing it with real git through a racing writer."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from gating.check.notes import auth_env, fetch_notes, note_document, parse_note, push_notes, read_run
from gating.evals.records import CaseResult, RunResult
from gating.git.notes import EVALS_REF
from gating.git.repository import Git, commit_all, init_repo


def run_result(rev: str = "c" * 40) -> RunResult:
    cases = [CaseResult("a", "answer", True, 1.0), CaseResult("b", "answer", False, 0.0)]
    return RunResult(rev=rev, snapshot_digest="sha256:s", dataset_digest="sha256:d", cases=cases,
                     metrics={"pass_rate": 0.5, "cases": 2})


def test_note_document_keeps_verdict_digests_and_metrics_on_top():
    data = note_document(run_result(), verdict="fail", role="head", base="b" * 40, comparison={"verdict": "fail"})
    doc = json.loads(data)
    assert (doc["verdict"], doc["dataset_digest"], doc["snapshot_digest"], doc["metrics"]["pass_rate"]) == \
        ("fail", "sha256:d", "sha256:s", 0.5)
    assert (doc["schema"], doc["note_schema"], doc["role"], doc["compared_with"]) == \
        ("gating.eval.run/1", "gating.eval.note/1", "head", "b" * 40)
    assert data.endswith(b"\n") and data == note_document(run_result(), verdict="fail", role="head",
                                                          base="b" * 40, comparison={"verdict": "fail"})
    assert parse_note(data).to_dict() == run_result().to_dict()


def test_unreadable_notes_are_no_baseline():
    assert parse_note(None) is None
    assert parse_note(b"not json") is None
    assert parse_note(b'{"schema": "gating.eval.run/9"}') is None
    assert parse_note(b'{"schema": "something/1"}') is None


def setup_remote(tmp_path: Path) -> tuple[Git, Git, Git, str]:
    origin = init_repo(tmp_path / "origin.git", bare=True)
    seed = init_repo(tmp_path / "seed")
    (seed.root / "f.txt").write_text("x\n")
    c1 = commit_all(seed, "one")
    seed.run("remote", "add", "origin", str(origin.root))
    seed.run("push", "-q", "origin", "main")
    a, b = (init_repo(tmp_path / n) for n in ("a", "b"))
    for g in (a, b):
        g.run("remote", "add", "origin", str(origin.root))
        g.run("fetch", "-q", "origin")
    return origin, a, b, c1


def test_push_rewrites_the_note_on_top_of_a_racing_writer(tmp_path: Path):
    origin, a, b, c1 = setup_remote(tmp_path)
    other = a.run("hash-object", "-w", "--stdin", input="unrelated commit stand-in\n")
    tree = a.run("mktree", input=f"100644 blob {other}\tg.txt\n")
    c2 = a.run("commit-tree", tree, input="two\n")
    a.run("push", "-q", "origin", f"{c2}:refs/heads/two")  # a commit the remote knows, for a's note
    # b publishes its note between a's fetch and a's push: a's first push is not a fast-forward
    b.notes_add(EVALS_REF, c1, b"from b\n")
    hook = a.root / ".git" / "hooks" / "pre-push"
    flag = tmp_path / "raced"
    hook.write_text(f"#!/bin/sh\n[ -e {flag} ] && exit 0\ntouch {flag}\n"
                    f"git -C {b.root} push -q origin {EVALS_REF}:{EVALS_REF}\n")
    hook.chmod(hook.stat().st_mode | stat.S_IEXEC)
    result = push_notes(a, "origin", {c2: b"from a\n"})
    assert (result.ok, result.attempts) == (True, 2)
    assert origin.notes_show(EVALS_REF, c1) == b"from b\n"  # b's note survived
    assert origin.notes_show(EVALS_REF, c2) == b"from a\n"
    assert flag.exists()


def test_push_gives_up_at_once_when_refused(tmp_path: Path):
    origin, a, _b, c1 = setup_remote(tmp_path)
    hook = origin.root / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'Permission to acme/bot.git denied to reader.' >&2\nexit 1\n")
    hook.chmod(hook.stat().st_mode | stat.S_IEXEC)
    result = push_notes(a, "origin", {c1: b"note\n"})
    assert (result.ok, result.attempts) == (False, 1)
    assert "Permission to acme/bot.git denied to reader." in result.message


def test_fetch_and_read_a_note_from_the_remote(tmp_path: Path):
    origin, a, b, c1 = setup_remote(tmp_path)
    assert push_notes(b, "origin", {c1: note_document(run_result(c1), verdict="pass", role="head")}).ok
    assert read_run(a, c1) is None
    assert fetch_notes(a, "origin")
    assert read_run(a, c1).rev == c1
    assert os.path.isdir(a.root / ".git")


def test_the_token_header_is_keyed_by_the_remote_url_without_its_credentials(tmp_path: Path):
    g = init_repo(tmp_path / "r")
    g.run("remote", "add", "origin", "https://x-access-token:old@github.example/acme/bot.git")
    g.run("remote", "add", "local", str(tmp_path / "elsewhere.git"))
    env = auth_env(g, "origin", "tok")
    key = "http.https://github.example/acme/bot.git.extraheader"
    assert env == {"GIT_CONFIG_COUNT": "2", "GIT_CONFIG_KEY_0": key, "GIT_CONFIG_VALUE_0": "",
                   "GIT_CONFIG_KEY_1": key, "GIT_CONFIG_VALUE_1": "Authorization: Basic eC1hY2Nlc3MtdG9rZW46dG9r"}
    assert auth_env(g, "origin", None) == {} and auth_env(g, "local", "tok") == {}
