"""Key rotation: `gating audit rotate-key` writes an entry signed by the key in force that introduces
the new key; `verify` follows the chain from either key; a key that was not handed over fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gating.audit import keys
from gating.audit.entry import EntryFacts
from gating.audit.log import append_entry, read_log
from gating.audit.rotation import rotation_facts
from gating.commands.cli import main
from gating.git.notes import LocalNotes
from gating.git.repository import commit_all, init_repo

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def world(tmp_path: Path):
    g = init_repo(tmp_path / "work")
    old, new = keys.generate(), keys.generate()
    for name, k in (("old", old), ("new", new)):
        (tmp_path / f"{name}.key").write_bytes(keys.private_pem(k))
        (tmp_path / f"{name}.pub").write_bytes(keys.public_pem(k))
    shas = []
    for i in range(5):
        (g.root / "prompt.md").write_text(f"version {i}\n")
        shas.append(commit_all(g, f"merge {i}"))
    store = LocalNotes(g)
    for i in range(3):
        append_entry(store, EntryFacts("merged", shas[i], "acme/support-bot", "alice"), old, NOW + timedelta(minutes=i))
    return {"g": g, "store": store, "old": old, "new": new, "shas": shas, "dir": tmp_path}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def rotate(world, capsys) -> tuple[int, str, str]:
    d = world["dir"]
    return run(capsys, "-C", str(world["g"].root), "audit", "rotate-key", "--key", str(d / "old.key"),
               "--new-key", str(d / "new.pub"), "--no-fetch", "--actor", "carol")


def verify(world, capsys, key: str) -> tuple[int, str, str]:
    return run(capsys, "-C", str(world["g"].root), "audit", "verify", "--key", str(world["dir"] / key),
               "--no-fetch", "--no-witness")


def test_rotation_is_signed_by_the_previous_key_and_verify_follows_it_from_either_key(world, capsys):
    old, new = keys.keyid(world["old"]), keys.keyid(world["new"])
    code, out, _ = rotate(world, capsys)
    assert code == 0
    assert out.splitlines()[0] == (f"rotated: seq 4 (key_rotated) on {world['shas'][4][:12]}, signed by {old[:16]}, "
                                   f"introduces {new[:16]}")
    for i in (3, 4):
        append_entry(world["store"], EntryFacts("merged", world["shas"][i], "acme/support-bot", "alice"),
                     world["new"], NOW + timedelta(hours=i))
    rotated = read_log(world["store"])[3]
    assert rotated.keyids == [old] and rotated.predicate["key_rotation"]["next"]["keyid"] == new
    for key in ("old.pub", "new.pub"):
        code, out, err = verify(world, capsys, key)
        assert code == 0, out + err
        assert out.splitlines()[1] == (f"keys: {old[:16]} (seq 1..4) -> {new[:16]} (seq 5.., introduced by the "
                                       "key_rotated entry at seq 4)")
    # a reader that trusts only the new key still reads the entries the old key signed before it
    assert [e.seq for e in read_log(world["store"], {new: world["new"].public_key()})] == [1, 2, 3, 4, 5, 6]


def test_the_old_key_signing_after_the_rotation_fails(world, capsys):
    assert rotate(world, capsys)[0] == 0
    append_entry(world["store"], EntryFacts("merged", world["shas"][3], "acme/support-bot", "alice"),
                 world["old"], NOW + timedelta(hours=1))
    code, out, _ = verify(world, capsys, "old.pub")
    assert code == 1
    old, new = keys.keyid(world["old"]), keys.keyid(world["new"])
    assert out.splitlines()[0] == (
        f"BAD  seq 5 (merged) on commit {world['shas'][3][:12]}: signed by key {old[:16]}, but the key in force at "
        f"seq 5 is {new[:16]} (introduced by the key_rotated entry at seq 4); a key changes only by a key_rotated "
        "entry signed by the key before it")


def test_a_rotation_signed_by_a_key_that_was_not_in_force_fails(world, capsys):
    evil = keys.generate()
    append_entry(world["store"], rotation_facts(world["shas"][3], "acme/support-bot", "mallory", evil,
                                                evil.public_key()), evil, NOW + timedelta(hours=1))
    append_entry(world["store"], EntryFacts("merged", world["shas"][4], "acme/support-bot", "mallory"), evil,
                 NOW + timedelta(hours=2))
    code, out, _ = verify(world, capsys, "old.pub")
    assert code == 1
    assert out.splitlines()[0].startswith(f"BAD  seq 4 (key_rotated) on commit {world['shas'][3][:12]}: signed by "
                                          f"key {keys.keyid(evil)[:16]}, but the key in force at seq 4 is "
                                          f"{keys.keyid(world['old'])[:16]} (the log's first key)")
    # trusting only the forger's rotated-to key does not anchor the log either
    (world["dir"] / "evil.pub").write_bytes(keys.public_pem(evil))
    code, out, _ = verify(world, capsys, "evil.pub")
    assert code == 1 and f"BAD  seq 1 (merged) on commit {world['shas'][0][:12]}: signed by key " in out


def test_rotate_key_refuses_a_key_that_is_not_in_force(world, capsys):
    d = world["dir"]
    code, _, err = run(capsys, "-C", str(world["g"].root), "audit", "rotate-key", "--key", str(d / "new.key"),
                       "--new-key", str(d / "old.pub"), "--no-fetch")
    assert code == 2
    assert err == (f"gating: error: {d / 'new.key'}: is not the key in force; the log's newest entries are signed "
                   f"by {keys.keyid(world['old'])[:16]} (the log's first key)\n")
