"""Rollback drills: "a rollback path you never exercised might not work".

A drill builds the restore of a target (last-good by default) exactly as a rollback would, on a
scratch branch, then checks what a real rollback would deploy: the restored tree's system is the
recorded snapshot byte for byte (every file's sha256 as the snapshot lists it, the snapshot's digest
as rebuilt from the scratch commit, and the digest the audit log recorded at merge), and its evals
still pass, replayed from the cassettes (no model is called). The branch is deleted afterwards and a
signed `drill` entry records the result and the time it took; a failed drill says why.

Pure apart from the evals (which read the scratch revision through the RevisionReader seam): the
doors (gating rollback --drill, the App's scheduled job) write and delete the branch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gating.audit.entry import Entry, EntryFacts
from gating.errors import GatingError
from gating.rollback.plan import Refusal, RestorePlan, is_sha, make_plan, resolve_target
from gating.system.canonical import sha256_hex
from gating.system.manifest import MANIFEST_PATH, ManifestError
from gating.system.revision import RevisionReader
from gating.system.snapshot import Snapshot, build_snapshot

DRILL_PREFIX = "gating/drill-"
ISSUE_TITLE = "Rollback drill failed"
ISSUE_MARK = "<!-- gating: rollback drill -->"  # in the issue's body: while it is open, the next failure is a comment on it


@dataclass
class DrillResult:
    target: str  # as asked: last-good, previous or a SHA
    commit: str | None  # the commit the drill restores (None: it could not be resolved)
    ok: bool
    problems: list[str] = field(default_factory=list)
    snapshot_digest: str | None = None  # of the target, rebuilt from its commit
    recorded_digest: str | None = None  # what its merged entry recorded
    restored_digest: str | None = None  # rebuilt from the scratch commit
    files: int = 0  # system files compared byte for byte
    branch: str = ""
    scratch_commit: str | None = None
    evals: dict[str, Any] | None = None
    seconds: float = 0.0
    started: str = ""  # ISO 8601
    error: BaseException | None = field(default=None, repr=False, compare=False)  # why it could not be built

    @property
    def verdict(self) -> str:
        return "passed" if self.ok else "failed"

    @property
    def summary(self) -> str:
        what = f"{self.commit[:7]} ({self.target})" if self.commit else self.target
        if self.ok:
            ev = f"; evals {self.evals['verdict']} ({self.evals.get('cases', 0)} cases replayed)" if self.evals else ""
            return (f"rollback drill to {what} passed in {self.seconds:.1f} s: {self.files} system files restored "
                    f"byte for byte, snapshot {self.restored_digest}{ev}")
        return f"rollback drill to {what} failed in {self.seconds:.1f} s: " + "; ".join(self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "commit": self.commit, "verdict": self.verdict, "problems": self.problems,
                "snapshot_digest": self.snapshot_digest, "recorded_digest": self.recorded_digest,
                "restored_digest": self.restored_digest, "files": self.files, "branch": self.branch,
                "scratch_commit": self.scratch_commit, "evals": self.evals, "seconds": round(self.seconds, 3),
                "started": self.started, "summary": self.summary}


def scratch_branch(plan_commit: str, stamp: str) -> str:
    """A branch name no rollback or person uses: the target and the drill's start (digits only)."""
    return f"{DRILL_PREFIX}{plan_commit[:12]}-{''.join(ch for ch in stamp if ch.isdigit())}"


def recorded_digest(entries: Sequence[Entry], commit: str) -> str | None:
    merged = [e for e in entries if e.event == "merged" and e.commit == commit]
    return merged[-1].predicate.get("snapshot_digest") if merged else None


def failure(target: str, error: BaseException, commit: str | None = None) -> list[str]:
    """Why the restore could not even be built, as a drill problem."""
    if isinstance(error, Refusal):
        return [f"the restore cannot be planned: {error.text('cli')}"]
    if isinstance(error, ManifestError):
        return [f"the LLM system at {commit[:7] if commit else target} cannot be read: "
                + "; ".join(str(p) for p in error.problems[:5])]
    return [f"the restore cannot be built: {error}"]


def verify(target: Snapshot, commit: str, restored: RevisionReader, recorded: str | None,
           manifest_path: str = MANIFEST_PATH) -> tuple[list[str], Snapshot | None, int]:
    """(problems, the restored snapshot, files compared): the scratch revision's system must be the
    target snapshot byte for byte, and both must be what the audit log recorded at merge."""
    problems: list[str] = []
    if recorded and target.digest != recorded:
        problems.append(f"the snapshot of {commit[:7]} rebuilt from history is {target.digest}, but its "
                        f"merged entry recorded {recorded}: the history of its files changed since the merge")
    paths = sorted(target.files)
    got = restored.read_many(paths)
    for path in paths:
        data = got.get(path)
        if data is None:
            problems.append(f"{path} is missing from the restored tree")
        elif sha256_hex(data) != target.files[path]:
            problems.append(f"{path} differs from the snapshot (sha256 {sha256_hex(data)[:12]}, recorded "
                            f"{target.files[path][:12]})")
    try:
        snap = build_snapshot(restored, manifest_path)
    except ManifestError as e:
        problems.append("the restored tree's manifest cannot be read: " + "; ".join(str(p) for p in e.problems[:5]))
        return problems, None, len(paths)
    if snap.digest != target.digest:
        extra = sorted(set(snap.files) - set(target.files))
        problems.append(f"the restored system is {snap.digest}, not the snapshot {target.digest}"
                        + (f" (files not in the snapshot: {', '.join(extra[:5])})" if extra else ""))
    return problems, snap, len(paths)


