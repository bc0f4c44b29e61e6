"""Where the answers of a comparison come from, decided once for both sides, by the side that judges.

The base of a pull request (or an explicit flag) decides whether answers are replayed from cassettes
or called live; the head's own `evals.mode` and any cassettes it adds take effect after merge. When
replaying, the base's recordings are served in place of the head's for every request the base
recorded, so a pull request cannot rewrite an answer the base holds. The response cache is read only
from outside the work tree. `gating check` and `gating eval --base` both plan a run here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gating.evals.cache import cache_location, parse_cassette
from gating.evals.records import RunResult
from gating.git.repository import Git
from gating.system.evidence import configured_mode, family, mismatch, resolve_mode
from gating.system.snapshot import Snapshot


@dataclass
class EvidencePlan:
    """The mode both sides run in, why, the base's recordings, and what the reader should know."""

    mode: str
    why: str
    trusted: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    def note_ok(self, run: RunResult | None) -> bool:
        """A stored result counts only if its answers were obtained the way this run obtains them."""
        return run is not None and family(str(run.config.get("mode") or "")) == family(self.mode)

    def after(self, head: RunResult) -> None:
        """Say how many of the head's rewritten recordings the base's replaced (none: nothing to say)."""
        kept = int(head.stats.get("recordings_kept") or 0)
        if kept and head.stats.get("replayed"):
            self.messages.append(
                f"{kept} recorded answer{'s' if kept != 1 else ''} that the head's cassettes rewrite "
                f"{'were' if kept != 1 else 'was'} not used: the base's recordings were served (the head's take "
                "effect after merge)")

    def judge(self, base: RunResult | None, head: RunResult | None, verdict: str,
              reasons: list[str]) -> tuple[str, list[str]]:
        """(verdict, reasons): base and head answered in different ways (one replayed, one live) is
        never a pass, and the reason comes first."""
        why = mismatch(base.stats if base else None, head.stats if head else None)
        if why is None:
            return verdict, reasons
        return ("fail" if verdict in ("pass", "inconclusive") else verdict), [why, *reasons]


def _mode_phrase(mode: str) -> str:
    return "replayed from cassettes" if mode == "replay" else "called live"


def plan(base: Snapshot | None, head: Snapshot, env: Mapping[str, str], replay: bool = False,
         judge_label: str = "the base's", own: bool = False) -> EvidencePlan:
    """The plan for evaluating `head` against `base` (None: a base without evals). Without a base,
    `own` lets head's settings decide (a revision evaluated on its own); otherwise nothing but a
    flag or GATING_PROVIDER switches replay on."""
    deciding = base if base is not None else head if own else None
    configured = configured_mode(deciding.manifest.evals) if deciding is not None else "live"
    mode = resolve_mode(env, False, configured, replay)
    explicit = replay or (env.get("GATING_PROVIDER") or "auto").strip().lower() != "auto"
    if replay:
        why = "--replay"
    elif explicit:
        why = f"GATING_PROVIDER={env.get('GATING_PROVIDER', '').strip()}"
    elif deciding is None:
        why = "the base has no evals settings to judge by"
    else:
        why = f"evals.mode: {configured} in {judge_label if base is not None else 'its own'} {deciding.manifest.source}"
    p = EvidencePlan(mode, why)
    if deciding is head:
        return p
    wanted = configured_mode(head.manifest.evals)
    if not explicit and wanted != configured:
        judge = (f"{judge_label} setting decides how a change is judged" if base is not None
                 else "a change is judged by its base, which has no evals settings")
        p.messages.append(f"the head's {head.manifest.source} sets evals.mode: {wanted}, but {judge}: answers were "
                          f"{_mode_phrase(mode)} ({why}); the head's setting takes effect after merge")
    base_tapes = (base.data.get("cassettes") or {}) if base is not None else {}
    head_tapes = head.data.get("cassettes") or {}
    new = sorted(path for path, sha in head_tapes.items() if base_tapes.get(path) != sha)
    replay_models = any(m.get("provider") == "replay" for m in head.manifest.models.values())
    if new and family(mode) == "live" and not replay_models:
        p.messages.append(f"cassettes the head adds or changes ({', '.join(new)}) were not used: answers were "
                          f"called live ({why})")
    if base is not None:  # replayed answers, in replay mode or for a model with provider `replay`
        p.trusted = recordings(base)
    return p


def recordings(snap: Snapshot) -> dict[str, dict[str, Any]]:
    """Every recording in a snapshot's cassettes, key -> entry."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(snap.data.get("cassettes") or {}):
        out.update(parse_cassette(path, snap.contents[path]))  # DatasetError naming the line
    return out


def response_cache(chosen: str | None, env: Mapping[str, str], g: Git) -> tuple[Path | None, str | None]:
    """The response cache directory of a run (None: no cache) and a warning when the one asked for is
    refused. `chosen` is a flag's value: None means $GATING_CACHE_DIR or the default, "" no cache."""
    if chosen == "":
        return None, None
    return cache_location(chosen if chosen is not None else env.get("GATING_CACHE_DIR") or None, g.root,
                          g.common_dir)
