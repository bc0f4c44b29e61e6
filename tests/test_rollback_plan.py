"""The pure rollback plan: commands, permissions, target resolution over an audit log, the restore."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gating.audit import entry as audit
from gating.audit.entry import EntryFacts, RollbackRecord
from gating.rollback.plan import (
    Command,
    Refusal,
    Request,
    alert_rules,
    check_target,
    done_reply,
    make_plan,
    matching_rule,
    parse_command,
    plan_restore,
    pr_body,
    refusal_reply,
    resolve_target,
    rolled_back_facts,
    who_allows,
)
from gating.system.canonical import sha256_hex
from gating.system.revision import MemoryRevision
from gating.system.snapshot import build_snapshot
from gating.testing.example import example_dir

KEY = audit.Ed25519PrivateKey.generate()
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
A, B, C, TIP = "a" * 40, "b" * 40, "c" * 40, "d" * 40


def log(*events: tuple[str, str]) -> list[audit.Entry]:
    """A chained, signed log of (event, commit) facts, as read_log returns it."""
    out, prev = [], None
    for seq, (event, commit) in enumerate(events, 1):
        line = audit.make_line(EntryFacts(event, commit, "acme/support-bot", "bot", discriminator=str(seq)),
                               NOW, seq, prev, KEY)
        out.append(audit.parse_line(line, commit))
        prev = audit.sha256_line(line)
    return out


def files_a() -> dict[str, bytes]:
    root = example_dir()
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def files_b() -> dict[str, bytes]:
    f = files_a()
    f["prompts/answer.md"] = f["prompts/answer.md"].replace(b"Cite the article", b"Be brief. Cite the article")
    f["gating.yml"] = f["gating.yml"].replace(b"gpt-4o-2024-08-06", b"gpt-4o-2024-11-20")
    f["tools/refund.json"] = b'{"name": "refund", "parameters": {"type": "object", "properties": {}}}\n'
    f["app/answer.py"] = f["app/answer.py"] + b"\n# unrelated code change\n"
    return f


# -- commands and permissions ----------------------------------------------------------------------


@pytest.mark.parametrize("body, expected", [
    ("/rollback", Command("last-good", "")),
    ("/rollback last-good", Command("last-good", "")),
    ("/rollback previous refunds are broken since 14:00", Command("previous", "refunds are broken since 14:00")),
    ("Seen in the dashboards.\n  /rollback  1a2b3c4d   answers got rude  \nthanks", Command("1a2b3c4d", "answers got rude")),
    ("/rollback yesterday", Command("yesterday", "")),
    ("please do a /rollback", None),
    ("/rollbacks are great", None),
    ("", None),
], ids=["bare", "last-good", "reason", "later-line", "bad-target", "mid-line", "other-word", "empty"])
def test_parse_command(body, expected):
    assert parse_command(body) == expected


def test_unknown_target_is_refused_with_usage():
    with pytest.raises(Refusal) as e:
        check_target("yesterday")
    assert e.value.code == "unknown_target"
    assert refusal_reply(e.value) == ("Rollback refused: unknown target `yesterday`. Use `/rollback last-good`, "
                                      "`/rollback previous` or `/rollback <commit sha>`, optionally followed "
                                      "by a reason.\n")


@pytest.mark.parametrize("who, permission, teams, allowed", [
    (None, "write", (), True),
    (None, "read", (), False),
    (None, "admin", (), True),
    (["maintain"], "write", (), False),
    (["acme/sre"], "read", ("acme/sre",), True),
    (["acme/sre"], "admin", (), False),
    (["@oncall-bob"], "none", (), True),
    (["read"], "none", (), False),
], ids=["default-write", "default-read", "default-admin", "maintain-only", "team", "not-in-team", "login",
        "none-is-never-enough"])
def test_who_allows(who, permission, teams, allowed):
    assert who_allows(who, "oncall-bob", permission, teams) is allowed


# -- target resolution -----------------------------------------------------------------------------


def test_last_good_is_the_known_good_before_the_current_deployment():
    entries = log(("merged", A), ("deployed", A), ("known_good", A), ("merged", B), ("deployed", B))
    r = resolve_target(entries, "last-good", TIP)
    assert r.commit == A
    assert r.current.commit == B
    assert [(e.seq, e.event) for e in r.entries] == [(1, "merged"), (3, "known_good"), (5, "deployed")]


def test_a_failed_deployment_counts_as_the_current_state():
    entries = log(("merged", A), ("known_good", A), ("merged", B), ("deploy_failed", B))
    assert resolve_target(entries, "last-good", TIP).commit == A


def test_the_current_known_good_is_not_its_own_last_good():
    entries = log(("merged", C), ("known_good", C), ("merged", A), ("known_good", A), ("merged", B))
    assert resolve_target(entries, "last-good", TIP).commit == C


def test_no_known_good_state_yet():
    with pytest.raises(Refusal) as e:
        resolve_target(log(("merged", A), ("deployed", A)), "last-good", TIP)
    assert e.value.code == "no_known_good"
    assert e.value.message == ("no known-good state yet: the audit log has no known_good entry older than the "
                               f"current deployed state, {A[:7]} (deployed, audit seq 2). Mark a deployment "
                               "known good first, or name a commit: `/rollback <commit sha>`.")
    with pytest.raises(Refusal, match="default branch tip dddddd"):
        resolve_target([], "last-good", TIP)


def test_previous_is_the_deployment_before():
    entries = log(("merged", A), ("deployed", A), ("merged", C), ("merged", B), ("deployed", B))
    assert resolve_target(entries, "previous", TIP).commit == A
    with pytest.raises(Refusal) as e:
        resolve_target(log(("merged", A), ("deployed", A)), "previous", TIP)
    assert e.value.message == ("no earlier deployment to go back to: the audit log has nothing deployed before "
                               f"the current deployed state, {A[:7]} (deployed, audit seq 2).")
    # with no deployment at all, previous is the audited merge before the tip
    assert resolve_target(log(("merged", A), ("merged", TIP)), "previous", TIP).commit == A


def test_a_sha_must_name_an_audited_merge():
    entries = log(("merged", A), ("known_good", A))
    assert resolve_target(entries, A[:9], TIP, commit=A).commit == A
    with pytest.raises(Refusal) as e:
        resolve_target(entries, C[:7], TIP, commit=C)
    assert (e.value.code, e.value.message) == ("not_audited", f"{C[:7]} is not an audited merge: the audit log "
                                               "has no merged entry for it, so there is no recorded snapshot, "
                                               "evidence or approval to return to.")
    with pytest.raises(Refusal) as e:
        resolve_target(entries, "abcdef0", TIP, commit=None)
    assert e.value.code == "unknown_target"
    assert "no such commit in this repository" in e.value.message


# -- the restore -----------------------------------------------------------------------------------


def _plan(target_files, tip_files, entries=None):
    revs = {A: MemoryRevision(target_files, "A"), TIP: MemoryRevision(tip_files, "tip")}
    entries = entries or log(("merged", A), ("known_good", A), ("merged", TIP), ("deployed", TIP))
    return make_plan(entries, "last-good", TIP, "main", revs.__getitem__, lambda _s: None)


def test_restore_sets_every_system_file_and_removes_what_the_system_gained():
    plan = _plan(files_a(), files_b())
    target = build_snapshot(MemoryRevision(files_a()))
    assert plan.writes == {p: files_a()[p] for p in target.files}
    assert "gating.yml" in plan.writes
    assert plan.deletes == ("tools/refund.json",)
    assert "app/answer.py" not in plan.writes  # code outside the system stays as it is on the branch
    assert [(c.path, c.action) for c in plan.changes] == [
        ("gating.yml", "restored"), ("prompts/answer.md", "restored"), ("tools/refund.json", "removed")]
    assert plan.changes[2].before == sha256_hex(files_b()["tools/refund.json"]) and plan.changes[2].after is None
    assert plan.title == f"Rollback LLM system to {A[:7]} (last-good)"
    assert plan.branch_name == f"gating/rollback-{A[:12]}"
    summaries = [c.summary for c in plan.changeset.changes]
    assert any("gpt-4o-2024-11-20" in s and "gpt-4o-2024-08-06" in s for s in summaries), summaries
    assert plan.changeset.base == f"main ({TIP[:7]})" and plan.changeset.head == f"{A[:7]} (last-good)"


def test_nothing_to_restore():
    with pytest.raises(Refusal) as e:
        _plan(files_a(), {**files_a(), "app/answer.py": b"# only code changed\n"})
    assert (e.value.code, e.value.message) == (
        "nothing_to_restore", f"nothing to restore: the LLM system on main ({TIP[:7]}) is already the snapshot "
        f"of {A[:7]} (last-good).")


def test_a_tip_without_manifest_restores_everything():
    tip = {"app/answer.py": b"print('hi')\n"}
    plan = _plan(files_a(), tip)
    assert plan.deletes == () and set(plan.writes) == set(plan.target.files)
    assert {c.action for c in plan.changes} == {"added back"}
    assert "cannot be read" in plan.notes[0]


def test_texts_people_read():
    plan = _plan(files_a(), files_b())
    req = Request("@oncall-bob", "answers cite the wrong article", "comment on #7", "comment")
    body = pr_body(plan, req)
    assert body.startswith(f"Rolls the LLM system back to `{A[:12]}` (last-good), snapshot `{plan.target.digest}`.")
    assert "- Requested by: @oncall-bob (comment on #7)\n- Reason: answers cite the wrong article\n" in body
    assert "| `tools/refund.json` | removed (not in the system at aaaaaaa) |" in body
    assert "#### LLM system: " in body and "| 2 | known_good | `aaaaaaaaaaaa` |" in body
    reply = done_reply(plan, "http://x/pull/9", 9, existing=False)
    assert reply.startswith(f"Opened #9 to roll the LLM system back to `{A[:7]}` (last-good): http://x/pull/9\n")
    assert done_reply(plan, "http://x/pull/9", 9, existing=True).startswith(
        f"A rollback to `{A[:7]}` (last-good) is already open: #9 http://x/pull/9\n")
    facts = rolled_back_facts(plan, C, "acme/support-bot", req, pull_request=9)
    assert (facts.event, facts.commit, facts.previous_known_good, facts.pull_request) == ("rolled_back", C, A, 9)
    assert facts.snapshot == plan.target.data and facts.overrides == ()
    assert facts.rollback == RollbackRecord(A, "last-good", "@oncall-bob", "answers cite the wrong article", "comment",
                                            "comment on #7")
    assert facts.key == f"rolled_back:{C}:to {A}"


def test_plan_against_snapshots_directly():
    a, b = build_snapshot(MemoryRevision(files_a())), build_snapshot(MemoryRevision(files_b()))
    r = resolve_target(log(("merged", A), ("known_good", A), ("merged", B), ("deployed", B)), "last-good", TIP)
    plan = plan_restore(r, b, a, TIP)
    assert plan.to_dict()["deletes"] == ["tools/refund.json"]
    assert plan.to_dict()["writes"]["gating.yml"] == a.files["gating.yml"]


# -- alert rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize("labels, repo, name", [
    ({"alertname": "AnswerQualityDrop", "service": "support-bot"}, "acme/support-bot", "quality"),
    ({"alertname": "LatencyHigh", "severity": "page"}, "acme/support-bot", "paging"),
    ({"alertname": "LatencyHigh", "severity": "warn"}, "acme/support-bot", None),
    ({"alertname": "AnswerQualityDrop", "service": "support-bot"}, "acme/fork", None),
], ids=["exact", "regex", "no-match", "other-repository"])
def test_alert_rules(labels, repo, name):
    rollback = {"on_alert": [
        {"name": "quality", "match": {"alertname": "AnswerQualityDrop"}, "repository": "acme/support-bot"},
        {"name": "paging", "match_re": {"severity": "page|critical"}, "target": "previous"},
    ]}
    rule = matching_rule(rollback, labels, repo)
    assert (rule.name if rule else None) == name
    assert [r.target for r in alert_rules(rollback)] == ["last-good", "previous"]


def test_a_tip_whose_manifest_cannot_be_read_lists_only_the_files_the_restore_changes():
    """A tip whose gating.yml is broken (here: it names a glob that matches no file any more) still has
    most of the target's files as they were: they are not 'added back'."""
    tip = {p: b for p, b in files_a().items() if not p.startswith("tools/")}
    tip["gating.yml"] = files_a()["gating.yml"].replace(b"2024-08-06", b"2024-11-20")
    plan = _plan(files_a(), tip)
    assert "cannot be read" in plan.notes[0]
    assert [(c.path, c.action) for c in plan.changes] == [
        ("gating.yml", "restored"), *((p, "added back") for p in sorted(files_a()) if p.startswith("tools/"))]
    assert plan.changes[0].before == sha256_hex(tip["gating.yml"])
    broken = _plan(files_a(), {**files_a(), "gating.yml": b"version: 1\nname: [\n"})
    assert [(c.path, c.action) for c in broken.changes] == [("gating.yml", "restored")]
