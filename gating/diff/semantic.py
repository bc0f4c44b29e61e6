"""Semantic diff of two snapshots: what a change does to the LLM system, with a risk for each part.

deepdiff finds the changed leaves of the structured settings (gating.diff.changes); the rules here turn
them into statements a reviewer can act on (a model re-pin, a breaking tool change); what loosens the
gates themselves (thresholds, approval rules) is judged in gating.diff.gates.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from gating.diff.changes import ALL, RISKS, Change, ChangeSet, dotted, leaves, short
from gating.diff.evidence import evidence_changes
from gating.diff.gates import deploy_changes, evals_changes, monitor_changes, policy_changes
from gating.system.manifest import MANIFEST_PATH
from gating.system.revision import RevisionReader
from gating.system.snapshot import (
    NoManifest,
    Snapshot,
    SnapshotCache,
    build_snapshot,
    differing,
    differing_prompts,
    empty_snapshot,
)

__all__ = ["ALL", "RISKS", "Change", "ChangeSet", "diff_snapshots", "is_pinned"]

_PINNED = re.compile(
    r"(\d{4}-\d{2}-\d{2}|\d{8}"  # dated: gpt-4o-2024-08-06, claude-3-5-sonnet-20241022, name@20241022
    r"|-\d{3,4}"  # gpt-4-0613, mistral-large-2407, Google's versions gemini-1.5-pro-002
    r"|-\d{4}(-[a-z]+)?-preview|-(preview|exp)-\d{2}-\d{2}"  # gpt-4-1106-preview, gemini-2.5-pro-preview-03-25
    r"|-v\d+(\.\d+)*(:\d+)?(:\d+k)?"  # Bedrock: -v1, -v2:0, -v0:2, -v1:0:200k
    r"|@\d{3,}"  # Vertex partner models: mistral-large@2407, jamba-1.5-large@001
    r"|@sha256:[0-9a-f]{16,}|:[0-9a-f]{12,})$"  # digests
)


def is_pinned(model: dict[str, Any]) -> bool:
    """A model id is pinned when it names a dated snapshot, a fixed version, a fine-tune or a
    digest; `latest` never is. `pinned:` in the manifest settings it for an id this misreads."""
    if "pinned" in model:
        return bool(model["pinned"])
    name = str(model.get("model", ""))
    if name.lower().endswith("latest"):
        return False
    return name.startswith("ft:") or bool(_PINNED.search(name))


def _prompt_users(users: dict[str, list[str]], name: str) -> tuple[str, ...]:
    """A prompt change affects the prompt and every prompt that uses it as its system prompt."""
    return tuple(sorted({name, *users.get(name, ())}))


def _model_users(snap: Snapshot, model: str) -> tuple[str, ...]:
    """Prompts that call the model; the judge model affects every case."""
    if model == (snap.outline.get("evals") or {}).get("judge"):
        return (ALL,)
    return tuple(sorted(snap.prompt_users("model").get(model, ())))


def _text_diff(before: str, after: str, path_a: str, path_b: str,
               excerpt_lines: int = 16) -> tuple[int, int, str, tuple[int, ...]]:
    """(lines added, lines removed, unified excerpt, changed head lines) from one line matcher."""
    a, b = before.splitlines(), after.splitlines()
    added = removed = 0
    changed_lines: list[int] = []
    sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag in ("replace", "delete"):
            removed += i2 - i1
        if tag in ("replace", "insert"):
            added += j2 - j1
            changed_lines.extend(range(j1 + 1, j2 + 1))
    udiff: list[str] = []
    for group in sm.get_grouped_opcodes(1):  # hunks as `diff -U1` prints them
        (_, i1, _, j1, _), (_, _, i2, _, j2) = group[0], group[-1]
        udiff.append(f"@@ -{_hunk_range(i1, i2)} +{_hunk_range(j1, j2)} @@")
        for op, i1, i2, j1, j2 in group:
            if op == "equal":
                udiff.extend(" " + line for line in a[i1:i2])
                continue
            udiff.extend("-" + line for line in a[i1:i2] if op != "insert")
            udiff.extend("+" + line for line in b[j1:j2] if op != "delete")
    excerpt = udiff[:excerpt_lines]
    if len(udiff) > excerpt_lines:
        excerpt.append(f"... ({len(udiff) - excerpt_lines} more diff lines)")
    return added, removed, "\n".join(excerpt), tuple(changed_lines)


def _eol_change(before: str, after: str) -> str:
    """What differs between two texts whose lines read the same: their line endings."""
    if before.replace("\r\n", "\n") == after.replace("\r\n", "\n"):
        if "\r\n" not in before:
            return "line endings only (LF → CRLF)"
        if "\r\n" not in after:
            return "line endings only (CRLF → LF)"
    elif before.rstrip("\r\n") == after.rstrip("\r\n"):
        return "final newline " + ("added" if after.endswith("\n") else "removed")
    return "line endings only"


def _hunk_range(start: int, stop: int) -> str:
    """A hunk header's `line,count` (`line` alone for one line), as unified diffs write it."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def _models(base: Snapshot, head: Snapshot) -> list[Change]:
    out = []
    bm, hm = base.outline["components"]["models"], head.outline["components"]["models"]
    for name in differing(bm, hm):
        path = f"components.models.{name}"
        if name not in bm:
            m = hm[name]
            risk, note = ("error", " (unpinned alias: pin a dated snapshot)") if not is_pinned(m) else ("medium", "")
            out.append(Change("model", path, "added", None, m, risk, f"model `{name}` added: {m['model']}{note}",
                              affects=_model_users(head, name)))
            continue
        if name not in hm:
            out.append(Change("model", path, "removed", bm[name], None, "high", f"model `{name}` removed",
                              affects=_model_users(base, name)))
            continue
        affects = tuple(sorted(set(_model_users(base, name)) | set(_model_users(head, name))))
        for lp, kind, before, after in leaves(bm[name], hm[name]):
            leaf = dotted(path, *lp)
            if lp == ["model"]:
                if not is_pinned(hm[name]):  # a new alias, even in place of an old one
                    out.append(Change("model", leaf, kind, before, after, "error",
                                      f"unpinned alias introduced: `{name}` moves from {before} to {after}; "
                                      "pin a dated snapshot", affects=affects))
                else:
                    out.append(Change("model", leaf, kind, before, after, "high",
                                      f"model pin changed: `{name}` {before} → {after}", affects=affects))
            elif lp == ["provider"]:
                out.append(Change("model", leaf, kind, before, after, "high",
                                  f"provider changed: `{name}` {before} → {after}", affects=affects))
            else:
                out.append(Change("model", leaf, kind, before, after, "medium",
                                  f"model `{name}` setting {dotted(*lp)}: {short(before)} → {short(after)}",
                                  affects=affects))
    return out


