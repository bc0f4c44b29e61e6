"""Sharded checks, the plan and the format: which case each of N shards runs, the partial report a
shard writes, and how the merge reads, checks and combines them (gating/check/sharded.py runs them).

`gating check --shard I/N` evaluates one slice of the cases and writes a partial report; `gating
check --merge DIR` combines the N partial reports into the one check an unsharded run makes.

The assignment of a case to a shard depends only on the two commits: every case id of either side
gets one shard for both sides, by greedy bin packing (largest expected cost first, ties broken by the
sha256 of the id, never by the case's position), the cost being the prompt's length with the case's
variables, times repeats, times the model calls its assertions add, summed over the sides that run it.

What is run-specific is merged deterministically: a merged run started when its first shard started
and finished when its last finished; request, cache and replay counters are summed; the elapsed time
is the slowest shard's plus the merge's own.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gating import limits
from gating.about import version
from gating.check.context import ContextError, Settings
from gating.diff.changes import ChangeSet
from gating.evals.assertions import MODEL_GRADED, base_type
from gating.evals.dataset import Case
from gating.evals.judging import Judging
from gating.evals.metrics import compute_metrics
from gating.evals.pacing import combine
from gating.evals.records import RunResult
from gating.system.snapshot import Snapshot

SCHEMA = "gating.check.shard/1"
# A partial report holds every case result of its slice: larger than one document read from a revision.
PARTIAL = limits.Limits(max_bytes=512 * limits.MiB, max_depth=200, max_nodes=50_000_000)
_SPEC = re.compile(r"^\s*(\d{1,4})\s*/\s*(\d{1,4})\s*$")
SUMMED = ("requests", "live", "cache_hits", "replayed")  # run stats that count requests: summed over shards


class ShardError(ContextError):
    """Partial reports that do not make one check: a missing, repeated or foreign shard (exit 2)."""


def parse_spec(text: str) -> tuple[int, int]:
    """`I/N` (1-based) as (i, n); Settings checks the range."""
    m = _SPEC.match(text or "")
    if not m:
        raise ContextError(f"--shard {text!r}: expected I/N, e.g. 2/4 (the second of four shards)")
    return int(m.group(1)), int(m.group(2))


def default_out(i: int, n: int) -> str:
    return f"gating-shard-{i}-of-{n}.json"


# -- which case goes where (pure) ------------------------------------------------------------------


def estimate(case: Case, snap: Snapshot, repeat: int) -> int:
    """A case's expected cost on one side: what its prompt sends (the template and the case's variables),
    times repeats, times one call plus one per model-graded assertion."""
    prompt = snap.manifest.prompts.get(case.prompt or "") or {}
    path = prompt.get("file")
    try:
        template = len(snap.contents[path]) if path else 0
    except KeyError:
        template = 0
    size = template + len(json.dumps(case.vars, sort_keys=True, ensure_ascii=False, default=str)) + 1
    graded = sum(1 for a in case.asserts if base_type(a["type"]) in MODEL_GRADED)
    return size * max(1, repeat) * (1 + graded)


def costs(cs: ChangeSet, sides: Sequence[tuple[Snapshot, Judging]], baseline: str) -> dict[str, int]:
    """Case id -> expected cost over the sides that run it: base runs every case it has; head runs the
    cases of the prompts the change affects when there is a base to carry the rest from, else all."""
    with_base = len(sides) == 2 and baseline != "none"
    affected = cs.affected_prompts() if with_base else None
    out_: dict[str, int] = {}
    for k, (snap, judging) in enumerate(sides):
        is_head = k == len(sides) - 1
        repeat = int(judging.evals.get("repeat") or 1)
        for c in judging.cases:
            runs = not is_head or affected is None or c.prompt is None or c.prompt in affected
            out_[c.id] = out_.get(c.id, 0) + (estimate(c, snap, repeat) if runs and (is_head or with_base) else 0)
    return out_


def _tiebreak(case_id: str) -> str:
    return hashlib.sha256(case_id.encode("utf-8")).hexdigest()


def assign(cost: Mapping[str, int], n: int) -> dict[str, int]:
    """Case id -> shard (1..n): the costliest case first onto the least loaded shard (the lowest number
    on a tie); equal costs in the order of their ids' sha256, so a case's place in its file never matters."""
    heap = [(0, k) for k in range(1, n + 1)]
    got: dict[str, int] = {}
    for cid in sorted(cost, key=lambda c: (-cost[c], _tiebreak(c), c)):
        load, k = heapq.heappop(heap)
        got[cid] = k
        heapq.heappush(heap, (load + cost[cid], k))
    return got


# -- merging runs (pure) ---------------------------------------------------------------------------


def merge_stats(stats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counters summed; retries summed per category; the backoff slept summed; the rate limits the
    shards met added up (pacing.combine); anything else (the recordings the base kept, counted over
    the cassettes rather than the cases) is the same in every shard and kept once."""
    merged: dict[str, Any] = {}
    limited: list[Mapping[str, Any]] = []  # what each shard found out about the provider's rate limit
    for s in stats:
        for k, v in s.items():
            if k == "rate_limit" and isinstance(v, Mapping):
                limited.append(v)
                merged.setdefault(k, v)
            elif k in SUMMED and isinstance(v, (int, float)):
                merged[k] = merged.get(k, 0) + v
            elif k == "waited_s" and isinstance(v, (int, float)):
                merged[k] = round(merged.get(k, 0.0) + v, 3)
            elif k in ("retries", "cassettes_written") and isinstance(v, Mapping):
                into = merged.setdefault(k, {})
                for name, count in v.items():
                    into[name] = into.get(name, 0) + count
            else:
                merged.setdefault(k, v)
    if isinstance(merged.get("retries"), dict):
        merged["retries"] = dict(sorted(merged["retries"].items()))
    if limited:
        merged["rate_limit"] = combine(limited)
    return merged


