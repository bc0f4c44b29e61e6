"""docs/reference.md is generated from the validators; a stale copy, a stale default or an undocumented
environment variable fails here, and a wrong assertion parameter is answered with the right one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from eval_support import write_repo

from gating.commands.cli import main
from gating.commands.reference_doc import DEFAULTS, schema_rows
from gating.evals.assertion_types import TYPES
from gating.evals.assertions import check_spec
from gating.git.repository import commit_all, init_repo

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference.md"


def test_the_committed_reference_is_what_the_code_generates(capsys) -> None:
    rc = main(["reference", "--check", str(REFERENCE)])
    assert rc == 0, "docs/reference.md is stale: run `gating reference --write docs/reference.md`"
    assert main(["reference"]) == 0
    assert capsys.readouterr().out == REFERENCE.read_text(encoding="utf-8")


def test_a_stale_reference_is_refused_and_says_how_to_regenerate(tmp_path, capsys) -> None:
    stale = tmp_path / "reference.md"
    stale.write_text(REFERENCE.read_text(encoding="utf-8").replace("| `latency` |", "| `delay` |"), encoding="utf-8")
    assert main(["reference", "--check", str(stale)]) == 1
    assert "run `gating reference --write" in capsys.readouterr().err
    assert main(["reference", "--write", str(stale)]) == 0
    assert main(["reference", "--check", str(stale)]) == 0


def test_every_manifest_key_is_in_the_reference_and_every_default_names_a_real_key() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    paths = {r.path for r in schema_rows()}
    assert {"evals.regression.max_drop", "components.models.NAME.model", "approvals[].options.allow_author",
            "rollback.on_alert[].target"} <= paths
    assert not set(DEFAULTS) - paths, "a default for a key the schema does not have"
    for p in paths:
        assert f"| `{p}` |" in text


def test_every_assertion_type_is_documented_with_an_example_the_validator_accepts() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    for name, t in TYPES.items():
        assert f"`{name}`" in text
        assert check_spec(t.example, {"expected": "x"}) is None, name
        for key in t.keys:  # what the table declares is what the validator takes
            spec = {**t.example, key: t.example.get(key, 0.5 if key in ("threshold", "weight") else "x")}
            assert check_spec(spec, {"expected": "x"}) is None or "takes" not in check_spec(spec, {}), (name, key)


def test_every_environment_variable_the_code_reads_is_in_the_reference() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    names: set[str] = set()
    for src in [*(ROOT / "gating").rglob("*.py"), *(ROOT / "app").rglob("*.py")]:
        if "testing" in src.parts or src.name == "demo.py":
            continue
        names |= set(re.findall(r"[\"'\$]((?:GATING|GITHUB|GH|OPENAI|ANTHROPIC)_[A-Z0-9_]+)\b",
                                src.read_text(encoding="utf-8")))
    assert names
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, f"environment variables read by the code but not in docs/reference.md: {missing}"


@pytest.mark.parametrize(("spec", "message"), [
    ({"type": "latency", "threshold": 1500}, "latency takes `value` (milliseconds), not `threshold`"),
    ({"type": "cost", "max": 0.01}, "cost takes `value` (US dollars), not `max`"),
    ({"type": "contains", "values": ["a"]},
     "contains takes `value` (a string or a non-empty list of strings), not `values`"),
    ({"type": "is-json", "threshold": 1}, "is-json takes `value` (an optional JSON Schema object), not `threshold`"),
    ({"type": "rubric", "value": "polite", "min_score": 0.8},
     "rubric takes `value` (the rubric text) and `threshold` (0 to 1), not `min_score`"),
    ({"type": "not-regex", "pattern": "x"}, "regex takes `value` (a regular expression), not `pattern`"),
], ids=["latency-threshold", "cost", "contains", "is-json", "rubric", "negated"])
def test_a_wrong_parameter_is_answered_with_the_right_one(spec, message) -> None:
    assert check_spec(spec, {}) == message


def test_a_wrong_parameter_repeated_in_every_case_is_said_once(tmp_path, capsys) -> None:
    g = init_repo(tmp_path / "repo")
    cases = [{"id": f"c{i}", "prompt": "p", "vars": {"q": "hi"}, "assert": [{"type": "latency", "threshold": 1500}]}
             for i in range(12)]
    write_repo(g.root, cases)
    commit_all(g, "evals")
    rc = main(["-C", str(g.root), "eval", "--no-cache", "--replay"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("latency takes `value` (milliseconds), not `threshold`") == 1, err
    assert "evals/cases.jsonl:1: case 'c0': assert[0]: latency takes `value` (milliseconds), not `threshold` " \
           "(the same in 11 more cases, lines 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and 1 more)" in err
    assert "between 0 and 1" not in err


def test_the_readme_links_the_reference() -> None:
    assert "[docs/reference.md](docs/reference.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_command_and_option_is_in_the_reference() -> None:
    import argparse

    from gating.commands.cli import COMMANDS, build_parser

    text = REFERENCE.read_text(encoding="utf-8")
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, _module, _summary in COMMANDS:
        assert f"### `gating {name}`" in text, name
        for action in sub.choices[name]._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert re.search(rf"\| `[^`]*{re.escape(flag)}\b", text), (name, flag)
    for flag in ("--compare [CANDIDATE ...]", "--red-team", "--on-error {fail,neutral}"):
        assert f"`{flag}`" in text


def test_every_provider_is_in_the_reference_with_its_settings() -> None:
    from gating.system.schema import PROVIDER_SETTINGS, PROVIDERS

    text = REFERENCE.read_text(encoding="utf-8")
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.split("## Providers")[1].splitlines()
            if line.startswith("| `")}
    assert set(PROVIDERS) <= set(rows)
    for setting, provider in PROVIDER_SETTINGS.items():
        assert f"`{setting}`" in rows[provider], (provider, setting)


def test_every_metric_a_run_reports_is_in_the_reference() -> None:
    from gating.commands.reference_doc import METRICS
    from gating.evals.metrics import compute_metrics
    from gating.evals.records import AssertionResult, CaseResult

    cases = [CaseResult("a", "p", True, 1.0, {"contains": 1.0}, [AssertionResult("contains", True, 1.0, "", "contains")],
                        "x", None, "", {"total": 5.0, "llm": 4.0}, 3, 2, 0.001, tags=["red-team"]),
             CaseResult("b", "p", False, 0.0, {}, [], "", "timeout", "slow", {}, tags=["x"])]
    patterns = [re.compile("^" + re.sub(r"[A-Z]+", ".+", re.escape(k)) + "$") for k in METRICS]
    text = REFERENCE.read_text(encoding="utf-8")
    for name in compute_metrics(cases):
        assert any(p.match(name) for p in patterns), name
    for k in METRICS:
        assert f"| `{k}` |" in text
