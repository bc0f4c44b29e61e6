"""Which revision's evals judge a change, and the cases run on the head.

The base decides how the head is judged: the thresholds, the regression rule, the judge model, the
target and every case that exists on the base, with its inputs, expected answer and assertions,
come from the base revision. What is evaluated is the head's system (its prompts, models,
retrieval...): that is the change under test. So a pull request cannot loosen its own threshold,
delete the cases it fails or weaken their assertions; those changes apply after it is merged.
Cases the head adds are run with the head's definition and reported as such. A base without
`evals` (a repository adopting them in this pull request) leaves the head's evals to judge, and
says so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gating.evals.dataset import Case, Shared, load_datasets
from gating.evals.metrics import price_file
from gating.system.revision import RevisionReader
from gating.system.snapshot import Snapshot


@dataclass(frozen=True)
class Judging:
    """The evals config, judge model and cases one run is judged by, and where they come from."""

    source: str  # "base" | "head" | "self" (a revision judged by its own evals)
    rev: str
    sentence: str  # which config judged and why, for the check
    evals: Mapping[str, Any]  # the manifest's `evals`: target, judge, thresholds, regression, ...
    judge_model: Mapping[str, Any] | None
    cases: tuple[Case, ...]
    datasets: Mapping[str, str]  # path -> sha256 of the datasets the cases come from
    added: tuple[str, ...] = ()  # case ids the head adds: run with the head's definition
    unjudged: tuple[str, ...] = ()  # added cases that need a judge model the judging side lacks
    reader: RevisionReader | None = field(default=None, compare=False, repr=False)  # files it names (prices)
    prices: bytes | None = field(default=None, repr=False)
    python: Mapping[str, bytes] = field(default_factory=dict, repr=False)  # evals.python files: what checks run
    embed_model: Mapping[str, Any] | None = None  # evals.embedding: the model `similar` embeds with

    @property
    def digest(self) -> str:
        """What a result judged this way depends on: a stored run is reused only when it matches."""
        doc: dict[str, Any] = {"evals": self.evals, "judge": self.judge_model,
               "prices": hashlib.sha256(self.prices).hexdigest() if self.prices is not None else None,
               "cases": [[c.id, c.prompt, c.vars, c.expected, list(c.asserts), list(c.tags)]
                         + ([c.transform] if c.transform else []) for c in self.cases]}
        if self.embed_model:
            doc["embedding"] = self.embed_model
        if self.python:  # the checks' code decides results as much as the cases do
            doc["python"] = {p: hashlib.sha256(b).hexdigest() for p, b in sorted(self.python.items())}
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "rev": self.rev, "digest": self.digest, "added": list(self.added)}


def _evals(snap: Snapshot) -> dict[str, Any]:
    return dict(snap.manifest.evals)


def _datasets(snap: Snapshot) -> dict[str, str]:
    return dict((snap.outline.get("evals") or {}).get("dataset_digests") or {})


def revision_cases(snap: Snapshot, ev: Mapping[str, Any], has_judge: bool, generate: bool = True) -> list[Case]:
    """The snapshot's cases, checked against its own prompts, with `ev`'s defaults and generators
    (raises DatasetError). Generators run the snapshot's own Python, so only a judging side's run."""
    from gating.evals.pycheck import generate as run_generator
    from gating.evals.pycheck import parse_ref

    paths = list(_datasets(snap))
    files = sorted(snap.data.get("eval_files") or {})
    snap.preload(paths + files)
    target = (ev.get("target") or {"type": "prompt"})["type"]
    generated = []
    if generate and ev.get("generate"):
        python = python_sources(snap)
        timeout = float(ev.get("python_timeout_s") or 10.0)
        generated = [(ref[len("file://"):], run_generator(parse_ref(ref, "generate"), python, timeout))
                     for ref in ev["generate"]]
    shared = Shared(ev.get("defaults") or {}, {p: snap.contents[p] for p in files})
    return load_datasets({p: snap.contents[p] for p in paths}, snap.manifest.prompts,
                         prompt_required=target == "prompt", has_judge=has_judge, shared=shared, generated=generated)


def python_sources(snap: Snapshot) -> dict[str, bytes]:
    """The Python files the snapshot's evals declare (`evals.python`), from the snapshot itself."""
    paths = sorted(snap.data.get("python") or {})
    snap.preload(paths)
    return {p: snap.contents[p] for p in paths}


def _prices(reader: RevisionReader | None, ev: Mapping[str, Any]) -> bytes | None:
    path = ev.get("prices")
    return price_file(reader, path) if path and reader is not None else None


def self_judging(snap: Snapshot, rev: str, reader: RevisionReader | None = None) -> Judging | None:
    """A revision judged by its own evals (the baseline run of the base); None without evals."""
    ev = _evals(snap)
    if not ev:
        return None
    judge = snap.manifest.models.get(ev["judge"]) if ev.get("judge") else None
    cases = revision_cases(snap, ev, judge is not None)
    python = python_sources(snap)
    from gating.evals.pycheck import check_refs, python_refs

    check_refs(python_refs(cases, ev.get("transform")), python)
    return Judging("self", rev, f"the evals of `{snap.manifest.source}` at `{rev[:7]}`", ev, judge,
                   tuple(cases), _datasets(snap), reader=reader, prices=_prices(reader, ev), python=python,
                   embed_model=snap.manifest.models.get(ev["embedding"]) if ev.get("embedding") else None)


def judging_for(own: Judging | None, base: Snapshot | None, head: Snapshot, base_rev: str,
                head_reader: RevisionReader | None = None) -> Judging | None:
    """How the head is judged, given the base judged by its own evals (`own`, None when the base has
    none); None when neither side has evals."""
    head_ev = _evals(head)
    if own is None:
        if not head_ev:
            return None
        theirs = self_judging(head, "head", head_reader)
        assert theirs is not None
        has = f"has no `evals` in `{head.manifest.source}`" if base is not None else f"has no `{head.manifest.source}`"
        sentence = (f"Judged by the head's evals: the base `{base_rev[:7]}` {has}, so this pull request "
                    "adopts them (an admin approves that, by the built-in policy-change rule)")
        return Judging("head", theirs.rev, sentence, theirs.evals, theirs.judge_model, theirs.cases,
                       theirs.datasets, tuple(c.id for c in theirs.cases), (), head_reader, theirs.prices,
                       theirs.python, theirs.embed_model)
    known = {c.id for c in own.cases}
    # the head's cases as the base would read them: its defaults, and no generator of the head's (code)
    head_cases = revision_cases(head, {**head_ev, "target": own.evals.get("target"),
                                       "defaults": own.evals.get("defaults")}, True, generate=False) if head_ev else []
    added = [c for c in head_cases if c.id not in known]
    unjudged = [c.id for c in added if c.uses_judge and own.judge_model is None]
    # the base decides weights: a case the head adds counts 1 until merged (a heavy new case would
    # otherwise lift the head's pass rate over a threshold on its own)
    run = [replace(c, weight=1.0) for c in added if c.id not in unjudged]
    datasets = {**_datasets(head), **own.datasets} if added else dict(own.datasets)
    source = base.manifest.source if base is not None else "gating.yml"
    sentence = (f"Judged by the base's evals (`{source}` at `{base_rev[:7]}`): its thresholds, regression rule, "
                "judge, target and the cases that exist there, with their assertions")
    return Judging("base", base_rev, sentence, own.evals, own.judge_model, own.cases + tuple(run), datasets,
                   tuple(c.id for c in run), tuple(unjudged), own.reader, own.prices, own.python, own.embed_model)
