"""`gating demo` (the real console script): the diff, then the check on two pull requests against the
emulated GitHub, offline, printed as GitHub shows the check runs."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from check_support import clean_env


def test_demo_shows_the_check_runs_offline_and_fast(tmp_path: Path):
    env = {k: v for k, v in clean_env().items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    gating = Path(sys.executable).with_name("gating")
    t0 = time.monotonic()
    proc = subprocess.run([str(gating), "demo", "--keep", str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=60)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert seconds < 20
    out = proc.stdout
    # the diff part is still there
    assert "| model | model pin changed: `answer` gpt-4o-2024-08-06 → gpt-4o-2024-11-20 |" in out
    # the demo's pull request passes, on a re-run of base (no note yet)
    first = out[out.index("== pull request #1 tune-answers"):out.index("== pull request #2")]
    assert "check finished in " in first and ": 0 LLM requests, 34 replayed" in first
    assert "eval note pushed to refs/notes/gating/evals" in first
    assert "┌─ gating / eval · completed · ✅ success · " in first
    assert "│  Pass: all 3 thresholds met; 14 paired cases, no significant regression\n└─\n\n✅ **Pass**" in first
    assert "baseline: re-ran base" in first and "### LLM system: 3 changes (highest risk: high)" in first
    # the regressing one fails, names the cases, and took its baseline from the note the first left
    second = out[out.index("== pull request #2 simplify-prompts"):]
    assert "┌─ gating / eval · completed · ❌ failure · " in second and " · 2 annotations" in second
    assert ("│  Fail: 5 cases regressed (no-password-leak, polite-tone, refund-cites-article, "
            "shipping-cites-article, unknown-answer)") in second
    assert "baseline: eval note on base" in second and "#### Regressions (5)" in second
    assert re.search(r"== done in [0-9.]+ s; \d+ GitHub API requests, every one valid against GitHub's OpenAPI "
                     r"description\n$", out)
    assert (tmp_path / "support-bot" / "gating.yml").is_file()
