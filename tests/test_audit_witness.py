"""The App witnesses every audit entry with a `gating / audit` check run; a clone that never verified
before cross-checks the log against them: a truncated log, a swapped key with a re-signed log, or a
witness another app forged fails `gating audit verify` (exit 1) with the seq named.

The App runs under a real server against the emulator; the attacker is a writer of the repository
with a real clone (force-pushing the notes ref, committing another public key)."""

# ruff: noqa: F811  (the `world` fixture of test_audit_app is imported and used by name)
from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from test_audit_app import cli, world  # noqa: F401  (the App under a real server, and the CLI)

from gating.audit import keys
from gating.audit.entry import parse_line, sha256_line, sign_statement, split_lines
from gating.audit.witness import MARKER, WITNESS_CHECK
from gating.git.notes import AUDIT_REF
from gating.git.repository import Git

pytestmark = pytest.mark.usefixtures("world")


def audit_runs(w, commit: str) -> list[dict]:
    return [r for r in w.emu.list_check_runs(w.repo, head_sha=commit) if r["name"] == WITNESS_CHECK]


def record_of(run: dict) -> dict:
    (line,) = [ln for ln in run["output"]["text"].splitlines() if ln.startswith(MARKER)]
    return json.loads(line[len(MARKER):])


@pytest.fixture
def three_merges(world):
    """The real public key published on main, then three audited merges, each witnessed."""
    world.emu.push(world.repo, "main", {".gating/audit.pub": (world.key_dir / "audit.pub").read_text()},
                   "Publish the audit key", user="carol")
    merges = []
    for i in range(3):  # one at a time, so seq 1, 2, 3 are the merges in order
        merges.append(world.merged_pull(f"tune-{i}", f"Answer in {i + 1} sentences.\n")[2])
        world.settle()
    return merges


def fresh_clone(w, tmp_path: Path, name: str) -> Git:
    return w.repo.clone(tmp_path / name, w.emu.installation_token())


def verify(capsys, clone: Git, monkeypatch, token: str | None, *extra: str) -> tuple[int, str, str]:
    if token:
        monkeypatch.setenv("GITHUB_TOKEN", token)
    else:
        monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("GH_TOKEN", raising=False)
    monkeypatch.delenv("GITHUB_REPOSITORY", raising=False)
    monkeypatch.delenv("GITHUB_API_URL", raising=False)
    return cli(capsys, "-C", str(clone.root), "audit", "verify", *extra)


def test_every_entry_is_witnessed_by_a_check_run_of_the_app_on_its_commit(world, three_merges, tmp_path,
                                                                         capsys, monkeypatch):
    merge = three_merges[0]
    (entry,) = world.entries(merge)
    (run,) = audit_runs(world, merge)
    assert (run["app"]["id"], run["app"]["slug"], run["conclusion"]) == (world.emu.app.app_id, "gating-emulated",
                                                                         "success")
    assert run["output"]["title"] == f"Audit entry seq 1: merged of #{entry.predicate['pull_request']} by carol"
    assert f"| entry hash | `{entry.digest}` |" in run["output"]["summary"]
    assert record_of(run) | {"public_key": None} == {
        "v": 1, "seq": 1, "event": "merged", "commit": merge, "hash": entry.digest,
        "keyid": keys.keyid(keys.load_public((world.key_dir / "audit.pub").read_bytes())), "public_key": None}

    dep = world.emu.create_deployment(world.repo, merge, environment="production", user="carol")
    world.emu.add_deployment_status(world.repo, dep["id"], "success", user="carol")
    world.settle()
    assert sorted(record_of(r)["seq"] for r in audit_runs(world, merge)) == [1, 4]  # one per entry

    clone = fresh_clone(world, tmp_path, "fresh")
    code, out, err = verify(capsys, clone, monkeypatch, world.emu.read_only_token())
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("ok: 4 entries (seq 1..4), 4 notes commits; every signature verifies")
    assert lines[1] == f"key: .gating/audit.pub at {clone.resolve('HEAD')[:12]}"
    assert lines[2].startswith(f"witnesses: 4 {WITNESS_CHECK} check runs of gating-emulated (app id "
                               f"{world.emu.app.app_id}, the only app that posted {WITNESS_CHECK}")
    assert clone.run("config", "--get", "gating.auditAppId") == str(world.emu.app.app_id)