def _prompts(base: Snapshot, head: Snapshot) -> list[Change]:
    out: list[Change] = []
    bp, hp, names = differing_prompts(base, head)
    if not names:
        return out
    base_users, head_users = base.prompt_users("system"), head.prompt_users("system")
    texts = [n for n in names if n not in bp or (n in hp and bp[n]["sha256"] != hp[n]["sha256"])]
    base.preload([bp[n]["file"] for n in texts if n in bp])
    head.preload([hp[n]["file"] for n in texts])
    for name in names:
        path = f"components.prompts.{name}"
        if name not in bp:
            p = hp[name]
            lines = head.text(p["file"]).count("\n")
            out.append(Change("prompt", path, "added", None, p["file"], "medium",
                              f"prompt `{name}` added ({p['file']}, {lines} lines)", affects=(name,),
                              lines_added=lines, file=p["file"]))
            continue
        if name not in hp:
            out.append(Change("prompt", path, "removed", bp[name]["file"], None, "high",
                              f"prompt `{name}` removed ({bp[name]['file']})", affects=_prompt_users(base_users, name)))
            continue
        b, h = bp[name], hp[name]
        affects = _prompt_users(head_users, name)
        if b["file"] != h["file"] and b["sha256"] == h["sha256"]:
            out.append(Change("prompt", f"{path}.file", "renamed", b["file"], h["file"], "low",
                              f"prompt `{name}` file renamed {b['file']} → {h['file']} (content unchanged)",
                              affects=()))
        elif b["sha256"] != h["sha256"]:
            before, after = base.text(b["file"]), head.text(h["file"])
            added, removed, excerpt, changed = _text_diff(before, after, b["file"], h["file"])
            moved = f" (renamed from {b['file']})" if b["file"] != h["file"] else ""
            if not (added or removed):
                out.append(Change("prompt", f"{path}.file", "changed", b["sha256"], h["sha256"], "low",
                                  f"prompt `{name}` changed: {_eol_change(before, after)} in {h['file']}{moved}; "
                                  "no line's text changed", affects=affects, file=h["file"]))
            else:
                if ("\r\n" in before) != ("\r\n" in after):
                    moved += " (line endings also changed)"
                out.append(Change("prompt", f"{path}.file", "changed", b["sha256"], h["sha256"], "medium",
                                  f"prompt `{name}` changed: +{added} −{removed} lines in {h['file']}{moved}",
                                  detail=excerpt, affects=affects, lines_added=added, lines_removed=removed,
                                  file=h["file"], changed_lines=changed))
        for key in ("model", "system"):
            if b.get(key) != h.get(key):
                out.append(Change("prompt", f"{path}.{key}", "changed", b.get(key), h.get(key), "high",
                                  f"prompt `{name}` now uses {key} {h.get(key)!r} (was {b.get(key)!r})",
                                  affects=affects))
    return out


