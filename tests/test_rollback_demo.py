"""`gating demo` walks the whole road: check, review, merge, deploy, /rollback, audit verify."""

from __future__ import annotations

import re
from pathlib import Path

from gating.commands.cli import main


def test_demo_walks_the_road_to_a_rollback(tmp_path: Path, capsys, monkeypatch):
    for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    assert main(["demo", "--keep", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    road = out[out.index("== review and merge #1 “Friendlier answers”"):]
    assert "❌ failure" in out[:out.index("== review and merge")]  # the regression came first
    assert "carol approved #1; gating / approval: ✅ success: Approved: all 2 applicable rules approved\n" in road
    m1 = re.search(r"merged #1 as ([0-9a-f]{7}) and deployed it to production", road).group(1)
    assert ("== a later pull request #2 “Let the bot issue refunds” adds a refund tool; its evals pass, it is "
            "approved, merged and deployed\n┌─ gating / eval · completed · ✅ success · ") in road
    assert re.search(r"merged #2 as [0-9a-f]{7} and deployed it to production", road)
    assert ("== in production the bot refunds orders nobody asked for: dave opens issue #3 “The bot refunds orders "
            "nobody asked for” and comments `/rollback last-good the bot refunds orders nobody asked for` on it\n"
            "reactions on the comment: 👀 🚀\n") in road
    assert re.search(rf"Opened #4 to roll the LLM system back to `{m1}` \(last-good\): http://127\.0\.0\.1:\d+/"
                     r"acme/support-bot/pull/4\n", road)
    assert "| tool | tool `issue_refund` removed: breaking for callers |" in road
    assert f"pull request #4: Rollback LLM system to {m1} (last-good)\n" in road
    assert f"tools/ on the rollback branch: tools/lookup_order.json, tools/open_ticket.json (the snapshot of {m1})" \
        in road
    log = re.findall(r"^\s+\d+  \S+  (\w+)\s+[0-9a-f]{12}\s+\S+  (\S+)", road, re.MULTILINE)
    assert log == [("merged", "@maya"), ("known_good", "@deployer"), ("merged", "@maya"),
                   ("known_good", "@deployer"), ("rolled_back", "@dave")]  # every GitHub account as @login
    assert re.search(r"^ok: 5 entries \(seq 1\.\.5\), 5 notes commits; every signature verifies", road, re.MULTILINE)
    configs = [p.read_text() for p in tmp_path.rglob("config") if p.parent.name == ".git"]
    assert len(configs) >= 3 and not [c for c in configs if "x-access-token" in c or "ghs_" in c]  # no tokens left
    # the demo's history drills: last-good (#1's merge) restores byte for byte and its evals replay
    clone, pub = str(tmp_path / "support-bot"), str(tmp_path / "github" / "audit.pub")
    assert main(["-C", clone, "rollback", "--drill", "--no-fetch", "--key", pub]) == 0
    drill = capsys.readouterr().out
    assert re.match(rf"rollback drill to {m1} \(last-good\) passed in [0-9.]+ s: \d+ system files restored byte for "
                    r"byte, snapshot sha256:[0-9a-f]{64}; evals pass \(\d+ cases replayed\)\n", drill)
    assert main(["-C", clone, "diff", "last-good", "--no-fetch", "--key", pub]) == 0
    diff = capsys.readouterr().out
    assert diff.startswith(f"Compared `last-good` ({m1}, known_good, audit seq 2) with `HEAD` (")
    assert "tool `issue_refund` added" in diff
