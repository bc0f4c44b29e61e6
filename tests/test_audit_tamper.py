"""Tampering with the audit trail on the remote; `gating audit verify` on a clone names the entry, exit 1."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gating.audit import keys
from gating.audit.entry import EntryFacts, sign_statement, split_lines
from gating.audit.log import append_entry
from gating.commands.cli import main
from gating.git.notes import AUDIT_REF, LocalNotes
from gating.git.repository import Git, commit_all, init_repo

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
KEY = keys.generate()


def merged(c: str) -> EntryFacts:
    return EntryFacts("merged", c, "acme/support-bot", "alice", pull_request=1)


def write_log(work: Git, shas: list[str], skip: int | None = None) -> None:
    store = LocalNotes(work)
    for i, c in enumerate(shas):
        if i != skip:
            append_entry(store, merged(c), KEY, NOW + timedelta(minutes=i))


@pytest.fixture
def world(tmp_path: Path):
    origin = init_repo(tmp_path / "origin.git", bare=True)
    work = init_repo(tmp_path / "work")
    shas = []
    for i in range(5):
        (work.root / "prompt.md").write_text(f"version {i}\n")
        shas.append(commit_all(work, f"merge {i}"))
    write_log(work, shas)
    work.run("remote", "add", "origin", str(origin.root))
    work.run("push", "-q", "origin", "main", f"{AUDIT_REF}:{AUDIT_REF}")
    Git(tmp_path).run("clone", "-q", str(origin.root), str(tmp_path / "clone"))
    pub = tmp_path / "audit.pub"
    pub.write_bytes(keys.public_pem(KEY))
    return work, Git(tmp_path / "clone"), shas, str(pub)


def verify(clone: Git, pub: str, capsys) -> tuple[int, str, str]:
    code = main(["-C", str(clone.root), "audit", "verify", "--key", pub])
    out = capsys.readouterr()
    return code, out.out, out.err


def publish(work: Git, force: bool = False) -> None:
    work.run("push", "-q", "origin", ("+" if force else "") + f"{AUDIT_REF}:{AUDIT_REF}")


def note(work: Git, c: str) -> list[bytes]:
    return split_lines(work.notes_show(AUDIT_REF, c))


def set_note(work: Git, c: str, lines: list[bytes]) -> None:
    work.notes_add(AUDIT_REF, c, b"".join(line + b"\n" for line in lines))


def assert_names(capsys_result, where: str, message: str) -> None:
    code, out, err = capsys_result
    assert code == 1
    assert out.splitlines()[0] == f"BAD  {where}: {message}"
    assert err.startswith(f"gating: audit log verification failed: first bad entry: {where} (")


def test_clean_log_verifies(world, capsys):
    _work, clone, _shas, pub = world
    assert verify(clone, pub, capsys)[0] == 0


@pytest.mark.parametrize("how", ["decoded-field", "raw-byte"])
def test_a_changed_byte_in_a_payload(world, capsys, how):
    work, clone, shas, pub = world
    (line,) = note(work, shas[2])
    env = json.loads(line)
    if how == "decoded-field":
        payload = base64.b64decode(env["payload"]).replace(b'"verdict"', b'"verdicT"').replace(
            b'"actor":"alice"', b'"actor":"alicf"')
        env["payload"] = base64.b64encode(payload).decode()
        forged = json.dumps(env, sort_keys=True, separators=(",", ":")).encode()
    else:
        i = len(env["payload"]) // 2
        flipped = env["payload"][:i] + ("A" if env["payload"][i] != "A" else "B") + env["payload"][i + 1:]
        forged = line.replace(env["payload"].encode(), flipped.encode())
    set_note(work, shas[2], [forged])
    publish(work)
    code, out, err = verify(clone, pub, capsys)
    assert code == 1
    assert out.splitlines()[0].startswith(f"BAD  seq 3 (merged) on commit {shas[2][:12]}: ")
    assert f"first bad entry: seq 3 (merged) on commit {shas[2][:12]}" in err
    assert "notes commit" in out and "removed or changed this entry (a note only grows)" in out


def test_a_deleted_entry(world, capsys):
    work, clone, shas, pub = world
    work.run("notes", "--ref", AUDIT_REF, "remove", shas[2])
    publish(work)
    assert_names(verify(clone, pub, capsys), "seq 3",
                 f"missing from the log: seq 4 (merged) on commit {shas[3][:12]} follows seq 2 (merged) on "
                 f"commit {shas[1][:12]}")


def test_two_entries_swapped_between_commits(world, capsys):
    work, clone, shas, pub = world
    (a,), (b,) = note(work, shas[1]), note(work, shas[2])
    set_note(work, shas[1], [b])
    set_note(work, shas[2], [a])
    publish(work)
    assert_names(verify(clone, pub, capsys), f"seq 2 (merged) on commit {shas[2][:12]}",
                 f"its subject is commit {shas[1][:12]} but it is stored on another commit (entry moved?)")


def test_two_entries_swapped_within_a_note(world, capsys):
    work, clone, shas, pub = world
    store = LocalNotes(work)
    append_entry(store, EntryFacts("known_good", shas[4], "acme/support-bot", "deployer", discriminator="d1"),
                 KEY, NOW + timedelta(hours=1))
    first, second = note(work, shas[4])
    set_note(work, shas[4], [second, first])
    publish(work)
    assert_names(verify(clone, pub, capsys), f"seq 5 (merged) on commit {shas[4][:12]}",
                 "out of order in its note: it comes after seq 6")


def test_entry_signed_by_another_key(world, capsys):
    work, clone, shas, pub = world
    (work.root / "x").write_text("x")
    sha = commit_all(work, "sneaky")
    append_entry(LocalNotes(work), merged(sha), keys.generate(), NOW + timedelta(hours=1))
    publish(work)
    code, out, err = verify(clone, pub, capsys)
    assert code == 1
    assert out.startswith(f"BAD  seq 6 (merged) on commit {sha[:12]}: signed by key ")
    assert f"which is not a trusted key ({keys.keyid(KEY)[:16]})" in out


def rewrite(work: Git, shas: list[str], skip: int) -> None:
    """Rebuild the notes history from scratch without one entry, re-chained and signed with the real key."""
    work.run("update-ref", "-d", AUDIT_REF)
    write_log(work, shas, skip=skip)
    publish(work, force=True)


def test_force_pushed_rewrite_is_named_by_a_clone_that_verified_before(world, capsys):
    work, clone, shas, pub = world
    assert verify(clone, pub, capsys)[0] == 0
    rewrite(work, shas, skip=2)
    code, out, err = verify(clone, pub, capsys)
    assert code == 1
    assert out.splitlines()[0] == (
        f"BAD  seq 3 (merged) on commit {shas[2][:12]}: removed or changed by a rewrite of the notes ref (the "
        f"previously verified tip {out.split('previously verified tip ')[1][:12]} is not in the history of "
        f"{clone.resolve(AUDIT_REF)[:12]}: force-pushed)")
    assert f"first bad entry: seq 3 (merged) on commit {shas[2][:12]}" in err
    # it keeps failing: the verified tip is not moved onto the rewritten history
    assert verify(clone, pub, capsys)[0] == 1


def test_force_pushed_rewrite_without_the_key_breaks_the_chain_for_any_clone(world, capsys):
    work, clone, shas, pub = world
    lines = {c: note(work, c) for c in shas}
    work.run("update-ref", "-d", AUDIT_REF)
    for c in shas[:2] + shas[3:]:  # replay every line but seq 3, one notes commit each
        set_note(work, c, lines[c])
    publish(work, force=True)
    assert_names(verify(clone, pub, capsys), "seq 3",
                 f"missing from the log: seq 4 (merged) on commit {shas[3][:12]} follows seq 2 (merged) on "
                 f"commit {shas[1][:12]}")


def resign(work: Git, c: str, change) -> None:
    """Replace the entry on `c` with one whose statement `change` altered, signed with the trusted key
    (what a buggy or compromised writer could publish): only its shape is wrong."""
    (line,) = note(work, c)
    statement = json.loads(base64.b64decode(json.loads(line)["payload"]))
    change(statement)
    set_note(work, c, [sign_statement(statement, KEY)])


def set_pred(**fields):
    return lambda s: s["predicate"].update(fields)


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s.update(subject=5), "the statement's subject is not a list of objects with a digest"),
    (lambda s: s.update(subject=[{"digest": "gitCommit"}]),
     "the statement's subject is not a list of objects with a digest"),
    (set_pred(evals="pass"), "the predicate's evals is str, not an object or null"),
    (set_pred(deployment="production"), "the predicate's deployment is str, not an object or null"),
    (set_pred(approvals=["bob"]), "the predicate's approvals is not a list of objects"),
    (set_pred(rollback="x"), "the predicate's rollback is str, not an object or null"),
    (set_pred(timestamp="yesterday"),
     "the predicate's timestamp 'yesterday' is not a UTC time (YYYY-MM-DDTHH:MM:SSZ)"),
], ids=["subject-int", "subject-digest-str", "evals-str", "deployment-str", "approvals-str", "rollback-str",
        "timestamp"])
def test_a_signed_entry_with_a_field_of_the_wrong_type_is_named_and_never_crashes_a_reader(
        world, capsys, change, message):
    work, clone, shas, pub = world
    resign(work, shas[2], change)
    publish(work)
    code, out, err = verify(clone, pub, capsys)
    assert code == 1 and "Traceback" not in err
    assert out.splitlines()[0] == f"BAD  seq 3 (merged) on commit {shas[2][:12]}: {message}"
    assert main(["-C", str(clone.root), "audit", "log", "--no-fetch"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["1", "2", "4", "5"]
    assert main(["-C", str(clone.root), "audit", "show", shas[2], "--no-fetch", "--key", pub]) == 0
    assert capsys.readouterr().out == f"line 1 of the note on {shas[2][:12]}: {message}\n"


@pytest.mark.parametrize("keyid", [["x"], 5, None], ids=["list", "int", "missing"])
def test_an_envelope_whose_keyid_is_not_a_string_is_named(world, capsys, keyid):
    work, clone, shas, pub = world
    (line,) = note(work, shas[2])
    env = json.loads(line)
    env["signatures"][0]["keyid"] = keyid
    set_note(work, shas[2], [json.dumps(env, sort_keys=True, separators=(",", ":")).encode()])
    publish(work)
    code, out, err = verify(clone, pub, capsys)
    assert code == 1
    assert out.splitlines()[0] == (f"BAD  seq 3 (merged) on commit {shas[2][:12]}: signature 1 of the envelope "
                                   "has no keyid and sig strings")


def add_to_notes_tree(work: Git, line: str, message: str) -> None:
    """One notes commit whose tree gains an entry that is not a note (`mode type sha<TAB>name`)."""
    tip = work.resolve(AUDIT_REF)
    tree = work.run("mktree", input=work.run("ls-tree", tip) + "\n" + line + "\n")
    work.run("update-ref", AUDIT_REF, work.commit_tree(tree, [tip], message), tip)


@pytest.mark.parametrize("kind", ["file", "submodule"])
def test_an_entry_of_the_notes_tree_that_is_not_a_note_is_named(world, capsys, kind):
    work, clone, shas, pub = world
    if kind == "file":
        add_to_notes_tree(work, f"100644 blob {work.hash_object(b'hello')}\tREADME", "add a readme")
        where, what = "README", "blob"
    else:
        add_to_notes_tree(work, f"160000 commit {shas[0]}\tvendor", "add a submodule")
        where, what = "vendor", "commit"
    publish(work)
    code, out, err = verify(clone, pub, capsys)
    assert code == 1
    assert out.splitlines()[0] == (f"BAD  {where} in the notes tree: is not a note: a note is a file named by the "
                                   f"full sha of a commit (this is a {what})")
    assert f"first bad entry: {where} in the notes tree" in err
    assert main(["-C", str(clone.root), "audit", "log", "--no-fetch"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
