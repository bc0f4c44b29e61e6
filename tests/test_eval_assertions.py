"""Every assertion kind, passing and failing, on answers from the local test LLM server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from eval_support import a, live_env, load, write_repo

from gating.evals.assertions import Observation, check_spec, evaluate
from gating.evals.judge import JudgeParseError, parse_judgement
from gating.evals.runner import run_evals
from gating.testing.llm_server import LLMServer, default_answer

SCHEMA = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}

# (case id, the model's answer, assertion, should pass)
TABLE = [
    ("equals-pass", "billing", {"type": "equals", "value": "billing"}, True),
    ("equals-fail", "shipping", {"type": "equals", "value": "billing"}, False),
    ("equals-json-pass", '{"a": 1, "b": 2}', {"type": "equals", "value": {"b": 2, "a": 1}}, True),
    ("contains-pass", "Refunds take 5 days", {"type": "contains", "value": "5 days"}, True),
    ("contains-fail", "Refunds take 5 days", {"type": "contains", "value": "5 Days"}, False),
    ("icontains-pass", "Refunds take 5 days", {"type": "icontains", "value": "5 DAYS"}, True),
    ("icontains-fail", "Refunds take 5 days", {"type": "icontains", "value": "30 days"}, False),
    ("contains-all-pass", "red green blue", {"type": "contains-all", "value": ["red", "blue"]}, True),
    ("contains-all-fail", "red green blue", {"type": "contains-all", "value": ["red", "pink"]}, False),
    ("contains-any-pass", "red green blue", {"type": "contains-any", "value": ["pink", "blue"]}, True),
    ("contains-any-fail", "red green blue", {"type": "contains-any", "value": ["pink", "cyan"]}, False),
    ("icontains-all-pass", "Red Green", {"type": "icontains-all", "value": ["red", "green"]}, True),
    ("icontains-any-fail", "Red Green", {"type": "icontains-any", "value": ["pink"]}, False),
    ("regex-pass", "Order #12345 shipped", {"type": "regex", "value": r"#\d{5}\b"}, True),
    ("regex-fail", "Order #123 shipped", {"type": "regex", "value": r"#\d{5}\b"}, False),
    ("is-json-pass", '{"ok": true}', {"type": "is-json"}, True),
    ("is-json-fail", "ok: true", {"type": "is-json"}, False),
    ("json-schema-pass", '{"name": "Ada"}', {"type": "json-schema", "value": SCHEMA}, True),
    ("json-schema-fail", '{"name": 42}', {"type": "json-schema", "value": SCHEMA}, False),
    ("max-tokens-pass", "one two three", {"type": "max-tokens", "value": 3}, True),
    ("max-tokens-fail", "one two three four", {"type": "max-tokens", "value": 3}, False),
    ("refusal-pass", "I'm sorry, but I can't help with that.", {"type": "refusal"}, True),
    ("refusal-fail", "Sure, here it is.", {"type": "refusal"}, False),
    ("refusal-false-pass", "Sure, here it is.", {"type": "refusal", "value": False}, True),
    ("not-refusal-fail", "I cannot help with that request.", {"type": "not-refusal"}, False),
    ("latency-pass", "fast", {"type": "latency", "value": 5000}, True),
    ("cost-pass", "cheap", {"type": "cost", "value": 0.01}, True),
    ("cost-fail", "cheap", {"type": "cost", "value": 0}, False),
    ("not-contains-pass", "all good", {"type": "not-contains", "value": "password"}, True),
    ("not-contains-fail", "your password is x", {"type": "not-contains", "value": "password"}, False),
    ("not-regex-pass", "no digits", {"type": "not-regex", "value": r"\d"}, True),
    ("not-is-json-fail", "{\"n\": 2}", {"type": "not-is-json"}, False),
    ("not-equals-pass", "yes", {"type": "not-equals", "value": "no"}, True),
    ("rubric-pass", "Polite answer. score=5", {"type": "rubric", "value": "The answer is polite."}, True),
    ("rubric-fail", "Rude answer. score=2", {"type": "rubric", "value": "The answer is polite."}, False),
    ("rubric-threshold-pass", "Okay answer. score=3",
     {"type": "rubric", "value": "The answer is polite.", "threshold": 0.5}, True),
    ("not-rubric-pass", "Rude answer. score=1", {"type": "not-rubric", "value": "The answer is rude-free."}, True),
    ("factuality-pass", "Paris. score=5", {"type": "factuality", "value": "The capital is Paris."}, True),
    ("factuality-fail", "Lyon. score=1", {"type": "factuality", "value": "The capital is Paris."}, False),
]

# A model-graded score is the judge's 1-5 normalised to 0-1 ((n - 1) / 4), flipped by `not-`.
JUDGED_SCORES = {"rubric-pass": 1.0, "rubric-fail": 0.25, "rubric-threshold-pass": 0.5, "not-rubric-pass": 1.0,
                 "factuality-pass": 1.0, "factuality-fail": 0.0}


def judge_or_answer(api: str, body: dict) -> str | None:
    """The judge (Anthropic API) reads `score=N` from the graded answer; `judge-garbage` gets prose."""
    if api != "anthropic":
        return None
    text = body["messages"][-1]["content"]
    answer = text.split("ANSWER:\n", 1)[1]
    if "judge-garbage" in answer:
        return "I think this answer is quite good overall."
    m = re.search(r"score=(\d)", answer)
    return json.dumps({"score": int(m.group(1)), "reason": "as marked"}) if m else "{}"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cases = [{"id": cid, "prompt": "p", "vars": {"q": a(answer)}, "assert": [spec]} for cid, answer, spec, _ in TABLE]
    cases.append({"id": "latency-fail", "prompt": "p", "vars": {"q": a("slow") + "[[fault:slow delay=0.25]]"},
                  "assert": [{"type": "latency", "value": 100}]})
    cases.append({"id": "content-filter-refusal", "prompt": "p", "vars": {"q": "[[fault:content_filter]]"},
                  "assert": [{"type": "refusal"}]})
    cases.append({"id": "judge-unparsable", "prompt": "p", "vars": {"q": a("judge-garbage")},
                  "assert": [{"type": "rubric", "value": "The answer is polite."}]})
    root = write_repo(tmp_path_factory.mktemp("assert") / "repo", cases)
    snap, reader = load(root)
    with LLMServer(answer=judge_or_answer) as server:
        run = run_evals(snap, reader, env=live_env(server), concurrency=8)
    return {c.id: c for c in run.cases}


@pytest.mark.parametrize(("cid", "answer", "spec", "should_pass"), TABLE, ids=[t[0] for t in TABLE])
def test_assertion_kind(results: dict, cid: str, answer: str, spec: dict, should_pass: bool) -> None:
    case = results[cid]
    assert case.error is None, case.error_message
    assert case.output == answer
    assert case.passed is should_pass, case.assertions[0].reason
    assert case.assertions[0].passed is should_pass
    assert case.assertions[0].score == JUDGED_SCORES.get(cid, 1.0 if should_pass else 0.0)


def test_reasons_say_what_was_found(results: dict) -> None:
    assert results["equals-fail"].assertions[0].reason == "expected 'billing', got 'shipping'"
    assert results["contains-all-fail"].assertions[0].reason == "missing 'pink'"
    assert results["max-tokens-fail"].assertions[0].reason == "4 output tokens (max 3)"
    assert results["json-schema-fail"].assertions[0].reason.startswith("schema violation at name: 42 is not of type")
    assert results["not-contains-fail"].assertions[0].reason == "found 'password' (should not: contains)"
    assert results["rubric-fail"].assertions[0].reason == "judge 2/5: as marked"
    assert results["rubric-fail"].scores == {"rubric": 0.25}
    assert results["cost-fail"].assertions[0].reason.startswith("$0.0000")


def test_latency_assertion_fails_on_a_slow_answer(results: dict) -> None:
    case = results["latency-fail"]
    assert not case.passed
    assert case.latency_ms["total"] >= 250
    assert case.assertions[0].reason.endswith("(max 100 ms)")


def test_content_filter_counts_as_a_refusal_when_one_is_expected(results: dict) -> None:
    case = results["content-filter-refusal"]
    assert case.passed and case.error is None
    assert case.assertions[0].reason == "refused (should refuse)"


def test_unparsable_judge_output_is_a_parse_error_not_a_pass(results: dict) -> None:
    case = results["judge-unparsable"]
    assert not case.passed
    assert case.error == "parse"
    assert "judge reply has no JSON object" in case.error_message
    assert case.score == 0.0


def test_unknown_price_fails_a_cost_assertion_instead_of_counting_zero() -> None:
    res = evaluate({"type": "cost", "value": 1}, Observation("x", 1, 1, {"total": 1.0}, cost_usd=None))
    assert not res.passed and res.reason == "cost unknown (no price for this model)"


@pytest.mark.parametrize(("spec", "message"), [
    ({"type": "contain", "value": "x"}, "unknown assertion type 'contain' (did you mean 'contains'?)"),
    ({"type": "regex", "value": "("}, "invalid regular expression '('"),
    ({"type": "max-tokens", "value": "ten"}, "max-tokens needs a whole-number `value`"),
    ({"type": "json-schema", "value": {"type": 5}}, "invalid JSON Schema"),
    ({"type": "factuality"}, "factuality needs a reference answer"),
    ({"type": "equals", "value": "x", "valu": 1}, "equals takes `value` (the expected text or JSON value), not `valu`"),
    ({"type": "json-schema", "value": {"$ref": "#/$defs/missing"}},
     "invalid JSON Schema: $ref '#/$defs/missing' does not resolve within the schema"),
    ({"type": "json-schema", "value": {"properties": {"a": {"$ref": "https://example.com/a.json"}}}},
     "invalid JSON Schema: $ref 'https://example.com/a.json' does not resolve within the schema (schemas are "
     "never fetched: put it under $defs)"),
    ({"type": "latency", "value": float("nan")}, "latency needs a numeric `value` (milliseconds)"),
    ({"type": "cost", "value": float("inf")}, "cost needs a numeric `value` (US dollars)"),
], ids=["unknown-type", "bad-regex", "max-tokens", "json-schema", "factuality-reference", "unknown-key",
        "schema-ref-missing", "schema-ref-remote", "latency-nan", "cost-infinite"])
def test_bad_specs_are_explained(spec: dict, message: str) -> None:
    assert (check_spec(spec, {}) or "").startswith(message)


def test_a_schema_with_a_local_ref_validates() -> None:
    schema = {"$defs": {"name": {"type": "string"}}, "type": "object", "properties": {"n": {"$ref": "#/$defs/name"}}}
    spec = {"type": "json-schema", "value": schema}
    assert check_spec(spec, {}) is None
    assert evaluate(spec, Observation('{"n": "Ada"}')).passed
    assert evaluate(spec, Observation('{"n": 1}')).reason == "schema violation at n: 1 is not of type 'string'"


def test_server_echoes_without_a_directive(tmp_path: Path) -> None:
    assert default_answer("openai", {"messages": [{"role": "user", "content": "hello"}]}) == "echo: hello"


def test_a_judge_reply_whose_json_python_cannot_read_is_a_parse_error() -> None:
    """json.loads raises a plain ValueError (no `.msg`) for an integer of more than 4,300 digits."""
    with pytest.raises(JudgeParseError, match=r"judge reply is not valid JSON \(Exceeds the limit"):
        parse_judgement('{"score": ' + "1" * 5000 + ', "reason": "x"}')
    with pytest.raises(JudgeParseError, match=r"judge reply is not valid JSON \(Expecting"):
        parse_judgement('{"score": 3, "reason": }')
