"""A quick start: `gating --help` and `gating diff` import only what they use (bench/startup.py times
them; a test asserts what is imported, never how long it took)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gating.commands.cli import COMMANDS, build_parser, command_named, main
from gating.git.repository import commit_all, init_repo
from gating.testing.example import example_dir

# Run `gating ARGS...` and print, at exit, the top-level packages the process imported.
DUMP = ("import atexit, json, sys\n"
        "atexit.register(lambda: print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} | "
        "{m for m in sys.modules if m.startswith('gating.')})), file=sys.stderr))\n"
        "from gating.commands.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
NEVER = {"flask", "werkzeug", "gunicorn", "github", "httpx", "rich", "jinja2", "cryptography", "jwt", "nacl",
         "openapi_core", "pytest"}  # the App, the GitHub client, LLM calls, rendering, signing, the test tools


def imported(*args: str, cwd: Path) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", DUMP, *args], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stderr.strip().splitlines()[-1]))


def test_gating_help_imports_no_command_module_and_no_heavy_library(tmp_path: Path) -> None:
    mods = imported("--help", cwd=tmp_path)
    assert not mods & (NEVER | {"deepdiff", "jsonschema", "ruamel", "pydantic"})
    assert not {m for m in mods if m.startswith("gating.commands.")} - {"gating.commands.cli"}


def test_gating_diff_imports_its_command_and_nothing_of_the_app_github_or_llm_calls(tmp_path: Path) -> None:
    g = init_repo(tmp_path / "repo")
    shutil.copytree(example_dir(), g.root, dirs_exist_ok=True)
    commit_all(g, "the example")
    manifest = g.root / "gating.yml"
    manifest.write_text(manifest.read_text().replace("temperature: 0.2", "temperature: 0.3", 1))
    commit_all(g, "a warmer model")
    mods = imported("-C", str(g.root), "diff", "HEAD~1", "HEAD", cwd=tmp_path)
    assert "gating.commands.diff" in mods and not mods & NEVER
    assert not {m for m in mods if m.startswith("gating.commands.")} - {"gating.commands.cli", "gating.commands.diff",
                                                                         "gating.commands.common"}


def test_the_summaries_in_gating_help_are_the_ones_the_command_modules_register() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    registered = [(c.dest, c.help) for c in sub._choices_actions]
    assert registered == [(name, summary) for name, _module, summary in COMMANDS]


@pytest.mark.parametrize("name", [name for name, _module, _summary in COMMANDS])
def test_every_subcommand_parses_with_only_its_own_module_registered(name: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: gating {name} ")


def test_the_command_is_found_after_gatings_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert command_named(["-C", "diff", "snapshot", "--json"]) == "snapshot"
    assert command_named(["--version"]) is None and command_named([]) is None
    assert command_named(["--", "diff"]) == "diff"
    with pytest.raises(SystemExit) as done:
        main(["nosuch"])
    assert done.value.code == 2
    assert "invalid choice: 'nosuch'" in capsys.readouterr().err
