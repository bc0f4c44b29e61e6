"""`gating demo` walks the whole road: check, review, merge, deploy, /rollback, audit verify."""

from __future__ import annotations

import re
from pathlib import Path

from gating.cli import main


def test_demo_walks_the_road_to_a_rollback(tmp_path: Path, capsys, monkeypatch):
    for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    assert main(["demo", "--keep", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    road = out[out.index("== review and merge #1 tune-answers"):]
    assert "carol approved #1; gating / approval: ✅ success: Approved: all 2 applicable rules approved\n" in road
    m1 = re.search(r"merged #1 as ([0-9a-f]{7}) and deployed it to production", road).group(1)
    assert "┌─ gating / eval · completed · ✅ success · " in road
    assert re.search(r"merged #3 as [0-9a-f]{7} and deployed it to production", road)
    assert "reactions on the comment: 👀 🚀\n" in road
    assert re.search(rf"Opened #5 to roll the LLM system back to `{m1}` \(last-good\): http://127\.0\.0\.1:\d+/"
                     r"acme/support-bot/pull/5\n", road)
    assert "| tool | tool `issue_refund` removed: breaking for callers |" in road
    assert f"pull request #5: Rollback LLM system to {m1} (last-good)\n" in road
    assert f"tools/ on the rollback branch: tools/lookup_order.json, tools/open_ticket.json (the snapshot of {m1})" \
        in road
    events = re.findall(r"^\s+\d+  \S+  (\w+)\s", road, re.MULTILINE)
    assert events == ["merged", "known_good", "merged", "known_good", "rolled_back"]
    assert re.search(r"^ok: 5 entries \(seq 1\.\.5\), 5 notes commits; every signature verifies", road, re.MULTILINE)
