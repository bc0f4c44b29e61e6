"""The README's promises that can drift: the quick start is what CI runs, the example is the real one."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_quick_start_test_command_is_what_ci_runs() -> None:
    quick = README[README.index("## Quick start"):README.index("## The manifest")]
    commands = [line.strip() for line in quick.splitlines() if line.startswith("    python3 -m venv")]
    assert len(commands) == 2
    assert commands[0].endswith(".venv/bin/gating demo")
    assert commands[1] in (ROOT / ".ci/run").read_text()


def test_readme_shows_the_bundled_manifest_verbatim() -> None:
    manifest = (ROOT / "examples/support-bot/gating.yml").read_text()
    assert "```yaml\n" + manifest + "```" in README
