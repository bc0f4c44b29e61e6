"""What a result rests on, beyond prompts and models: cassettes, pipeline code, the way answers are obtained.

Cassettes are the recorded answers replay serves (`evals/cassettes/<dataset stem>.jsonl` beside each
dataset), and `evals.target.code` names the files a `command` or `http` target runs; both are files
of the system, so both are in the snapshot, its digest and the diff. Whether answers are replayed
or called live is a setting (`evals.mode`) read from the revision that judges, never switched on by
a file the other side adds. Pure: paths, manifests and listings in, values out.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

from gating.errors import GatingError
from gating.system.manifest import FileRef

MODES = ("live", "replay")  # the values of `evals.mode`
DEFAULT_MODE = "live"
RUN_MODES = ("auto", "live", "replay", "record")  # the values of GATING_PROVIDER


def cassette_path(dataset_path: str) -> str:
    """evals/golden.jsonl -> evals/cassettes/golden.jsonl (repository-relative, posix)."""
    d, name = posixpath.split(dataset_path)
    stem = posixpath.splitext(name)[0]
    return posixpath.join(d, "cassettes", f"{stem}.jsonl")


def cassette_refs(refs: Iterable[FileRef], listing: Iterable[str]) -> list[FileRef]:
    """The cassette of every dataset that has one at this revision (a dataset needs none)."""
    wanted = {cassette_path(r.path): r.key for r in refs if r.category == "evals"}
    if not wanted:
        return []
    present = set(wanted).intersection(listing)
    return [FileRef(path, "cassette", "cassettes", key) for path, key in sorted(wanted.items()) if path in present]


def resolve_mode(env: Mapping[str, str], record: bool, configured: str = "live", replay: bool = False) -> str:
    """The mode of a run: --record, then --replay, then GATING_PROVIDER, then `configured` (the judging
    revision's `evals.mode`); GATING_PROVIDER=auto (or unset) defers to the setting."""
    if record:
        return "record"
    if replay:
        return "replay"
    mode = (env.get("GATING_PROVIDER") or "auto").strip().lower()
    if mode not in RUN_MODES:
        raise GatingError(f"GATING_PROVIDER={mode!r} is not one of: {', '.join(RUN_MODES)}")
    if mode == "auto":
        return configured
    return mode


def configured_mode(evals: Mapping[str, Any] | None) -> str:
    """How a revision's own settings ask for answers: `evals.mode`, else live."""
    return str((evals or {}).get("mode") or DEFAULT_MODE)


def family(mode: str | None) -> str | None:
    """Replay or live: recording calls the models live, so its answers are live answers."""
    if mode is None:
        return None
    return "replay" if mode == "replay" else "live"


def answered(stats: Mapping[str, Any] | None) -> str | None:
    """How a run's answers were actually obtained: replay, live (the cache holds live answers), mixed,
    or None when no model answered (a command target, or every case failed before any answer)."""
    s = stats or {}
    replayed = int(s.get("replayed") or 0)
    live = int(s.get("live") or 0) + int(s.get("cache_hits") or 0)
    if replayed and live:
        return "mixed"
    return "replay" if replayed else "live" if live else None


def _how(stats: Mapping[str, Any]) -> str:
    kind = answered(stats)
    replayed = int(stats.get("replayed") or 0)
    live = int(stats.get("live") or 0) + int(stats.get("cache_hits") or 0)
    if kind == "replay":
        return f"replayed from cassettes ({replayed})"
    if kind == "live":
        return f"called live ({live})"
    return f"partly replayed ({replayed} replayed, {live} live)"


def mismatch(base_stats: Mapping[str, Any] | None, head_stats: Mapping[str, Any] | None) -> str | None:
    """A sentence when base and head answers were obtained differently, else None: recorded and live
    answers are not comparable, so such a run is never a pass."""
    b, h = answered(base_stats), answered(head_stats)
    if b is None or h is None or b == h:
        return None
    return (f"base and head were not evaluated the same way: base's answers were {_how(base_stats or {})}, "
            f"head's were {_how(head_stats or {})}; recorded and live answers are not comparable, so this is "
            "not a pass (a model with provider `replay` is always replayed; evaluate both sides in one mode)")
