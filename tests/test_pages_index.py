"""The pages' index as a pure function of a verified log: verification state per entry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from gating.audit import keys
from gating.audit.entry import EntryFacts
from gating.audit.log import append_entry, verify
from gating.audit.witness import CrossCheck, Witness
from gating.git.notes import LocalNotes
from gating.git.repository import commit_all, init_repo
from gating.pages.index import WITNESS_DEPTH, entry_rows

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
KEY = keys.generate()


def test_witness_state_by_age_and_signature_state_by_key(tmp_path: Path):
    g = init_repo(tmp_path / "work")
    store = LocalNotes(g)
    n = WITNESS_DEPTH + 5
    for i in range(n):
        (g.root / "prompt.md").write_text(f"version {i}\n")
        append_entry(store, EntryFacts("merged", commit_all(g, f"merge {i}"), "acme/bot", "alice"), KEY,
                     NOW + timedelta(minutes=i))
    trusted = {keys.keyid(KEY.public_key()): KEY.public_key()}
    report = verify(store, trusted)
    top = report.entries[-1]
    seen = Witness(1, top.commit, 42, "gating", {"seq": top.seq, "event": "merged", "commit": top.commit,
                                                   "hash": top.digest, "keyid": "k", "public_key": ""})
    rows = {r[0]: r for r in entry_rows(report, trusted, CrossCheck([], 42, "gating (app id 42)", [seen]))}
    witness = {seq: r[10] for seq, r in rows.items()}
    assert witness[n] == "ok"
    assert {witness[s] for s in range(n - WITNESS_DEPTH + 1, n)} == {"not witnessed"}  # read, and absent
    assert {witness[s] for s in range(1, n - WITNESS_DEPTH + 1)} == {"not checked"}  # older: not read
    assert {r[8] for r in rows.values()} == {"ok"} and {r[9] for r in rows.values()} == {"ok"}
    untrusted = {r[8] for r in entry_rows(report, {}, None)}
    assert untrusted == {"no trusted key to check it against"}
