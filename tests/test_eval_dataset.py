"""Golden datasets: JSONL and YAML, every problem reported with file and line before anything is sent."""

from __future__ import annotations

import pytest

from gating.evals.dataset import DatasetError, dataset_digest, load_cases, load_datasets

PROMPTS = {"answer": {}, "classify": {}}


def jsonl(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def problems(path: str, data: bytes, **kw) -> list[str]:
    with pytest.raises(DatasetError) as e:
        load_cases(path, data, PROMPTS, **kw)
    return e.value.problems


def test_jsonl_cases_keep_their_source_line() -> None:
    data = jsonl('{"id": "a", "prompt": "answer", "vars": {"q": 1}, "assert": [{"type": "equals", "value": "x"}]}',
                 "", '{"id": "b", "prompt": "classify", "expected": "billing", "tags": ["t"]}')
    cases = load_cases("evals/g.jsonl", data, PROMPTS)
    assert [(c.id, c.prompt, c.line, c.where) for c in cases] == [
        ("a", "answer", 1, "evals/g.jsonl:1"), ("b", "classify", 3, "evals/g.jsonl:3")]
    assert cases[0].vars == {"q": 1} and cases[1].tags == ("t",) and cases[1].expected == "billing"


def test_yaml_cases_with_lines() -> None:
    text = b"cases:\n  - id: a\n    prompt: answer\n    assert:\n      - {type: icontains, value: x}\n" \
           b"  - id: b\n    prompt: answer\n"
    cases = load_cases("evals/g.yml", text, PROMPTS)
    assert [(c.id, c.line) for c in cases] == [("a", 2), ("b", 6)]
    assert cases[0].asserts == ({"type": "icontains", "value": "x"},)


def test_duplicate_ids_unknown_prompts_and_types_are_errors_with_lines() -> None:
    data = jsonl('{"id": "a", "prompt": "answer"}',
                 '{"id": "a", "prompt": "answer"}',
                 '{"id": "c", "prompt": "anwser"}',
                 '{"id": "d", "prompt": "answer", "assert": [{"type": "icontain", "value": "x"}]}',
                 '{"id": "e", "prompt": "answer", "asserts": []}',
                 '{"prompt": "answer"}')
    assert problems("evals/g.jsonl", data) == [
        "evals/g.jsonl:2: duplicate id 'a' (first defined at evals/g.jsonl:1)",
        "evals/g.jsonl:3: case 'c': unknown prompt 'anwser' (did you mean 'answer'?)",
        "evals/g.jsonl:4: case 'd': assert[0]: unknown assertion type 'icontain' (did you mean 'icontains'?)",
        "evals/g.jsonl:5: unknown key 'asserts' (did you mean 'assert'?)",
        "evals/g.jsonl:6: every case needs a stable `id` (a non-empty string)",
    ]


def test_invalid_json_line_is_reported_with_its_line() -> None:
    assert problems("evals/g.jsonl", jsonl('{"id": "a", "prompt": "answer"}', '{"id": "b",')) == [
        "evals/g.jsonl:2: invalid JSON at column 12: Expecting property name enclosed in double quotes"]


def test_every_invalid_json_line_and_every_other_problem_reported_at_once() -> None:
    data = jsonl('{"id": "a", "prompt": "answer"}',
                 '{"id": "b",',
                 '{"id": "a", "prompt": "answer"}',
                 "not json",
                 '{"id": "c", "prompt": "anwser"}')
    assert problems("evals/g.jsonl", data) == [
        "evals/g.jsonl:2: invalid JSON at column 12: Expecting property name enclosed in double quotes",
        "evals/g.jsonl:3: duplicate id 'a' (first defined at evals/g.jsonl:1)",
        "evals/g.jsonl:4: invalid JSON at column 1: Expecting value",
        "evals/g.jsonl:5: case 'c': unknown prompt 'anwser' (did you mean 'answer'?)",
    ]


def test_duplicates_across_datasets_and_all_files_reported_together() -> None:
    files = {"evals/a.jsonl": jsonl('{"id": "x", "prompt": "answer"}'),
             "evals/b.jsonl": jsonl('{"id": "x", "prompt": "answer"}', '{"id": "y", "prompt": "nope"}')}
    with pytest.raises(DatasetError) as e:
        load_datasets(files, PROMPTS)
    assert e.value.problems == [
        "evals/b.jsonl:1: duplicate id 'x' (first defined at evals/a.jsonl:1)",
        "evals/b.jsonl:2: case 'y': unknown prompt 'nope'; defined: answer, classify",
    ]


def test_model_graded_assertions_need_a_judge() -> None:
    data = jsonl('{"id": "a", "prompt": "answer", "assert": [{"type": "rubric", "value": "polite"}]}')
    assert problems("evals/g.jsonl", data, has_judge=False) == [
        "evals/g.jsonl:1: case 'a': assert[0]: rubric needs a judge model (set evals.judge in gating.yml)"]


def test_prompt_is_optional_for_command_and_http_targets() -> None:
    cases = load_cases("g.jsonl", jsonl('{"id": "a", "vars": {"q": "x"}}'), PROMPTS, prompt_required=False)
    assert cases[0].prompt is None
    assert problems("g.jsonl", jsonl('{"id": "a"}')) == ["g.jsonl:1: case 'a' has no `prompt` (which prompt "
                                                         "component it exercises)"]


def test_unsupported_format() -> None:
    assert problems("evals/g.txt", b"id,prompt\n") == [
        "evals/g.txt:1: unsupported dataset format '.txt'; use .jsonl, .yml, .yaml or .csv"]


def test_dataset_digest_is_stable_and_order_independent() -> None:
    d1 = dataset_digest({"a.jsonl": "11", "b.jsonl": "22"})
    assert d1 == dataset_digest({"b.jsonl": "22", "a.jsonl": "11"})
    assert d1 != dataset_digest({"a.jsonl": "11", "b.jsonl": "23"})
    assert d1.startswith("sha256:") and len(d1) == 71


def test_a_prompt_that_is_not_a_name_is_a_problem_not_a_crash() -> None:
    data = jsonl('{"id": "a", "prompt": ["answer"]}', '{"id": "b", "prompt": {"name": "answer"}}')
    assert problems("evals/g.jsonl", data) == [
        "evals/g.jsonl:1: case 'a': `prompt` must be the name of a prompt component, got ['answer']",
        "evals/g.jsonl:2: case 'b': `prompt` must be the name of a prompt component, got {'name': 'answer'}",
    ]


def test_a_jsonl_saved_with_a_byte_order_mark_loads() -> None:
    data = "\ufeff".encode() + jsonl('{"id": "a", "prompt": "answer"}', '{"id": "b", "prompt": "answer"}')
    assert [(c.id, c.line) for c in load_cases("evals/g.jsonl", data, PROMPTS)] == [("a", 1), ("b", 2)]


def test_yaml_dates_become_iso_text() -> None:
    """YAML reads 2024-01-01 as a date; a case is JSON-like data (sent to commands, judges, notes)."""
    text = b"- id: a\n  prompt: answer\n  vars: {day: 2024-01-01, at: 2024-01-01 10:00:00}\n  expected: 2024-01-02\n"
    [case] = load_cases("evals/g.yml", text, PROMPTS)
    assert (case.vars, case.expected) == ({"day": "2024-01-01", "at": "2024-01-01T10:00:00"}, "2024-01-02")
