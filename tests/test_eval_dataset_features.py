"""Datasets as people write them: shared defaults, vars from files, CSV and YAML, `{{ var }}` in assertion
values, per-case thresholds, and generated cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eval_support import a, fast_retries, llm, load, write_repo  # noqa: F401

from gating.diff.semantic import diff_snapshots
from gating.evals.dataset import DatasetError, csv_rows
from gating.evals.judging import judging_for, self_judging
from gating.evals.runner import run_evals
from gating.system.manifest import ManifestError
from gating.testing.llm_server import LLMServer


def run(root: Path, server: LLMServer) -> dict[str, Any]:
    snap, reader = load(root)
    got = run_evals(snap, reader, env=server.env(), cache_dir=None, retry=fast_retries())
    return {c.id: c for c in got.cases}


def test_defaults_apply_to_every_case_and_a_case_overrides_their_vars(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    prompts = {"p": {"file": "prompts/p.md", "model": "m"}}
    files = {"prompts/p.md": "{{ greeting }} {{ q }}\n"}
    cases = [{"id": "c1", "prompt": "p", "vars": {"q": a("hello there, friend")}},
             {"id": "c2", "prompt": "p", "vars": {"q": a("bye"), "greeting": "Yo"},
              "assert": [{"type": "contains", "value": "bye"}]}]
    defaults = {"vars": {"greeting": "Hi"}, "assert": [{"type": "not-contains", "value": "sorry"}]}
    root = write_repo(tmp_path, cases, prompts=prompts, files=files, evals={"defaults": defaults})
    got = run(root, llm)
    assert got["c1"].passed and [x.type for x in got["c1"].assertions] == ["not-contains"]
    assert got["c2"].passed and [x.type for x in got["c2"].assertions] == ["not-contains", "contains"]
    sent = [e["body"]["messages"][-1]["content"] for e in llm.log]
    assert any(s.startswith("Hi [[answer: hello") for s in sent) and any(s.startswith("Yo ") for s in sent)


def test_a_bad_default_assertion_is_said_once_at_its_place(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    root = write_repo(tmp_path, [{"id": "c1", "prompt": "p", "vars": {"q": "x"}}, {"id": "c2", "prompt": "p", "vars": {"q": "y"}}],
                      evals={"defaults": {"assert": [{"type": "regex", "value": "("}]}})
    with pytest.raises(DatasetError) as e:
        run(root, llm)
    assert e.value.problems[0].startswith("gating.yml: evals.defaults.assert[0]: invalid regular expression '('")


def test_defaults_must_be_known_keys(tmp_path: Path) -> None:
    root = write_repo(tmp_path, [], evals={"defaults": {"options": {}}})
    with pytest.raises(ManifestError, match="evals.defaults"):
        load(root)


def test_vars_from_files_are_system_files(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    files = {"evals/docs/policy.txt": "[[answer: refunds within 30 days]]", "evals/docs/order.json": '{"id": "ORD-7"}'}
    prompts = {"p": {"file": "prompts/p.md", "model": "m"}}
    cases = [{"id": "c1", "prompt": "p", "vars": {"q": "file://evals/docs/policy.txt", "order": "file://evals/docs/order.json"},
              "assert": [{"type": "contains", "value": "30 days"}]}]
    root = write_repo(tmp_path, cases, prompts=prompts, files={**files, "prompts/p.md": "{{ q }} {{ order.id }}\n"},
                      evals={"files": ["evals/docs/*"]})
    got = run(root, llm)
    assert got["c1"].passed, got["c1"]
    assert llm.log[-1]["body"]["messages"][-1]["content"] == "[[answer: refunds within 30 days]] ORD-7"
    snap = load(root)[0]
    assert set(snap.data["eval_files"]) == {"evals/docs/policy.txt", "evals/docs/order.json"}
    (root / "evals/docs/policy.txt").write_text("[[answer: no refunds]]")
    [change] = [c for c in diff_snapshots(snap, load(root)[0]).changes if c.path == "eval_files.evals/docs/policy.txt"]
    assert change.category == "evals" and "eval data file evals/docs/policy.txt changed" in change.summary


def test_a_var_file_not_declared_is_refused(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    root = write_repo(tmp_path, [{"id": "c1", "prompt": "p", "vars": {"q": "file://evals/secret.txt"}}],
                      files={"evals/secret.txt": "x"})
    with pytest.raises(DatasetError) as e:
        run(root, llm)
    assert "evals/cases.jsonl:1: case 'c1': vars.q: file://evals/secret.txt is not a file of `evals.files`" in str(e.value)


CSV = """\
id,q,__expected,__expected2,__description,__tags
refund,[[answer: Refunds take 30 days]],contains: 30 days,not-icontains: sorry,refund window,"billing, faq"
exact,[[answer: 42]],42,,,
rubric,[[answer: hi]],grade: is polite,,,
,[[answer: anonymous]],icontains: ANON,,,
"""


def test_csv_rows_become_cases() -> None:
    rows = dict(csv_rows("evals/g.csv", CSV))
    assert rows[2] == {"id": "refund", "vars": {"q": "[[answer: Refunds take 30 days]]"},
                       "assert": [{"type": "contains", "value": "30 days"}, {"type": "not-icontains", "value": "sorry"}],
                       "description": "refund window", "tags": ["billing", "faq"]}
    assert rows[3]["assert"] == [{"type": "equals", "value": "42"}]
    assert rows[4]["assert"] == [{"type": "rubric", "value": "is polite"}]
    assert rows[5]["id"].startswith("row-") and rows[5]["id"] == dict(csv_rows("x.csv", CSV))[5]["id"]


def test_a_csv_dataset_runs_and_its_problems_have_lines(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    body = "id,prompt,q,__expected\nc1,p,[[answer: yes]],yes\nc2,p,[[answer: no]],contains: yes\n"
    root = write_repo(tmp_path, body, dataset="evals/cases.csv")
    got = run(root, llm)
    assert got["c1"].passed and not got["c2"].passed
    bad = "id,prompt,q,__nope\nc1,p,x,y\nc2,p,x,y,extra\n"
    write_repo(tmp_path, bad, dataset="evals/cases.csv")
    with pytest.raises(DatasetError) as e:
        run(root, llm)
    assert "evals/cases.csv:2: unknown special column '__nope'" in str(e.value)
    assert "evals/cases.csv:3: more cells than the header has columns" in str(e.value)


def test_a_yaml_dataset_with_a_cases_key(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    body = "cases:\n  - id: y1\n    prompt: p\n    vars: {q: '[[answer: ok]]'}\n    assert: [{type: equals, value: ok}]\n"
    got = run(write_repo(tmp_path, body, dataset="evals/cases.yaml"), llm)
    assert got["y1"].passed


def test_vars_fill_assertion_values(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    cases = [{"id": "c1", "prompt": "p", "vars": {"q": a("Order ORD-7 shipped"), "order": "ORD-7"},
              "assert": [{"type": "contains", "value": "{{ order }}"},
                         {"type": "contains-all", "value": ["{{ order }}", "shipped"]},
                         {"type": "not-regex", "value": "{{ order }}-cancelled"}]},
             {"id": "c2", "prompt": "p", "vars": {"q": a("x"), "order": "ORD-8"},
              "assert": [{"type": "contains", "value": "{{ order }}"}]}]
    got = run(write_repo(tmp_path, cases), llm)
    assert got["c1"].passed and not got["c2"].passed
    assert got["c2"].assertions[0].reason == "missing 'ORD-8'"


def test_an_undefined_var_in_an_assertion_value_is_a_dataset_error(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    cases = [{"id": "c1", "prompt": "p", "vars": {"q": "x"}, "assert": [{"type": "contains", "value": "{{ nope }}"}]}]
    with pytest.raises(DatasetError) as e:
        run(write_repo(tmp_path, cases), llm)
    assert "evals/cases.jsonl:1: case 'c1': assert[0]: value template: 'nope' is undefined" in str(e.value)


def test_a_case_threshold_passes_on_the_weighted_score(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    asserts = [{"type": "contains", "value": "refund", "weight": 3}, {"type": "contains", "value": "30 days"}]
    cases = [{"id": "half", "prompt": "p", "vars": {"q": a("a refund")}, "assert": asserts, "threshold": 0.7},
             {"id": "strict", "prompt": "p", "vars": {"q": a("a refund")}, "assert": asserts},
             {"id": "low", "prompt": "p", "vars": {"q": a("30 days")}, "assert": asserts, "threshold": 0.7}]
    got = run(write_repo(tmp_path, cases, evals={"defaults": {"threshold": 0.9}}), llm)
    assert (got["half"].passed, got["half"].score) == (True, 0.75)
    assert not got["strict"].passed  # the default threshold 0.9
    assert (got["low"].passed, got["low"].score) == (False, 0.25)


def test_a_bad_case_threshold(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    with pytest.raises(DatasetError, match="`threshold` must be a number between 0 and 1"):
        run(write_repo(tmp_path, [{"id": "c1", "prompt": "p", "vars": {"q": "x"}, "threshold": 2}]), llm)


GEN = '''\
def cases():
    return [{"id": f"sum-{a}-{b}", "prompt": "p", "vars": {"q": f"[[answer: {a + b}]]"},
             "assert": [{"type": "equals", "value": str(a + b)}]} for a in range(3) for b in range(2)]


def broken():
    return {"not": "a list"}
'''


def test_a_generator_makes_parametric_cases(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    root = write_repo(tmp_path, [{"id": "fixed", "prompt": "p", "vars": {"q": a("x")}}], files={"evals/gen.py": GEN},
                      evals={"python": ["evals/gen.py"], "generate": ["file://evals/gen.py:cases"]})
    got = run(root, llm)
    assert sorted(got) == ["fixed", "sum-0-0", "sum-0-1", "sum-1-0", "sum-1-1", "sum-2-0", "sum-2-1"]
    assert all(c.passed for c in got.values())


def test_a_generator_that_returns_no_list_is_a_dataset_error(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    root = write_repo(tmp_path, [], files={"evals/gen.py": GEN},
                      evals={"python": ["evals/gen.py"], "generate": ["file://evals/gen.py:broken"]})
    with pytest.raises(DatasetError, match="evals/gen.py:broken returned dict, not a list of cases"):
        run(root, llm)


def test_generated_cases_come_from_the_judging_sides_generator(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    marker = tmp_path / "head-generator-ran"
    evals = {"python": ["evals/gen.py"], "generate": ["file://evals/gen.py:cases"]}
    base = write_repo(tmp_path / "base", [], files={"evals/gen.py": GEN}, evals=evals)
    evil = GEN.replace("def cases():\n", f"def cases():\n    open({str(marker)!r}, 'w').write('x')\n")
    head = write_repo(tmp_path / "head", [], files={"evals/gen.py": evil}, evals=evals)
    (bsnap, breader), (hsnap, hreader) = load(base), load(head)
    judging = judging_for(self_judging(bsnap, "base", breader), bsnap, hsnap, "base", hreader)
    assert judging is not None and len(judging.cases) == 6 and judging.added == ()
    assert not marker.exists()


def test_the_manifest_refuses_a_generator_that_is_not_a_python_reference(tmp_path: Path) -> None:
    root = write_repo(tmp_path, [], evals={"generate": ["evals/gen.py"]})
    with pytest.raises(ManifestError, match="evals.generate"):
        load(root)


def test_json_in_csv_is_kept_as_text() -> None:
    (_, row), = csv_rows("g.csv", 'id,payload\nc1,"{""a"": 1}"\n')
    assert json.loads(row["vars"]["payload"]) == {"a": 1}
