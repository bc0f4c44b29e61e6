"""Deterministic assertions on one answer, and the spec checks the dataset loader runs up front.

Every type may be negated with a `not-` prefix. Model-graded types (rubric, factuality) are graded
in judge.py; they are listed here so the loader can validate them with the rest.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from gating.evals.assertion_types import TYPES, wrong_key_message
from gating.evals.records import AssertionResult

MODEL_GRADED = {n: t.name for n, t in TYPES.items() if t.model_graded}  # alias -> graded type
PYTHON = "python"  # run by pycheck.py, not here
SIMILAR = "similar"  # needs embeddings: runner.py
_CONTAINS = {f"{i}contains{s}" for i in ("", "i") for s in ("", "-all", "-any")}
DETERMINISTIC = set(TYPES) - set(MODEL_GRADED) - {PYTHON, SIMILAR}
ALL_TYPES = sorted(TYPES)

REFUSAL_PATTERNS = re.compile(
    r"\b(i\s*(?:'m| am)\s+(?:sorry|afraid|unable|not able)|i\s+(?:can(?:'|no)?t|cannot|won't|will not|must decline)"
    r"\s+(?:help|assist|provide|share|do|comply|answer|reveal|disclose|give)|as an ai\b|i\s+do(?:n't| not)\s+feel "
    r"comfortable|against (?:my|our) (?:policy|policies|guidelines))",
    re.I,
)


@dataclass
class Observation:
    """What the target produced for one case (one repeat)."""

    output: str
    tokens_in: int | None = None
    tokens_out: int | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    cost_usd: float | None = None
    error: str | None = None  # a content_filter refusal is an observation, not a crash


def base_type(t: str) -> str:
    return t[4:] if t.startswith("not-") else t


def default_name(spec: dict[str, Any]) -> str:
    if spec.get("name"):
        return str(spec["name"])
    t = spec["type"]
    prefix = "not-" if t.startswith("not-") else ""
    return prefix + MODEL_GRADED.get(base_type(t), base_type(t))


def _str_or_list(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v))


def check_spec(spec: Any, case: dict[str, Any]) -> str | None:
    """Why this assertion spec is unusable, or None. The message names the allowed values."""
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        return "an assertion is a mapping with a `type`"
    t = base_type(spec["type"])
    if t not in TYPES:
        import difflib

        hint = difflib.get_close_matches(t, ALL_TYPES, n=1)
        return f"unknown assertion type {spec['type']!r}" + (
            f" (did you mean {hint[0]!r}?)" if hint else f"; known: {', '.join(ALL_TYPES)} (each also as not-TYPE)")
    extra = sorted(set(spec) - set(TYPES[t].keys))
    if extra:
        return wrong_key_message(t, extra[0])
    v = spec.get("value")
    if "weight" in spec and (not isinstance(spec["weight"], (int, float)) or spec["weight"] < 0):
        return "`weight` must be a number >= 0"
    if t == PYTHON:
        if "threshold" in spec and (not isinstance(spec["threshold"], (int, float)) or isinstance(spec["threshold"], bool)):
            return "`threshold` must be a number"
        if not isinstance(v, str) or not v.strip():
            return "python needs a `value`: file://PATH.py:FUNCTION or inline Python"
        from gating.evals.pycheck import parse_ref

        try:
            parse_ref(v, "get_assert")
        except ValueError as e:
            return str(e)
        return None
    if t == "levenshtein":
        if "threshold" in spec and (not isinstance(spec["threshold"], int) or isinstance(spec["threshold"], bool)
                                    or spec["threshold"] < 0):
            return "levenshtein `threshold` is the most edits allowed: a whole number >= 0"
    elif "threshold" in spec and (not isinstance(spec["threshold"], (int, float)) or not 0 <= spec["threshold"] <= 1):
        return "`threshold` must be a number between 0 and 1"
    if t == "equals" and "value" not in spec:
        return "equals needs a `value`"
    if t in _CONTAINS and not _str_or_list(v):
        return f"{t} needs a `value`: a string or a non-empty list of strings"
    if t == "regex":
        if not isinstance(v, str):
            return "regex needs a `value` pattern"
        try:
            re.compile(v)
        except re.error as e:
            return f"invalid regular expression {v!r}: {e}"
    if t == SIMILAR and not _str_or_list(v):
        return "similar needs a `value`: the reference text or a non-empty list of them"
    if t in ("starts-with", "levenshtein", "rouge-n") and not isinstance(v, str):
        return f"{t} needs a string `value`"
    if t in ("is-json", "contains-json") and v is not None and not isinstance(v, dict):
        return f"{t} `value` is an optional JSON Schema object"
    if t == "json-schema" or (t in ("is-json", "contains-json") and v is not None):
        if not isinstance(v, dict):
            return "json-schema needs a `value` that is a JSON Schema object"
        import jsonschema  # only a json-schema assertion needs it: imported here for a quick start

        try:
            jsonschema.Draft202012Validator.check_schema(v)
        except jsonschema.SchemaError as e:
            return f"invalid JSON Schema: {e.message}"
        bad = _unresolved_ref(v)
        if bad:
            tip = "" if bad.startswith("#") else " (schemas are never fetched: put it under $defs)"
            return f"invalid JSON Schema: $ref {bad!r} does not resolve within the schema{tip}"
    if t == "max-tokens" and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
        return "max-tokens needs a whole-number `value`"
    if t in ("latency", "cost") and (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)
                                     or v < 0):
        return f"{t} needs a numeric `value` ({'milliseconds' if t == 'latency' else 'US dollars'})"
    if t == "refusal" and v is not None and not isinstance(v, bool):
        return "refusal `value` is true (should refuse, the default) or false (should answer)"
    if t in ("rubric", "llm-rubric") and (not isinstance(v, str) or not v.strip()):
        return f"{t} needs a `value`: the rubric text"
    if t in ("factuality", "context-recall") and not isinstance(v, str) and case.get("expected") is None:
        return f"{t} needs a reference answer: a `value` or the case's `expected`"
    if t == "g-eval" and (not isinstance(v, str) or not v.strip()):
        return "g-eval needs a `value`: the criteria"
    return None


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _unresolved_ref(schema: dict[str, Any]) -> str | None:
    """The first $ref that cannot be resolved without fetching anything (validation would crash on it)."""
    import referencing.exceptions
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    resolver = Registry().resolver_with_root(DRAFT202012.create_resource(schema))
    for ref in _refs(schema):
        try:
            resolver.lookup(ref)
        except referencing.exceptions.Unresolvable:
            return ref
    return None


def _fold(s: str, ci: bool) -> str:
    return s.casefold() if ci else s


def _contains(t: str, output: str, value: Any) -> tuple[bool, str]:
    ci = t.startswith("i")
    needles = [value] if isinstance(value, str) else list(value)
    mode = "any" if t.endswith("-any") else "all"
    hay = _fold(output, ci)
    found = [n for n in needles if _fold(n, ci) in hay]
    missing = [n for n in needles if n not in found]
    if mode == "any":
        ok = bool(found)
        return ok, (f"found {found[0]!r}" if ok else f"none of {needles!r} found")
    if not missing:
        return True, f"found {needles[0]!r}" if len(needles) == 1 else f"found all of {needles!r}"
    more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
    return False, f"missing {missing[0]!r}{more}"


def _equals(output: str, value: Any) -> tuple[bool, str]:
    if isinstance(value, (dict, list)):
        try:
            ok = json.loads(output) == value
        except ValueError:
            return False, "output is not JSON, expected a JSON value"
        return ok, "JSON equal" if ok else "JSON differs from the expected value"
    ok = output.strip() == str(value).strip()
    return ok, "equal" if ok else f"expected {str(value).strip()!r}, got {_short(output.strip())!r}"


def _short(s: str, n: int = 80) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _json(output: str) -> tuple[bool, str, Any]:
    try:
        return True, "valid JSON", json.loads(output)
    except ValueError as e:
        return False, f"not valid JSON: {e}", None


def is_refusal(obs: Observation) -> bool:
    return obs.error == "content_filter" or bool(REFUSAL_PATTERNS.search(obs.output))


def _schema(doc: Any, schema: dict[str, Any]) -> tuple[bool, str]:
    import jsonschema  # imported when a schema assertion runs: a quick start for the CLI

    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    if err is None:
        return True, "matches the schema"
    where = "/".join(str(p) for p in err.absolute_path) or "(root)"
    return False, f"schema violation at {where}: {err.message}"


def _embedded_json(text: str, limit: int = 20) -> list[Any]:
    """The JSON objects and arrays found in the text, outermost first (at most `limit` tried)."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    i, tries = 0, 0
    while tries < limit:
        i = min((p for p in (text.find("{", i), text.find("[", i)) if p >= 0), default=-1)
        if i < 0:
            break
        tries += 1
        try:
            doc, end = decoder.raw_decode(text, i)
        except ValueError:
            i += 1
            continue
        found.append(doc)
        i = end
    return found


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions), two rows of the table at a time."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def rouge_1(output: str, reference: str) -> float:
    """ROUGE-1 recall: the share of the reference's words (with their counts) found in the output."""
    from collections import Counter

    words = re.compile(r"\w+")
    ref = Counter(w.casefold() for w in words.findall(reference))
    got = Counter(w.casefold() for w in words.findall(output))
    total = sum(ref.values())
    return sum(min(n, got[w]) for w, n in ref.items()) / total if total else 0.0


