"""Deployments by environment: only deployments to rollback.environments (gating.yml on the default
branch, default production) of commits on the default branch become known-good or the currently
deployed state; a preview deployment changes neither. The App under a real server against the
emulator, then `gating rollback` in a clone; and the plan's resolution on a log written before."""

# ruff: noqa: F811  (the `world` fixture of test_audit_app is imported and used by name)
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from test_audit_app import cli, unmerged_pull, world  # noqa: F401  (the App under a real server)

from gating.audit import entry as audit
from gating.audit.entry import EntryFacts
from gating.git.notes import AUDIT_REF
from gating.rollback.plan import Refusal, current_state, resolve_target

pytestmark = pytest.mark.usefixtures("world")


def deploy(w, sha: str, environment: str, state: str = "success") -> None:
    dep = w.emu.create_deployment(w.repo, sha, environment=environment, user="carol")
    w.emu.add_deployment_status(w.repo, dep["id"], state, user="carol")
    w.settle()


def events(w) -> list[tuple[str, str, str | None]]:
    out = []
    for c in w.repo.git.run("notes", "--ref", AUDIT_REF, "list").split()[1::2]:
        for e in w.entries(c):
            out.append((e.seq, e.event, e.commit, (e.predicate.get("deployment") or {}).get("environment")))
    return [x[1:] for x in sorted(out)]


def last_good_in_a_clone(w, tmp_path, capsys) -> str:
    clone = w.repo.clone(tmp_path / f"clone-{len(list(tmp_path.iterdir()))}", w.emu.installation_token())
    code, out, err = cli(capsys, "-C", str(clone.root), "rollback", "--key", str(w.key_dir / "audit.pub"),
                         "--dry-run", "--json")
    assert code == 0, err
    return json.loads(out)["commit"]


def test_a_preview_deployment_changes_neither_last_good_nor_the_deployed_state(world, tmp_path, capsys):
    _n1, _h1, good = world.merged_pull("tune-1", "Answer briefly.\n")
    deploy(world, good, "production")
    _n2, _h2, newer = world.merged_pull("tune-2", "Answer very briefly.\n")
    deploy(world, newer, "production")
    assert last_good_in_a_clone(world, tmp_path, capsys) == good
    before = events(world)

    # a preview environment of a merged commit, and production of an unmerged pull request's head
    _n3, head = unmerged_pull(world, "preview-me")
    deploy(world, newer, "pr-preview")
    deploy(world, head, "production")
    deploy(world, head, "pr-preview", "failure")
    assert events(world) == before
    assert last_good_in_a_clone(world, tmp_path, capsys) == good
    assert sum(1 for e in before if e[0] == "known_good") == 2

    # the next production failure still points back at the newest production known-good
    _n4, _h4, broken = world.merged_pull("tune-4", "Answer in haiku.\n")
    deploy(world, broken, "production", "failure")
    (failed,) = [e for e in world.entries(broken) if e.event == "deploy_failed"]
    assert failed.predicate["rollback"]["previous_known_good"] == newer


def test_rollback_environments_of_the_default_branch_decide(world, tmp_path, capsys):
    manifest = world.repo.git.run("show", "main:gating.yml")
    world.emu.push(world.repo, "main", {"gating.yml": manifest.replace("rollback:\n", "rollback:\n  environments: "
                                                                                     "[live-eu, live-us]\n")},
                   "Deployments to live-eu and live-us decide known-good", user="carol")
    _n1, _h1, merge = world.merged_pull("tune-1", "Answer briefly.\n")
    deploy(world, merge, "production")
    assert [e for e in events(world) if e[0] != "merged"] == []
    deploy(world, merge, "live-us")
    assert [e for e in events(world) if e[0] != "merged"] == [("known_good", merge, "live-us")]
    # a pull request that widens the environments is not in force until it is merged
    world.emu.push(world.repo, "widen", {"gating.yml": manifest.replace("rollback:\n", "rollback:\n  environments: "
                                                                                       "[staging]\n")},
                   "Count staging too", user="alice")
    world.emu.create_pull(world.repo, "widen", "main", "Count staging too", "alice")
    deploy(world, merge, "staging")
    assert [e[2] for e in events(world) if e[0] == "known_good"] == ["live-us"]


T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
KEY = audit.Ed25519PrivateKey.generate()
A, B, P, TIP = "a" * 40, "b" * 40, "e" * 40, "d" * 40


def log(*facts: tuple[str, str, str | None]) -> list[audit.Entry]:
    out, prev = [], None
    for seq, (event, commit, env) in enumerate(facts, 1):
        dep = {"id": seq, "environment": env, "status": "success"} if env else None
        line = audit.make_line(EntryFacts(event, commit, "acme/support-bot", "bot", deployment=dep,
                                          discriminator=str(seq)), T0, seq, prev, KEY)
        out.append(audit.parse_line(line, commit))
        prev = audit.sha256_line(line)
    return out


def test_a_log_with_preview_entries_resolves_by_the_configured_environments():
    entries = log(("merged", A, None), ("known_good", A, "production"), ("merged", B, None),
                  ("known_good", B, "production"), ("known_good", P, "preview-12"))
    assert current_state(entries, TIP).commit == B  # the preview entry is not what is deployed
    assert resolve_target(entries, "last-good", TIP).commit == A
    assert current_state(entries, TIP, ("preview-12",)).commit == P
    with pytest.raises(Refusal, match="no known-good state yet"):
        resolve_target(entries, "last-good", TIP, environments=("staging",))
