"""`gating check`: the build half of the road, for one pull request (or push) at a time.

It places the run (base = merge-base with the pull request's base, head = its head), opens the
`gating / eval` check run at once, diffs the two LLM systems, runs the eval cases the change affects
on head against a baseline (the eval note on the base commit, else a re-run of base that the
response cache makes cheap), decides a verdict, completes the check run (always, a crash included),
writes the job summary, JSON and JUnit files, and stores the results as git notes.

`decide` is pure; `Poster` (post.py) is the door to GitHub, through the `CheckGitHub` the door hands in; git goes through
gating/git/, models through gating/evals.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gating.check import evidence as check_evidence
from gating.check import notes as check_notes
from gating.check import output as out
from gating.check.context import CHECK_NAME, PR_EVENTS, CheckContext, ContextError, Settings
from gating.check.output import CheckResult
from gating.check.post import CheckGitHub, Poster
from gating.diff.changes import ChangeSet
from gating.diff.semantic import diff_revisions
from gating.evals.compare import compare, unevaluated
from gating.evals.judging import Judging, judging_for, self_judging
from gating.evals.metrics import compute_metrics
from gating.evals.pacing import describe
from gating.evals.records import Comparison, RunResult, carry_over
from gating.git.repository import Git, GitError
from gating.git.revision import GitRevision
from gating.git.snapshot_store import DiskSnapshotCache
from gating.system.snapshot import NoManifest, Snapshot, build_snapshot

_SHA = re.compile(r"^[0-9a-f]{40}$")


# -- deciding (pure) -------------------------------------------------------------------------------


def conclude(verdict: str, threshold_missed: bool, fail_on: str, on_error: str = "fail") -> str:
    """The check run's conclusion. Fail closed: an `error` verdict (cases that could not be evaluated,
    a crash) concludes failure; only on-error neutral reports it without blocking. fail-on regression:
    a missed threshold or a significant regression fails the check; fail-on threshold: only a missed
    threshold (or a policy error) does, a regression is reported; fail-on never: the check reports and
    never blocks (neutral). fail-on never does not relax an error. An inconclusive verdict (a drop beyond
    max_drop the suite could not confirm) blocks under fail-on regression: a suite too small to prove
    harm must not wave it through; a person decides (an override) or more cases do."""
    if verdict == "pass":
        return "success"
    if verdict == "error":
        return "neutral" if on_error == "neutral" else "failure"
    if verdict == "inconclusive":
        return "failure" if fail_on == "regression" else "neutral"
    blocking = verdict == "fail" and (fail_on == "regression" or (fail_on == "threshold" and threshold_missed))
    return "failure" if blocking else "neutral"


def decide(cmp: Comparison | None, cs: ChangeSet, fail_on: str, on_error: str = "fail") -> tuple[str, str, list[str]]:
    """(verdict, conclusion, reasons) from the comparison (None: no evals configured) and the diff's
    policy errors (an unpinned model alias fails whatever the scores say). The reasons lead with the
    most serious true cause: policy errors, then cases not evaluated, missed thresholds, regressions."""
    policy = [f"policy error: {c.summary}" for c in cs.changes if c.risk == "error"]
    if cmp is None:
        verdict, reasons = "pass", ["gating.yml has no `evals` section, so nothing was evaluated"]
    else:
        verdict, reasons = cmp.verdict, list(cmp.reasons)
    if policy:
        reasons = policy + (reasons if verdict != "pass" else [])
        verdict = "fail"
    missed = bool(policy) or any(r.status == "fail" for r in (cmp.rows if cmp else []))
    conclusion = conclude(verdict, missed, fail_on, on_error)
    if cmp is not None and cmp.verdict == "error":  # fail-on never relaxes a policy error, never an error
        conclusion = "failure" if conclude("error", False, fail_on, on_error) == "failure" else conclusion
    return verdict, conclusion, reasons


def relax(result: CheckResult, on_error: str) -> CheckResult:
    """An evaluation that ended in `error` under on-error neutral: reported, not blocking (a crash is not relaxed)."""
    result.on_error = on_error
    if result.verdict == "error" and result.error is None:
        result.conclusion = conclude("error", False, result.fail_on, on_error)
    return result


def usable_note(run: RunResult | None, digest: str | None, judged: str | None = None, legacy: bool = False) -> bool:
    """A stored run is a valid result for a commit whose system has this snapshot digest (the digest
    covers every prompt, model, setting and dataset) when it was judged the same way (`judged`: the
    Judging digest; `legacy`: a run that does not say was judged by the commit's own evals, and may
    stand for that), unless some of its cases could not be evaluated: that run is evidence of nothing,
    so it is re-run."""
    if run is None or digest is None or run.snapshot_digest != digest or not run.cases or unevaluated(run):
        return False
    by = (run.config or {}).get("judged_by")
    return judged is None or (by.get("digest") == judged if isinstance(by, dict) else legacy)


# -- git -------------------------------------------------------------------------------------------


def ensure_commit(g: Git, rev: str, remote: str | None) -> str:
    """The full sha of `rev`, fetching it from the remote when the clone does not have it yet."""
    sha = g.resolve(rev)
    if sha is None and remote and _SHA.match(rev):
        g.fetch(remote, "--no-tags", rev)
        sha = g.resolve(rev)
        if sha is None:
            raise ContextError(f"commit {rev} is not in this clone and could not be fetched "
                               "(check out with `fetch-depth: 0`)")
    if sha is None:  # a name is never fetched: a shallow clone is not the likely cause
        if rev == "HEAD":
            raise ContextError("HEAD: the current branch has no commits yet")
        raise ContextError(f"unknown revision {rev!r}: no such branch, tag or commit in this clone")
    return sha


def resolve_base(g: Git, base_tip: str | None, head: str, remote: str | None) -> str:
    """merge-base(base tip, head): what a pull request is compared with."""
    if base_tip is None:
        branch = g.default_branch(remote or "origin")
        if branch is None:
            raise ContextError("no base to compare with: no default branch found; pass --base")
        base_tip = branch
    tip = ensure_commit(g, base_tip, remote)
    try:
        return g.merge_base(tip, head)
    except GitError:
        if remote and g.try_run("rev-parse", "--is-shallow-repository") == "true":
            g.fetch(remote, "--unshallow", "--no-tags")
            return g.merge_base(tip, head)
        raise ContextError(f"{tip[:12]} and {head[:12]} have no common history (shallow clone? use "
                           "`fetch-depth: 0`)") from None


# -- evaluating ------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    result: CheckResult
    notes: dict[str, bytes] = field(default_factory=dict)  # commit -> note to store (b"": not built, notes are off)
    runs: dict[str, RunResult] = field(default_factory=dict)  # commit -> the run its note holds (not parsed back)


class Evaluator:
    def __init__(self, g: Git, settings: Settings, env: Mapping[str, str]):
        self.g, self.settings, self.env = g, settings, env
        self.requests = self.cache_hits = self.replayed = 0
        self.rate_limits: list[str] = []  # what the runs found out about the provider's rate limit, a line each
        cache, warning = check_evidence.response_cache(settings.cache_dir, env, g)
        self.cache_dir: str | None = str(cache) if cache else None
        self.messages: list[str] = [warning] if warning else []
        self.evidence: check_evidence.EvidencePlan | None = None
        self.elapsed_before = 0.0  # seconds this evaluation spent elsewhere (a sharded run: its slowest shard)
        self.build_notes = True  # False when no note will be stored: a note holds every case, so it is not made
        # whether a note already on the head commit may stand for the head's run; not for a pull request:
        # whoever can push its branch can push refs/notes/gating/evals too, and write the note a pass
        self.trust_head_note = True

    def snapshot(self, rev: str) -> Snapshot:
        return build_snapshot(GitRevision(self.g, rev), self.settings.config, DiskSnapshotCache.for_repo(self.g))

    def run(self, snap: Snapshot, rev: str, only: set[str] | None, judging: Judging | None = None,
            role: str = "head") -> RunResult:
        from gating.evals.runner import run_evals  # here: a merge calls no model, skips the imports

        ev = self.evidence
        shown = self.settings.progress(f"{role} {rev[:7]}") if self.settings.progress else None
        res = run_evals(snap, GitRevision(self.g, rev), only_prompts=only, concurrency=self.settings.concurrency,
                        cache_dir=self.cache_dir, env=self.env, rev=rev, judging=judging, progress=shown,
                        mode=ev.mode if ev else None, trusted_cassettes=ev.trusted if ev else None)
        return self.count(res, role)

    def count(self, res: RunResult, role: str = "head") -> RunResult:
        self.requests += int(res.stats.get("requests", 0))
        self.cache_hits += int(res.stats.get("cache_hits", 0))
        self.replayed += int(res.stats.get("replayed", 0))
        if res.stats.get("rate_limit"):
            retries = sum((res.stats.get("retries") or {}).values())
            self.rate_limits.append(describe(res.stats["rate_limit"], retries, f" on {role}"))
        return res

    def planned(self, cs: ChangeSet, sides: list[tuple[Snapshot, Judging]]) -> None:
        """Called once the cases each side runs are known, before any run: a shard takes its slice here
        (gating/check/sharded.py); `sides` are (snapshot, judging) of base (when it has evals), then head."""

    def stored(self, rev: str, role: str) -> RunResult | None:
        """The eval note on `rev`: the results stored for it, if any (a merge follows its shards instead)."""
        return check_notes.read_run(self.g, rev)

    def evaluate(self, base: str, head: str) -> Evaluation:
        s = self.settings
        try:
            base_rev, head_rev = GitRevision.many(self.g, [base, head])
            cs = diff_revisions(base_rev, head_rev, base, head, s.config, DiskSnapshotCache.for_repo(self.g))
        except NoManifest:
            if self.g.show_file(base, s.config) is not None:
                raise  # the pull request removes the manifest: say so, loudly
            return Evaluation(CheckResult("unchanged", "success", [f"there is no {s.config} at base or head, so "
                                                                   "there is no LLM system to check"],
                                          head, base, s.fail_on))
        if cs.is_empty:
            r = CheckResult("unchanged", "success", [f"nothing in the LLM system changed between {base[:7]} and "
                                                     f"{head[:7]}"], head, base, s.fail_on, changes=cs)
            return Evaluation(r, self._same_system_note(base, head, cs.head_digest))
        head_snap = self.snapshot(head)
        try:
            base_snap: Snapshot | None = self.snapshot(base)
        except NoManifest:
            base_snap = None
        # The base decides how the head is judged (gating.evals.judging): its evals, judge and cases.
        own = self_judging(base_snap, base, self._prices_reader(base_snap, base)) if base_snap is not None else None
        judging = judging_for(own, base_snap, head_snap, base, self._prices_reader(head_snap, head))
        if judging is None:
            verdict, conclusion, reasons = decide(None, cs, s.fail_on)
            return Evaluation(CheckResult(verdict, conclusion, reasons, head, base, s.fail_on, changes=cs))
        # ... and whether answers are replayed: the base's evals.mode or an explicit flag, never the head.
        self.evidence = check_evidence.plan(base_snap if base_snap and base_snap.manifest.evals else None, head_snap,
                                            self.env, s.replay)
        self.planned(cs, ([(base_snap, own)] if base_snap is not None and own is not None else []) + [(head_snap, judging)])
        notes: dict[str, bytes] = {}
        runs: dict[str, RunResult] = {}
        base_run: RunResult | None = None
        if s.baseline == "none":
            baseline = "none (thresholds only)"
        elif base_snap is None or own is None:
            baseline = f"none: base {base[:7]} has no evals to compare with"
        else:
            stored = self.stored(base, "base") if s.baseline == "notes" else None
            if usable_note(stored, base_snap.digest, own.digest, legacy=True) and self.evidence.note_ok(stored):
                base_run, baseline = stored, f"eval note on base `{base[:7]}`"
            else:
                base_run = self.run(base_snap, base, None, own, role="base")
                why = "baseline: rerun" if s.baseline == "rerun" else "no eval note on it"
                if s.baseline == "notes" and stored is not None and usable_note(stored, base_snap.digest):  # but made in another mode
                    why = f"its eval note was made in {stored.config.get('mode')} mode, this run is {self.evidence.mode}"
                baseline = f"re-ran base `{base[:7]}` ({why})"
                if check_notes.read_run(self.g, base) is None:
                    notes[base] = self._note(base_run, verdict=None, role="base")
                    runs[base] = base_run
        head_run, head_source, ran = self._head(cs, head_snap, head, base_run, judging)
        cmp = compare(base_run, head_run, judging.evals)
        verdict, conclusion, reasons = decide(cmp, cs, s.fail_on)
        judged, reasons = self.evidence.judge(base_run, head_run, verdict, reasons)
        if judged != verdict:  # answers obtained two ways: not comparable
            verdict, conclusion = judged, conclude(judged, True, s.fail_on)
        if ran:
            self.evidence.after(head_run)
            notes[head] = self._note(head_run, verdict=verdict, role="head", base=base,
                                     comparison={"verdict": cmp.verdict, "reasons": cmp.reasons,
                                                 "base_rev": cmp.base_rev})
            runs[head] = head_run
        result = CheckResult(verdict, conclusion, reasons, head, base, s.fail_on, changes=cs, comparison=cmp,
                             head_run=head_run, base_run=base_run, baseline=baseline, head_source=head_source,
                             messages=[*self.messages, *out.judging_messages(judging, cs.after_merge),
                                       *self.evidence.messages])
        return Evaluation(result, notes, runs)

    def _note(self, run: RunResult, **kw: Any) -> bytes:
        return check_notes.note_document(run, **kw) if self.build_notes else b""

    def _prices_reader(self, snap: Snapshot, rev: str) -> GitRevision | None:
        """The revision that holds the evals' price table, if they name one (the judging side's)."""
        return GitRevision(self.g, rev) if snap.manifest.evals.get("prices") else None

    def _same_system_note(self, base: str, head: str, digest: str | None) -> dict[str, bytes]:
        """Head's system is base's: base's eval note holds for head too (so notes follow main for free)."""
        if self.settings.baseline != "notes" or check_notes.read_run(self.g, head) is not None:
            return {}
        data = self.g.notes_show(check_notes.EVALS_REF, base)
        stored = check_notes.parse_note(data)
        if not usable_note(stored, digest):
            return {}
        assert stored is not None and data is not None
        verdict = json.loads(data).get("verdict")
        return {head: check_notes.note_document(stored, verdict=verdict, role="same-system", base=base)}

    def _head(self, cs: ChangeSet, snap: Snapshot, head: str, base_run: RunResult | None,
              judging: Judging) -> tuple[RunResult, str, bool]:
        if self.settings.baseline == "notes":
            stored = self.stored(head, "head")
            if (usable_note(stored, snap.digest, judging.digest) and self.evidence is not None
                    and self.evidence.note_ok(stored)):
                assert stored is not None
                if self.trust_head_note:
                    return stored, "eval note on head (this commit was evaluated before)", False
                self.messages.append(
                    "the eval note already on the head commit was not used: in a pull request it is not evidence "
                    "(anyone who can push the branch can push refs/notes/gating/evals), so the head was evaluated")
        only = cs.affected_prompts() if base_run is not None else None
        part = self.run(snap, head, only, judging)
        if only is None or base_run is None:
            return part, f"ran all {len(part.cases)} cases", True
        full = carry_over(base_run, part)
        full.metrics = compute_metrics(full.cases)
        carried = len(full.cases) - len(part.cases)
        scope = ", ".join(sorted(only)) or "none"
        return full, f"ran {len(part.cases)} affected cases (prompts: {scope}), carried {carried} from base", True


