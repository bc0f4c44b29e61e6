"""What a change does to the gates themselves: eval thresholds, regression rules and approval rules.

A gate that admits more than before is called out as high risk, since a pull request could loosen
the very checks it is judged by.
"""

from __future__ import annotations

import re
from typing import Any

from gating.diff.changes import Change, dotted, leaves, short
from gating.diff.datasets import CaseChange, diff_cases, read_cases
from gating.policy.rules import OPTION_DEFAULTS
from gating.system.schema import DEFAULT_BAKE_MINUTES, PERMISSIONS, duration_minutes
from gating.system.snapshot import Snapshot

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


def _case_risk(c: CaseChange) -> str:
    """Removing or weakening a case is high risk, so is anything whose direction cannot be told
    about what decides a pass (an assertion's value, the expected answer, the prompt exercised)."""
    if c.kind == "removed" or c.weaker:
        return "high"
    if c.weaker is False:
        return "low"
    return "high" if c.where[:1] in (("prompt",), ("expected",)) or c.where[-1:] in (("value",), ("threshold",)) \
        else "medium"


def dataset_changes(base: Snapshot, head: Snapshot) -> list[Change]:
    """The eval datasets case by case: only the files whose bytes differ are read."""
    bd = (base.outline.get("evals") or {}).get("dataset_digests") or {}
    hd = (head.outline.get("evals") or {}).get("dataset_digests") or {}
    paths_b = sorted(p for p in bd if hd.get(p) != bd[p])
    paths_h = sorted(p for p in hd if bd.get(p) != hd[p])
    if not paths_b and not paths_h:
        return []
    base.preload(paths_b)
    head.preload(paths_h)
    bc, hc = read_cases({p: base.contents[p] for p in paths_b}), read_cases({p: head.contents[p] for p in paths_h})
    found = diff_cases(bc, hc)
    new_files = [p for p in paths_h if p not in bd]
    out = []
    for p in new_files:  # a dataset added whole is one row, not a row per case
        ids = [c.case for c in found if c.kind == "added" and not c.where and hc.files.get(c.case) == p]
        prompts = sorted({c.prompt for c in found if c.case in ids and c.prompt})
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        out.append(Change("evals", dotted("evals.dataset_digests", p), "added", None, hd[p], "low",
                          f"eval dataset {p} added: {len(ids)} case{'s' if len(ids) != 1 else ''}"
                          + (f" ({shown})" if ids else ""), affects=tuple(prompts)))
    for p in paths_b:
        if p not in hd:
            out.append(Change("evals", dotted("evals.dataset_digests", p), "removed", bd[p], None, "medium",
                              f"eval dataset {p} removed"))
    for problem in hc.problems:
        out.append(Change("evals", "evals.datasets", "changed", None, None, "high",
                          f"eval dataset cannot be read at head: {problem}"))
    for c in found:
        if c.kind == "added" and not c.where and hc.files.get(c.case) in new_files:
            continue
        path = dotted("evals.cases", c.case, *c.where)
        affects = (c.prompt,) if c.kind == "added" and not c.where and c.prompt else ()
        out.append(Change("evals", path, c.kind, c.before, c.after, _case_risk(c), c.summary, affects=affects))
    if not found and not hc.problems and not new_files:
        for p in paths_h:
            out.append(Change("evals", dotted("evals.dataset_digests", p), "changed", bd[p], hd[p], "low",
                              f"eval dataset {p} changed: no case changed (formatting, comments or order)"))
    return out


