"""`gating rollback` on a real repository with a real audit log in refs/notes/gating/audit."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gating.audit import keys as keymod
from gating.audit import log as audit_log
from gating.audit.entry import EntryFacts
from gating.commands.cli import main
from gating.git import notes as git_notes
from gating.git.repository import Git, commit_all
from gating.testing.example import edit

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
REFUND = '{"name": "refund", "description": "Refund an order.", "parameters": {"type": "object", ' \
         '"properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}\n'


def record(g: Git, key, event: str, commit: str, n: int) -> None:
    facts = EntryFacts(event, commit, "acme/support-bot", "deploy-bot", discriminator=f"d{n}")
    audit_log.append_entry(git_notes.LocalNotes(g), facts, key, NOW)


@pytest.fixture
def world(example_repo: Git, tmp_path: Path):
    """main: A (merged, known good) then B (merged, deployed): a prompt edit, a re-pin, a new tool, code."""
    g = example_repo
    root = g.root
    key = keymod.generate()
    pub = tmp_path / "audit.pub"
    pub.write_bytes(keymod.public_pem(key))
    a = g.rev_parse("HEAD")
    record(g, key, "merged", a, 1)
    record(g, key, "known_good", a, 2)
    edit(root / "prompts/answer.md", "Cite the article title in brackets.", "Be brief. Cite the article title.")
    edit(root / "gating.yml", "model: gpt-4o-2024-08-06", "model: gpt-4o-2024-11-20")
    (root / "tools/refund.json").write_text(REFUND)
    (root / "app/answer.py").write_text((root / "app/answer.py").read_text() + "\n# unrelated code change\n")
    b = commit_all(g, "Refunds tool, briefer answers")
    record(g, key, "merged", b, 3)
    record(g, key, "deployed", b, 4)
    return {"g": g, "a": a, "b": b, "key": key, "pub": str(pub), "priv": tmp_path / "audit.key"}


def run(world, *args: str) -> int:
    return main(["-C", str(world["g"].root), "rollback", "--key", world["pub"], "--no-fetch", *args])


def files_at(g: Git, rev: str) -> dict[str, bytes]:
    return {e.path: g.show_file(rev, e.path) or b"" for e in g.ls_tree(rev)}


def test_rollback_creates_a_branch_that_restores_the_system(world, capsys):
    g, a, b = world["g"], world["a"], world["b"]
    assert run(world, "--to", "last-good", "--reason", "refunds misfire") == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"Rollback LLM system to {a[:7]} (last-good): 3 file(s) on main ({b[:7]})\n")
    assert f"current deployed state: {b[:7]} (deployed, audit seq 4)\n" in out
    assert "| `tools/refund.json` | removed (not in the system at " in out
    assert "### LLM system: " in out
    branch = f"gating/rollback-{a[:12]}"
    assert f"created branch {branch} at " in err
    head = g.rev_parse(branch)
    assert g.run("rev-parse", f"{head}^") == b  # one commit on the tip
    after, at_a, at_b = files_at(g, head), files_at(g, a), files_at(g, b)
    for path in ("gating.yml", "prompts/answer.md", "prompts/system.md", "tools/open_ticket.json"):
        assert after[path] == at_a[path]
    assert "tools/refund.json" not in after
    assert after["app/answer.py"] == at_b["app/answer.py"]  # code stays as on the branch
    msg = g.run("log", "-1", "--format=%B", head)
    assert msg.startswith(f"Rollback LLM system to {a[:7]} (last-good)\n") and "Reason: refunds misfire" in msg
    assert g.current_branch() == "main" and g.run("status", "--porcelain") == ""  # work tree untouched


def test_dry_run_and_json_create_nothing(world, capsys):
    g, a = world["g"], world["a"]
    assert run(world, "--dry-run", "--json") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["commit"] == a and plan["tip"] == world["b"] and plan["deletes"] == ["tools/refund.json"]
    assert [e["event"] for e in plan["entries"]] == ["merged", "known_good", "deployed"]
    assert g.resolve(f"gating/rollback-{a[:12]}") is None


def test_rollback_to_a_sha_and_branch_name(world, capsys):
    g, a = world["g"], world["a"]
    assert run(world, "--to", a[:10], "--branch", "undo-refunds") == 0
    assert "Rollback LLM system to" in capsys.readouterr().out
    assert files_at(g, "undo-refunds")["gating.yml"] == files_at(g, a)["gating.yml"]
    assert run(world, "--to", a[:10], "--branch", "undo-refunds") == 2
    assert "branch 'undo-refunds' already exists; pass --branch NAME" in capsys.readouterr().err


@pytest.mark.parametrize("args, code, message", [
    (["--to", "yesterday"], 2, "gating: rollback refused: unknown target `yesterday`. Use `--to last-good`, "
                               "`--to previous` or `--to <commit sha>`.\n"),
    (["--to", "0123456789"], 2, "gating: rollback refused: unknown target `0123456789`: no such commit in this "
                                "repository. Use `--to last-good`, `--to previous` or `--to <commit sha>`.\n"),
    (["--branch", "bad..name"], 2, "gating: error: --branch 'bad..name' is not a valid branch name"),
], ids=["unknown-word", "unknown-sha", "bad-branch"])
def test_refusals(world, capsys, args, code, message):
    assert run(world, *args) == code
    assert message in capsys.readouterr().err


def test_no_known_good_state_names_a_commit_the_command_line_way(world, capsys):
    record(world["g"], world["key"], "deployed", world["a"], 5)  # A redeployed: nothing known good is older
    assert run(world, "--to", "last-good", "--dry-run") == 1
    err = capsys.readouterr().err
    assert err.startswith("gating: rollback refused: no known-good state yet: the audit log has no known_good entry")
    assert err.endswith("Mark a deployment known good first, or name a commit: `--to <commit sha>`.\n")


def test_previous_and_nothing_to_restore(world, capsys):
    assert run(world, "--to", "previous", "--dry-run") == 0  # the known-good A was deployed before B
    assert capsys.readouterr().out.startswith(f"Rollback LLM system to {world['a'][:7]} (previous)")
    record(world["g"], world["key"], "deployed", world["a"], 5)  # A redeployed: previous is B, the tip itself
    assert run(world, "--to", "previous", "--dry-run") == 1
    b = world["b"][:7]
    assert capsys.readouterr().err == (f"gating: rollback refused: nothing to restore: the LLM system on main ({b}) "
                                       f"is already the snapshot of {b} (previous).\n")


def test_not_an_audited_merge(world, capsys):
    g = world["g"]
    (g.root / "README.md").write_text("docs\n")
    c = commit_all(g, "docs only")
    assert run(world, "--to", c, "--onto", "main") == 1
    assert f"{c[:7]} is not an audited merge" in capsys.readouterr().err


def test_entries_signed_by_another_key_do_not_count(world, capsys, tmp_path):
    other = tmp_path / "other.pub"
    other.write_bytes(keymod.public_pem(keymod.generate()))
    code = main(["-C", str(world["g"].root), "rollback", "--key", str(other), "--no-fetch", "--dry-run"])
    assert code == 1
    assert "no known-good state yet" in capsys.readouterr().err


def test_sign_records_a_rolled_back_entry_that_verifies(world, capsys):
    priv = world["priv"]
    priv.write_bytes(keymod.private_pem(world["key"]))
    assert run(world, "--sign", str(priv), "--reason", "bad refunds") == 0
    err = capsys.readouterr().err
    assert "recorded rolled_back entry seq 5 on " in err
    entries = audit_log.read_log(git_notes.LocalNotes(world["g"]))
    last = entries[-1]
    assert last.event == "rolled_back" and last.predicate["rollback"] == {
        "previous_known_good": world["a"], "target": world["a"], "target_ref": "last-good",
        "requested_by": "gating@example.invalid", "reason": "bad refunds", "trigger": "cli",
        "source": "gating rollback"}
    assert last.predicate["overrides"] == []
    assert main(["-C", str(world["g"].root), "audit", "verify", "--key", world["pub"], "--no-fetch"]) == 0
    capsys.readouterr()
    assert main(["-C", str(world["g"].root), "audit", "log", "--no-fetch"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.endswith(f"  rolled_back    {last.commit[:12]}       -  gating@example.invalid  "
                         f"(to {world['a'][:12]} (last-good) by gating@example.invalid via cli: bad refunds)")


@pytest.mark.parametrize("content, message", [
    (None, "audit.key: cannot read key file (No such file or directory)"),
    (b"not a key\n", "audit.key: not a PEM private key"),
], ids=["missing", "not-a-key"])
def test_a_bad_signing_key_is_refused_before_the_branch_is_created(world, capsys, content, message):
    priv = world["priv"]
    if content is not None:
        priv.write_bytes(content)
    g = world["g"]
    branches = g.run("branch", "--list")
    assert run(world, "--sign", str(priv), "--reason", "bad refunds") == 2
    err = capsys.readouterr().err
    assert f"gating: error: {priv.parent}/{message}" in err and "created branch" not in err
    assert g.run("branch", "--list") == branches  # nothing half done: a corrected re-run can still create it
    assert len(audit_log.read_log(git_notes.LocalNotes(g))) == 4
