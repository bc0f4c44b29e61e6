"""The deterministic graders promptfoo users reach for: starts-with, is-json with a schema, contains-json,
levenshtein and rouge-n, each passing, failing and negated."""

from __future__ import annotations

from typing import Any

import pytest

from gating.evals.assertions import Observation, check_spec, evaluate, levenshtein, rouge_1

SCHEMA = {"type": "object", "required": ["order_id"]}
CASES = [
    ("starts-with", {"value": "Dear"}, "  Dear customer, ...", True, "starts with it"),
    ("starts-with", {"value": "Dear"}, "Hello", False, "starts with 'Hello'"),
    ("is-json", {"value": SCHEMA}, '{"order_id": "A1"}', True, "matches the schema"),
    ("is-json", {"value": SCHEMA}, '{"id": 1}', False, "schema violation at (root): 'order_id' is a required property"),
    ("is-json", {}, "[1, 2]", True, "valid JSON"),
    ("contains-json", {}, 'Here: {"a": [1, 2]} - done', True, "contains JSON"),
    ("contains-json", {"value": SCHEMA}, 'first {"x": 1} then {"order_id": "A"}', True, "matches the schema"),
    ("contains-json", {"value": SCHEMA}, 'only {"x": 1}', False, "schema violation at (root)"),
    ("contains-json", {}, "no json {here", False, "no JSON object or array in the output"),
    ("levenshtein", {"value": "kitten"}, "sitting", True, "3 edits from the expected text (at most 5)"),
    ("levenshtein", {"value": "kitten", "threshold": 2}, "sitting", False, "3 edits from the expected text (at most 2)"),
    ("rouge-n", {"value": "refunds take thirty days"}, "Refunds take about thirty days.", True, "ROUGE-1 recall 1.00"),
    ("rouge-n", {"value": "refunds take thirty days", "threshold": 0.9}, "refunds take time", False,
     "ROUGE-1 recall 0.50 (needs 0.9)"),
]


@pytest.mark.parametrize(("t", "params", "output", "passes", "why"), CASES,
                         ids=[f"{c[0]}-{'pass' if c[3] else 'fail'}-{i}" for i, c in enumerate(CASES)])
def test_each_grader_passes_fails_and_negates(t: str, params: dict[str, Any], output: str, passes: bool,
                                              why: str) -> None:
    spec = {"type": t, **params}
    assert check_spec(spec, {}) is None
    got = evaluate(spec, Observation(output))
    assert got.passed is passes and why in got.reason
    neg = evaluate({**spec, "type": "not-" + t}, Observation(output))
    assert neg.passed is not passes and neg.reason.endswith(f"(should not: {t})")
    assert neg.score == pytest.approx(1 - got.score)


def test_similarity_graders_score_between_zero_and_one() -> None:
    assert evaluate({"type": "levenshtein", "value": "abcd"}, Observation("abcx")).score == 0.75
    assert evaluate({"type": "rouge-n", "value": "a b c d"}, Observation("a b")).score == 0.5
    assert levenshtein("", "abc") == 3 and levenshtein("flaw", "lawn") == 2
    assert rouge_1("anything", "") == 0.0


@pytest.mark.parametrize(("spec", "says"), [
    ({"type": "starts-with"}, "starts-with needs a string `value`"),
    ({"type": "levenshtein", "value": "x", "threshold": 0.5}, "levenshtein `threshold` is the most edits allowed"),
    ({"type": "rouge-n", "value": "x", "threshold": 3}, "`threshold` must be a number between 0 and 1"),
    ({"type": "contains-json", "value": "not a schema"}, "contains-json `value` is an optional JSON Schema object"),
    ({"type": "is-json", "value": {"type": "nope"}}, "invalid JSON Schema"),
])
def test_bad_specs_name_the_fix(spec: dict[str, Any], says: str) -> None:
    assert says in (check_spec(spec, {}) or "")