def replay_evals(snap: Snapshot, reader: RevisionReader) -> tuple[dict[str, Any], list[str]]:
    """The restored system's evals, replayed from its cassettes: (summary, problems)."""
    from gating.evals.compare import compare
    from gating.evals.dataset import DatasetError
    from gating.evals.runner import run_evals

    if not snap.manifest.evals:
        return {"verdict": "none", "cases": 0, "reason": "the snapshot has no evals"}, []
    try:
        run = run_evals(snap, reader, env={}, mode="replay")
    except (DatasetError, GatingError) as e:
        return {"verdict": "error", "cases": 0, "reason": str(e)}, [f"the evals cannot run: {e}"]
    cmp = compare(None, run, snap.manifest.evals)
    summary = {"verdict": cmp.verdict, "cases": len(run.cases), "reasons": list(cmp.reasons),
               "replayed": run.stats.get("replayed"), "metrics": {k: v for k, v in run.metrics.items()
                                                                  if isinstance(v, (int, float))}}
    if cmp.verdict != "pass":
        return summary, [f"the evals of the restored system are {cmp.verdict}: " + "; ".join(cmp.reasons[:3])]
    return summary, []


def drill_facts(result: DrillResult, repository: str, actor: str, tip: str, run: str = "") -> EntryFacts:
    """The signed record: on the drilled commit (the tip when none resolved), the result in `health`.
    `run` tells drills apart that started in the same second (the App's: its period), which would
    otherwise be one entry: an append with the same discriminator is taken for a retry of the first."""
    return EntryFacts(event="drill", commit=result.commit or tip, repository=repository, actor=actor,
                      discriminator=f"at {result.started}" + (f", {run}" if run else ""), health=result.to_dict(),
                      previous_known_good=result.commit)


def issue_title(result: DrillResult) -> str:
    """The title of the issue a failed drill opens (the App's and the CLI's alike)."""
    what = f"{result.commit[:7]} ({result.target})" if result.commit else result.target
    return f"{ISSUE_TITLE}: rolling back to {what} would not restore it"


def issue_body(result: DrillResult, entry_seq: int | None = None, ran: str = "A scheduled rollback drill") -> str:
    """The issue a failed drill opens; `ran` says which drill (the App's schedule, or who ran the CLI)."""
    lines = [f"{ran} failed: rolling back to `{result.target}` would not restore the "
             "recorded LLM system.", "", "**Why**", ""]
    lines += [f"- {p}" for p in result.problems]
    lines += ["", "| Target | Commit | Snapshot recorded | Snapshot rebuilt | Took |", "|---|---|---|---|---|",
              f"| {result.target} | `{(result.commit or '-')[:12]} ` | `{result.recorded_digest or '-'}` | "
              f"`{result.snapshot_digest or '-'}` | {result.seconds:.1f} s |", ""]
    if entry_seq is not None:
        lines.append(f"The drill is recorded in the audit log (seq {entry_seq}).")
    lines.append("Run `gating rollback --drill` on a clone to see it again; restore the missing history or mark "
                 "a newer deployment known good, so the next rollback has a state to return to.")
    return "\n".join(lines) + "\n"


def rehearse(entries: Sequence[Entry], target: str, tip: str, branch: str,
             reader_at: Callable[[str], RevisionReader], find_commit: Callable[[str], str | None],
             write: Callable[[RestorePlan], tuple[str, str]], delete: Callable[[str, str], None], started: str,
             manifest_path: str = MANIFEST_PATH, environments: Sequence[str] = (),
             reraise: Callable[[BaseException], bool] = lambda _e: False) -> DrillResult:
    """One drill over the doors' seams: `write(plan)` makes the scratch branch and answers (commit,
    branch), `delete(branch, commit)` removes it. A restore that would change nothing (the branch
    already holds the target) checks the tip itself. `reraise` says which errors are not the drill's
    finding but the door's (GitHub unreachable: run again later)."""
    t0 = time.monotonic()
    result = DrillResult(target, None, False, started=started)
    envs = tuple(environments) or ("production",)
    plan: RestorePlan | None = None
    try:
        try:
            plan = make_plan(entries, target, tip, branch, reader_at, find_commit, manifest_path,
                             environments=envs)
            snap, result.commit = plan.target, plan.resolution.commit
        except Refusal as e:
            if e.code != "nothing_to_restore":
                raise
            result.commit = resolve_target(entries, target, tip, find_commit(target) if is_sha(target) else None,
                                           envs).commit
            snap = build_snapshot(reader_at(result.commit), manifest_path)
    except GatingError as e:
        if reraise(e):
            raise
        result.problems, result.error = failure(target, e, result.commit), e
    else:
        result.snapshot_digest = snap.digest
        result.recorded_digest = recorded_digest(entries, result.commit)
        if plan is not None:
            result.scratch_commit, result.branch = write(plan)
        else:
            result.scratch_commit = tip
        try:
            restored = reader_at(result.scratch_commit)
            problems, got, result.files = verify(snap, result.commit, restored, result.recorded_digest, manifest_path)
            result.problems += problems
            if got is not None:
                result.restored_digest = got.digest
                result.evals, problems = replay_evals(got, restored)
                result.problems += problems
        finally:
            if result.branch:
                delete(result.branch, result.scratch_commit)
    result.ok = not result.problems
    result.seconds = time.monotonic() - t0
    return result
