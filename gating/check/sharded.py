"""Sharded checks, the runs: a shard's evaluator (its slice of each side's cases, kept for its partial
report) and the merge's (every eval run taken from the shards' partial reports; no model is called).

Every shard and the merge run the same pipeline on the same commits (diff, snapshots, which evals
judge, the baseline decision); only the eval runs differ. Where the unsharded check would run a side,
the merge takes that side's results from the shards, in the order the unsharded run produces them,
and everything after that (metrics, McNemar, bootstrap intervals with their fixed seeds, thresholds,
cost, latency percentiles, the check run, the notes) is the same code on the same cases, so the report
is the same bytes. The merge trusts the partial reports as it trusts the jobs of its own workflow
run: it checks that they belong together (version, commits, snapshot digests, settings, every shard
once, each case in the shard it was assigned to), not that a shard told the truth.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from gating.about import version
from gating.check import output as out
from gating.check.context import CheckContext, Settings
from gating.check.run import CheckRun, Evaluation, Evaluator
from gating.check.shard import (
    SCHEMA,
    ShardError,
    assign,
    check_set,
    costs,
    coverage,
    default_out,
    merge_runs,
    read_partials,
    settings_facts,
)
from gating.diff.changes import ChangeSet
from gating.evals.judging import Judging
from gating.evals.metrics import compute_metrics
from gating.evals.records import RunResult, SchemaError
from gating.git.repository import Git
from gating.system.snapshot import Snapshot


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
        "settings": settings_facts(settings),
        "snapshots": {"base": ev.digests.get(base) if ev and base else None, "head": ev.digests.get(head) if ev else None},
        "baseline": baseline,  # how the shard took the base: the merge says the same when it follows it
        "cases": ev.mine() if ev else [],
        "runs": ev.runs if ev else {},
        "elapsed_s": round(elapsed_s, 3),
        "error": error,
    }


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
        limited = "".join(f"\n{x}\n" for x in ev.rate_limits)
        out.append_to(ctx.step_summary, f"## gating / eval: shard {i}/{n}\n\n{line}\n{limited}")
    if ctx.output_file:
        out.append_to(ctx.output_file, out.step_outputs("", "", {"shard-report": path}))  # no verdict: the merge's
    partial = out.CheckResult("partial", "", [line], result.head_sha, result.base_sha, settings.fail_on,
                              elapsed_s=elapsed_s)  # a slice decides nothing: the merge does
    return CheckRun(partial, None, {"written": False, "reason": "a shard stores no notes"},
                    "a shard posts nothing: the merge job posts the check run", {"shard-report": path})


def shard_line(i: int, n: int, base: int, head: int, path: str) -> str:
    return (f"shard {i}/{n}: evaluated {base} base and {head} head case{'s' if head != 1 else ''}; wrote {path} "
            "(the merge job decides the verdict)")


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
        mine = settings_facts(self.settings)
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
        judged = judging.digest  # hashes every case: once, not once per shard
        problems = []
        for p in self.parts:
            r = p.runs.get(role)
            if r is None:
                problems.append(f"{p.label}: has no {role} results, but this merge needs them (the shards took the "
                                f"{role} from an eval note this merge cannot use)")
                continue
            if r.get("snapshot") != snap.digest:
                problems.append(f"{p.label}: its {role} run is of snapshot {r.get('snapshot')}, not {snap.digest}")
            if r.get("judging") != judged:
                problems.append(f"{p.label}: its {role} run was judged by {r.get('judging')}, not {judged}")
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
        self._raise(coverage(runs, order, self.assigned, role))
        first = runs[0][1]
        for p, got in runs[1:]:
            for what in ("rev", "snapshot_digest", "dataset_digest", "datasets", "config"):
                if getattr(got, what) != getattr(first, what):
                    problems.append(f"{p.label}: its {role} run's {what} differs from {runs[0][0].path}'s "
                                    f"({getattr(got, what)!r} vs {getattr(first, what)!r})")
        self._raise(problems)
        self.used.add(role)
        return self.count(merge_runs([r for _, r in runs], order), role)