def move_notes_back(world, tmp_path: Path, keep: int) -> None:
    """A writer force-pushes the notes ref back to the notes commit that added seq `keep`."""
    attacker = fresh_clone(world, tmp_path, "attacker")
    attacker.run("fetch", "-q", "origin", f"+{AUDIT_REF}:{AUDIT_REF}")
    old = attacker.run("rev-list", "--reverse", AUDIT_REF).split()[keep - 1]
    attacker.run("push", "-q", "-f", "origin", f"{old}:{AUDIT_REF}")
    assert world.repo.git.resolve(AUDIT_REF) == old


def test_a_notes_ref_moved_back_fails_verify_in_a_clone_that_never_verified(world, three_merges, tmp_path,
                                                                            capsys, monkeypatch):
    move_notes_back(world, tmp_path, keep=1)
    clone = fresh_clone(world, tmp_path, "fresh")
    # without the API the truncated log looks whole, and verify says what it could not check
    code, out, err = verify(capsys, clone, monkeypatch, None)
    assert code == 0 and out.startswith("ok: 1 entry (seq 1..1)")
    assert "the App's witnesses were not checked (no token: set GITHUB_TOKEN" in err
    assert verify(capsys, clone, monkeypatch, None, "--require-witness")[0] == 1

    clone = fresh_clone(world, tmp_path, "fresh-2")
    code, out, err = verify(capsys, clone, monkeypatch, world.emu.read_only_token())
    assert code == 1
    run3 = audit_runs(world, three_merges[2])[0]
    assert out.splitlines()[1] == (
        f"BAD  seq 3: witnessed by the App ({WITNESS_CHECK} check run {run3['id']} on commit "
        f"{three_merges[2][:12]}: merged on commit {three_merges[2][:12]}) but missing from the log, which ends at "
        "seq 1: the notes ref was moved back or rewritten")
    assert out.splitlines()[0].startswith("BAD  seq 2: witnessed by the App")
    assert err.startswith("gating: audit log verification failed: first bad entry: seq 2 (2 problems)")


def test_a_deleted_notes_ref_fails_verify_too(world, three_merges, tmp_path, capsys, monkeypatch):
    attacker = fresh_clone(world, tmp_path, "attacker")
    attacker.run("push", "-q", "origin", f":{AUDIT_REF}")
    code, out, _ = verify(capsys, fresh_clone(world, tmp_path, "fresh"), monkeypatch, world.emu.read_only_token())
    assert code == 1
    assert [line.split(":")[0] for line in out.splitlines()] == ["BAD  seq 1", "BAD  seq 2", "BAD  seq 3"]
    assert "missing from the log, which ends at no entry" in out


def resign_everything(world, tmp_path: Path, new_key) -> None:
    """A writer commits their own public key as .gating/audit.pub and rewrites the notes: every entry
    re-signed with their key and re-chained, one notes commit per entry, force-pushed."""
    attacker = fresh_clone(world, tmp_path, "attacker")
    (attacker.root / ".gating/audit.pub").write_bytes(keys.public_pem(new_key))
    attacker.run("commit", "-qam", "Rotate the audit key")
    attacker.run("push", "-q", "origin", "HEAD:main")
    attacker.run("fetch", "-q", "origin", f"+{AUDIT_REF}:{AUDIT_REF}")
    entries = sorted((parse_line(line, c) for c in world.repo.git.run("notes", "--ref", AUDIT_REF, "list").split()[1::2]
                      for line in split_lines(world.repo.note(AUDIT_REF, c))), key=lambda e: e.seq)
    attacker.run("update-ref", "-d", AUDIT_REF)
    prev, notes_by_commit = None, {}
    for e in entries:
        statement = json.loads(e.payload)
        statement["predicate"]["prev"] = prev
        line = sign_statement(statement, new_key)
        prev = sha256_line(line)
        notes_by_commit[e.commit] = notes_by_commit.get(e.commit, b"") + line + b"\n"
        attacker.notes_add(AUDIT_REF, e.commit, notes_by_commit[e.commit])
    attacker.run("push", "-q", "-f", "origin", f"{AUDIT_REF}:{AUDIT_REF}")


