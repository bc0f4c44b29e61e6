"""Malformed manifests: one clear message each, with file:line:column, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gating.commands.cli import main
from gating.git.repository import Git

GOOD_HEAD = "version: 1\nname: bot\ncomponents:\n"

CASES = [
    ("broken-yaml", "version: 1\nname: [bot\n", "gating.yml:3:1: invalid YAML: expected ',' or ']'"),
    ("tab-indent", "version: 1\nname: bot\ncomponents:\n\tmodels: {}\n", "gating.yml:4:1: invalid YAML"),
    ("empty-file", "", "gating.yml:1:1: file is empty; expected a mapping with version, name and components"),
    ("only-comments", "# nothing here\n", "gating.yml:1:1: file has no content (only comments)"),
    ("top-level-list", "- a\n- b\n", "gating.yml:1:1: expected a mapping at the top level, got a list"),
    ("wrong-version", "version: 2\nname: bot\ncomponents: {}\n", "gating.yml:1:10: version: must be 1, got 2"),
    ("missing-name", "version: 1\ncomponents: {}\n", "gating.yml:1:1: (top level): missing required key 'name'"),
    (
        "unknown-key-did-you-mean",
        GOOD_HEAD + "  promts: {}\n",
        "gating.yml:4:3: unknown key 'promts' in components (did you mean 'prompts'?)",
    ),
    (
        "unknown-top-level-key",
        GOOD_HEAD + "  models: {}\nevalz: {}\n",
        "gating.yml:5:1: unknown key 'evalz' in (top level) (did you mean 'evals'?)",
    ),
    (
        "wrong-type-params",
        GOOD_HEAD + "  models:\n    a: {provider: openai, model: gpt-4o-2024-08-06, params: 3}\n",
        "gating.yml:5:61: components.models.a.params: expected a mapping, got 3 (a number)",
    ),
    (
        "wrong-type-count",
        GOOD_HEAD + "  models: {}\napprovals:\n  - name: r\n    requires: {count: two}\n",
        "gating.yml:7:23: approvals[0].requires.count: expected a whole number, got 'two' (a string)",
    ),
    (
        "unknown-provider",
        GOOD_HEAD + "  models:\n    a: {provider: openia, model: gpt-4o-2024-08-06}\n",
        "gating.yml:5:19: components.models.a.provider: 'openia' is not one of: openai, anthropic, replay, "
        "azure, ollama, vllm, litellm, bedrock, google, vertex (did you mean 'openai'?)",
    ),
    (
        "duplicate-component",
        GOOD_HEAD + "  models:\n    a: {provider: openai, model: m-2024-01-01}\n    a: {provider: openai, model: m}\n",
        "gating.yml:6:5: duplicate key 'a' (each name may appear once)",
    ),
    (
        "missing-prompt-file",
        GOOD_HEAD + "  prompts:\n    p: {file: prompts/answr.md}\n",
        "gating.yml:5:15: components.prompts.p.file: file 'prompts/answr.md' does not exist "
        "(did you mean 'prompts/answer.md'?)",
    ),
    (
        "glob-matches-nothing",
        GOOD_HEAD + "  tools: {files: ['tools/*.jsn']}\n",
        "gating.yml:4:19: components.tools.files[0]: glob 'tools/*.jsn' matches no file",
    ),
    (
        "unknown-model-reference",
        GOOD_HEAD + "  models:\n    answer: {provider: openai, model: m-2024-01-01}\n"
        "  prompts:\n    p: {file: prompts/answer.md, model: answr}\n",
        "gating.yml:7:41: unknown model 'answr' (did you mean 'answer'?)",
    ),
    (
        "bad-threshold",
        GOOD_HEAD + "  models: {}\nevals: {datasets: [evals/golden.jsonl], thresholds: {pass_rate: most}}\n",
        "gating.yml:5:65: evals.thresholds.pass_rate: 'most' is not a threshold like '>= 0.9' or '<= 3000'",
    ),
    (
        "unknown-fallback",
        GOOD_HEAD + "  models:\n    answer: {provider: openai, model: m-2024-01-01}\n"
        "  orchestration: {fallback: [answr]}\n",
        "gating.yml:6:30: unknown model or prompt 'answr' (did you mean 'answer'?)",
    ),
    (
        "param-wrong-type",
        GOOD_HEAD + "  models:\n    a: {provider: openai, model: m-2024-01-01, params: {temperature: hot}}\n",
        "gating.yml:5:70: components.models.a.params.temperature: expected a number, got 'hot' (a string)",
    ),
    (
        "directory-named-as-file",
        GOOD_HEAD + "  prompts:\n    p: {file: prompts}\n",
        "gating.yml:5:15: components.prompts.p.file: 'prompts' is a directory, not a file "
        "(to name the files in it, use 'prompts/*')",
    ),
    (
        "path-escapes-repo",
        GOOD_HEAD + "  prompts:\n    p: {file: ../secrets.md}\n",
        "gating.yml:5:15: '../secrets.md' must be a path inside the repository",
    ),
]


def _write(repo: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    (repo / "gating.yml").write_bytes(data)


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_manifest_one_clear_message(example_repo: Git, capsys, text: str, expected: str) -> None:
    _write(example_repo.root, text)
    code = main(["-C", str(example_repo.root), "snapshot"])
    err = capsys.readouterr().err
    assert code == 2
    first = err.splitlines()[0]
    assert first.startswith(expected), err
    assert "Traceback" not in err
    assert err.rstrip().endswith("in the LLM system manifest")


SPECIAL = [
    ("not-utf8", b"version: 1\nname: caf\xe9\n", "gating.yml:2:10: file is not UTF-8 text"),
    ("binary", b"version: 1\x00\x01\x02", "gating.yml:1:1: file is binary (contains NUL bytes), not YAML"),
    ("huge", b"# " + b"x" * (1024 * 1024 + 10) + b"\n", "gating.yml:1:1: file is 1,048,589 bytes; a manifest may be at most 1,048,576"),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in SPECIAL], ids=[c[0] for c in SPECIAL])
def test_bad_manifest_bytes(example_repo: Git, capsys, data: bytes, expected: str) -> None:
    _write(example_repo.root, data)
    assert main(["-C", str(example_repo.root), "snapshot"]) == 2
    assert capsys.readouterr().err.splitlines()[0] == expected


def test_binary_prompt_file_is_named(example_repo: Git, capsys) -> None:
    (example_repo.root / "prompts/system.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert main(["-C", str(example_repo.root), "snapshot"]) == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        "prompts/system.md:1:1: file is binary (contains NUL bytes); system files must be UTF-8 text"
    )


def test_invalid_tool_json_has_position(example_repo: Git, capsys) -> None:
    (example_repo.root / "tools/broken.json").write_text('{"name": "x",\n  oops\n}\n')
    assert main(["-C", str(example_repo.root), "snapshot"]) == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        "tools/broken.json:2:3: invalid JSON: Expecting property name enclosed in double quotes"
    )


def test_duplicate_tool_name_across_files(example_repo: Git, capsys) -> None:
    (example_repo.root / "tools/lookup_again.json").write_text('{"name": "lookup_order", "parameters": {}}')
    assert main(["-C", str(example_repo.root), "snapshot"]) == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        "tools/lookup_order.json:1:1: duplicate tool name 'lookup_order': also defined in tools/lookup_again.json"
    )


def test_several_problems_all_reported(example_repo: Git, capsys) -> None:
    _write(example_repo.root, GOOD_HEAD + "  modles: {}\n  retrieval: {top_k: 0, chunk_size: big}\n")
    assert main(["-C", str(example_repo.root), "snapshot"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[:3] == [
        "gating.yml:4:3: unknown key 'modles' in components (did you mean 'models'?)",
        "gating.yml:5:22: components.retrieval.top_k: 0 is less than the minimum of 1",
        "gating.yml:5:37: components.retrieval.chunk_size: expected a whole number, got 'big' (a string)",
    ]
    assert err[-1] == "gating: 3 problems in the LLM system manifest"


def test_cli_process_has_no_traceback(example_repo: Git) -> None:
    _write(example_repo.root, "version: 1\nname: [bot\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gating", "snapshot"], cwd=example_repo.root, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("gating.yml:3:1: invalid YAML")
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_not_a_git_repository(tmp_path: Path, capsys) -> None:
    assert main(["-C", str(tmp_path), "diff"]) == 2
    assert capsys.readouterr().err.strip() == f"gating: error: git rev-parse failed (128): {tmp_path} is not a git repository"


def test_unknown_revision(example_repo: Git, capsys) -> None:
    assert main(["-C", str(example_repo.root), "diff", "nope", "HEAD"]) == 2
    assert "unknown revision 'nope'" in capsys.readouterr().err


def test_lock_file_that_is_a_directory(example_repo: Git, tmp_path: Path, capsys) -> None:
    assert main(["-C", str(example_repo.root), "snapshot", "--lock", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"gating: error: {tmp_path}: Is a directory"


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["unbuffered", "buffered"])
def test_output_into_a_closed_pipe_is_quiet(example_repo: Git, unbuffered: str) -> None:
    """`gating snapshot | head -1`: the reader going away is not an error worth a message (git exits the same way)."""
    env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
    proc = subprocess.Popen([sys.executable, "-m", "gating", "snapshot"], cwd=example_repo.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait() == 141  # 128 + SIGPIPE, as a shell reports `git log | head -1` under pipefail
    assert err == b""


@pytest.mark.parametrize("argv", [
    ["snapshot", "HEAD"], ["snapshot"], ["diff", "HEAD", "HEAD"], ["eval", "--rev", "HEAD"], ["calibrate"],
    ["check", "--base", "HEAD", "--head", "HEAD"],
], ids=["snapshot-rev", "snapshot-worktree", "diff", "eval", "calibrate", "check"])
@pytest.mark.parametrize("config", ["../gating.yml", "/etc/passwd"], ids=["dotdot", "absolute"])
def test_config_outside_the_repository(example_repo: Git, capsys, argv: list[str], config: str) -> None:
    assert main(["-C", str(example_repo.root), *argv, "--config", config]) == 2
    out, err = capsys.readouterr()
    assert err == f"gating: error: --config {config}: the manifest must be a file inside the repository\n"


def test_config_spelled_differently_is_the_same_system(example_repo: Git, capsys) -> None:
    root = example_repo.root
    digests = set()
    for config in ["gating.yml", "./gating.yml", str(root / "gating.yml"), "prompts/../gating.yml"]:
        for rev in (["HEAD"], []):
            assert main(["-C", str(root), "snapshot", *rev, "--config", config, "--digest"]) == 0
            digests.add(capsys.readouterr().out)
    assert len(digests) == 1


def test_a_long_wrong_value_is_shortened_in_the_message(example_repo: Git, capsys) -> None:
    """A file that is not a manifest at all (one long plain scalar) is named, not printed whole."""
    _write(example_repo.root, "root:x:0:0:root:/root:/bin/bash\n" * 200)
    assert main(["-C", str(example_repo.root), "snapshot"]) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first == ("gating.yml:1:1: expected a mapping at the top level, got 'root:x:0:0:root:/root:/bin/bash "
                     "root:x:0:0:root:/root:/bin/b...' (a string of 6,399 characters)")
