"""What a change does to the gates themselves: eval thresholds, regression rules and approval rules.

A gate that admits more than before is called out as high risk, since a pull request could loosen
the very checks it is judged by.
"""

from __future__ import annotations

import re
from typing import Any

from gating.changes import ALL, Change, dotted, leaves, short
from gating.manifest_schema import PERMISSIONS
from gating.policy.rules import OPTION_DEFAULTS
from gating.snapshot import Snapshot

_THRESH = re.compile(r"^\s*(>=|<=|>|<|==)\s*(-?[0-9.]+)\s*$")


def _looser(before: str | None, after: str | None) -> bool | None:
    """True when `after` admits more than `before`; None when incomparable."""
    if after is None:
        return True
    if before is None:
        return False
    mb, ma = _THRESH.match(before), _THRESH.match(after)
    if not mb or not ma or mb.group(1)[0] != ma.group(1)[0]:
        return None
    vb, va = float(mb.group(2)), float(ma.group(2))
    strict_dropped = mb.group(1) in (">", "<") and ma.group(1) in (">=", "<=")  # `> 0.8` → `>= 0.8` admits 0.8
    if mb.group(1).startswith(">"):
        return va < vb or (va == vb and strict_dropped)
    if mb.group(1).startswith("<"):
        return va > vb or (va == vb and strict_dropped)
    return None


def evals_changes(base: Snapshot, head: Snapshot) -> list[Change]:
    out = []
    be, he = base.outline.get("evals") or {}, head.outline.get("evals") or {}
    for lp, kind, before, after in leaves(be, he):
        leaf = dotted("evals", *lp)
        risk, summary = "medium", f"evals {dotted(*lp)}: {short(before)} → {short(after)}"
        affects: tuple[str, ...] = ()
        if lp and lp[0] == "thresholds":
            name = lp[1] if len(lp) > 1 else None
            pairs = [(name, before, after)] if name else [
                (k, (before or {}).get(k), (after or {}).get(k)) for k in set(before or {}) | set(after or {})
            ]
            for n, b, a in pairs:
                loose = _looser(b, a)
                if loose:
                    out.append(Change("evals", dotted("evals.thresholds", n), kind, b, a, "high",
                                      f"threshold loosened: {n} {b} → {a or '(removed)'}"))
                else:
                    out.append(Change("evals", dotted("evals.thresholds", n), kind, b, a, "low",
                                      f"threshold {n}: {b or '(none)'} → {a}"))
            continue
        if lp == ["regression", "max_drop"] and (after is None or (before is not None and after > before)):
            risk, summary = "high", f"regression rule loosened: max_drop {before} → {after}"
        elif lp == ["regression"] and kind == "removed":
            risk, summary = "high", "regression rule loosened: evals.regression removed"
        elif lp == ["regression", "alpha"] and (after is None or (before is not None and after < before)):
            risk, summary = "high", f"regression rule loosened: alpha {before} → {after} (needs stronger evidence)"
        elif lp == ["mode"]:  # where the answers come from: the cassettes or the models
            risk, summary = "high", f"evals mode {before or 'live'} → {after or 'live'} (applies after merge)"
        elif lp and lp[0] == "dataset_digests":
            risk, summary, affects = "medium", f"eval dataset {lp[1] if len(lp) > 1 else ''} changed", (ALL,)
        elif lp and lp[0] in ("target", "judge", "repeat"):
            affects = (ALL,)
        out.append(Change("evals", leaf, kind, before, after, risk, summary, affects=affects))
    return out


def _rules_by_name(rules: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in rules}


OPTION_KEYS = ("allow_author", "invalidate_on_push", "require_evidence", "ignore_bots")
_LOOSENING = {
    ("options", "allow_author"): (False, True),
    ("options", "invalidate_on_push"): (True, False),
    ("options", "require_evidence"): (True, False),
    ("options", "ignore_bots"): (True, False),
}


def _options_loosened(lp: list[Any], before: Any, after: Any) -> list[tuple[str, Any, Any]]:
    """Options (all of them, or one) that now take their looser value; a dropped option takes its
    default, so dropping `invalidate_on_push: true` loosens the rule."""
    if len(lp) == 2:
        before, after = {lp[1]: before} if before is not None else {}, {lp[1]: after} if after is not None else {}
    out = []
    for k in OPTION_KEYS:
        frm, to = _LOOSENING[("options", k)]
        b, a = (before or {}).get(k), (after or {}).get(k)
        if b != a and (OPTION_DEFAULTS[k] if b is None else b) == frm and (OPTION_DEFAULTS[k] if a is None else a) == to:
            out.append((k, b, a))
    return out


def _child_path(path: list[str | int]) -> tuple[list[str | int], list[str | int]]:
    """(the `and`/`or` children a path goes through, the rest): `or[0].requires.count` is the
    `requires.count` of the child `or[0]`."""
    i = 0
    while i + 1 < len(path) and path[i] in ("and", "or") and isinstance(path[i + 1], int):
        i += 2
    return path[:i], path[i:]


