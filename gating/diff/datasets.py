"""Eval datasets compared case by case: which cases a change adds, removes or judges differently.

Cases are matched by id across every dataset (a case moved to another file is the same case), and
their assertions by type and name. An assertion is *weaker* when it admits answers it refused
before: removed, its threshold lowered, a latency, cost or token budget raised, a `contains` value
cut down to a part of itself, a `contains-any` list grown. A pull request could pass by weakening
the cases it fails, so the diff says which way each change goes, and "cannot tell" when it cannot.
Pure: takes dataset bytes, returns records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gating.evals.dataset import DatasetError, _BadLine, _rows

BUDGETS = {"max-tokens", "latency", "cost"}  # `value` is an upper bound: raising it admits more
_CASE_FIELDS = ("prompt", "expected", "vars", "tags", "description", "metadata", "threshold", "weight")


@dataclass(frozen=True)
class CaseChange:
    case: str
    kind: str  # added | removed | changed
    where: tuple[str | int, ...]  # () the whole case; ("assert", 0, "value"); ("expected",) ...
    before: Any
    after: Any
    weaker: bool | None  # True: judges less strictly than before; False: more strictly; None: cannot tell
    summary: str
    prompt: str | None = None  # the prompt the case exercises (at head when it has one there)


@dataclass
class Cases:
    """The cases of some datasets by id, with the file each is in, and what could not be read."""

    by_id: dict[str, dict[str, Any]]
    files: dict[str, str]  # case id -> dataset path
    problems: list[str]


def read_cases(files: Mapping[str, bytes]) -> Cases:
    """Every case with an id; lines and files that do not parse are listed, never raised."""
    out = Cases({}, {}, [])
    for path, data in files.items():
        try:
            rows = _rows(path, data)
        except DatasetError as e:
            out.problems += e.problems
            continue
        for _line, raw in rows:
            if isinstance(raw, _BadLine):
                out.problems.append(raw.problem)
                continue
            cid = raw.get("id") if isinstance(raw, dict) else None
            if isinstance(cid, int) and not isinstance(cid, bool):
                cid = str(cid)
            if isinstance(cid, str) and cid.strip() and cid not in out.by_id:
                out.by_id[cid], out.files[cid] = raw, path
    return out


def _prompt(case: Mapping[str, Any]) -> str | None:
    p = case.get("prompt")
    return p if isinstance(p, str) else None


def _short(v: Any, n: int = 60) -> str:
    s = v if isinstance(v, str) else repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def describe(spec: Any) -> str:
    """`icontains 30 days`: an assertion as a reviewer names it."""
    if not isinstance(spec, dict):
        return _short(spec)
    text = str(spec.get("type", "?"))
    if spec.get("name"):
        text += f" `{spec['name']}`"
    if "value" in spec:
        text += f" {_short(spec['value'], 40)}"
    if "threshold" in spec:
        text += f" (threshold {spec['threshold']})"
    return text


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _value_weaker(kind: str, before: Any, after: Any) -> bool | None:
    """Whether the new `value` of a (not negated) assertion of this kind admits more answers."""
    if kind in BUDGETS:
        bn, an = _number(before), _number(after)
        return None if bn is None or an is None else an > bn
    if kind in ("contains", "icontains") and isinstance(before, str) and isinstance(after, str):
        b, a = (before.lower(), after.lower()) if kind == "icontains" else (before, after)
        return True if a in b else False if b in a else None
    if kind.endswith(("contains-any", "contains-all")) and isinstance(before, list) and isinstance(after, list):
        bs, as_ = set(map(str, before)), set(map(str, after))
        grown = True if as_ >= bs else False if as_ <= bs else None
        return grown if kind.endswith("-any") or grown is None else not grown
    return None


def _field_weaker(spec_type: str, name: str, before: Any, after: Any) -> bool | None:
    negated = spec_type.startswith("not-")
    kind = spec_type.removeprefix("not-")
    if name == "threshold":
        b, a = _number(before), _number(after)
        weaker = None if b is None or a is None else a < b
    elif name == "value":
        weaker = _value_weaker(kind, before, after)
    else:
        return None
    return weaker if weaker is None or not negated else not weaker  # a negated assertion passes the other way


_DIRECTION = {True: " (weakened)", False: " (stricter)", None: " (cannot tell whether it is weaker)"}


def _spec_changes(cid: str, prompt: str | None, i: int, b: dict[str, Any], h: dict[str, Any]) -> list[CaseChange]:
    out = []
    t = str(h.get("type"))
    for key in sorted(set(b) | set(h), key=str):
        if b.get(key) == h.get(key):
            continue
        before, after = b.get(key), h.get(key)
        if key in ("value", "threshold"):
            weaker = True if after is None and key == "threshold" and before is not None else \
                _field_weaker(t, key, before, after)
            what = "changed" if key == "value" else key
            summary = f"eval case `{cid}`: assertion {t} {what}: {_short(before)} → {_short(after)}{_DIRECTION[weaker]}"
        else:  # weight, name: how a case scores, not whether it passes
            weaker = None
            summary = f"eval case `{cid}`: assertion {t} {key}: {_short(before)} → {_short(after)}"
        out.append(CaseChange(cid, "changed", ("assert", i, key), before, after, weaker, summary, prompt))
    return out


def _key(spec: Any) -> tuple[Any, Any]:
    return (spec.get("type"), spec.get("name")) if isinstance(spec, dict) else (None, repr(spec))


def assertion_changes(cid: str, prompt: str | None, before: Any, after: Any) -> list[CaseChange]:
    """Assertions matched exactly first, then by type and name; what is left was removed or added."""
    b = before if isinstance(before, list) else []
    h = after if isinstance(after, list) else []
    left = list(enumerate(h))
    unmatched: list[tuple[int, Any]] = []
    for i, spec in enumerate(b):
        j = next((k for k, (_, s) in enumerate(left) if s == spec), None)
        if j is None:
            unmatched.append((i, spec))
        else:
            left.pop(j)
    out: list[CaseChange] = []
    for i, spec in unmatched:
        j = next((k for k, (_, s) in enumerate(left) if _key(s) == _key(spec)), None)
        if j is None:
            out.append(CaseChange(cid, "removed", ("assert", i), spec, None, True,
                                  f"eval case `{cid}`: assertion {describe(spec)} removed", prompt))
            continue
        hi, hspec = left.pop(j)
        out += _spec_changes(cid, prompt, hi, spec, hspec)
    for hi, spec in left:
        out.append(CaseChange(cid, "added", ("assert", hi), None, spec, False,
                              f"eval case `{cid}`: assertion {describe(spec)} added", prompt))
    return out


def case_changes(cid: str, b: Mapping[str, Any], h: Mapping[str, Any]) -> list[CaseChange]:
    """How one case present on both sides changed."""
    prompt = _prompt(h)
    out = []
    for key in _CASE_FIELDS:
        if b.get(key) == h.get(key):
            continue
        before, after = b.get(key), h.get(key)
        if key == "prompt":
            summary, weaker = f"eval case `{cid}` now exercises prompt `{after}` (was `{before}`)", None
        elif key == "expected":
            summary, weaker = f"eval case `{cid}`: expected answer changed: {_short(before)} → {_short(after)}", None
        elif key == "vars":
            summary, weaker = f"eval case `{cid}`: inputs (vars) changed", None
        elif key == "weight":  # a case that counts less hides its regressions in the pass rate
            before, after = 1 if before is None else before, 1 if after is None else after
            wb, wa = _number(before), _number(after)
            weaker = True if wb is not None and wa is not None and wa < wb else None
            summary = f"eval case `{cid}` weight: {_short(before)} → {_short(after)}" + (
                " (counts less)" if weaker else " (counts more; the other cases count less)"
                if wb is not None and wa is not None and wa > wb else _DIRECTION[None])
        elif key == "threshold":  # no threshold: every assertion must pass, the strictest
            tb, ta = _number(before), _number(after)
            weaker = False if after is None else True if before is None else None if tb is None or ta is None \
                else ta < tb
            summary = f"eval case `{cid}` threshold: {_short(before)} → {_short(after)}{_DIRECTION[weaker]}"
        else:
            summary, weaker = f"eval case `{cid}` {key}: {_short(before)} → {_short(after)}", False
        out.append(CaseChange(cid, "changed", (key,), before, after, weaker, summary, prompt))
    if b.get("assert") != h.get("assert"):
        out += assertion_changes(cid, prompt, b.get("assert"), h.get("assert"))
    return out


def diff_cases(base: Cases, head: Cases) -> list[CaseChange]:
    """Every case removed, changed or added between two sets of cases, in id order per kind."""
    out: list[CaseChange] = []
    for cid in sorted(base.by_id):
        if cid not in head.by_id:
            b = base.by_id[cid]
            out.append(CaseChange(cid, "removed", (), b, None, True, f"eval case `{cid}` removed", _prompt(b)))
        else:
            out += case_changes(cid, base.by_id[cid], head.by_id[cid])
    for cid in sorted(set(head.by_id) - set(base.by_id)):
        h = head.by_id[cid]
        p = _prompt(h)
        out.append(CaseChange(cid, "added", (), None, h, False,
                              f"eval case `{cid}` added" + (f" (prompt `{p}`)" if p else ""), p))
    return out
