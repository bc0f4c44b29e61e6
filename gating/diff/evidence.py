"""What a change does to the evidence: the cassettes replay serves and the code a target runs.

A cassette holds the answers that replay scores, so changing one changes the evidence itself: it
is high risk whatever else changed, and every case re-runs. A file named by `evals.target.code` is
the pipeline a `command` or `http` target runs: a change to it is a change to the LLM system, and
every case re-runs.
"""

from __future__ import annotations

from typing import Any

from gating.diff.changes import ALL, Change
from gating.system.snapshot import Snapshot, differing


def _recordings(snap: Snapshot, path: str) -> dict[str, Any] | None:
    """key -> recorded response, or None when the cassette does not parse (the run says why)."""
    from gating.evals.cache import parse_cassette  # the evals package only when a cassette changed
    from gating.evals.dataset import DatasetError

    try:
        return {k: e.get("response") for k, e in parse_cassette(path, snap.contents[path]).items()}
    except (DatasetError, KeyError):
        return None


def _counts(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    if before is None or after is None:
        return "does not parse as a cassette"
    added = sum(1 for k in after if k not in before)
    removed = sum(1 for k in before if k not in after)
    rewritten = sum(1 for k in after if k in before and before[k] != after[k])
    parts = [f"{n} recording{'s' if n != 1 else ''} {what}" for n, what in
             ((rewritten, "rewritten"), (added, "added"), (removed, "removed")) if n]
    return ", ".join(parts) or "same recordings, reformatted"


def _cassettes(base: Snapshot, head: Snapshot) -> list[Change]:
    out = []
    b, h = base.outline.get("cassettes") or {}, head.outline.get("cassettes") or {}
    for path in differing(b, h):
        where = f"cassettes.{path}"
        if path not in b:
            n = len(_recordings(head, path) or {})
            out.append(Change("cassette", where, "added", None, h[path], "high",
                              f"cassette {path} added ({n} recording{'s' if n != 1 else ''}): replay would score "
                              "these answers", affects=(ALL,), file=path))
        elif path not in h:
            out.append(Change("cassette", where, "removed", b[path], None, "high",
                              f"cassette {path} removed: replay has no answers for its dataset", affects=(ALL,)))
        else:
            what = _counts(_recordings(base, path), _recordings(head, path))
            out.append(Change("cassette", where, "changed", b[path], h[path], "high",
                              f"cassette {path} changed ({what}): the recorded answers replay scores",
                              affects=(ALL,), file=path))
    return out


def _code(base: Snapshot, head: Snapshot) -> list[Change]:
    from gating.diff.semantic import _text_diff  # one line matcher for prompts and code

    out = []
    b, h = base.outline.get("code") or {}, head.outline.get("code") or {}
    for path in differing(b, h):
        where = f"code.{path}"
        if path not in b:
            out.append(Change("code", where, "added", None, h[path], "medium",
                              f"pipeline code {path} added", affects=(ALL,), file=path))
        elif path not in h:
            out.append(Change("code", where, "removed", b[path], None, "medium",
                              f"pipeline code {path} removed", affects=(ALL,)))
        else:
            try:
                added, removed, excerpt, lines = _text_diff(base.text(path), head.text(path), path, path)
            except UnicodeDecodeError:
                added = removed = 0
                excerpt, lines = "", ()
            out.append(Change("code", where, "changed", b[path], h[path], "medium",
                              f"pipeline code {path} changed: +{added} −{removed} lines; every case re-runs",
                              detail=excerpt, affects=(ALL,), lines_added=added, lines_removed=removed,
                              file=path, changed_lines=lines))
    return out


def evidence_changes(base: Snapshot, head: Snapshot) -> list[Change]:
    """Changes to pipeline code, then to cassettes."""
    return _code(base, head) + _cassettes(base, head)
