"""Parsers with limits, through the CLI: a YAML alias bomb or 10,000-deep JSON in any file a revision
holds is refused by name (exit 2) in well under a second and well under 100 MB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gating import limits
from gating.git.repository import Git, commit_all
from gating.testing.example import make_example_repo

# Nine lists of nine references to the list before: 9**9 (387 million) strings once expanded.
BOMB = 'lol: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"l{i}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))
DEEP = "[" * 10_000 + "]" * 10_000

# Runs `gating` in a fresh interpreter and reports its exit code, the CPU time main() took (CPU, not
# wall clock: a loaded runner stretches the wall clock, not the work a refusal does) and the process's peak resident memory (imports included). Linux keeps
# ru_maxrss across exec, so a child of a large test process would report the parent's size: the peak
# of this program's own memory is VmHWM.
MEASURE = """
import json, resource, sys, time
from gating.commands.cli import build_parser, main
build_parser()
t = time.process_time()
rc = main(sys.argv[1:])
took = time.process_time() - t
try:
    hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0]
    peak_mb = int(hwm.split()[1]) / 1024
except (OSError, IndexError):
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rc": rc, "seconds": took, "peak_mb": peak_mb}), file=sys.stderr)
"""


def measured(repo: Path, *args: str, env: dict[str, str] | None = None) -> tuple[dict, str, str]:
    import os

    proc = subprocess.run([sys.executable, "-c", MEASURE, "-C", str(repo), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "GATING_PROVIDER": "replay", **(env or {})})
    *lines, figures = proc.stderr.rstrip("\n").split("\n")
    return json.loads(figures), "\n".join(lines), proc.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Git:
    return make_example_repo(tmp_path / "support-bot")


def _bomb_manifest(root: Path) -> None:
    text = (root / "gating.yml").read_text()
    (root / "gating.yml").write_text(text + "x-anchors:\n" + "".join(f"  {line}\n" for line in BOMB.splitlines()))


def _deep_manifest(root: Path) -> None:
    text = (root / "gating.yml").read_text()
    (root / "gating.yml").write_text(text.replace("retrieval:\n", f"retrieval:\n    deep: {DEEP}\n", 1))


def _write(rel: str, content: str):
    def write(root: Path) -> None:
        (root / rel).write_text(content)
    return write


def _append(rel: str, content: str):
    def append(root: Path) -> None:
        with open(root / rel, "a") as f:
            f.write(content)
    return append


# (what, how to plant it, command, file the message names, line it names)
CASES = [
    ("manifest-alias-bomb", _bomb_manifest, ["snapshot"], "gating.yml", "expands through aliases to more than"),
    ("manifest-deep-json", _deep_manifest, ["snapshot"], "gating.yml", "nested more than 100 levels deep"),
    ("tool-deep-json", _write("tools/deep.json", DEEP), ["snapshot"], "tools/deep.json",
     "nested more than 100 levels deep"),
    ("guardrail-alias-bomb", _write("guardrails/bomb.yml", BOMB), ["snapshot"], "guardrails/bomb.yml",
     "expands through aliases to more than"),
    ("dataset-deep-json", _append("evals/golden.jsonl", DEEP + "\n"), ["eval"], "evals/golden.jsonl:",
     "nested more than 100 levels deep"),
    ("cassette-deep-json", _append("evals/cassettes/golden.jsonl", DEEP + "\n"), ["eval"],
     "evals/cassettes/golden.jsonl:", "nested more than 100 levels deep"),
    ("ratings-deep-json", _append("evals/human_ratings.jsonl", DEEP + "\n"), ["calibrate"],
     "evals/human_ratings.jsonl:", "nested more than 100 levels deep"),
]


@pytest.mark.parametrize(("plant", "command", "file", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_file_is_refused_fast_and_small_by_name(repo: Git, plant, command: list[str], file: str,
                                                        message: str) -> None:
    plant(repo.root)
    commit_all(repo, "hostile file")
    figures, err, _ = measured(repo.root, *command)
    assert figures["rc"] == 2, err
    assert file in err and message in err, err
    assert figures["seconds"] < 1.0, figures
    assert figures["peak_mb"] < 100, figures


def test_yaml_dataset_alias_bomb_is_refused_with_its_line(repo: Git) -> None:
    (repo.root / "evals" / "bomb.yml").write_text("cases:\n" + "".join(f"  - {line}\n" for line in BOMB.splitlines()))
    text = (repo.root / "gating.yml").read_text()
    (repo.root / "gating.yml").write_text(text.replace("datasets: [evals/golden.jsonl]",
                                                       "datasets: [evals/golden.jsonl, evals/bomb.yml]"))
    commit_all(repo, "dataset bomb")
    figures, err, _ = measured(repo.root, "eval")
    assert figures["rc"] == 2 and figures["seconds"] < 1.0 and figures["peak_mb"] < 100, (figures, err)
    assert "evals/bomb.yml:" in err and "refused: expands through aliases to more than 1,000,000 nodes" in err


def test_yaml_prompt_alias_bomb_fails_its_cases_by_name(repo: Git) -> None:
    (repo.root / "prompts" / "classify.yml").write_text(BOMB)
    commit_all(repo, "prompt bomb")
    figures, err, out = measured(repo.root, "eval")
    assert figures["rc"] == 1 and figures["seconds"] < 1.0 and figures["peak_mb"] < 100, (figures, err)
    assert ("| `classify-billing` | classify | render: prompt 'classify': prompts/classify.yml:7: refused: expands "
            "through aliases to more than 1,000,000 nodes (limit max_nodes=1,000,000) |") in out


@pytest.mark.parametrize("doc", [
    pytest.param("a: &a [1]\nb: *a\nc: *a\n", id="a-few-aliases"),
    pytest.param("[" * 100 + "]" * 100, id="100-deep"),
])
def test_ordinary_documents_pass(doc: str) -> None:
    assert limits.load_yaml(doc, "f.yml") is not None
    if doc.startswith("["):
        assert limits.load_json(doc, "f.json") == json.loads(doc)


@pytest.mark.parametrize(("doc", "message"), [
    pytest.param("a: &a [*a]\n", "alias *a refers to a node that contains it", id="recursive"),
    pytest.param("x: &x 1\n" + "".join(f"k{i}: *x\n" for i in range(1001)), "more than 1,000 aliases", id="aliases"),
    pytest.param("[" * 101 + "]" * 101, "nested more than 100 levels deep", id="101-deep"),
])
def test_hostile_yaml_shapes_are_refused_with_their_line(doc: str, message: str) -> None:
    with pytest.raises(limits.LimitError) as e:
        limits.load_yaml(doc, "f.yml")
    assert e.value.file == "f.yml" and message in str(e.value) and e.value.line >= 1


def test_size_is_checked_before_parsing() -> None:
    with pytest.raises(limits.LimitError, match=r"f.json:1: refused: 1,048,577 bytes is more than 1,048,576"):
        limits.load_json(b" " * (limits.MiB + 1), "f.json", limits.LINE)


def _measure_one_by_one(doc: object, lim: limits.Limits) -> str:
    """The walk measure() did before it walked children from iterators: the message it refused with."""
    nodes, stack = 0, [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > lim.max_nodes:
            return f"refused: more than {lim.max_nodes:,} nodes (limit max_nodes={lim.max_nodes:,})"
        if isinstance(node, (dict, list)):
            if depth > lim.max_depth:
                return f"refused: nested more than {lim.max_depth} levels deep (limit max_depth={lim.max_depth})"
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return "ok"


@pytest.mark.parametrize("max_nodes", [1, 2, 5, 9, 14, 30, 10_000])
@pytest.mark.parametrize("max_depth", [1, 2, 3, 4, 100])
def test_json_past_both_limits_is_refused_for_the_same_one_as_before(max_nodes: int, max_depth: int) -> None:
    from dataclasses import replace

    lim = replace(limits.DEFAULT, max_nodes=max_nodes, max_depth=max_depth)
    docs = [[1, [2, [3, [4]]], 5], {"a": [1, 2, {"b": [[[]]]}], "c": 3, "d": {"e": {"f": 1}}}, [[[[[]]]], 1, 2, 3, 4, 5],
            [1, 2, 3, 4, 5, 6, 7, 8, [[[[9]]]]], {"cases": [{"id": str(i), "scores": {"x": 1.0}} for i in range(5)]}, 7, []]
    for doc in docs:
        want = _measure_one_by_one(doc, lim)
        try:
            limits.measure(doc, "f.json", lim)
            got = "ok"
        except limits.LimitError as e:
            got = e.message
        assert got == want, doc
