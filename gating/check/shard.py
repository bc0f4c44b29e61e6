"""Sharded checks: `gating check --shard I/N` evaluates one slice of the cases and writes a partial
report; `gating check --merge DIR` combines the N partial reports into the one check an unsharded run
makes.

Every shard and the merge run the same pipeline on the same commits (diff, snapshots, which evals
judge, the baseline decision); only the eval runs differ. A shard runs the cases assigned to it and
records the raw case results of each side. The merge runs the pipeline again without calling a model:
where the unsharded check would run a side, it takes that side's results from the shards, in the order
the unsharded run would have produced them, and everything after that (metrics, McNemar, bootstrap
intervals with their fixed seeds, thresholds, cost, latency percentiles, the check run, the notes) is
the same code on the same cases, so the report is the same bytes.

The assignment of a case to a shard depends only on the two commits: every case id of either side
gets one shard for both sides, by greedy bin packing (largest expected cost first, ties broken by the
sha256 of the id, never by the case's position), the cost being the prompt's length with the case's
variables, times repeats, times the model calls its assertions add, summed over the sides that run it.

What is run-specific is merged deterministically: a merged run started when its first shard started
and finished when its last finished; request, cache and replay counters are summed; the elapsed time
is the slowest shard's plus the merge's own. The merge trusts the partial reports as it trusts the
jobs of its own workflow run: it checks that they belong together (version, commits, snapshot
digests, settings, every shard once, each case in the shard it was assigned to), not that a shard
told the truth.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gating import limits
from gating.about import version
from gating.check import output as out
from gating.check.context import CheckContext, ContextError, Settings
from gating.check.run import CheckRun, Evaluation, Evaluator
from gating.diff.changes import ChangeSet
from gating.evals.assertions import MODEL_GRADED, base_type
from gating.evals.dataset import Case
from gating.evals.judging import Judging
from gating.evals.metrics import compute_metrics
from gating.evals.records import RunResult, SchemaError
from gating.git.repository import Git
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
    """Counters summed; retries summed per category; the backoff slept summed; anything else (the
    recordings the base kept, counted over the cassettes rather than the cases) is the same in every
    shard and kept once."""
    merged: dict[str, Any] = {}
    for s in stats:
        for k, v in s.items():
            if k in SUMMED and isinstance(v, (int, float)):
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


# -- a shard ---------------------------------------------------------------------------------------


class ShardEvaluator(Evaluator):
    """The check's pipeline, running only this shard's cases of each side and keeping their results."""

    def __init__(self, g: Git, settings: Settings, env: Mapping[str, str]):
        super().__init__(g, settings, env)
        assert settings.shard is not None
        self.index, self.shards = settings.shard
        self.assigned: dict[str, int] = {}
        self.digests: dict[str, str] = {}
        self.runs: dict[str, dict[str, Any]] = {}

    def snapshot(self, rev: str) -> Snapshot:
        snap = super().snapshot(rev)
        self.digests[rev] = snap.digest
        return snap

    def planned(self, cs: ChangeSet, sides: list[tuple[Snapshot, Judging]]) -> None:
        self.assigned = assign(costs(cs, sides, self.settings.baseline), self.shards)

    def run(self, snap: Snapshot, rev: str, only: set[str] | None, judging: Judging | None = None,
            role: str = "head") -> RunResult:
        assert judging is not None  # the check always says how a side is judged
        mine = replace(judging, cases=tuple(c for c in judging.cases if self.assigned.get(c.id) == self.index))
        res = super().run(snap, rev, only, mine, role)
        res.config["judged_by"] = judging.to_dict()  # judged by all the cases, as the merged run is
        self.runs[role] = {"snapshot": snap.digest, "judging": judging.digest,
                           "only": None if only is None else sorted(only), "run": res.to_dict()}
        return res

    def mine(self) -> list[str]:
        return sorted(cid for cid, k in self.assigned.items() if k == self.index)


def partial_document(ctx: CheckContext, settings: Settings, ev: ShardEvaluator | None, head: str,
                     base: str | None, elapsed_s: float, error: str | None = None,
                     baseline: str = "") -> dict[str, Any]:
    assert settings.shard is not None
    i, n = settings.shard
    return {
        "schema": SCHEMA,
        "gating": version(),
        "shard": {"index": i, "count": n},
        "repository": ctx.repository,
        "head": head,
        "base": base,
        "settings": _settings(settings),
        "snapshots": {"base": ev.digests.get(base) if ev and base else None, "head": ev.digests.get(head) if ev else None},
        "baseline": baseline,  # how the shard took the base: the merge says the same when it follows it
        "cases": ev.mine() if ev else [],
        "runs": ev.runs if ev else {},
        "elapsed_s": round(elapsed_s, 3),
        "error": error,
    }


def _settings(s: Settings) -> dict[str, Any]:
    """What decides which cases run and how: the shards and the merge must agree on it."""
    return {"config": s.config, "baseline": s.baseline, "replay": s.replay}


def write_partial(ctx: CheckContext, settings: Settings, ev: Evaluator | None, head: str, base: str | None,
                  elapsed_s: float, error: str | None = None, baseline: str = "") -> str:
    assert settings.shard is not None
    path = settings.shard_out or default_out(*settings.shard)
    doc = partial_document(ctx, settings, ev if isinstance(ev, ShardEvaluator) else None, head, base, elapsed_s, error,
                           baseline)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    return path


def finish_shard(ctx: CheckContext, settings: Settings, ev: Evaluator, result: out.CheckResult,
                 elapsed_s: float) -> CheckRun:
    """The partial report, a line for the job summary and the step output that names the file."""
    assert settings.shard is not None and isinstance(ev, ShardEvaluator)
    path = write_partial(ctx, settings, ev, result.head_sha, result.base_sha, elapsed_s, baseline=result.baseline)
    i, n = settings.shard
    ran = {role: len(r["run"]["cases"]) for role, r in ev.runs.items()}
    line = shard_line(i, n, ran.get("base", 0), ran.get("head", 0), path)
    if ctx.step_summary:
        out.append_to(ctx.step_summary, f"## gating / eval: shard {i}/{n}\n\n{line}\n")
    if ctx.output_file:
        out.append_to(ctx.output_file, out.step_outputs("", "", {"shard-report": path}))  # no verdict: the merge's
    partial = out.CheckResult("partial", "", [line], result.head_sha, result.base_sha, settings.fail_on,
                              elapsed_s=elapsed_s)  # a slice decides nothing: the merge does
    return CheckRun(partial, None, {"written": False, "reason": "a shard stores no notes"},
                    "a shard posts nothing: the merge job posts the check run", {"shard-report": path})


def shard_line(i: int, n: int, base: int, head: int, path: str) -> str:
    return (f"shard {i}/{n}: evaluated {base} base and {head} head case{'s' if head != 1 else ''}; wrote {path} "
            "(the merge job decides the verdict)")


# -- the merge -------------------------------------------------------------------------------------


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


class MergeEvaluator(Evaluator):
    """The check's pipeline with every eval run taken from the shards' partial reports (no model is called)."""

    def __init__(self, g: Git, settings: Settings, env: Mapping[str, str], ctx: CheckContext):
        super().__init__(g, settings, env)
        assert settings.merge is not None
        self.directory, self.ctx = settings.merge, ctx
        self.parts = read_partials(settings.merge)
        check_set(self.parts, settings.merge)
        self.elapsed_before = max(p.elapsed_s for p in self.parts)
        self.assigned: dict[str, int] = {}
        self.digests: dict[str, str] = {}
        self.used: set[str] = set()

    def evaluate(self, base: str, head: str) -> Evaluation:
        mine = _settings(self.settings)
        problems = []
        for p in self.parts:
            if p.head != head:
                problems.append(f"{p.label}: evaluated head {p.head[:12]}, this merge evaluates {head[:12]}")
            if p.base != base:
                problems.append(f"{p.label}: compared with base {str(p.base)[:12]}, this merge compares with {base[:12]}")
            if p.repository and self.ctx.repository and p.repository.lower() != self.ctx.repository.lower():
                problems.append(f"{p.label}: made for {p.repository}, this merge is for {self.ctx.repository}")
            problems += [f"{p.label}: made with {k} {p.settings.get(k)!r}, this merge uses {v!r}"
                         for k, v in mine.items() if p.settings.get(k) != v]
        self._raise(problems)
        evaluation = super().evaluate(base, head)
        snaps = {"base": self.digests.get(base), "head": self.digests.get(head)}
        for p in self.parts:
            problems += [f"{p.label}: {side} snapshot {p.snapshots.get(side)} but this merge's is {digest}"
                         for side, digest in snaps.items() if p.snapshots.get(side) != digest]
            expected = sorted(cid for cid, k in self.assigned.items() if k == p.index)
            if p.cases != expected:
                problems.append(f"{p.label}: was assigned {len(p.cases)} cases, but this merge assigns "
                                f"{len(expected)} other ones to it (the shards saw other cases)")
            problems += [f"{p.label}: ran the {role}, which this merge did not need (the {role} was taken another way)"
                         for role in sorted(set(p.runs) - self.used)]
        said = {p.baseline for p in self.parts}
        if "base" in self.used and len(said) > 1:
            problems += [f"{p.label}: took the base as: {p.baseline}" for p in self.parts]
        self._raise(problems)
        if "base" in self.used:  # the shards ran the base: say why they did (a note may have come since)
            evaluation.result.baseline = self.parts[0].baseline
        return evaluation

    def _raise(self, problems: list[str]) -> None:
        if problems:
            raise ShardError(f"the partial reports in {self.directory} do not belong to this check", problems)

    def snapshot(self, rev: str) -> Snapshot:
        snap = super().snapshot(rev)
        self.digests[rev] = snap.digest
        return snap

    def planned(self, cs: ChangeSet, sides: list[tuple[Snapshot, Judging]]) -> None:
        self.assigned = assign(costs(cs, sides, self.settings.baseline), self.parts[0].count)

    def stored(self, rev: str, role: str) -> RunResult | None:
        """The shards decided whether a side ran: an eval note written since (another pull request's check
        re-ran the same base) changes nothing here."""
        if any(role in p.runs for p in self.parts):
            return None
        return super().stored(rev, role)

    def run(self, snap: Snapshot, rev: str, only: set[str] | None, judging: Judging | None = None,
            role: str = "head") -> RunResult:
        assert judging is not None
        want = None if only is None else sorted(only)
        problems = []
        for p in self.parts:
            r = p.runs.get(role)
            if r is None:
                problems.append(f"{p.label}: has no {role} results, but this merge needs them (the shards took the "
                                f"{role} from an eval note this merge cannot use)")
                continue
            if r.get("snapshot") != snap.digest:
                problems.append(f"{p.label}: its {role} run is of snapshot {r.get('snapshot')}, not {snap.digest}")
            if r.get("judging") != judging.digest:
                problems.append(f"{p.label}: its {role} run was judged by {r.get('judging')}, not {judging.digest}")
            if r.get("only") != want:
                problems.append(f"{p.label}: its {role} run covered prompts {r.get('only')}, not {want}")
        self._raise(problems)
        runs = []
        for p in self.parts:
            try:
                got = RunResult.from_dict(p.runs[role]["run"])
                compute_metrics(got.cases)  # a malformed case fails here, named by its file
            except (SchemaError, KeyError, TypeError, ValueError, AttributeError) as e:
                raise ShardError(f"{p.label}: its {role} results cannot be read: {type(e).__name__}: {e}") from None
            runs.append((p, got))
        order = [c.id for c in judging.cases if only is None or c.prompt is None or c.prompt in only]
        self._raise(_coverage(runs, order, self.assigned, role))
        first = runs[0][1]
        for p, got in runs[1:]:
            for what in ("rev", "snapshot_digest", "dataset_digest", "datasets", "config"):
                if getattr(got, what) != getattr(first, what):
                    problems.append(f"{p.label}: its {role} run's {what} differs from {runs[0][0].path}'s "
                                    f"({getattr(got, what)!r} vs {getattr(first, what)!r})")
        self._raise(problems)
        self.used.add(role)
        return self.count(merge_runs([r for _, r in runs], order))


def _coverage(runs: Sequence[tuple[Partial, RunResult]], order: Sequence[str], assigned: Mapping[str, int],
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