def _approvers_widened(b_rule: dict[str, Any], h_rule: dict[str, Any], prefix: list[str | int], kind: str,
                       after: Any) -> str | None:
    """Who may approve is users OR teams OR permission, and anyone when none is given: so a user or
    team added beside another qualifier, or the last qualifier dropped, lets more people approve."""
    try:
        for i in range(0, len(prefix), 2):
            b_rule, h_rule = b_rule[prefix[i]][prefix[i + 1]], h_rule[prefix[i]][prefix[i + 1]]
    except (KeyError, IndexError, TypeError):
        return None
    def anyone(rule: dict[str, Any]) -> bool:
        req = rule.get("requires") or {}
        return not (req.get("users") or req.get("teams") or req.get("permission"))
    if anyone(b_rule):
        return None  # anyone could approve before: naming people narrows it
    if anyone(h_rule):
        return "may now be approved by anyone (no users, teams or permission left)"
    if kind == "added":
        return f"may also be approved by {short(after)}"
    return None


def policy_changes(base: Snapshot, head: Snapshot) -> list[Change]:
    out = []
    br, hr = _rules_by_name(base.outline.get("approvals") or []), _rules_by_name(head.outline.get("approvals") or [])
    for name in sorted(set(br) | set(hr)):
        path = f"approvals.{name}"
        if name not in hr:
            out.append(Change("policy", path, "removed", br[name], None, "high",
                              f"approval rule loosened: `{name}` removed"))
            continue
        if name not in br:
            out.append(Change("policy", path, "added", None, hr[name], "low", f"approval rule `{name}` added"))
            continue
        for full, kind, before, after in leaves(br[name], hr[name], ignore_order=True):
            leaf = dotted(path, *full)
            risk, summary = "medium", f"approval rule `{name}` {dotted(*full)}: {short(before)} → {short(after)}"
            # A child rule of an `and`/`or` is judged like a rule of its own, and named by its path.
            prefix, lp = _child_path(full)
            who = f"{name}` › `{dotted(*prefix)}" if prefix else name
            key = tuple(lp[:2])
            if prefix and not lp:
                child = (before if kind == "removed" else after) or {}
                what = f"{dotted(*full)} (`{child.get('name')}`) {kind}" if isinstance(child, dict) else kind
                wider = (prefix[-2] == "and" and kind == "removed") or (prefix[-2] == "or" and kind == "added")
                if wider:
                    risk = "high"
                    summary = (f"approval rule loosened: `{name}` {what}: "
                               + ("one fewer part must be approved" if kind == "removed"
                                  else "one more way to be approved"))
                else:
                    summary = f"approval rule `{name}` {what}"
            elif lp[:2] == ["requires", "count"] and (after or 0) < (before or 0):
                risk, summary = "high", f"approval rule loosened: `{who}` needs {after} approvals (was {before})"
            elif lp[:1] == ["options"] and len(lp) <= 2 and (loose := _options_loosened(lp, before, after)):
                out.extend(Change("policy", dotted(path, *prefix, "options", k), kind, b, a, "high",
                                  f"approval rule loosened: `{who}` {k} {b} → {a}") for k, b, a in loose)
                continue
            elif lp == ["requires", "permission"] and before in PERMISSIONS and after in PERMISSIONS \
                    and PERMISSIONS.index(after) < PERMISSIONS.index(before):
                risk, summary = "high", f"approval rule loosened: `{who}` permission {before} → {after}"
            elif key in _LOOSENING:
                frm, to = _LOOSENING[key]
                if (before if before is not None else frm) == frm and after == to:
                    risk, summary = "high", f"approval rule loosened: `{who}` {lp[1]} {before} → {after}"
            elif lp[:1] == ["if"]:
                # Conditions are ANDed and each list is ORed: a new condition or a dropped item makes
                # the rule apply to fewer changes. `ignore` works the other way round: an item added
                # to it leaves fewer files that count.
                item = len(lp) >= 3
                if item and lp[1] == "ignore":
                    narrower = kind == "added"
                else:
                    narrower = (kind == "added" and not item) or (kind == "removed" and item)
                if narrower or kind == "changed":
                    risk = "high"
                    summary = (f"approval rule loosened: `{who}` applies to fewer changes "
                               f"({dotted(*lp)}: {short(before)} → {short(after)})")
                elif kind == "removed":
                    summary = f"approval rule `{who}` applies more widely: condition {dotted(*lp)} removed"
                else:
                    risk = "low"
            elif lp[:2] in (["requires", "users"], ["requires", "teams"]) and \
                    (more := _approvers_widened(br[name], hr[name], prefix, kind, after)):
                risk, summary = "high", f"approval rule loosened: `{who}` {more}"
            elif lp[:1] == ["requires"] and kind == "removed":
                risk, summary = "high", f"approval rule loosened: `{who}` no longer requires {dotted(*lp[1:])}"
            out.append(Change("policy", leaf, kind, before, after, risk, summary))
    for lp, kind, before, after in leaves(base.outline.get("rollback") or {}, head.outline.get("rollback") or {}):
        out.append(Change("policy", dotted("rollback", *lp), kind, before, after, "medium",
                          f"rollback {dotted(*lp)}: {short(before)} → {short(after)}"))
    return out
