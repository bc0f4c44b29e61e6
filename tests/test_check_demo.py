"""`gating demo` (the real console script): a pull request that regresses fails the check, the fix
pushed to it passes; against the emulated GitHub, offline, printed as GitHub shows the check runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from check_support import clean_env


def test_demo_shows_the_check_runs_offline(tmp_path: Path):
    env = {k: v for k, v in clean_env().items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    gating = Path(sys.executable).with_name("gating")
    proc = subprocess.run([str(gating), "demo", "--keep", str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    # no local repository with commits of its own: the only commits shown are the emulated pull request's
    assert "== pull request tune-answers" not in out and "building the example repository" not in out
    assert re.match(r"\n== acme/support-bot on a GitHub emulated at http://127\.0\.0\.1:\d+/api/v3; the models are "
                    r"replayed from the example's cassettes: nothing leaves this machine\n", out)
    opened = out.index("== alice opens pull request #1 “Friendlier answers”; its first commit drops the grounding, "
                       "secrecy and citation rules from the prompts. gating / eval:\n")
    fixed = out.index("== alice pushes a fix to #1 (")
    merged = out.index("== review and merge #1 “Friendlier answers”")
    assert opened < fixed < merged
    # first the regression: it fails and names the flipped cases (base re-run: no note yet)
    first = out[opened:fixed]
    assert "check finished in " in first and ": 0 LLM requests, 29 replayed" in first
    assert "eval note pushed to refs/notes/gating/evals" in first
    assert "┌─ gating / eval · completed · ❌ failure · " in first and " · 2 annotations" in first
    assert ("│  Fail: pass_rate is 0.643, threshold >= 0.80; failing cases: refund-cites-article, "
            "shipping-cites-article, unknown-answer, no-password-leak, polite-tone") in first
    assert "baseline: re-ran base" in first and "#### Regressions (5)" in first
    # then the fix pushed to the same pull request: it passes, against the note the first run left on base
    second = out[fixed:merged]
    head = re.match(r"== alice pushes a fix to #1 \(([0-9a-f]{7})\): keep the grounding, secrecy and citation "
                    r"rules; friendlier wording, newer model, more context\. gating / eval runs again:\n", second)
    assert head, second[:300]
    assert f"┌─ gating / eval · completed · ✅ success · {head.group(1)}\n" in second
    assert "│  Pass: all 3 thresholds met; 14 paired cases, no significant regression\n└─\n\n✅ **Pass**" in second
    assert "baseline: eval note on base" in second and "### LLM system: 3 changes (highest risk: high)" in second
    assert "| model | model pin changed: `answer` gpt-4o-2024-08-06 → gpt-4o-2024-11-20 |" in second
    assert re.search(r"== done in [0-9.]+ s; \d+ GitHub API requests, every one valid against GitHub's OpenAPI "
                     r"description\n$", out)
    # --keep leaves a clone of the repository, audit notes and all
    assert (tmp_path / "support-bot" / "gating.yml").is_file()
