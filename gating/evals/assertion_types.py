"""Each assertion type's declared parameters: what `check_spec` accepts and what docs/reference.md lists.

One table serves both, so the reference cannot describe a parameter the validator refuses (or the
other way round), and a wrong parameter name is answered with the right one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

COMMON_KEYS = ("type", "name", "weight")  # every assertion takes these
COMMON_DOC = {
    "type": "the assertion type; prefix `not-` to negate it (`not-contains`)",
    "name": "the score's name in reports (default: the type)",
    "weight": "a number >= 0; the case's score is the weighted mean of its assertions (default 1)",
}


@dataclass(frozen=True)
class AssertionType:
    """One assertion type: its `value` (None: it takes none), whether it takes a `threshold`, an example."""

    name: str
    summary: str
    value: str | None  # what `value` means, e.g. "milliseconds"; None when the type takes no value
    value_required: bool
    example: dict[str, Any]
    threshold: bool = False  # takes a `threshold`: the score a pass needs
    aliases: tuple[str, ...] = ()
    model_graded: bool = False  # graded by the judge model (judge.py), not here
    extra: tuple[str, ...] = ()  # keys of its own, e.g. python's `config` (passed to the check)

    @property
    def keys(self) -> tuple[str, ...]:
        return (COMMON_KEYS + (("value",) if self.value else ()) + (("threshold",) if self.threshold else ())
                + self.extra)

    def takes(self) -> str:
        """The parameters this type takes, as a wrong-name message names them."""
        own = [f"`value` ({self.value})"] if self.value else []
        kind = "0 to 1" if self.model_graded or self.name in ("rouge-n", "similar") else \
            "a whole number of edits" if self.name == "levenshtein" else "a number"
        own += [f"`threshold` ({kind})"] if self.threshold else []
        own += [f"`{k}`" for k in self.extra]
        return " and ".join(own) if own else "no parameters besides `name` and `weight`"


def _contains(name: str) -> AssertionType:
    case = "case-insensitively" if name.startswith("i") else "case-sensitively"
    mode = "any of" if name.endswith("-any") else "all of" if name.endswith("-all") else "the string or all of"
    return AssertionType(name, f"the output contains {mode} the strings, compared {case}",
                         "a string or a non-empty list of strings", True,
                         {"type": name, "value": ["refund", "30 days"] if "-" in name else "refund"})


_TYPES = [
    AssertionType("equals", "the output equals `value` (after trimming); a mapping or list compares as JSON",
                  "the expected text or JSON value", True, {"type": "equals", "value": "42"}),
    *[_contains(f"{i}contains{s}") for i in ("", "i") for s in ("", "-all", "-any")],
    AssertionType("regex", "the pattern matches somewhere in the output (Python `re.search`)",
                  "a regular expression", True, {"type": "regex", "value": r"\bORD-\d{6}\b"}),
    AssertionType("starts-with", "the output (leading whitespace aside) starts with `value`", "the expected start",
                  True, {"type": "starts-with", "value": "Dear customer"}),
    AssertionType("is-json", "the output parses as JSON (and, with a `value`, is valid against that JSON Schema)",
                  "an optional JSON Schema object", False, {"type": "is-json"}),
    AssertionType("contains-json", "the output contains a JSON object or array somewhere (and, with a `value`, "
                  "one valid against that JSON Schema)", "an optional JSON Schema object", False,
                  {"type": "contains-json", "value": {"type": "object", "required": ["order_id"]}}),
    AssertionType("levenshtein", "the edit distance between the output and `value` is at most `threshold` "
                  "(default 5); the score is 1 - distance / the longer length", "the expected text", True,
                  {"type": "levenshtein", "value": "Your order has shipped.", "threshold": 3}, threshold=True),
    AssertionType("similar", "the cosine similarity of the output's embedding and `value`'s (the best of a list) "
                  "reaches `threshold` (default 0.75); needs `evals.embedding`", "the reference text, or a list of them",
                  True, {"type": "similar", "value": "You can return it within 30 days.", "threshold": 0.8},
                  threshold=True),
    AssertionType("rouge-n", "ROUGE-1 recall of `value`'s words in the output reaches `threshold` (default 0.75)",
                  "the reference text", True, {"type": "rouge-n", "value": "refunds take 30 days", "threshold": 0.6},
                  threshold=True),
    AssertionType("json-schema", "the output is JSON valid against the schema (Draft 2020-12; `$ref` only "
                  "within the schema)", "a JSON Schema object", True,
                  {"type": "json-schema", "value": {"type": "object", "required": ["order_id"]}}),
    AssertionType("max-tokens", "the provider-reported output tokens are at most `value`",
                  "a whole number of tokens", True, {"type": "max-tokens", "value": 300}),
    AssertionType("refusal", "the answer is a refusal (or a content-filter stop); `value: false` requires "
                  "an answer", "true (should refuse, the default) or false", False, {"type": "refusal"}),
    AssertionType("latency", "the case's total latency is at most `value`", "milliseconds", True,
                  {"type": "latency", "value": 1500}),
    AssertionType("cost", "the case's cost is at most `value` (needs a price for the model)", "US dollars", True,
                  {"type": "cost", "value": 0.002}),
    AssertionType("rubric", "the judge model grades the output against the rubric (model-graded)",
                  "the rubric text", True,
                  {"type": "rubric", "value": "Polite, and names the refund window.", "threshold": 0.75},
                  threshold=True, aliases=("llm-rubric",), model_graded=True),
    AssertionType("factuality", "the judge model compares the output with the reference answer "
                  "(model-graded)", "the reference answer (default: the case's `expected`)", False,
                  {"type": "factuality", "threshold": 0.75}, threshold=True, model_graded=True),
    AssertionType("g-eval", "the judge model reasons through evaluation steps for the criteria, then grades "
                  "(model-graded)", "the criteria", True,
                  {"type": "g-eval", "value": "Coherent, and every step follows from the last.", "threshold": 0.75},
                  threshold=True, model_graded=True),
    AssertionType("context-faithfulness", "every claim of the output is supported by the retrieved text in the "
                  "case's `context` var (model-graded)", None, False,
                  {"type": "context-faithfulness", "threshold": 0.75}, threshold=True, model_graded=True),
    AssertionType("context-recall", "the retrieved text in the case's `context` var holds the reference's facts "
                  "(model-graded)", "the reference answer (default: the case's `expected`)", False,
                  {"type": "context-recall", "threshold": 0.75}, threshold=True, model_graded=True),
    AssertionType("answer-relevance", "the output answers the input that was asked, without going elsewhere "
                  "(model-graded)", None, False, {"type": "answer-relevance", "threshold": 0.75},
                  threshold=True, model_graded=True),
    AssertionType("python", "your Python function (a file of `evals.python`) or an inline expression decides: "
                  "`fn(output, context)` returns true/false, a score, or {pass, score, reason}; with a number, "
                  "`threshold` is the score a pass needs (default: above 0)",
                  "`file://PATH.py:FUNCTION` (default `get_assert`) or inline Python", True,
                  {"type": "python", "value": "file://evals/checks.py:cites_order"}, threshold=True,
                  extra=("config",)),
]

TYPES: dict[str, AssertionType] = {t.name: t for t in _TYPES} | {a: t for t in _TYPES for a in t.aliases}


def wrong_key_message(type_name: str, key: str) -> str:
    """What to say about a key `type_name` does not take: the parameter(s) it does take, by name."""
    t = TYPES[type_name]
    return f"{type_name} takes {t.takes()}, not `{key}`"