def _retrieval(base: Snapshot, head: Snapshot) -> list[Change]:
    out = []
    for lp, kind, before, after in leaves(base.outline["components"]["retrieval"], head.outline["components"]["retrieval"]):
        leaf = dotted("components.retrieval", *lp)
        what = "embedding model" if lp == ["embedding_model"] else dotted(*lp)
        out.append(Change("retrieval", leaf, kind, before, after, "high",
                          f"retrieval {what}: {short(before)} → {short(after)}; requires full re-evaluation",
                          affects=(ALL,)))
    return out


def _tool_params(schema: Any) -> tuple[dict[str, Any], set[str]]:
    if not isinstance(schema, dict):
        return {}, set()
    params = schema.get("parameters") or schema.get("input_schema") or (schema.get("function") or {}).get(
        "parameters"
    ) or {}
    if not isinstance(params, dict):
        return {}, set()
    return dict(params.get("properties") or {}), set(params.get("required") or [])


def _type_list(schema: dict[str, Any]) -> list[Any] | None:
    t = schema.get("type")
    return None if t is None else list(t) if isinstance(t, list) else [t]


def _values(vs: list[Any]) -> str:
    return ", ".join(short(v) for v in vs)


def _accepted_values(tool: str, path: str, p: str, b: Any, h: Any, handled: set[tuple[str, str]]) -> list[Change]:
    """A parameter's `type` and `enum`: accepting less than before breaks callers, more does not."""
    if not isinstance(b, dict) or not isinstance(h, dict):
        return []
    out = []
    head = f"tool `{tool}`: parameter `{p}`"
    bt, ht = _type_list(b), _type_list(h)
    if bt is not None and ht is not None and bt != ht:
        handled.add((p, "type"))
        lost, gained = [t for t in bt if t not in ht], [t for t in ht if t not in bt]
        if lost and len(bt) == 1 and len(ht) == 1:
            out.append(Change("tool", f"{path}.type", "changed", b["type"], h["type"], "breaking",
                              f"{head} type changed {bt[0]} → {ht[0]} (breaking)", affects=(ALL,)))
        elif lost:
            out.append(Change("tool", f"{path}.type", "changed", b["type"], h["type"], "breaking",
                              f"{head} no longer accepts type {', '.join(map(str, lost))} (breaking)", affects=(ALL,)))
        elif gained:
            out.append(Change("tool", f"{path}.type", "changed", b["type"], h["type"], "low",
                              f"{head} now also accepts type {', '.join(map(str, gained))}", affects=(ALL,)))
    be, he = b.get("enum"), h.get("enum")
    if be != he and (be is None or isinstance(be, list)) and (he is None or isinstance(he, list)):
        handled.add((p, "enum"))
        if be is None:
            out.append(Change("tool", f"{path}.enum", "added", None, he, "breaking",
                              f"{head} now only accepts {_values(he or [])} (breaking)", affects=(ALL,)))
        elif he is None:
            out.append(Change("tool", f"{path}.enum", "removed", be, None, "low",
                              f"{head} no longer limited to {_values(be)}", affects=(ALL,)))
        elif lost := [v for v in be if v not in he]:
            out.append(Change("tool", f"{path}.enum", "changed", be, he, "breaking",
                              f"{head} no longer accepts {_values(lost)} (breaking)", affects=(ALL,)))
        elif gained := [v for v in he if v not in be]:
            out.append(Change("tool", f"{path}.enum", "changed", be, he, "low",
                              f"{head} now also accepts {_values(gained)}", affects=(ALL,)))
    return out


