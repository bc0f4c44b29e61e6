"""Run a revision's eval cases: asyncio workers under a concurrency bound, one CaseResult per case.

`run_evals` is the synchronous entry point the CLI and the Action call. Everything is read through
the snapshot and the RevisionReader of the same revision, so a base revision runs without checkout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gating.errors import GatingError
from gating.evals.assertions import (
    MODEL_GRADED,
    PYTHON,
    SIMILAR,
    Observation,
    base_type,
    default_name,
    evaluate,
)
from gating.evals.cache import ResponseCache, cassette_path, parse_cassette, write_cassette
from gating.evals.codedir import code_checkout
from gating.evals.dataset import Case, DatasetError, dataset_digest
from gating.evals.fanout import Engine, requested_workers, run_forked, worker_count
from gating.evals.gate import RequestGate
from gating.evals.judge import JudgeParseError, grade
from gating.evals.judging import Judging, revision_cases
from gating.evals.llm import LLM, Stats, resolve_mode
from gating.evals.metrics import compute_metrics, cost_usd, price_table
from gating.evals.pacing import Pacer, combine_summaries
from gating.evals.progress import Progress
from gating.evals.providers import DEFAULT_TIMEOUT_S, ClientPool, ProviderError, RetryPolicy
from gating.evals.pycheck import DEFAULT_TIMEOUT_S as PYTHON_TIMEOUT_S
from gating.evals.pycheck import CheckError, PythonChecks, check_refs, parse_ref, python_refs, verdict
from gating.evals.records import INFRA_ERRORS, AssertionResult, CaseResult, RunResult
from gating.evals.targets import (
    CommandTarget,
    HttpTarget,
    PromptLibrary,
    PromptTarget,
    RenderError,
    TargetOutput,
)
from gating.system.evidence import configured_mode
from gating.system.revision import RevisionReader
from gating.system.schema import PROVIDER_SETTINGS
from gating.system.snapshot import Snapshot

DEFAULT_CONCURRENCY = 16
log = logging.getLogger(__name__)


def run_evals(snapshot: Snapshot, reader: RevisionReader, *, only_prompts: set[str] | None = None,
              concurrency: int | None = None, cache_dir: str | os.PathLike[str] | None = None,
              env: Mapping[str, str] | None = None, record: bool = False, progress: Progress | None = None,
              rev: str | None = None, repeat: int | None = None, timeout_s: float | None = None,
              retry: RetryPolicy | None = None, record_root: str | os.PathLike[str] | None = None,
              judging: Judging | None = None, mode: str | None = None,
              trusted_cassettes: Mapping[str, dict[str, Any]] | None = None,
              workers: int | None = None) -> RunResult:
    """Evaluate one revision (judged by its own evals, or by `judging`: the base's, for a pull
    request). Raises DatasetError for a bad dataset, GatingError for bad settings.

    `mode` is the mode the judging revision chose (None: this revision's own settings decide);
    `trusted_cassettes` are recordings (the base's) served in place of this revision's for the same
    request, so a revision cannot rewrite an answer the base recorded. `workers` forces the number of
    processes (gating/evals/fanout.py; default: GATING_EVAL_WORKERS, evals.workers, else chosen)."""
    got: list[RunResult] = []

    async def main() -> None:
        # The result is handed out beside the task, not as its result: asyncio.run (3.11) formats the
        # finished task's repr, result included, twice while restoring the SIGINT handler, which for
        # thousands of cases costs tens of milliseconds.
        got.append(await run_evals_async(
            snapshot, reader, only_prompts=only_prompts, concurrency=concurrency, cache_dir=cache_dir,
            env=os.environ if env is None else env, record=record, progress=progress, rev=rev, repeat=repeat,
            timeout_s=timeout_s, retry=retry, record_root=record_root, judging=judging, mode=mode,
            trusted_cassettes=trusted_cassettes, workers=workers))

    asyncio.run(main())
    return got[0]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _expects_refusal(case: Case) -> bool:
    return any(base_type(a["type"]) == "refusal" for a in case.asserts)


def _context(case: Case, question: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a Python check or transform receives besides the output (promptfoo's `context`)."""
    test = {"id": case.id, "description": case.description, "vars": case.vars, "tags": list(case.tags)}
    if case.expected is not None:
        test["expected"] = case.expected
    ctx: dict[str, Any] = {"vars": case.vars, "prompt": question, "test": test, "expected": case.expected}
    if spec is not None and "config" in spec:
        ctx["config"] = spec["config"]
    return ctx


class _Run:
    def __init__(self, target: Any, llm: LLM, prices: Any, judge_model: Mapping[str, Any] | None, repeat: int,
                 checks: PythonChecks | None = None, transform: str | None = None,
                 embed_model: Mapping[str, Any] | None = None) -> None:
        self.target = target
        self.llm = llm
        self.prices = prices
        self.judge_model = judge_model
        self.repeat = repeat
        self.checks = checks
        self.transform = transform
        self.embed_model = embed_model

    async def _similar(self, spec: dict[str, Any], obs: Observation, case: Case) -> AssertionResult:
        from gating.evals.dialects import EmbedRequest

        if not self.embed_model:
            raise CheckError("similar needs an embedding model: the judging revision sets none in evals.embedding")
        m = self.embed_model
        refs = [spec["value"]] if isinstance(spec["value"], str) else list(spec["value"])
        req = EmbedRequest(m["provider"], m["model"], (obs.output, *refs), m.get("base_url"), m.get("api_key_env"),
                           tuple(sorted((k, m[k]) for k in PROVIDER_SETTINGS if k in m)))
        out, *ref_vecs = await self.llm.embed(req, case.file)
        best = max(_cosine(out, r) for r in ref_vecs)
        need = float(spec.get("threshold", 0.75))
        ok, why = best >= need, f"cosine similarity {best:.3f} (needs {need:g})"
        if spec["type"].startswith("not-"):
            ok, best, why = not ok, 1.0 - best, f"{why} (negated)"
        return AssertionResult(spec["type"], ok, round(best, 6), why, default_name(spec), float(spec.get("weight", 1.0)))

    async def _python(self, spec: dict[str, Any], obs: Observation, case: Case, question: str) -> AssertionResult:
        assert self.checks is not None
        got = await self.checks.call(parse_ref(spec["value"], "get_assert"), obs.output, _context(case, question, spec))
        ok, score, why = verdict(got, spec.get("threshold"))
        if spec["type"].startswith("not-"):
            ok, score, why = not ok, 1.0 - score if 0 <= score <= 1 else -score, f"{why} (negated)"
        return AssertionResult(spec["type"], ok, score, why, default_name(spec), float(spec.get("weight", 1.0)))

    async def _transformed(self, case: Case, output: str, question: str) -> str:
        code = case.transform or self.transform
        if not code or self.checks is None:
            return output
        got = await self.checks.call(parse_ref(code, "get_transform"), output, _context(case, question))
        return got if isinstance(got, str) else json.dumps(got, ensure_ascii=False)

    async def case(self, case: Case) -> CaseResult:
        reps: list[tuple[TargetOutput | None, list[AssertionResult], str | None, str, float]] = []
        for r in range(self.repeat):
            rep = await self._one(case, r)
            reps.append(rep)
            if rep[2] == "render":
                break
        return self._aggregate(case, reps)

    async def _one(self, case: Case, r: int) -> tuple[TargetOutput | None, list[AssertionResult], str | None, str, float]:
        try:
            out: TargetOutput = await self.target.run(case, r)
            obs = Observation(out.output, out.tokens_in, out.tokens_out, out.latency_ms)
        except RenderError as e:
            return None, [], "render", str(e), 0.0
        except ProviderError as e:
            if not (e.category == "content_filter" and _expects_refusal(case)):
                return None, [], e.category, e.message, 0.0
            out, obs = TargetOutput(""), Observation("", error="content_filter")
        except Exception as e:  # one case's surprise is that case's error, never the run's crash
            return None, [], "internal", f"{type(e).__name__}: {e}", 0.0
        if out.cost_usd is None:
            out.cost_usd = cost_usd(out.provider, out.model, out.tokens_in, out.tokens_out, self.prices)
        obs.cost_usd = out.cost_usd
        results: list[AssertionResult] = []
        error, message, judge_ms = None, "", 0.0
        question = next((c for role, c in reversed(out.messages) if role == "user"), None) \
            or json.dumps(case.vars, ensure_ascii=False)
        try:
            obs.output = out.output = await self._transformed(case, obs.output, question)  # what is graded is shown
        except CheckError as e:
            return out, [], "assertion", f"transform: {e.message}", 0.0
        for spec in case.asserts:
            try:
                if base_type(spec["type"]) == PYTHON:
                    results.append(await self._python(spec, obs, case, question))
                    continue
                if base_type(spec["type"]) == SIMILAR:
                    try:
                        results.append(await self._similar(spec, obs, case))
                    except ProviderError as e:  # the embedding call failed: an error of its own category
                        error, message = error or e.category, message or f"embedding: {e.message}"
                        results.append(_failed(spec, f"embedding error ({e.category}): {e.message}"))
                    continue
                if base_type(spec["type"]) not in MODEL_GRADED:
                    results.append(evaluate(spec, obs))
                    continue
                res, got = await grade(spec, obs, question, case.expected, self.llm, self.judge_model or {}, case.file,
                                       case.vars.get("context"))
                judge_ms += got.latency_ms
                results.append(res)
            except CheckError as e:  # a Python check that gave no verdict: the case's error, never a score
                error, message = error or "assertion", message or e.message
                results.append(_failed(spec, e.message))
            except (JudgeParseError, ProviderError) as e:
                cat = "parse" if isinstance(e, JudgeParseError) else e.category
                msg = str(e) if isinstance(e, JudgeParseError) else e.message
                error, message = error or cat, message or f"judge: {msg}"
                results.append(_failed(spec, f"judge error ({cat}): {msg}"))
            except Exception as e:  # an assertion that raises fails its case (category `assertion`), not the run
                why = f"{spec['type']} raised {type(e).__name__}: {e}"
                error, message = error or "assertion", message or why
                results.append(_failed(spec, why))
        return out, results, error, message, judge_ms

    def _aggregate(self, case: Case, reps: list) -> CaseResult:
        passed_list, scores_list = [], []
        for out, results, error, _msg, _j in reps:
            wsum = sum(a.weight for a in results)
            score = (sum(a.score * a.weight for a in results) / wsum if wsum else 1.0) if out is not None else 0.0
            # a case threshold passes on the weighted score; without one, every assertion must pass
            met = score >= case.threshold if case.threshold is not None else all(a.passed for a in results)
            ok = out is not None and error is None and met
            passed_list.append(ok)
            scores_list.append(0.0 if error else score)
        n = len(reps)
        # a tie (half the repeats) is not a failure; the paired test uses the share that passed anyway
        passed = sum(passed_list) * 2 >= n
        # fail closed: a repeat that got no answer (or no grade) is not evidence, so neither is the case
        infra = next((rep for rep in reps if rep[2] in INFRA_ERRORS), None)
        if infra is not None:
            passed = False
        first_bad = next((rep for rep, ok in zip(reps, passed_list, strict=True) if not ok), None)
        shown = infra or (first_bad if (not passed and first_bad) else reps[0])
        outs = [rep[0] for rep in reps if rep[0] is not None]
        by_name: dict[str, list[float]] = {}
        for _o, results, *_ in ([] if infra is not None else reps):  # no score for what was not evaluated
            for a in results:
                by_name.setdefault(a.name, []).append(a.score)
        stages: dict[str, list[float]] = {}
        per_request: list[dict[str, float]] = []
        for rep in reps:
            if rep[0] is None:
                continue
            per_request.append({**rep[0].latency_ms, **({"judge": round(rep[4], 3)} if rep[4] else {})})
            for s, ms in rep[0].latency_ms.items():
                stages.setdefault(s, []).append(ms)
        latency = {s: round(sum(v) / len(v), 3) for s, v in stages.items()}
        judge = [rep[4] for rep in reps if rep[4]]
        if judge:
            latency["judge"] = round(sum(judge) / len(judge), 3)
        err = infra or next((rep for rep in reps if rep[2]), None)
        mean = (lambda xs: None if not xs or any(x is None for x in xs) else sum(xs) / len(xs))  # noqa: E731
        tin, tout = mean([o.tokens_in for o in outs]), mean([o.tokens_out for o in outs])
        o0 = outs[0] if outs else None
        return CaseResult(
            id=case.id, prompt=case.prompt, passed=passed, score=0.0 if infra else sum(scores_list) / n,
            scores={k: sum(v) / len(v) for k, v in by_name.items()}, assertions=shown[1],
            output=(shown[0].output if shown[0] else ""), error=err[2] if err and not passed else None,
            error_message=err[3] if err and not passed else "", latency_ms=latency,
            tokens_in=None if tin is None else round(tin), tokens_out=None if tout is None else round(tout),
            cost_usd=mean([o.cost_usd for o in outs]), cached=bool(outs) and all(o.cached for o in outs),
            repeats=n, repeat_passed=passed_list if n > 1 else [], repeat_scores=scores_list if n > 1 else [],
            repeat_latency_ms=per_request if n > 1 else [],
            tags=list(case.tags), provider=o0.provider if o0 else None, model=o0.model if o0 else None,
            weight=case.weight,
        )


def _cosine(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        raise ProviderError("parse", f"embeddings of different lengths ({len(a)} and {len(b)})")
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb) if na and nb else 0.0


def _failed(spec: dict[str, Any], reason: str) -> AssertionResult:
    """The result of an assertion that could not be checked: failed, score 0."""
    name = spec.get("name") or MODEL_GRADED.get(base_type(spec["type"])) or default_name(spec)
    return AssertionResult(spec["type"], False, 0.0, reason, str(name), float(spec.get("weight", 1.0)))


def _load_cassettes(reader: RevisionReader, datasets: list[str]) -> dict[str, dict[str, Any]]:
    paths = [cassette_path(p) for p in datasets]
    blobs = reader.read_many(paths)
    merged: dict[str, dict[str, Any]] = {}
    for p in paths:
        if blobs.get(p) is not None:
            merged.update(parse_cassette(p, blobs[p] or b""))
    return merged


async def _run_here(engine: Engine, cases: list[Case], conc: int, progress: Progress | None,
                    ) -> tuple[list[CaseResult], list[tuple[Stats, dict[str, dict[str, dict[str, Any]]]]]]:
    """The run in this process alone: `conc` coroutines taking the cases in order."""
    results: list[CaseResult | None] = [None] * len(cases)
    work = iter(enumerate(cases))

    async def worker() -> None:
        for i, case in work:
            results[i] = res = await engine.case(case)
            if progress is not None:
                progress.advance(res)

    try:
        await asyncio.gather(*(worker() for _ in range(min(conc, len(cases)) or 1)))
    finally:
        ends = [await engine.finish()]
    return [r for r in results if r is not None], ends


async def run_evals_async(snapshot: Snapshot, reader: RevisionReader, *, only_prompts: set[str] | None,
                          concurrency: int | None, cache_dir: Any, env: Mapping[str, str], record: bool,
                          progress: Progress | None, rev: str | None, repeat: int | None, timeout_s: float | None,
                          retry: RetryPolicy | None, record_root: Any, judging: Judging | None = None,
                          mode: str | None = None,
                          trusted_cassettes: Mapping[str, dict[str, Any]] | None = None,
                          workers: int | None = None) -> RunResult:
    started = _now()
    m = snapshot.manifest
    ev = judging.evals if judging else m.evals
    if not ev:
        raise DatasetError([f"{m.source}:1: no `evals` section: nothing to evaluate"])
    target_cfg = ev.get("target") or {"type": "prompt"}
    if judging:  # the base's cases and judge; a case whose prompt the head removed fails on its own
        digests, judge_model, cases = dict(judging.datasets), judging.judge_model, list(judging.cases)
    else:
        digests = dict((snapshot.data.get("evals") or {}).get("dataset_digests") or {})
        judge_model = m.models.get(ev["judge"]) if ev.get("judge") else None
        cases = revision_cases(snapshot, {**ev, "target": target_cfg}, judge_model is not None)
    if target_cfg["type"] == "prompt":
        bad = [f"{c.where}: case {c.id!r}: prompt {c.prompt!r} names no model to call (set `model:` on it)"
               for c in cases if c.prompt in m.prompts and not m.prompts[c.prompt].get("model")]
        if bad:
            raise DatasetError(bad)
    selected = [c for c in cases if only_prompts is None or c.prompt is None or c.prompt in only_prompts]
    conc = max(1, concurrency or ev.get("concurrency") or DEFAULT_CONCURRENCY)
    n_repeat = max(1, repeat or ev.get("repeat") or 1)
    tmo = timeout_s or ev.get("timeout_s") or target_cfg.get("timeout_s") or DEFAULT_TIMEOUT_S
    cassettes = _load_cassettes(reader, list(digests))
    kept = sum(1 for k, e in (trusted_cassettes or {}).items() if k in cassettes and cassettes[k] != e)
    cassettes = {**cassettes, **(trusted_cassettes or {})}
    mode = "record" if record else mode or resolve_mode(env, False, configured_mode(ev))
    if mode == "record":
        root: str | os.PathLike[str] | None = record_root or getattr(reader, "root", None)
        if root is None:
            raise GatingError("recording writes cassettes into a working tree; run it without --rev")
    needs_pool = mode in ("live", "record") or target_cfg["type"] == "http"
    cache = ResponseCache(cache_dir) if cache_dir is not None and ev.get("cache", True) else None
    library = PromptLibrary(m.prompts, m.models, snapshot.contents)
    workdir = None
    cwd = None
    if target_cfg["type"] == "command":
        if not target_cfg.get("run"):
            raise DatasetError([f"{m.source}:1: evals.target of type command needs `run`"])
        cwd = getattr(reader, "root", None)
        if cwd is None:  # read from git: run this revision's declared code, not the checkout's
            workdir = code_checkout(snapshot)
            cwd = workdir.name if workdir is not None else None
    elif target_cfg["type"] != "prompt" and (not target_cfg.get("url") or not needs_pool):
        raise DatasetError([f"{m.source}:1: evals.target of type http needs `url`"])
    python = dict(judging.python) if judging else {p: snapshot.contents[p] for p in snapshot.data.get("python") or {}}
    refs = python_refs(selected, ev.get("transform"))
    if not judging:  # the judging side's own cases were checked when it was loaded; added ones fail alone
        check_refs(refs, python)
    embed_model = (judging.embed_model if judging else
                   (m.models.get(ev["embedding"]) if ev.get("embedding") else None))
    if embed_model is None:
        bad = [f"{c.where}: case {c.id!r}: similar needs an embedding model (set evals.embedding in gating.yml)"
               for c in selected if any(base_type(a["type"]) == SIMILAR for a in c.asserts)]
        if bad and not judging:
            raise DatasetError(bad)
    prices = price_table((judging.reader or reader) if judging else reader, ev)

    def engine(gate: RequestGate | None, share: int) -> Engine:
        """One process's pool, model access, target and Python checks (each worker process builds its own)."""
        pacer = (Pacer(share, budget_share=share / conc)  # adapts to rate limits, on this process's share
                 if needs_pool and ev.get("pacing", True) else None)
        pool = ClientPool(share, tmo, gate, pacer) if needs_pool else None
        policy = retry or RetryPolicy(rng=random.Random())
        llm = LLM(mode, env, pool if mode in ("live", "record") else None, policy, cache, cassettes, tmo)
        if target_cfg["type"] == "prompt":
            target: Any = PromptTarget(library, llm)
        elif target_cfg["type"] == "command":
            target = CommandTarget(target_cfg["run"], str(cwd) if cwd else None, env, tmo, library)
        else:
            assert pool is not None  # an http target without a pool stopped above
            target = HttpTarget(target_cfg["url"], target_cfg.get("headers") or {}, env, pool, policy, tmo, library)
        checks = PythonChecks(python, float(ev.get("python_timeout_s") or PYTHON_TIMEOUT_S), None) if refs else None
        run = _Run(target, llm, prices, judge_model, n_repeat, checks, ev.get("transform"), embed_model)

        async def finish() -> tuple[Stats, dict[str, dict[str, dict[str, Any]]]]:
            try:
                if pool is not None:
                    await pool.aclose()
            finally:
                if checks is not None:
                    await checks.aclose()
            if pacer is not None and (found := pacer.summary()):
                llm.stats.rate_limits.append(found)
            return llm.stats, llm.recorded

        return Engine(run.case, finish)

    n_workers = worker_count(requested_workers(workers, env, ev.get("workers")), cases=len(selected),
                             concurrency=conc, mode=mode, target=target_cfg["type"])
    stats, recorded = Stats(), dict[str, dict[str, dict[str, Any]]]()
    try:
        if progress is not None:
            progress.begin(len(selected))
        if n_workers > 1:
            log.info("evaluating %d cases in %d processes", len(selected), n_workers)
            if needs_pool:  # each process builds its pool after the fork: load its HTTP client once, here
                import gating.evals.http1  # noqa: F401
            done, ends = await run_forked(engine, selected, conc, n_workers, progress)
        else:
            done, ends = await _run_here(engine(None, conc), selected, conc, progress)
        for got, rec in ends:
            stats.add(got)
            for ds, entries in rec.items():
                recorded.setdefault(ds, {}).update(entries)
    finally:
        if progress is not None:
            progress.end()
        if cache is not None:
            cache.close()
        if workdir is not None:
            workdir.cleanup()
    written = {}
    if mode == "record":
        assert root is not None  # a record run without a working tree stopped above
        for ds, entries in recorded.items():
            if ds:
                written[cassette_path(ds)] = write_cassette(Path(root) / cassette_path(ds), entries)
    return RunResult(
        rev=rev or getattr(reader, "commit", None) or reader.label, snapshot_digest=snapshot.digest,
        dataset_digest=dataset_digest(digests), cases=done, metrics=compute_metrics(done), started_at=started,
        finished_at=_now(), datasets=digests,
        config={"target": target_cfg["type"], "mode": mode, "concurrency": conc, "repeat": n_repeat,
                "timeout_s": tmo, "cache": cache is not None,
                "only_prompts": None if only_prompts is None else sorted(only_prompts),
                **({"judged_by": judging.to_dict()} if judging else {})},
        stats={**stats.to_dict(), "cassettes_written": written, "recordings_kept": kept,
               **({"rate_limit": found} if (found := combine_summaries(stats.rate_limits)) else {})},
    )

