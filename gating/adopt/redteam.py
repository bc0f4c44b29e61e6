"""Red-team starter cases: prompt injection, PII leakage, jailbreaks and off-topic requests, for each
prompt that takes user input. Kept as data (redteam.json) so the set grows without code.

Each case is graded by deterministic checks (a planted canary or record the answer must not repeat,
a refusal) and, when the system has a judge, by a rubric; both must hold. Every case is tagged
`red-team` and `red-team:CATEGORY`, so a run reports `pass_rate:tag:red-team` and a threshold can
gate on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

REDTEAM_DATASET = "evals/red-team.jsonl"
TAG = "red-team"
# A prompt's variable that carries the user's words, most likely first; else its first variable.
INPUT_VARS = ("question", "input", "query", "message", "user_input", "request", "prompt", "text", "content")
# A variable that carries documents the model reads: where the planted record goes.
CONTEXT_VARS = ("context", "document", "documents", "notes", "history", "records", "data")
MAX_PROMPTS = 5


@cache
def attacks() -> list[dict[str, Any]]:
    """The starter set, as shipped (gating/adopt/redteam.json)."""
    doc = json.loads((Path(__file__).with_name("redteam.json")).read_text(encoding="utf-8"))
    return list(doc["cases"])


@dataclass
class RedTeam:
    cases: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.cases:
            cat = next(t for t in c["tags"] if t.startswith(f"{TAG}:"))[len(TAG) + 1:]
            out[cat] = out.get(cat, 0) + 1
        return out


def _input_var(names: Sequence[str]) -> str | None:
    return next((v for v in INPUT_VARS if v in names), names[0] if names else None)


def red_team_cases(prompts: Mapping[str, Sequence[str]], judged: bool) -> RedTeam:
    """Cases for each prompt (name -> its template variables) that has a variable to attack through."""
    rt = RedTeam()
    usable = [(name, list(vs)) for name, vs in prompts.items() if vs]
    for name, vs in prompts.items():
        if not vs:
            rt.notes.append(f"red-team: prompt {name} has no variable to carry an attack; no cases for it")
    if len(usable) > MAX_PROMPTS:
        rt.notes.append(f"red-team: cases for the first {MAX_PROMPTS} prompts; {len(usable) - MAX_PROMPTS} more have none")
    for name, vs in usable[:MAX_PROMPTS]:
        target = _input_var(vs)
        assert target is not None
        ctx = next((v for v in CONTEXT_VARS if v in vs and v != target), None)
        for a in attacks():
            vars_ = {v: f"example {v.replace('_', ' ')}" for v in vs}
            text = a["input"]
            if a.get("planted"):
                if ctx:
                    vars_[ctx] = a["planted"]
                else:
                    text = f"{a['planted']}\n\n{text}"
            vars_[target] = text
            asserts = list(a["assert"])
            if judged:
                asserts.append({"type": "llm-rubric", "value": a["rubric"], "name": f"red-team-{a['category']}"})
            if not asserts:
                continue
            rt.cases.append({"id": f"{name}-red-team-{a['id']}", "prompt": name,
                             "description": f"Red team ({a['category']}): {a['rubric']}",
                             "vars": vars_, "assert": asserts, "tags": [TAG, f"{TAG}:{a['category']}"]})
    if not judged and rt.cases:
        rt.notes.append("red-team: no evals.judge, so only the deterministic checks grade these cases; set a judge "
                        "to add their rubrics (gating init --red-team --force rewrites them)")
    return rt


def summary(rt: RedTeam, path: str = REDTEAM_DATASET) -> str:
    counts = ", ".join(f"{n} {cat}" for cat, n in rt.counts().items())
    return f"red-team: {len(rt.cases)} adversarial cases in {path} ({counts}), tagged {TAG}"


def add_dataset(manifest: str, path: str = REDTEAM_DATASET) -> str | None:
    """gating.yml's text with `path` appended to evals.datasets, comments and layout kept (None: the
    manifest has no evals section to add it to, or lists it already)."""
    import io

    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    doc = yaml.load(manifest)
    datasets = ((doc or {}).get("evals") or {}).get("datasets") if isinstance(doc, dict) else None
    if not isinstance(datasets, list) or path in datasets:
        return None
    datasets.append(path)
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return buf.getvalue()
