"""Audit entries without I/O: statement shape, DSSE PAE and signatures, the chain, verification findings."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization

from gating.audit import entry as audit
from gating.audit import keys
from gating.audit.entry import Approval, EntryFacts, Override, RollbackRecord
from gating.audit.verify import NotesChange, NotesCommit, rewrite_findings, verify_log

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
KEY = keys.load_private(keys.private_pem(keys.generate()))
TRUSTED = {keys.keyid(KEY): KEY.public_key()}
SNAP = {"version": 1, "name": "support-bot", "files": {"gating.yml": "ab" * 32}, "components": {}}


def commit(i: int) -> str:
    return hashlib.sha1(f"commit {i}".encode()).hexdigest()


def facts(i: int, event: str = "merged", **kw) -> EntryFacts:
    return EntryFacts(event=event, commit=commit(i), repository="acme/support-bot", actor="alice",
                      pull_request=i, **kw)


def chain(n: int, key=KEY) -> list[tuple[str, bytes]]:
    """n entries, one per commit, correctly chained: (commit, line)."""
    out, prev = [], None
    for i in range(1, n + 1):
        line = audit.make_line(facts(i), NOW + timedelta(minutes=i), i, prev, key)
        out.append((commit(i), line))
        prev = audit.sha256_line(line)
    return out


def as_notes(lines: list[tuple[str, bytes]]) -> dict[str, bytes]:
    notes: dict[str, bytes] = {}
    for c, line in lines:
        notes[c] = notes.get(c, b"") + line + b"\n"
    return notes


def reencode(line: bytes, edit) -> bytes:
    """Change the decoded statement and put it back, signature untouched (what a forger can do)."""
    env = json.loads(line)
    st = json.loads(base64.b64decode(env["payload"]))
    edit(st)
    env["payload"] = base64.b64encode(json.dumps(st, sort_keys=True, separators=(",", ":")).encode()).decode()
    return json.dumps(env, sort_keys=True, separators=(",", ":")).encode()


def test_statement_is_in_toto_v1_about_the_commit_and_the_snapshot():
    f = facts(1, snapshot=SNAP, evals=audit.eval_summary(
                  {"verdict": "pass", "dataset_digest": "sha256:dd", "metrics": {"pass_rate": 0.97}, "cases": []},
                  "eval note"),
              approvals=[Approval("bob", "APPROVED", "2024-05-01T11:00:00Z", commit(9))],
              overrides=[Override("carol", "hotfix for incident 12", "2024-05-01T11:30:00Z")],
              previous_known_good=commit(0))
    st = audit.build_statement(f, NOW, 7, "sha256:" + "0" * 64)
    digest = hashlib.sha256(json.dumps(SNAP, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    assert st["predicateType"] == audit.PREDICATE_TYPE
    assert st["subject"] == [
        {"name": f"acme/support-bot@{commit(1)}", "digest": {"gitCommit": commit(1)}},
        {"name": "gating-snapshot", "digest": {"sha256": digest}},
    ]
    p = st["predicate"]
    assert p["event"] == "merged" and p["timestamp"] == "2024-05-01T12:00:00Z" and p["pull_request"] == 1
    assert p["snapshot"] == SNAP and p["snapshot_digest"] == "sha256:" + digest
    assert p["evals"] == {"verdict": "pass", "dataset_digest": "sha256:dd", "metrics": {"pass_rate": 0.97},
                          "source": "eval note"}
    assert p["approvals"] == [{"reviewer": "bob", "state": "APPROVED", "time": "2024-05-01T11:00:00Z",
                               "sha": commit(9)}]
    assert p["overrides"][0]["reason"] == "hotfix for incident 12"
    assert p["rollback"] == {"previous_known_good": commit(0)}
    assert (p["seq"], p["prev"], p["key"], p["backfilled"]) == (7, "sha256:" + "0" * 64, f"merged:{commit(1)}",
                                                                False)


def test_a_rolled_back_entry_keeps_the_request_beside_the_rollback_pointer():
    record = RollbackRecord(commit(0), "last-good", "@alice", "answers cite the wrong article", "comment",
                            "comment https://github.example/acme/support-bot/issues/7#issuecomment-1")
    p = audit.build_statement(facts(1, "rolled_back", previous_known_good=commit(0), rollback=record),
                              NOW, 1, None)["predicate"]
    assert p["rollback"] == {"previous_known_good": commit(0), "target": commit(0), "target_ref": "last-good",
                             "requested_by": "@alice", "reason": "answers cite the wrong article",
                             "trigger": "comment",
                             "source": "comment https://github.example/acme/support-bot/issues/7#issuecomment-1"}
    assert p["overrides"] == []
    bad = RollbackRecord(commit(0), "last-good", "@alice", "", "pager")
    with pytest.raises(ValueError, match="unknown rollback trigger 'pager'; allowed: comment, alert, "
                                         "deploy_failure, cli"):
        audit.build_statement(facts(1, "rolled_back", rollback=bad), NOW, 1, None)


def test_pae_matches_the_dsse_spec_example():
    assert audit.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world")


def test_envelope_line_is_canonical_and_signed_over_the_pae():
    line = audit.make_line(facts(1), NOW, 1, None, KEY)
    assert b"\n" not in line and b" " not in line
    env = json.loads(line)
    assert list(env) == ["payload", "payloadType", "signatures"]
    assert env["payloadType"] == "application/vnd.in-toto+json"
    raw = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert env["signatures"][0]["keyid"] == hashlib.sha256(raw).hexdigest()
    payload = base64.b64decode(env["payload"])
    KEY.public_key().verify(base64.b64decode(env["signatures"][0]["sig"]),
                            b"DSSEv1 28 application/vnd.in-toto+json %d " % len(payload) + payload)
    assert line == json.dumps(env, sort_keys=True, separators=(",", ":")).encode()


def test_idempotency_key_names_event_commit_and_discriminator():
    assert facts(1).key == f"merged:{commit(1)}"
    assert facts(1, event="known_good", discriminator="deployment 4").key == f"known_good:{commit(1)}:deployment 4"


@pytest.mark.parametrize("bad,msg", [
    (lambda: audit.build_statement(facts(1, event="shipped"), NOW, 1, None), "unknown audit event 'shipped'"),
    (lambda: audit.timestamp(datetime(2024, 1, 1)), "timezone-aware"),
], ids=["unknown-event", "naive-time"])
def test_bad_inputs_are_refused(bad, msg):
    with pytest.raises(ValueError, match=msg):
        bad()


def test_timestamps_are_utc():
    assert audit.timestamp(datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))) == "2024-05-01T12:00:00Z"


def test_a_well_formed_log_verifies():
    report = verify_log(as_notes(chain(5)), TRUSTED)
    assert report.ok and [e.seq for e in report.entries] == [1, 2, 3, 4, 5]
    e = report.entries[2]
    assert (e.event, e.commit, e.time, e.predicate["actor"]) == ("merged", commit(3),
                                                                 NOW + timedelta(minutes=3), "alice")


def first(notes, history=None, trusted=TRUSTED) -> str:
    report = verify_log(notes, trusted, history)
    assert not report.ok
    return str(report.first)


def test_changed_payload_fails_its_signature():
    lines = chain(4)
    c, line = lines[2]
    lines[2] = (c, reencode(line, lambda st: st["predicate"].update(actor="mallory")))
    assert first(as_notes(lines)) == (f"seq 3 (merged) on commit {c[:12]}: signature does not verify: "
                                      "the payload or the signature was changed")


def test_garbled_payload_is_named_by_its_line():
    lines = chain(3)
    c, line = lines[1]
    lines[1] = (c, line.replace(b'"payload":"eyJ', b'"payload":"xyJ'))
    assert first(as_notes(lines)) == f"seq 2 on commit {c[:12]} (line 1 of its note): the payload is not JSON " \
                                     "(payload changed?)"


def test_line_that_is_not_an_envelope_is_named_by_its_place():
    lines = chain(2)
    notes = as_notes(lines)
    notes[commit(2)] += b"hello\n"
    assert first(notes) == f"line 2 of the note on commit {commit(2)[:12]}: not JSON: not a DSSE envelope"


def test_entry_signed_by_another_key():
    other = keys.generate()
    lines = chain(3)
    c, line = lines[1]
    lines[1] = (c, audit.sign_statement(json.loads(audit.parse_line(line, c).payload), other))
    assert first(as_notes(lines)) == (
        f"seq 2 (merged) on commit {c[:12]}: signed by key {keys.keyid(other)[:16]}, which is not a trusted key "
        f"({keys.keyid(KEY)[:16]})")


def test_deleted_entry_is_named_as_missing():
    lines = chain(5)
    del lines[2]
    assert first(as_notes(lines)) == f"seq 3: missing from the log: seq 4 (merged) on commit {commit(4)[:12]} " \
                                     f"follows seq 2 (merged) on commit {commit(2)[:12]}"


def test_entries_swapped_between_commits():
    lines = chain(4)
    (c1, l1), (c2, l2) = lines[1], lines[2]
    lines[1], lines[2] = (c1, l2), (c2, l1)
    assert first(as_notes(lines)) == (f"seq 2 (merged) on commit {c2[:12]}: its subject is commit {c1[:12]} "
                                      "but it is stored on another commit (entry moved?)")


def test_entries_swapped_within_a_note():
    lines = []  # three entries about one commit, so only their order is wrong
    prev = None
    for i in range(1, 4):
        line = audit.make_line(facts(1, event="known_good", discriminator=str(i)), NOW, i, prev, KEY)
        lines.append((commit(1), line))
        prev = audit.sha256_line(line)
    lines[0], lines[1] = lines[1], lines[0]
    assert first(as_notes(lines)) == f"seq 1 (known_good) on commit {commit(1)[:12]}: out of order in its note: " \
                                     "it comes after seq 2"


def test_prev_that_does_not_match():
    lines = chain(3)
    lines[2] = (commit(3), audit.make_line(facts(3), NOW, 3, "sha256:" + "f" * 64, KEY))
    assert first(as_notes(lines)) == (f"seq 3 (merged) on commit {commit(3)[:12]}: prev sha256:{'f' * 64} "
                                      "is not the sha256 of seq 2")


def test_duplicate_seq():
    lines = chain(2)
    lines.append((commit(7), audit.make_line(facts(7), NOW, 2, audit.sha256_line(lines[0][1]), KEY)))
    assert "seq 2 appears twice" in first(as_notes(lines))


def history_of(lines: list[tuple[str, bytes]]) -> list[NotesCommit]:
    out, notes = [], {}
    for i, (c, line) in enumerate(lines):
        old = notes.get(c)
        notes[c] = (old or b"") + line + b"\n"
        out.append(NotesCommit(f"{i:040x}", (f"{i - 1:040x}",) if i else (), (NotesChange(c, old, notes[c]),)))
    return out


def test_history_that_only_grew_passes():
    lines = chain(4)
    assert verify_log(as_notes(lines), TRUSTED, history_of(lines)).ok


def test_history_that_removed_a_line_names_the_entry():
    lines = chain(3)
    hist = history_of(lines)
    c, line = lines[1]
    hist.append(NotesCommit("f" * 40, (hist[-1].sha,), (NotesChange(c, line + b"\n", b""),)))
    report = verify_log(as_notes(lines), TRUSTED, hist)
    assert [str(f) for f in report.findings] == [
        f"seq 2 (merged) on commit {c[:12]}: notes commit ffffffffffff removed or changed this entry "
        "(a note only grows)",
        "notes commit ffffffffffff: notes commit ffffffffffff adds 0 lines; every notes commit adds exactly one",
    ]


def test_history_commit_that_added_two_lines():
    lines = chain(2)
    notes = as_notes(lines)
    hist = [NotesCommit("a" * 40, (), tuple(NotesChange(c, None, notes[c]) for c in notes))]
    assert first(notes, hist) == (f"seq 1 (merged) on commit {commit(1)[:12]}: notes commit aaaaaaaaaaaa adds 2 "
                                  "lines; every notes commit adds exactly one")


def test_rewrite_names_the_first_lost_entry():
    lines = chain(4)
    old = as_notes(lines)
    new = as_notes(lines[:2] + lines[3:])
    found = rewrite_findings(old, new, "a" * 40, "b" * 40)
    assert [str(f) for f in found] == [
        f"seq 3 (merged) on commit {commit(3)[:12]}: removed or changed by a rewrite of the notes ref (the "
        "previously verified tip aaaaaaaaaaaa is not in the history of bbbbbbbbbbbb: force-pushed)"]


def test_eval_summary_keeps_only_the_evidence_it_needs():
    record = {"verdict": "fail", "dataset_digest": "sha256:1", "metrics": {"pass_rate": 0.5}, "cases": [1, 2]}
    assert audit.eval_summary(record, "gating / eval check run") == {
        "verdict": "fail", "dataset_digest": "sha256:1", "metrics": {"pass_rate": 0.5},
        "source": "gating / eval check run"}
