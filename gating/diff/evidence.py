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


def _code(base: Snapshot, head: Snapshot, key: str = "code", category: str = "code",
          what: str = "pipeline code", effect: str = "every case re-runs") -> list[Change]:
    from gating.diff.semantic import _text_diff  # one line matcher for prompts and code

    out = []
    b, h = base.outline.get(key) or {}, head.outline.get(key) or {}
    for path in differing(b, h):
        where = f"{key}.{path}"
        if path not in b:
            out.append(Change(category, where, "added", None, h[path], "medium",
                              f"{what} {path} added", affects=(ALL,), file=path))
        elif path not in h:
            out.append(Change(category, where, "removed", b[path], None, "medium",
                              f"{what} {path} removed", affects=(ALL,)))
        else:
            try:
                added, removed, excerpt, lines = _text_diff(base.text(path), head.text(path), path, path)
            except UnicodeDecodeError:
                added = removed = 0
                excerpt, lines = "", ()
            out.append(Change(category, where, "changed", b[path], h[path], "medium",
                              f"{what} {path} changed: +{added} −{removed} lines; {effect}",
                              detail=excerpt, affects=(ALL,), lines_added=added, lines_removed=removed,
                              file=path, changed_lines=lines))
    return out


def evidence_changes(base: Snapshot, head: Snapshot) -> list[Change]:
    """Changes to pipeline code, to the Python the evals run, then to cassettes."""
    return (_code(base, head) + _code(base, head, "python", "evals", "eval Python (assertions, transforms)",
                                      "the base's version judges this pull request; the change applies after merge")
            + _code(base, head, "eval_files", "evals", "eval data file", "the cases that read it change")
            + _cassettes(base, head))