def merge_runs(runs: Sequence[RunResult], order: Sequence[str]) -> RunResult:
    """One run from the shards' runs of the same side: the cases in `order` (the unsharded run's),
    metrics recomputed over all of them, the earliest start and the latest finish."""
    pos = {cid: i for i, cid in enumerate(order)}
    cases = sorted((c for r in runs for c in r.cases), key=lambda c: pos[c.id])
    first = runs[0]
    return RunResult(rev=first.rev, snapshot_digest=first.snapshot_digest, dataset_digest=first.dataset_digest,
                     cases=cases, metrics=compute_metrics(cases),
                     started_at=min((r.started_at for r in runs if r.started_at), default=""),
                     finished_at=max((r.finished_at for r in runs if r.finished_at), default=""),
                     config=dict(first.config), datasets=dict(first.datasets),
                     stats=merge_stats([r.stats for r in runs]))


def settings_facts(s: Settings) -> dict[str, Any]:
    """What decides which cases run and how: the shards and the merge must agree on it."""
    return {"config": s.config, "baseline": s.baseline, "replay": s.replay}


# -- the partial reports ----------------------------------------------------------------------------


@dataclass
class Partial:
    """One shard's partial report, as read, with the file it came from."""

    path: str
    index: int
    count: int
    gating: str
    repository: str | None
    head: str
    base: str | None
    settings: dict[str, Any]
    snapshots: dict[str, Any]
    baseline: str
    cases: list[str]
    runs: dict[str, dict[str, Any]]
    elapsed_s: float
    error: str | None

    @property
    def label(self) -> str:
        return f"{self.path} (shard {self.index}/{self.count})"