def evals_changes(base: Snapshot, head: Snapshot) -> list[Change]:
    """How the gate `gating / eval` judges, as the head would set it. None of it applies to the pull
    request itself (the base's evals judge it), so nothing here calls for a case to run again,
    except a case the head adds."""
    be, he = base.outline.get("evals") or {}, head.outline.get("evals") or {}
    if be and not he:
        return [Change("evals", "evals", "removed", None, None, "high",
                       "evals section removed: nothing would be evaluated after merge")]
    out = []
    for lp, kind, before, after in leaves(be, he):
        leaf = dotted("evals", *lp)
        risk, summary = "medium", f"evals {dotted(*lp)}: {short(before)} → {short(after)}"
        if lp and lp[0] == "dataset_digests":
            continue  # case by case, below
        if lp and lp[0] == "thresholds":
            name = lp[1] if len(lp) > 1 else None
            pairs = [(name, before, after)] if name else [
                (k, (before or {}).get(k), (after or {}).get(k)) for k in set(before or {}) | set(after or {})
            ]
            for n, b, a in sorted(pairs, key=lambda x: str(x[0])):
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
        elif lp and lp[0] == "judge" and be:
            risk, summary = "high", f"judge changed: {short(before)} → {short(after)} (grades every model-graded case)"
        elif lp and lp[0] == "target" and be:
            risk, summary = "high", f"eval target {dotted(*lp)}: {short(before)} → {short(after)} (what the cases run)"
        elif lp and lp[0] == "calibration" and lp[-1:] in (["min_agreement"], ["calibration"]) and \
                kind != "added" and (after is None or (isinstance(before, (int, float)) and after < before)):
            risk, summary = "high", f"judge calibration loosened: {dotted(*lp)} {short(before)} → {short(after)}"
        elif lp == ["calibration", "metric"]:
            risk, summary = "high", _calibration_metric(before, after)
        elif lp and lp[0] == "repeat" and isinstance(before, int) and (after is None or after < before):
            summary = f"evals repeat lowered: {before} → {after or 1} (less evidence per case)"
        out.append(Change("evals", leaf, kind, before, after, risk, summary))
    return out + dataset_changes(base, head)


# What `evals.calibration.metric` adds to the weighted kappa that is always required (calibrate.py),
# strictest last: exact agreement implies within-one agreement.
_METRIC_RANK = {"kappa": 0, "within_one": 1, "exact": 2}
_METRIC_WHY = {("exact", "kappa"): "exact agreement no longer required",
               ("within_one", "kappa"): "within-one agreement no longer required",
               ("exact", "within_one"): "within-one agreement admits answers one point off"}


def _calibration_metric(before: Any, after: Any) -> str:
    """Every change to what calibrates the judge is high risk; it says `loosened` where it admits more."""
    b, a = str(before or "kappa"), str(after or "kappa")
    if _METRIC_RANK.get(a, 0) < _METRIC_RANK.get(b, 0):
        return f"judge calibration loosened: calibration.metric {b} → {a} ({_METRIC_WHY.get((b, a), 'a weaker criterion')})"
    return (f"judge calibration criterion changed: calibration.metric {b} → {a} (weighted kappa stays required "
            f"beside {a.replace('_', '-')} agreement)" if a != "kappa" else
            f"judge calibration criterion changed: calibration.metric {b} → {a}")


def _rules_by_name(rules: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in rules}