# -- the whole check -------------------------------------------------------------------------------


@dataclass
class CheckRun:
    """What one `gating check` did, for the command to report."""

    result: CheckResult
    check_run_id: int | None
    notes: dict[str, Any]
    read_only_reason: str | None
    files: dict[str, str]  # output name -> path written
    unfinished: str | None = None  # the check run could not be completed on GitHub (the job must fail)


def _remote(g: Git, name: str) -> str | None:
    return name if name in (g.try_run("remote") or "").split() else None


def _crash(head: str, base: str | None, fail_on: str, e: BaseException) -> CheckResult:
    cancelled = isinstance(e, KeyboardInterrupt)
    problems = getattr(e, "problems", None)
    detail = "\n".join(str(p) for p in problems) if problems else str(e)
    msg = f"{type(e).__name__}: {detail}" if not cancelled else "the job was cancelled"
    return CheckResult("cancelled" if cancelled else "error", "cancelled" if cancelled else "failure",
                       [msg], head, base, fail_on, error=msg)


def run_check(ctx: CheckContext, settings: Settings, g: Git, env: Mapping[str, str], *,
              github: CheckGitHub | None, clock: Callable[[], float] = time.time) -> CheckRun:
    """Run the check end to end; the check run is completed whatever happens (then the error propagates)."""
    t0 = time.monotonic()
    remote = _remote(g, settings.remote)
    poster = Poster.open(ctx, clock, settings.post_wait, github) if settings.post else None
    try:
        head = ensure_commit(g, ctx.head_sha, remote)
    except ContextError as e:  # still complete a check run on the event's commit, and write the outputs
        result = _crash(ctx.head_sha, None, settings.fail_on, e)
        if poster and _SHA.match(ctx.head_sha):
            poster.finish(result)
        write_files(ctx, settings, result, poster, {"written": False, "reason": "the check did not finish"})
        raise
    if poster:
        poster.start(head)
    base: str | None = None
    ev: Evaluator | None = None
    try:
        if remote:
            check_notes.fetch_notes(g, remote, ctx.token)
        base = resolve_base(g, ctx.base, head, remote)
        ev = _evaluator(ctx, settings, g, env)
        ev.build_notes = settings.shard is None and notes_mode(ctx, settings) != "off"
        ev.trust_head_note = ctx.pull_number is None and ctx.event_name not in PR_EVENTS
        evaluation = ev.evaluate(base, head)
        result = relax(evaluation.result, settings.on_error)
        result.llm_requests, result.cache_hits, result.replayed = ev.requests, ev.cache_hits, ev.replayed
        result.rate_limits = ev.rate_limits
    except BaseException as e:
        result = _crash(head, base, settings.fail_on, e)
        result.elapsed_s = (ev.elapsed_before if ev else 0.0) + time.monotonic() - t0
        if settings.shard is not None:  # the merge names the shard that did not finish, and why
            from gating.check.sharded import write_partial

            with contextlib.suppress(OSError):  # best effort: the error itself is what the job reports
                write_partial(ctx, settings, ev, head, base, result.elapsed_s, error=result.error)
        if poster:
            poster.finish(result)
        write_files(ctx, settings, result, poster, {"written": False, "reason": "the check did not finish"})
        raise
    if settings.shard is not None:  # a slice of the evaluation: its partial report; nothing posted or stored
        from gating.check.sharded import finish_shard

        return finish_shard(ctx, settings, ev, evaluation.result, time.monotonic() - t0)
    complete = {c: d for c, d in evaluation.notes.items()
                if not unevaluated(evaluation.runs[c] if c in evaluation.runs else check_notes.parse_note(d))}
    notes = store_notes(g, ctx, settings, remote, complete)
    if notes.get("message"):
        result.messages.append(notes["message"])
    result.elapsed_s = ev.elapsed_before + time.monotonic() - t0
    if poster:
        poster.finish(result)
        if settings.comment:
            poster.comment(result)
        result.messages.extend(poster.messages)
    files = write_files(ctx, settings, result, poster, notes)
    return CheckRun(result, poster.check_run_id if poster else None, notes, _read_only(ctx, settings, poster), files,
                    poster.unfinished if poster else None)