def _partial(path: Path) -> Partial:
    where = str(path)
    try:
        doc = limits.load_json(path.read_bytes(), where, PARTIAL)
    except OSError as e:
        raise ShardError(f"{where}: cannot be read: {e.strerror}") from None
    except ValueError as e:
        raise ShardError(f"{where}: not a partial report of `gating check --shard`: not JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("schema"), str) or \
            doc["schema"].split("/")[0] != SCHEMA.split("/")[0]:
        got = doc.get("schema") if isinstance(doc, dict) else None
        raise ShardError(f"{where}: not a partial report of `gating check --shard` (schema {got!r})")
    if doc["schema"] != SCHEMA:
        raise ShardError(f"{where}: partial report version {doc['schema']!r}; this version reads {SCHEMA!r}")
    try:
        shard, runs = doc["shard"], doc["runs"]
        p = Partial(where, int(shard["index"]), int(shard["count"]), str(doc["gating"]), doc.get("repository"),
                    str(doc["head"]), doc.get("base"), dict(doc["settings"]), dict(doc["snapshots"]),
                    str(doc.get("baseline") or ""), [str(c) for c in doc["cases"]], {str(k): dict(v) for k, v in runs.items()},
                    float(doc["elapsed_s"]), doc.get("error"))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ShardError(f"{where}: a partial report with a missing or malformed field ({type(e).__name__}: {e})") \
            from None
    if not 1 <= p.index <= p.count:
        raise ShardError(f"{where}: shard {p.index}/{p.count} is not a shard of {p.count}")
    return p


def read_partials(directory: str) -> list[Partial]:
    """Every partial report under `directory` (artifacts download into one folder each, or all into one)."""
    root = Path(directory)
    if not root.is_dir():
        raise ShardError(f"--merge {directory}: no such directory (download the shards' artifacts into it)")
    files = sorted(p for p in root.rglob("*.json") if p.is_file())
    if not files:
        raise ShardError(f"--merge {directory}: it holds no partial reports (*.json): download the shards' "
                         "artifacts into it")
    return [_partial(f) for f in files]


def check_set(parts: Sequence[Partial], directory: str) -> None:
    """One partial report per shard of one matrix, from this version of gating, each of which finished."""
    problems = [f"{p.label}: did not finish: {p.error}" for p in parts if p.error]
    problems += [f"{p.path}: written by gating {p.gating}, this merge is gating {version()}" for p in parts
                 if p.gating != version()]
    n = parts[0].count
    problems += [f"{p.path}: shard {p.index}/{p.count}, but {parts[0].path} is shard {parts[0].index}/{n}: they come "
                 "from different matrices" for p in parts if p.count != n]
    seen: dict[int, Partial] = {}
    for p in parts:
        if p.count == n and p.index in seen:
            problems.append(f"{p.path}: shard {p.index}/{n} again ({seen[p.index].path} is shard {p.index}/{n} too)")
        seen.setdefault(p.index, p)
    missing = [k for k in range(1, n + 1) if k not in seen]
    if missing:
        have = ", ".join(f"{k}/{n} ({seen[k].path})" for k in sorted(seen)) or "none"
        problems += [f"shard {k}/{n} is missing from {directory} (it holds {have})" for k in missing]
    if problems:
        raise ShardError(f"the partial reports in {directory} do not make one check", problems)


def coverage(runs: Sequence[tuple[Partial, RunResult]], order: Sequence[str], assigned: Mapping[str, int],
              role: str) -> list[str]:
    """Every case of the side exactly once, each from the shard it was assigned to."""
    problems: list[str] = []
    wanted = set(order)
    seen: dict[str, Partial] = {}
    for p, r in runs:
        for c in r.cases:
            if c.id in seen:
                problems.append(f"{p.label}: {role} case {c.id!r} is also in {seen[c.id].path}")
            elif c.id not in wanted:
                problems.append(f"{p.label}: {role} case {c.id!r} is not a case this check runs")
            elif assigned.get(c.id) != p.index:
                problems.append(f"{p.label}: {role} case {c.id!r} belongs to shard {assigned.get(c.id)}/{p.count}")
            seen.setdefault(c.id, p)
    by_index = {p.index: p for p, _ in runs}
    for cid in order:
        if cid not in seen:
            k = assigned.get(cid, 0)
            owner = by_index[k].path if k in by_index else "no shard"
            problems.append(f"{owner}: {role} case {cid!r} is missing (shard {k}/{runs[0][0].count} should have run it)")
    return problems