def _tools(base: Snapshot, head: Snapshot) -> list[Change]:
    out = []
    bt, ht = base.outline["components"]["tools"], head.outline["components"]["tools"]
    for name in sorted(set(bt) | set(ht)):
        path = f"components.tools.{name}"
        if name not in bt:
            out.append(Change("tool", path, "added", None, ht[name]["file"], "medium",
                              f"tool `{name}` added ({ht[name]['file']})", affects=(ALL,)))
            continue
        if name not in ht:
            out.append(Change("tool", path, "removed", bt[name]["file"], None, "breaking",
                              f"tool `{name}` removed: breaking for callers", affects=(ALL,)))
            continue
        if bt[name]["sha256"] == ht[name]["sha256"]:
            continue
        bprops, breq = _tool_params(bt[name]["config"])
        hprops, hreq = _tool_params(ht[name]["config"])
        for p in sorted(set(bprops) - set(hprops)):
            out.append(Change("tool", f"{path}.parameters.{p}", "removed", bprops[p], None, "breaking",
                              f"tool `{name}`: parameter `{p}` removed (breaking)", affects=(ALL,)))
        for p in sorted(hreq - breq):
            out.append(Change("tool", f"{path}.parameters.{p}", "changed", False, True, "breaking",
                              f"tool `{name}`: parameter `{p}` is newly required (breaking)", affects=(ALL,)))
        for p in sorted(set(hprops) - set(bprops)):
            if p not in hreq:
                out.append(Change("tool", f"{path}.parameters.{p}", "added", None, hprops[p], "low",
                                  f"tool `{name}`: optional parameter `{p}` added", affects=(ALL,)))
        for p in sorted(breq - hreq):
            out.append(Change("tool", f"{path}.parameters.{p}", "changed", True, False, "low",
                              f"tool `{name}`: parameter `{p}` no longer required", affects=(ALL,)))
        handled: set[tuple[str, str]] = set()
        for p in sorted(set(bprops) & set(hprops)):
            out.extend(_accepted_values(name, f"{path}.parameters.{p}", p, bprops[p], hprops[p], handled))
        reported = (set(bprops) ^ set(hprops)) | (breq ^ hreq)
        for lp, kind, before, after in leaves(bt[name]["config"], ht[name]["config"]):
            leaf = dotted(path, *lp)
            in_reported = any(a == "properties" and b in reported for a, b in zip(lp, lp[1:], strict=False))
            in_handled = any(a == "properties" and (b, c) in handled
                             for a, b, c in zip(lp, lp[1:], lp[2:], strict=False))
            if in_reported or in_handled or "required" in lp:
                continue
            if len(lp) >= 3 and lp[-3] == "properties" and isinstance(lp[-2], str) and lp[-1] != "description":
                risk = "medium"
            else:
                risk = "medium" if "description" in lp else "low"
            out.append(Change("tool", leaf, kind, before, after, risk,
                              f"tool `{name}` {dotted(*lp)}: {short(before)} → {short(after)}", affects=(ALL,)))
        if b_file := (bt[name]["file"] if bt[name]["file"] != ht[name]["file"] else None):
            out.append(Change("tool", f"{path}.file", "renamed", b_file, ht[name]["file"], "info",
                              f"tool `{name}` file moved {b_file} → {ht[name]['file']}"))
    return out