def _evaluator(ctx: CheckContext, settings: Settings, g: Git, env: Mapping[str, str]) -> Evaluator:
    """The evaluator of this run: the whole evaluation, one shard's slice of it, or the merge of the shards'."""
    if settings.shard is None and settings.merge is None:
        return Evaluator(g, settings, env)
    from gating.check.sharded import MergeEvaluator, ShardEvaluator

    return ShardEvaluator(g, settings, env) if settings.shard is not None else MergeEvaluator(g, settings, env, ctx)


def _read_only(ctx: CheckContext, settings: Settings, poster: Poster | None) -> str | None:
    if poster and poster.refused:
        return poster.refused
    if not settings.post:
        return "posting was turned off (--no-post)"
    return ctx.read_only_reason


def notes_mode(ctx: CheckContext, settings: Settings) -> str:
    """push, local or off: what `--notes auto` means for this run."""
    if settings.notes == "auto":
        return "push" if ctx.in_actions and ctx.can_post and settings.post else "off"
    return settings.notes


def store_notes(g: Git, ctx: CheckContext, settings: Settings, remote: str | None,
                notes: dict[str, bytes]) -> dict[str, Any]:
    """Write the eval notes locally and, when the token may write, push them."""
    mode = notes_mode(ctx, settings)
    if not notes or mode == "off":
        reason = "nothing to store" if not notes else ctx.read_only_reason or "notes are off for local runs"
        return {"written": False, "pushed": False, "commits": [], "reason": reason}
    if mode == "local" or remote is None:
        check_notes.write_local(g, notes)
        return {"written": True, "pushed": False, "commits": sorted(notes)}
    pushed = check_notes.push_notes(g, remote, notes, token=ctx.token)
    doc: dict[str, Any] = {"written": True, "pushed": pushed.ok, "commits": sorted(notes), "attempts": pushed.attempts}
    if not pushed.ok:
        first = pushed.message.splitlines()[0] if pushed.message else "unknown error"
        doc["message"] = f"the eval note was not pushed to {check_notes.EVALS_REF}: {first}"
    return doc