OPTION_KEYS = ("allow_author", "invalidate_on_push", "require_evidence", "ignore_bots", "invalidate_override_on_push")
_LOOSENING = {
    ("options", "allow_author"): (False, True),
    ("options", "invalidate_on_push"): (True, False),
    ("options", "require_evidence"): (True, False),
    ("options", "ignore_bots"): (True, False),
    ("options", "invalidate_override_on_push"): (True, False),
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
            b_rule, h_rule = b_rule[str(prefix[i])][prefix[i + 1]], h_rule[str(prefix[i])][prefix[i + 1]]
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


# -- monitor: the production rules that decide known-good and automatic rollback ----------------------

_MONITOR_THRESH = re.compile(r"^\s*(>=|<=|>|<)\s*([0-9.]+)\s*(x\s*projected)?\s*$")


def _monitor_loosened(key: str, before: Any, after: Any, rule_before: dict[str, Any]) -> str | None:
    """Why a changed leaf of a monitor rule lets more through (fires later or not at all), else None."""
    if key == "threshold" and isinstance(before, str) and isinstance(after, str):
        mb, ma = _MONITOR_THRESH.match(before), _MONITOR_THRESH.match(after)
        if mb and ma and mb.group(1)[0] == ma.group(1)[0] and bool(mb.group(3)) == bool(ma.group(3)):
            vb, va = float(mb.group(2)), float(ma.group(2))
            if (va > vb) if mb.group(1)[0] == ">" else (va < vb):
                return f"threshold {before} → {after} fires later"
        return None
    if key == "for" and isinstance(before, str) and isinstance(after, str):
        b, a = duration_minutes(before), duration_minutes(after)
        return f"window {before} → {after} fires later" if a is not None and b is not None and a > b else None
    if key == "min_requests" and isinstance(after, int) and after > (before if isinstance(before, int) else 100):
        return f"min_requests {before} → {after} needs more traffic before it can fire"
    if key == "action" and before == "rollback" and after != "rollback":
        return f"action {before} → {after}: no automatic rollback any more"
    if key == "anomaly.z" and isinstance(before, (int, float)) and isinstance(after, (int, float)) and after > before:
        return f"anomaly z {before} → {after} fires later"
    if key in ("threshold", "anomaly") and after is None and rule_before.get(key) is not None:
        return f"{key} removed"
    return None


def monitor_changes(base: Snapshot, head: Snapshot) -> list[Change]:
    """Changes to `monitor:`: a rule removed or loosened, or a shorter bake, is high risk (a bad
    deployment would become known-good, or stay deployed, where the base's rules would catch it)."""
    bm, hm = base.outline.get("monitor") or {}, head.outline.get("monitor") or {}
    out = []
    bb, hb = bm.get("bake_minutes"), hm.get("bake_minutes")
    if bb != hb:
        shorter = (hb if hb is not None else DEFAULT_BAKE_MINUTES) < (bb if bb is not None else DEFAULT_BAKE_MINUTES)
        out.append(Change("policy", "monitor.bake_minutes", "changed" if bb is not None and hb is not None
                          else "added" if bb is None else "removed", bb, hb, "high" if shorter else "medium",
                          ("monitor loosened: " if shorter else "monitor ") + f"bake_minutes {short(bb)} → {short(hb)}"))
    for key in sorted((set(bm) | set(hm)) - {"rules", "bake_minutes"}):
        if bm.get(key) != hm.get(key):
            out.append(Change("policy", f"monitor.{key}", "changed", bm.get(key), hm.get(key), "medium",
                              f"monitor {key}: {short(bm.get(key))} → {short(hm.get(key))}"))
    br = {r.get("name"): r for r in bm.get("rules") or [] if isinstance(r, dict)}
    hr = {r.get("name"): r for r in hm.get("rules") or [] if isinstance(r, dict)}
    for name in sorted(set(br) | set(hr), key=str):
        path = f"monitor.rules.{name}"
        if name not in hr:
            out.append(Change("policy", path, "removed", br[name], None, "high", f"monitor loosened: rule `{name}` removed"))
            continue
        if name not in br:
            out.append(Change("policy", path, "added", None, hr[name], "low", f"monitor rule `{name}` added"))
            continue
        for lp, kind, before, after in leaves(br[name], hr[name]):
            key = dotted(*lp)
            why = _monitor_loosened(key, before, after, br[name])
            if why:
                out.append(Change("policy", dotted(path, *lp), kind, before, after, "high",
                                  f"monitor loosened: rule `{name}` {why}"))
            else:
                out.append(Change("policy", dotted(path, *lp), kind, before, after, "medium",
                                  f"monitor rule `{name}` {key}: {short(before)} → {short(after)}"))
    return out


# -- deploy: which environments the deployment protection rule gates, and in which order -------------


def deploy_changes(base: Snapshot, head: Snapshot) -> list[Change]:
    """Changes to `deploy:`: an environment no longer gated, a new exception, or the whole section
    gone lets deployments through unchecked (high risk); a stricter chain is low risk."""
    bd, hd = base.outline.get("deploy") or {}, head.outline.get("deploy") or {}
    out = []
    be, he = list(bd.get("environments") or []), list(hd.get("environments") or [])
    for env in [e for e in be if e not in he]:
        out.append(Change("policy", f"deploy.environments.{env}", "removed", env, None, "high",
                          f"deploy loosened: `{env}` no longer gated"))
    for env in [e for e in he if e not in be]:
        out.append(Change("policy", f"deploy.environments.{env}", "added", None, env, "low",
                          f"deploy: `{env}` gated"))
    kept_b, kept_h = [e for e in be if e in he], [e for e in he if e in be]
    if kept_b != kept_h:
        out.append(Change("policy", "deploy.environments", "changed", be, he, "high",
                          f"deploy loosened: promotion order {' → '.join(be)} → {' → '.join(he)}"))
    bx, hx = list(bd.get("exceptions") or []), list(hd.get("exceptions") or [])
    for env in [e for e in hx if e not in bx]:
        out.append(Change("policy", f"deploy.exceptions.{env}", "added", None, env, "high",
                          f"deploy loosened: `{env}` approved without checks"))
    for env in [e for e in bx if e not in hx]:
        out.append(Change("policy", f"deploy.exceptions.{env}", "removed", env, None, "low",
                          f"deploy: `{env}` no longer an exception"))
    return out
