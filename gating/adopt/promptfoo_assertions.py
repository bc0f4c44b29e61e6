"""How promptfoo's assertion types become gating's: one table, so a type gating learns is one line here.

A promptfoo type not in the table is listed as not converted, never dropped in silence. `not-` works on
every row, as in both tools.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """One promptfoo type as gating's: the type, how the value carries over, and whether promptfoo's
    `threshold` is gating's `value` (latency in ms, cost in dollars) or gating's 0..1 `threshold`."""

    type: str
    value: Callable[[Any], Any] | None = None  # promptfoo value -> gating value; None keeps it
    threshold_is_value: bool = False
    keeps_threshold: bool = False  # model-graded: a 0..1 pass mark
    schema_type: str | None = None  # with a `value`, the type becomes this one (is-json + schema)


def _comma_list(v: Any) -> Any:
    """promptfoo's contains-any/-all take a list or a comma-separated string."""
    return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v


PROMPTFOO_ASSERTIONS: dict[str, Rule] = {
    "equals": Rule("equals"),
    "contains": Rule("contains"),
    "icontains": Rule("icontains"),
    "contains-any": Rule("contains-any", _comma_list),
    "contains-all": Rule("contains-all", _comma_list),
    "icontains-any": Rule("icontains-any", _comma_list),
    "icontains-all": Rule("icontains-all", _comma_list),
    "starts-with": Rule("starts-with"),
    "contains-json": Rule("contains-json"),
    "levenshtein": Rule("levenshtein", keeps_threshold=True),
    "rouge-n": Rule("rouge-n", keeps_threshold=True),
    "similar": Rule("similar", keeps_threshold=True),  # the caller adds the embedding model
    "g-eval": Rule("g-eval", keeps_threshold=True),
    "context-faithfulness": Rule("context-faithfulness", keeps_threshold=True),
    "context-recall": Rule("context-recall", keeps_threshold=True),
    "answer-relevance": Rule("answer-relevance", keeps_threshold=True),
    "regex": Rule("regex"),
    "is-json": Rule("is-json", schema_type="json-schema"),
    "is-refusal": Rule("refusal"),
    "latency": Rule("latency", threshold_is_value=True),
    "cost": Rule("cost", threshold_is_value=True),
    "llm-rubric": Rule("rubric", keeps_threshold=True),
    "factuality": Rule("factuality", keeps_threshold=True),
    "python": Rule("python", keeps_threshold=True),  # file:// paths are made the repository's by the caller
}
CARRIED_KEYS = {"type", "value", "threshold", "weight", "metric", "config"}  # metric becomes gating's `name`


def convert_assertion(spec: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(gating spec, "") or (None, why not). The why is a short label the report counts."""
    ptype = str(spec.get("type", ""))
    negate = ptype.startswith("not-")
    base = ptype[4:] if negate else ptype
    rule = PROMPTFOO_ASSERTIONS.get(base)
    if rule is None:
        return None, f"assertion type `{ptype or '(none)'}`"
    extra = sorted(set(spec) - CARRIED_KEYS)
    if extra:
        return None, f"assertion `{ptype}` with `{extra[0]}`"
    out: dict[str, Any] = {"type": rule.type}
    value = spec.get("value")
    if rule.threshold_is_value:
        value = spec.get("threshold", value)
    elif "threshold" in spec and not rule.keeps_threshold:
        return None, f"assertion `{ptype}` with `threshold`"
    elif "threshold" in spec:
        out["threshold"] = spec["threshold"]
    if isinstance(value, str) and value.startswith("file://") and rule.type != "python":
        return None, f"assertion `{ptype}` with a file:// value"
    if value is not None:
        if rule.schema_type:
            out["type"] = rule.schema_type
        out["value"] = rule.value(value) if rule.value else value
    if negate:
        out["type"] = "not-" + out["type"]
    if "weight" in spec:
        out["weight"] = spec["weight"]
    if spec.get("metric"):
        out["name"] = str(spec["metric"])
    if "config" in spec:
        if rule.type != "python":
            return None, f"assertion `{ptype}` with `config`"
        out["config"] = spec["config"]
    return out, ""