def _check(t: str, v: Any, obs: Observation, spec_threshold: Any = None) -> tuple[bool, str]:
    if t == "equals":
        return _equals(obs.output, v)
    if t in _CONTAINS:
        return _contains(t, obs.output, v)
    if t == "regex":
        m = re.search(v, obs.output)
        return bool(m), f"matched {m.group(0)!r}" if m else f"no match for /{v}/"
    if t == "starts-with":
        got = obs.output.lstrip()
        return got.startswith(v), "starts with it" if got.startswith(v) else f"starts with {_short(got, 40)!r}"
    if t == "is-json" and v is None:
        ok, why, _ = _json(obs.output)
        return ok, why
    if t in ("json-schema", "is-json"):
        ok, why, doc = _json(obs.output)
        return _schema(doc, v) if ok else (False, why)
    if t == "contains-json":
        docs = _embedded_json(obs.output)
        if not docs:
            return False, "no JSON object or array in the output"
        if v is None:
            return True, "contains JSON"
        results = [_schema(d, v) for d in docs]
        return next((r for r in results if r[0]), results[0])
    if t == "levenshtein":
        limit = 5 if spec_threshold is None else spec_threshold
        d = levenshtein(obs.output.strip(), v.strip())
        return d <= limit, f"{d} edit{'s' if d != 1 else ''} from the expected text (at most {limit})"
    if t == "rouge-n":
        r = rouge_1(obs.output, v)
        need = 0.75 if spec_threshold is None else spec_threshold
        return r >= need, f"ROUGE-1 recall {r:.2f} (needs {need:g})"
    if t == "max-tokens":
        if obs.tokens_out is None:
            return False, "output token count unknown (the provider reported no usage)"
        return obs.tokens_out <= v, f"{obs.tokens_out} output tokens (max {v})"
    if t == "refusal":
        should = True if v is None else bool(v)
        refused = is_refusal(obs)
        what = "refused" if refused else "answered"
        return refused == should, f"{what} (should {'refuse' if should else 'answer'})"
    if t == "latency":
        ms = obs.latency_ms.get("total")
        if ms is None:
            return False, "latency unknown"
        return ms <= v, f"{ms:.0f} ms (max {v:g} ms)"
    if t == "cost":
        if obs.cost_usd is None:
            return False, "cost unknown (no price for this model)"
        return obs.cost_usd <= v, f"${obs.cost_usd:.6f} (max ${v:g})"
    raise ValueError(f"not a deterministic assertion: {t}")


def evaluate(spec: dict[str, Any], obs: Observation) -> AssertionResult:
    """Run one deterministic assertion; `not-` flips the outcome and says so."""
    t = spec["type"]
    negate = t.startswith("not-")
    ok, why = _check(base_type(t), spec.get("value"), obs, spec.get("threshold"))
    score = 1.0 if ok else 0.0
    if base_type(t) in ("levenshtein", "rouge-n"):  # a graded similarity, not only pass/fail
        out, ref = obs.output.strip(), str(spec["value"]).strip()
        score = (1 - levenshtein(out, ref) / max(len(out), len(ref), 1) if base_type(t) == "levenshtein"
                 else rouge_1(obs.output, ref))
    if negate:
        ok, why, score = not ok, f"{why} (should not: {base_type(t)})", 1.0 - score
    return AssertionResult(t, ok, round(score, 6), why, default_name(spec), float(spec.get("weight", 1.0)))
