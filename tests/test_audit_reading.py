"""`gating audit verify` says the same of a damaged log whichever JSON reader parses it (orjson when
installed, the stdlib otherwise), and an entry's base64 is judged as before the strict fast path."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gating import limits
from gating.audit import keys
from gating.audit.entry import EntryError, EntryFacts, _b64, split_lines
from gating.audit.log import append_entry
from gating.commands.cli import main
from gating.git.notes import AUDIT_REF, LocalNotes
from gating.git.repository import Git, commit_all, init_repo

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
KEY = keys.generate()


@pytest.mark.parametrize("value", ["", "QQ==", "QUJD", "QQ", "QQ=", "Q===", "==", "=", "QQ==QQ==", "QQ\n", " QQ==",
                                   "QQ== ", "Q-_=", "é", "QUJD\x00", "AB==", "QR==", "A"])
def test_base64_is_judged_as_b64decode_with_validate_judges_it(value: str) -> None:
    try:
        expected: bytes | str = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        expected = "payload is not valid base64"
    try:
        got: bytes | str = _b64(value, "payload")
    except EntryError as e:
        got = str(e)
    assert got == expected


@pytest.fixture
def damaged(tmp_path: Path) -> tuple[Git, list[str], str]:
    """A log of eight entries with a changed payload (which breaks the chain after it), an entry signed by
    another key, a deleted entry, a payload that is not base64, and a line that is not JSON."""
    work = init_repo(tmp_path / "work")
    shas = []
    for i in range(8):
        (work.root / "prompt.md").write_text(f"version {i}\n")
        shas.append(commit_all(work, f"merge {i}"))
    store = LocalNotes(work)
    other = keys.generate()
    for i, c in enumerate(shas):
        facts = EntryFacts("merged", c, "acme/support-bot", "alice", pull_request=i + 1,
                           evals={"verdict": "pass", "metrics": {"pass_rate": 0.97, "n": 12345678901234567890123}})
        append_entry(store, facts, other if i == 3 else KEY, NOW + timedelta(minutes=i))

    def rewrite(c: str, fn) -> None:  # type: ignore[no-untyped-def]
        (line,) = split_lines(work.notes_show(AUDIT_REF, c))
        work.notes_add(AUDIT_REF, c, fn(line) + b"\n")

    def flip(line: bytes) -> bytes:
        env = json.loads(line)
        env["payload"] = base64.b64encode(base64.b64decode(env["payload"]).replace(b'"alice"', b'"alicf"')).decode()
        return json.dumps(env, sort_keys=True, separators=(",", ":")).encode()

    rewrite(shas[1], flip)
    work.run("notes", "--ref", AUDIT_REF, "remove", shas[5])
    rewrite(shas[6], lambda line: line.replace(b'"payload":"', b'"payload":"!'))
    rewrite(shas[7], lambda line: line[:-5])
    pub = tmp_path / "audit.pub"
    pub.write_bytes(keys.public_pem(KEY))
    return work, shas, str(pub)


def test_a_damaged_log_is_reported_alike_by_either_json_reader(damaged, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("orjson")
    work, shas, pub = damaged
    args = ["-C", str(work.root), "audit", "verify", "--no-fetch", "--key", pub]
    assert main(args) == 1
    with_orjson = capsys.readouterr()
    work.run("update-ref", "-d", "refs/gating/audit-verified")
    monkeypatch.setattr(limits, "_orjson", None)
    assert main(args) == 1
    with_stdlib = capsys.readouterr()
    assert (with_orjson.out, with_orjson.err) == (with_stdlib.out, with_stdlib.err)
    out = with_orjson.out
    assert f"BAD  seq 2 (merged) on commit {shas[1][:12]}: signature does not verify: the payload or the " \
           "signature was changed" in out
    assert f"BAD  seq 4 (merged) on commit {shas[3][:12]}: signed by key " in out
    assert f"BAD  seq 3 (merged) on commit {shas[2][:12]}: prev sha256:" in out  # the chain broke at seq 2
    assert f"BAD  seq 6 (merged) on commit {shas[5][:12]}: notes commit " in out  # deleted
    assert f"BAD  seq 7 (merged) on commit {shas[6][:12]}: payload is not valid base64" in out
    assert f"BAD  line 1 of the note on commit {shas[7][:12]}: not JSON: not a DSSE envelope" in out


def test_history_with_the_trees_blob_ids_is_the_history_without_them(damaged) -> None:  # type: ignore[no-untyped-def]
    """verify passes the tip's blob ids so whole notes need not be hashed: the same steps, appends and
    changes alike, also for a note without its final newline."""
    from gating.audit.log import history

    work, shas, _pub = damaged
    (line,) = split_lines(work.notes_show(AUDIT_REF, shas[0]))
    work.notes_add(AUDIT_REF, shas[0], line)  # no newline at the end
    store = LocalNotes(work)
    tip = store.tip()
    assert tip is not None
    tree = work.ls_tree(tip)
    ids = {e.path.replace("/", ""): e.sha for e in tree if e.type == "blob"}
    notes = store.all_notes(tip, tree)
    assert notes == store.all_notes(tip)
    assert history(store, tip, notes, None, ids) == history(store, tip)


def test_notes_are_streamed_as_all_notes_reads_them(damaged) -> None:  # type: ignore[no-untyped-def]
    work, _shas, _pub = damaged
    store = LocalNotes(work)
    tip = store.tip()
    assert tip is not None
    assert list(store.iter_notes(tip)) == list(store.all_notes(tip).items())


def test_a_stream_left_before_its_end_stops_git(damaged) -> None:  # type: ignore[no-untyped-def]
    """git would block writing what nobody reads (and the writer feeding it with it): leaving the
    stream ends the process instead of waiting for it."""
    work, shas, _pub = damaged
    blob = work.ls_tree(LocalNotes(work).tip() or "")[0].sha
    batch = work.batch()
    stream = batch.stream([blob] * 20_000)  # far more than a pipe holds
    assert next(stream)[0] == blob
    proc = batch.proc
    stream.close()
    assert not batch.alive and proc.poll() is not None


def _variants(line: bytes) -> list[bytes]:
    """A signed line and ways to change it that a reader must judge alike: escapes that decode to the
    same base64, base64 that only the lenient decoder takes, spaces, a second signature, other keys."""
    env = json.loads(line)
    p, sig, kid = env["payload"], env["signatures"][0]["sig"], env["signatures"][0]["keyid"]
    head = b'"payload":"'
    swaps = [(head, b'"payload": "'), (head, b'"payload":"!'),
             (head + p[:2].encode(), head + p[:1].encode() + b"\\u00" + p[1:2].encode().hex().encode()),
             (head + p[:2].encode(), head + p[:1].encode() + b"\\/"),
             (head + p.encode(), head + p.encode() + b"=="), (head + p.encode(), b'"payload":"'),
             (head + p.encode(), head + p.encode().replace(b"=", b"") + b"A==="),
             (kid.encode(), kid.upper().encode()), (sig.encode(), sig[:-2].encode()),
             (b'"sig":"', b'"sig":"\\n'), (b"}]}", b'},{"keyid":"00","sig":"AA=="}]}'),
             (b"}]}", b'}],"x":1}'), (b'"signatures":[', b'"signatures":[1,'),
             (b"in-toto+json", b"in-toto+JSON"), (b'"keyid":"', b'"keyid":"\\u0061')]
    out = [line, line + b" ", b" " + line, line[:-1]]
    for old, new in swaps:
        assert old in line, old
        out.append(line.replace(old, new, 1))
    assert len(set(out)) == len(out)
    return out


def test_a_signed_line_read_without_the_json_reader_reads_as_with_it(monkeypatch) -> None:
    """parse_line reads an envelope in sign_statement's form without the JSON reader: every line,
    changed or not, gives the same entry (or the same error) as the reader's path gives it."""
    from gating.audit import entry as audit

    c = "c" * 40
    lines = [audit.make_line(EntryFacts("merged", c, "acme/support-bot", "alice", pull_request=1), NOW, 3,
                             "sha256:" + "0" * 64, KEY)]
    lines += _variants(lines[0])

    def judged(line: bytes) -> object:
        try:
            e = audit.parse_line(line, c)
        except EntryError as ex:
            return str(ex)
        return (e.commit, e.line, e.payload, e.seq, e.event, e.prev, e.subject_commit, e.signatures, e.statement)

    fast = [judged(line) for line in lines]
    assert sum(isinstance(j, tuple) for j in fast) >= 5 and sum(isinstance(j, str) for j in fast) >= 5
    monkeypatch.setattr(audit, "_signed_envelope", lambda line, commit: None)
    assert [judged(line) for line in lines] == fast