def test_a_swapped_key_and_a_re_signed_log_fail_verify_in_a_clone_that_never_verified(
        world, three_merges, tmp_path, capsys, monkeypatch):
    evil = keys.generate()
    resign_everything(world, tmp_path, evil)
    clone = fresh_clone(world, tmp_path, "fresh")
    code, out, err = verify(capsys, clone, monkeypatch, None)  # offline, the forgery holds together
    assert code == 0 and f"key: .gating/audit.pub at {clone.resolve('HEAD')[:12]}" in out

    clone = fresh_clone(world, tmp_path, "fresh-2")
    code, out, err = verify(capsys, clone, monkeypatch, world.emu.read_only_token())
    assert code == 1
    first = out.splitlines()[0]
    real = keys.keyid(keys.load_public((world.key_dir / "audit.pub").read_bytes()))
    assert first.startswith(f"BAD  seq 1 (merged) on commit {three_merges[0][:12]}: differs from what the App "
                            f"witnessed ({WITNESS_CHECK} check run ")
    assert f"signed by key {real[:16]}; the log has merged on {three_merges[0][:12]}" in first
    assert first.endswith(f"signed by key {keys.keyid(evil)[:16]}: the entry was rewritten or re-signed")
    assert len(out.splitlines()) == 3
    assert "first bad entry: seq 1 (merged)" in err


def test_without_a_key_file_the_key_comes_from_the_newest_witness_and_says_so(world, tmp_path, capsys,
                                                                              monkeypatch):
    merges = [world.merged_pull(f"tune-{i}", f"Answer in {i + 1} sentences.\n")[2] for i in range(2)]
    world.settle()
    clone = fresh_clone(world, tmp_path, "fresh")
    code, out, _ = verify(capsys, clone, monkeypatch, None)
    assert code == 2  # no key anywhere it can trust
    code, out, err = verify(capsys, clone, monkeypatch, world.emu.read_only_token())
    assert code == 0, out + err
    run = audit_runs(world, merges[1])[0]
    assert out.splitlines()[1] == (f"key: witnessed keyid: the App's {WITNESS_CHECK} check run {run['id']} on commit "
                                   f"{merges[1][:12]} (seq 2)")


def forge_witness(world, commit: str, record: dict) -> int:
    r = httpx.post(f"{world.emu.api_url}/repos/{world.repo.full_name}/check-runs", timeout=10,
                   headers={"Authorization": f"Bearer {world.emu.actions_token()}"},
                   json={"name": WITNESS_CHECK, "head_sha": commit, "status": "completed", "conclusion": "success",
                         "output": {"title": "Audit entry", "summary": "x",
                                    "text": MARKER + json.dumps(record)}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_a_witness_posted_by_a_workflow_fails_verify_naming_its_seq(world, three_merges, tmp_path, capsys,
                                                                    monkeypatch):
    real = record_of(audit_runs(world, three_merges[2])[0])
    forged = forge_witness(world, three_merges[2], {**real, "seq": 4, "hash": "sha256:" + "0" * 64})
    clone = fresh_clone(world, tmp_path, "fresh")
    code, out, _ = verify(capsys, clone, monkeypatch, world.emu.read_only_token())
    assert code == 1
    assert out.splitlines() == [
        f"BAD  seq 4: {WITNESS_CHECK} check run {forged} on commit {three_merges[2][:12]} was created by "
        f"github-actions (app id 15368), not by the App (gating-emulated (app id {world.emu.app.app_id}, the only "
        f"app that posted {WITNESS_CHECK}; pin it with --app-id)): only the App's witnesses count, and a forged one "
        "fails verification"]
    # pinned to another app, the App's own witnesses do not count either
    code, out, _ = verify(capsys, clone, monkeypatch, world.emu.read_only_token(), "--app-id", "github-actions")
    assert code == 1 and out.count("was created by gating-emulated") == 3
