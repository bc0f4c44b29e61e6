"""Rollback drills on a clone: `gating rollback --drill` restores the last known-good snapshot on a
scratch branch, checks it byte for byte and replays its evals, deletes the branch and records a
signed `drill` entry; a target whose files are gone from history fails and says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_rollback_cli import run, world  # noqa: F401  (the fixture)

from gating.audit import keys as keymod
from gating.audit import log as audit_log
from gating.git import notes as git_notes


@pytest.fixture(autouse=True)
def no_github(monkeypatch):
    """A failed drill opens an issue when the environment names a token and a repository: the tests
    name the emulator's themselves, never a runner's."""
    for name in ("GITHUB_TOKEN", "GH_TOKEN", "GITHUB_REPOSITORY", "GITHUB_API_URL"):
        monkeypatch.delenv(name, raising=False)


def drill_entries(w) -> list:
    pub = keymod.load_public(Path(w["pub"]).read_bytes())
    return [e for e in audit_log.read_log(git_notes.LocalNotes(w["g"]), {keymod.keyid(pub): pub})
            if e.event == "drill"]


def signed(w) -> str:
    w["priv"].write_bytes(keymod.private_pem(w["key"]))
    return str(w["priv"])


def test_a_drill_restores_the_last_good_snapshot_and_records_it(world, capsys):  # noqa: F811
    g, a = world["g"], world["a"]
    assert run(world, "--drill", "--sign", signed(world)) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"rollback drill to {a[:7]} (last-good) passed in ")
    assert "system files restored byte for byte, snapshot sha256:" in out
    assert "; evals pass (" in out and "cases replayed)" in out
    assert f"scratch branch gating/drill-{a[:12]}-" in out and " deleted" in out
    assert not g.run("for-each-ref", "refs/heads/gating/").strip()  # nothing left behind
    assert g.current_branch() == "main" and g.run("status", "--porcelain") == ""
    (entry,) = drill_entries(world)
    h = entry.predicate["health"]
    assert entry.commit == a and h["verdict"] == "passed" and h["problems"] == []
    assert h["restored_digest"] == h["snapshot_digest"] and h["files"] >= 5
    assert h["evals"]["verdict"] == "pass" and h["seconds"] > 0
    assert "recorded drill entry seq 5" in err
    from gating.commands.cli import main
    assert main(["-C", str(g.root), "audit", "log", "--no-fetch"]) == 0
    assert f"rollback drill to {a[:7]} (last-good) passed in " in capsys.readouterr().out


def test_a_drill_whose_target_lost_a_file_fails_and_says_why(world, capsys):  # noqa: F811
    g, a = world["g"], world["a"]
    blob = g.run("rev-parse", f"{a}:prompts/answer.md")
    obj = Path(g.run("rev-parse", "--git-path", f"objects/{blob[:2]}/{blob[2:]}"))
    obj = obj if obj.is_absolute() else g.root / obj
    obj.unlink()  # the blob only the known-good commit had: gone from history
    assert run(world, "--drill", "--json", "--sign", signed(world)) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "failed" and doc["commit"] is None
    assert doc["summary"].startswith("rollback drill to last-good failed in ")
    assert "the restore cannot be planned: the LLM system at " in doc["summary"] and "prompts/answer.md" in doc["summary"]
    assert not g.run("for-each-ref", "refs/heads/gating/").strip()
    (entry,) = drill_entries(world)
    assert entry.predicate["health"]["verdict"] == "failed"


def test_drill_refuses_dry_run_and_branch(world, capsys):  # noqa: F811
    assert run(world, "--drill", "--dry-run") == 2
    assert "--drill makes and deletes its own scratch branch" in capsys.readouterr().err


def test_diff_last_good_and_previous_resolve_as_rollback_does(world, capsys):  # noqa: F811
    from gating.commands.cli import main

    g, a, b = world["g"], world["a"], world["b"]
    base = ["-C", str(g.root), "diff", "--key", world["pub"], "--no-fetch"]
    assert main([*base, "last-good"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Compared `last-good` ({a[:7]}, known_good, audit seq 2) with `HEAD`")
    assert "refund" in out and "prompts/answer.md" in out
    assert main([*base, "previous", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["compared"]["base"]["sha"] == a and doc["compared"]["base"]["how"] == "previous: known_good, audit seq 2"
    assert doc["compared"]["head"]["sha"] == b
    record_b_good = ["-C", str(g.root), "diff", "--key", world["pub"], "--no-fetch", "last-good", b]
    assert main(record_b_good) == 0  # the same state on both sides of the question is fine
    capsys.readouterr()
    (Path(world["pub"])).write_bytes(keymod.public_pem(keymod.generate()))  # a key that signed nothing
    assert main([*base, "last-good"]) == 2
    assert "cannot resolve last-good: no known-good state yet" in capsys.readouterr().err


def test_a_branch_that_already_holds_the_target_is_checked_as_it_is(world, capsys):  # noqa: F811
    a = world["a"]
    assert run(world, "--to", "last-good") == 0  # the rollback branch: the system of A on the tip
    capsys.readouterr()
    assert run(world, "--drill", "--onto", f"gating/rollback-{a[:12]}") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"rollback drill to {a[:7]} (last-good) passed in ") and "scratch branch" not in out


def _lose_the_known_good_prompt(g) -> None:
    a = g.rev_parse("HEAD~1")
    blob = g.run("rev-parse", f"{a}:prompts/answer.md")
    obj = Path(g.run("rev-parse", "--git-path", f"objects/{blob[:2]}/{blob[2:]}"))
    (obj if obj.is_absolute() else g.root / obj).unlink()


def test_a_failed_drill_opens_an_issue_on_github(world, github, github_repo, monkeypatch, capsys):  # noqa: F811
    """The CLI's drill, like the App's scheduled one, opens an issue when it fails and GitHub can be
    reached (the token and repository the other clone commands use); it says where."""
    _lose_the_known_good_prompt(world["g"])
    monkeypatch.setenv("GITHUB_TOKEN", github.user_token("root"))
    assert run(world, "--drill", "--sign", signed(world), "--repo", github_repo.full_name,
               "--api-url", github.api_url) == 1
    out, err = capsys.readouterr()
    assert out.startswith("rollback drill to last-good failed in ")
    (issue,) = [i for i in github.repo_record(github_repo).issues.values() if not i.is_pull]
    assert err.splitlines()[-1] == (f"opened issue #{issue.number} in {github_repo.full_name}: "
                                    f"{github.web_url}/{github_repo.full_name}/issues/{issue.number}")
    assert issue.title == "Rollback drill failed: rolling back to last-good would not restore it"
    (entry,) = drill_entries(world)
    assert issue.body.startswith("A rollback drill run with `gating rollback --drill` failed: rolling back to "
                                 "`last-good` would not restore the recorded LLM system.")
    assert "prompts/answer.md" in issue.body and f"(seq {entry.seq})" in issue.body
    # run again (a nightly job, say) while that issue is open: a comment on it, not a second issue
    assert run(world, "--drill", "--sign", signed(world), "--repo", github_repo.full_name,
               "--api-url", github.api_url) == 1
    err = capsys.readouterr().err
    assert len([i for i in github.repo_record(github_repo).issues.values() if not i.is_pull]) == 1
    assert err.splitlines()[-1] == (f"the drill's issue is still open: commented on #{issue.number} in "
                                    f"{github_repo.full_name}: {github.web_url}/{github_repo.full_name}/issues/{issue.number}")
    (again,) = github.list_comments(github_repo, issue.number)
    assert again["body"].startswith("A rollback drill run with `gating rollback --drill` failed again (")


def test_a_failed_drill_says_when_it_could_not_open_an_issue(world, github, github_repo, monkeypatch,  # noqa: F811
                                                             capsys):
    _lose_the_known_good_prompt(world["g"])
    assert run(world, "--drill") == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("no issue opened: no token: set GITHUB_TOKEN (or GH_TOKEN) to open an issue when "
                                    "a drill fails (or pass --no-issue)")
    monkeypatch.setenv("GITHUB_TOKEN", "revoked-token")
    assert run(world, "--drill", "--repo", github_repo.full_name, "--api-url", github.api_url) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"no issue opened in {github_repo.full_name}: GitHub 401 (GET ")
    assert err.splitlines()[-1].endswith("Bad credentials")
    assert run(world, "--drill", "--no-issue") == 1
    assert "issue" not in capsys.readouterr().err
    assert not [i for i in github.repo_record(github_repo).issues.values() if not i.is_pull]