def _configs(base: Snapshot, head: Snapshot, section: str, category: str) -> list[Change]:
    out = []
    b, h = base.outline["components"][section], head.outline["components"][section]
    label = category
    for name in sorted(set(b) | set(h)):
        path = f"components.{section}.{name}"
        if name not in b:
            out.append(Change(category, path, "added", None, h[name]["file"], "medium",
                              f"{label} `{name}` added ({h[name]['file']})", affects=(ALL,)))
        elif name not in h:
            out.append(Change(category, path, "removed", b[name]["file"], None, "high",
                              f"{label} `{name}` removed", affects=(ALL,)))
        elif b[name]["sha256"] != h[name]["sha256"]:
            found = leaves(b[name]["config"], h[name]["config"])
            if not found:
                out.append(Change(category, path, "changed", b[name]["sha256"], h[name]["sha256"], "low",
                                  f"{label} `{name}` reformatted (same settings)"))
            for lp, kind, before, after in found:
                out.append(Change(category, dotted(path, *lp), kind, before, after, "medium",
                                  f"{label} `{name}` {dotted(*lp)}: {short(before)} → {short(after)}",
                                  affects=(ALL,)))
    return out


def _orchestration(base: Snapshot, head: Snapshot) -> list[Change]:
    return [
        Change("orchestration", dotted("components.orchestration", *lp), kind, before, after, "medium",
               f"orchestration {dotted(*lp)}: {short(before)} → {short(after)}", affects=(ALL,))
        for lp, kind, before, after in leaves(base.outline["components"]["orchestration"], head.outline["components"]["orchestration"])
    ]


def diff_snapshots(base: Snapshot, head: Snapshot, base_label: str = "base", head_label: str = "head") -> ChangeSet:
    """Every change from base to head, models first, policy last."""
    cs = ChangeSet(base_label, head_label, base.digest, head.digest)
    if base.digest == head.digest:
        return cs
    cs.changes = (
        _models(base, head)
        + _prompts(base, head)
        + _retrieval(base, head)
        + _tools(base, head)
        + _configs(base, head, "guardrails", "guardrail")
        + _orchestration(base, head)
        + evidence_changes(base, head)
        + evals_changes(base, head)
        + policy_changes(base, head)
        + monitor_changes(base, head)
        + deploy_changes(base, head)
    )
    return cs


def diff_revisions(base_reader: RevisionReader, head_reader: RevisionReader, base: str, head: str,
                   manifest_path: str = MANIFEST_PATH, cache: SnapshotCache | None = None) -> ChangeSet:
    """Diff two revisions; a base without a manifest counts as an empty system."""
    try:
        base_snap = build_snapshot(base_reader, manifest_path, cache)
    except NoManifest:
        base_snap = empty_snapshot()
    head_snap = build_snapshot(head_reader, manifest_path, cache, like=base_snap)
    return diff_snapshots(base_snap, head_snap, base, head)
