"""Scheduled rollback drills in the App, end to end on the emulator: a drill of the last known-good
state passes and records its signed entry, leaving no branch behind; a drill whose target no longer
restores (a system file's blob gone from the repository) fails, says why in its entry and opens an
issue."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from app_support import serve_in_thread
from test_rollback_app import ANSWER, HANDLERS, MANIFEST, REFUND, World, make_world

DRILL_HANDLERS = HANDLERS + ",gating.server.handlers.drills"


@pytest.fixture
def world(github, github_repo, tmp_path: Path):
    """M1 (a code change: the example's system, whose cassettes it keeps) merged, deployed, known good;
    M2 (a new tool, a prompt edit, a re-pin) merged, deployed, known good: last-good is M1."""
    app, key = make_world(github, github_repo, tmp_path, GATING_HANDLERS=DRILL_HANDLERS, GATING_DRILL_SECONDS=0)
    with serve_in_thread(app) as url:
        github.webhook_url = url + "/webhooks"
        w = World(github, github_repo, app, key, tmp_path)
        w.shas["M1"] = w.merge("good", {"app/answer.py": "print('v1')\n"}, "Code only")
        w.deploy(w.shas["M1"])
        w.shas["M2"] = w.merge("bad", {"tools/refund.json": REFUND, "prompts/answer.md": ANSWER.replace(
            "Cite the article title in brackets.", "Be brief."), "gating.yml": MANIFEST.replace(
            "gpt-4o-2024-08-06", "gpt-4o-2024-11-20")}, "Refunds, brief answers")
        w.deploy(w.shas["M2"])
        w.settle()
        yield w


def drill(world: World, period: int = 1) -> None:
    """The drill's timed job for one period, as the scheduler queues it."""
    state = world.app.extensions["gating"]
    payload = {"action": "drill", "period": period, "every_seconds": 604800.0}
    handlers = [(h.name, h.key(payload)) for h in state.registry.match("schedule", payload)]
    state.queue.enqueue(f"schedule:drill:{period}", "schedule", "drill", json.dumps(payload), handlers)
    state.worker.wake()
    world.settle()


def drills(world: World) -> list:
    return [e for e in world.entries() if e.event == "drill"]


def issues(world: World) -> list[dict]:
    return [world.api().client.get(f"{world.api().path}/issues/{i.number}")
            for i in world.emu.repo_record(world.repo).issues.values() if not i.is_pull]


def test_a_drill_of_the_last_good_state_passes_and_records_it(world: World):
    m1 = world.shas["M1"]
    drill(world)
    (entry,) = drills(world)
    h = entry.predicate["health"]
    assert entry.commit == m1 and h["verdict"] == "passed", h["problems"]
    assert h["target"] == "last-good" and h["restored_digest"] == h["snapshot_digest"]
    assert h["recorded_digest"] == h["snapshot_digest"]  # what the merged entry recorded
    assert h["evals"]["verdict"] == "pass" and h["branch"].startswith(f"gating/drill-{m1[:12]}-")
    assert h["summary"].startswith(f"rollback drill to {m1[:7]} (last-good) passed in ")
    assert not world.repo.git.run("for-each-ref", "refs/heads/gating/").strip()  # the scratch branch is gone
    assert issues(world) == []
    drill(world)  # the same period again: drilled once
    assert len(drills(world)) == 1


def test_a_drill_whose_target_lost_a_file_fails_and_opens_an_issue(world: World):
    m1 = world.shas["M1"]
    g = world.repo.git
    blob = g.run("rev-parse", f"{m1}:prompts/answer.md")
    obj = Path(g.run("rev-parse", "--git-path", f"objects/{blob[:2]}/{blob[2:]}"))
    (obj if obj.is_absolute() else g.root / obj).unlink()  # only M1 had this version of the prompt
    drill(world, period=2)
    (entry,) = drills(world)
    h = entry.predicate["health"]
    assert h["verdict"] == "failed"
    assert "prompts/answer.md" in h["summary"]
    (issue,) = issues(world)
    assert issue["title"].startswith("Rollback drill failed: rolling back to ")
    assert "prompts/answer.md" in issue["body"] and f"(seq {entry.seq})" in issue["body"]
    assert not g.run("for-each-ref", "refs/heads/gating/").strip()


def test_a_drill_that_keeps_failing_comments_on_its_open_issue_and_opens_another_once_it_is_closed(
        world: World, monkeypatch: pytest.MonkeyPatch):
    from gating.server.handlers import drills as handler

    monkeypatch.setattr(handler, "clock", lambda: 1_800_000_000.0)  # every drill in the same second: still one each
    m1 = world.shas["M1"]
    g = world.repo.git
    blob = g.run("rev-parse", f"{m1}:prompts/answer.md")
    obj = Path(g.run("rev-parse", "--git-path", f"objects/{blob[:2]}/{blob[2:]}"))
    (obj if obj.is_absolute() else g.root / obj).unlink()
    # a person's issue with the same words is not the App's: left alone
    world.emu.create_issue(world.repo, "Rollback drill failed: copied", "alice",
                           body="<!-- gating: rollback drill -->")
    drill(world, period=2)
    drill(world, period=3)  # the next week: still failing
    first, second = drills(world)
    assert first.predicate["health"]["verdict"] == second.predicate["health"]["verdict"] == "failed"
    opened = [i for i in issues(world) if i["user"]["type"] == "Bot"]
    assert len(opened) == 1 and len(issues(world)) == 2  # one issue for both failures
    (again,) = [c for c in world.emu.list_comments(world.repo, opened[0]["number"])]
    assert again["body"].startswith("The rollback drill failed again (")
    assert "prompts/answer.md" in again["body"] and f"(seq {second.seq})" in again["body"]
    assert world.emu.list_comments(world.repo, opened[0]["number"] - 1) == []  # alice's issue: no comment
    # the team closes it (they think it is fixed); the next failure is news again
    world.emu.repo_record(world.repo).issues[opened[0]["number"]].state = "closed"
    drill(world, period=4)
    assert len([i for i in issues(world) if i["user"]["type"] == "Bot"]) == 2
    started = datetime.fromtimestamp(1_800_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [e.key for e in drills(world)] == [f"drill:{m1}:at {started}, period {n}" for n in (2, 3, 4)]
