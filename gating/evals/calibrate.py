"""Judge calibration: run the judge on human-rated answers and measure how well it agrees.

Ratings file (JSONL), one example per line:
    {"id": "r1", "type": "rubric", "rubric": "...", "input": "...", "output": "...", "human": 4}
    {"id": "r2", "type": "factuality", "reference": "...", "input": "...", "output": "...", "human": 2}
`g-eval` takes `rubric` (the criteria), `context-recall` a `reference` and a `context`,
`context-faithfulness` a `context`, `answer-relevance` only the input and output.
Reports exact agreement, within-one agreement, quadratic weighted kappa and a confusion matrix
(rows: human, columns: judge). A judge reply that cannot be parsed counts as a disagreement. Below
`evals.calibration.min_agreement` (default 0.8, on exact agreement unless `metric` says otherwise)
the judge is reported as not calibrated.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gating import limits
from gating.errors import GatingError
from gating.evals.cache import ResponseCache, cassette_path, parse_cassette, write_cassette
from gating.evals.dataset import DatasetError
from gating.evals.judge import SCALE, JudgeParseError, judge_messages, judge_score
from gating.evals.llm import LLM, resolve_mode
from gating.evals.providers import DEFAULT_TIMEOUT_S, ClientPool, ProviderError, RetryPolicy
from gating.evals.stats import (
    confusion_matrix,
    exact_agreement,
    quadratic_weighted_kappa,
    within_one_agreement,
)
from gating.system.evidence import configured_mode
from gating.system.revision import RevisionReader
from gating.system.snapshot import Snapshot

CALIBRATION_SCHEMA = "gating.eval.calibration/1"
DEFAULT_MIN_AGREEMENT = 0.8
METRICS = ("exact", "within_one", "kappa")
# rating type -> the field that holds its criterion (None: it has none besides input, output, context)
CRITERION = {"rubric": "rubric", "factuality": "reference", "g-eval": "rubric", "context-recall": "reference",
             "context-faithfulness": None, "answer-relevance": None}
TYPES = tuple(CRITERION)


@dataclass(frozen=True)
class Rating:
    id: str
    type: str
    criterion: str  # rubric text, or the reference answer for factuality
    input: str
    output: str
    human: int
    line: int
    context: str | None = None  # the retrieved text, for the RAG metrics


def load_ratings(path: str, data: bytes) -> list[Rating]:
    problems, out, seen = [], [], set()
    try:
        limits.check_size(path, len(data))
    except limits.LimitError as e:
        raise DatasetError([str(e)]) from None
    for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            d = limits.load_json(line, path, limits.LINE, line=n)
        except limits.LimitError as e:
            raise DatasetError([str(e)]) from None
        except ValueError as e:
            problems.append(f"{where}: invalid JSON: {e}")
            continue
        kind = d.get("type", "rubric")
        field_ = CRITERION.get(kind)
        crit = d.get(field_) if field_ else ""
        human = d.get("human")
        if kind not in TYPES:
            problems.append(f"{where}: type must be one of {', '.join(TYPES)}, got {kind!r}")
        elif field_ and (not isinstance(crit, str) or not crit.strip()):
            problems.append(f"{where}: a {kind} rating needs `{field_}`")
        elif kind in ("context-faithfulness", "context-recall") and not isinstance(d.get("context"), str):
            problems.append(f"{where}: a {kind} rating needs `context` (the retrieved text)")
        elif human not in SCALE or isinstance(human, bool):
            problems.append(f"{where}: `human` must be a whole number 1-5, got {human!r}")
        elif not isinstance(d.get("output"), str):
            problems.append(f"{where}: `output` (the rated answer) must be a string")
        elif str(d.get("id", n)) in seen:
            problems.append(f"{where}: duplicate id {d.get('id')!r}")
        else:
            seen.add(str(d.get("id", n)))
            out.append(Rating(str(d.get("id", n)), kind, crit, str(d.get("input", "")), d["output"], human, n,
                              d.get("context")))
    if problems:
        raise DatasetError(problems)
    if not out:
        raise DatasetError([f"{path}:1: no ratings in the file"])
    return out


@dataclass
class Calibration:
    ratings_path: str
    judge: str  # provider/model
    n: int
    exact: float
    within_one: float
    kappa: float
    confusion: list[list[int]]  # rows human 1..5, columns judge 1..5
    min_agreement: float
    metric: str
    calibrated: bool
    unparsed: int
    items: list[dict[str, Any]] = field(default_factory=list)
    schema: str = CALIBRATION_SCHEMA

    @property
    def agreement(self) -> float:
        return {"exact": self.exact, "within_one": self.within_one, "kappa": self.kappa}[self.metric]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(ratings: list[Rating], judged: list[tuple[int | None, str]], *, path: str, judge: str,
              min_agreement: float = DEFAULT_MIN_AGREEMENT, metric: str = "exact") -> Calibration:
    """Pure: agreement statistics from human and judge scores (None = the judge reply did not parse)."""
    human = [r.human for r in ratings]
    got = [j if j is not None else 0 for j, _ in judged]  # 0 never equals a human 1-5
    ok = [(h, j) for h, (j, _) in zip(human, judged, strict=True) if j is not None]
    exact = exact_agreement(human, got)
    within = within_one_agreement(human, got)
    kappa = quadratic_weighted_kappa([h for h, _ in ok], [j for _, j in ok], SCALE) if ok else 0.0
    conf = confusion_matrix([h for h, _ in ok], [j for _, j in ok], SCALE)
    value = {"exact": exact, "within_one": within, "kappa": kappa}[metric]
    items = [{"id": r.id, "human": r.human, "judge": j, "reason": why}
             for r, (j, why) in zip(ratings, judged, strict=True)]
    return Calibration(path, judge, len(ratings), exact, within, kappa, conf, min_agreement, metric,
                       value >= min_agreement, sum(1 for j, _ in judged if j is None), items)


def calibrate(snapshot: Snapshot, reader: RevisionReader, ratings_path: str, *, env: Mapping[str, str] | None = None,
              cache_dir: str | os.PathLike[str] | None = None, concurrency: int = 8, record: bool = False,
              record_root: str | os.PathLike[str] | None = None, timeout_s: float | None = None) -> Calibration:
    return asyncio.run(_calibrate(snapshot, reader, ratings_path, os.environ if env is None else env, cache_dir,
                                  concurrency, record, record_root, timeout_s))


async def _calibrate(snapshot: Snapshot, reader: RevisionReader, path: str, env: Mapping[str, str],
                     cache_dir: Any, concurrency: int, record: bool, record_root: Any,
                     timeout_s: float | None) -> Calibration:
    ev = snapshot.manifest.evals
    cal = ev.get("calibration") or {}
    judge_name = ev.get("judge")
    if not judge_name:
        raise DatasetError([f"{snapshot.manifest.source}:1: evals.judge is not set: there is no judge to calibrate"])
    judge = snapshot.manifest.models[judge_name]
    blobs = reader.read_many([path, cassette_path(path)])
    if blobs[path] is None:
        raise DatasetError([f"{path}:1: ratings file does not exist at {reader.label}"])
    ratings = load_ratings(path, blobs[path] or b"")
    cassettes = parse_cassette(cassette_path(path), blobs[cassette_path(path)] or b"")
    mode = resolve_mode(env, record, configured_mode(ev))
    tmo = timeout_s or ev.get("timeout_s") or DEFAULT_TIMEOUT_S
    pool = ClientPool(concurrency, tmo) if mode in ("live", "record") else None
    cache = ResponseCache(cache_dir) if cache_dir else None
    llm = LLM(mode, env, pool, RetryPolicy(rng=random.Random()), cache, cassettes, tmo)
    sem = asyncio.Semaphore(concurrency)

    async def one(r: Rating) -> tuple[int | None, str]:
        spec = {"type": r.type, "value": r.criterion} if r.criterion else {"type": r.type}
        msgs = judge_messages(spec, r.input, r.output, r.criterion, r.context)
        async with sem:
            try:
                score, reason, _ = await judge_score(llm, judge, msgs, path)
                return score, reason
            except JudgeParseError as e:
                return None, f"parse: {e}"
            except ProviderError as e:
                return None, f"{e.category}: {e.message}"

    try:
        judged = await asyncio.gather(*(one(r) for r in ratings))
    finally:
        if pool is not None:
            await pool.aclose()
        if cache is not None:
            cache.close()
    if mode == "record":
        root = record_root or getattr(reader, "root", None)
        if root is None:
            raise GatingError("recording writes cassettes into a working tree; run it without --rev")
        write_cassette(Path(root) / cassette_path(path), llm.recorded.get(path, {}))
    metric = cal.get("metric", "exact")
    return summarize(ratings, list(judged), path=path, judge=f"{judge['provider']}/{judge['model']}",
                     min_agreement=float(cal.get("min_agreement", DEFAULT_MIN_AGREEMENT)), metric=metric)