def write_files(ctx: CheckContext, settings: Settings, r: CheckResult, poster: Poster | None,
                notes: dict[str, Any]) -> dict[str, str]:
    """JSON report, JUnit, the job summary and the step outputs (best effort: never hides the verdict)."""
    from gating.evals.report import render_junit

    check_id = poster.check_run_id if poster else None
    files: dict[str, str] = {}
    if settings.json_path:
        doc = out.report_document(r, repository=ctx.repository, pull_number=ctx.pull_number,
                                  check_run_id=check_id, notes=notes)
        _write(settings.json_path, out.to_json(doc))
        files["report-json"] = settings.json_path
    if settings.junit_path:  # no eval ran (nothing changed, or an error): an empty suite, not a missing file
        _write(settings.junit_path, render_junit(r.head_run, suite=CHECK_NAME))
        files["junit"] = settings.junit_path
    if ctx.step_summary:
        url = f"{ctx.server_url}/{ctx.repository}/runs/{check_id}" if check_id and ctx.server_url else None
        out.append_to(ctx.step_summary, out.job_summary(r, _read_only(ctx, settings, poster), url))
    if ctx.output_file:
        out.append_to(ctx.output_file, out.step_outputs(r.verdict, r.conclusion, files, check_id))
    return files


def _write(path: str, text: str) -> None:
    if path == "-":  # `--json -`: the report is stdout's only content
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    p = Path(path)
    if p.parent and not p.parent.exists():
        os.makedirs(p.parent, exist_ok=True)
    p.write_text(text, encoding="utf-8")
