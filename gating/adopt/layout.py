"""The files `gating init` and `gating import` write: a manifest, a dataset, starter prompts. Every plan
is checked with the project's own parsers before anything is written, so what lands on disk validates."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML

from gating.adopt.pins import Pin, pin
from gating.adopt.redteam import REDTEAM_DATASET, RedTeam, red_team_cases, summary
from gating.adopt.scan import PromptFile, Scan
from gating.evals.dataset import Shared, load_datasets
from gating.evals.providers import key_env_of
from gating.system.manifest import MANIFEST_PATH, ManifestError, parse_manifest, resolve_files

STARTER_DATASET = "evals/starter.jsonl"
STARTER_PROMPT = "prompts/starter.md"
STARTER_PROMPT_TEXT = "Answer the customer's question in two sentences or fewer.\n\nQuestion: {{ question }}\n"
DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"  # only when the repository names none; the report says so
MAX_STARTER_CASES = 5
STARTER_ASSERTS: tuple[dict[str, Any], ...] = (  # hold for any sensible answer; the user adds real ones
    {"type": "refusal", "value": False},
    {"type": "not-icontains", "value": "as an ai language model"},
    {"type": "latency", "value": 30000},
)
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class Plan:
    """Files to write (path -> text) and what to tell the user about them."""

    files: dict[str, str] = field(default_factory=dict)
    pins: list[Pin] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def key_envs(self) -> list[str]:
        """The API key variables the planned models read, for the next steps."""
        try:
            models = (parse_manifest(self.files[MANIFEST_PATH].encode("utf-8")).models or {}).values()
        except (KeyError, ManifestError):
            return []
        return sorted({k for m in models if (k := m.get("api_key_env") or key_env_of(m["provider"], None))})


def component_name(text: str, taken: Iterable[str] = ()) -> str:
    """A manifest name (letters, digits, `_.-`) from a label or a path, unique among `taken`."""
    base = _NAME.sub("-", text).strip("-.") or "component"
    name, i, taken = base, 2, set(taken)
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    return name


def model_entry(model_id: str, provider: str | None = None) -> tuple[dict[str, Any], Pin]:
    """A models entry for an id as found, pinned when the table knows the alias."""
    p = pin(model_id, provider)
    return {"provider": p.provider, "model": p.use or model_id}, p


def manifest_text(doc: dict[str, Any] | list[dict[str, Any]], header: str) -> str:
    buf = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096
    yaml.dump(doc, buf)
    return "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + buf.getvalue()


def dataset_text(cases: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases)


def manifest_doc(name: str, models: dict[str, Any], prompts: dict[str, Any], tools: list[str],
                 dataset: str, judge: str | None = None) -> dict[str, Any]:
    components: dict[str, Any] = {"models": models, "prompts": prompts}
    if tools:
        components["tools"] = {"files": tools}
    evals: dict[str, Any] = {"datasets": [dataset], "target": {"type": "prompt"}}
    if judge:
        evals["judge"] = judge
    evals["thresholds"] = {"pass_rate": ">= 0.80"}
    evals["regression"] = {"max_drop": 0.05, "alpha": 0.05}
    return {"version": 1, "name": name, "components": components, "evals": evals}


def plan_init(found: Scan, repo_name: str, red_team: bool = False) -> Plan:
    """gating.yml, a starter dataset (and a starter prompt when the repository has none) from a scan;
    with `red_team`, the adversarial starter cases too, their rubrics graded by the main model."""
    plan = Plan()
    models: dict[str, Any] = {}
    for model_id, where in found.models.items():
        entry, p = model_entry(model_id)
        if not p.pinned:
            plan.pins.append(p)
        models[component_name(model_id.split("/")[-1].removesuffix("-latest"), models)] = entry
        plan.notes.append(f"model {entry['model']} (found in {where[0]}"
                          + (f" and {len(where) - 1} more)" if len(where) > 1 else ")"))
    if not models:
        models["main"] = {"provider": "openai", "model": DEFAULT_MODEL}
        plan.notes.append(f"no model id found in code or config: gating.yml names {DEFAULT_MODEL}; set yours")
    main_model = next(iter(models))
    prompt_files = list(found.prompts)
    if not prompt_files:
        plan.files[STARTER_PROMPT] = STARTER_PROMPT_TEXT
        prompt_files = [PromptFile(STARTER_PROMPT, ("question",))]
        plan.notes.append(f"no prompt file found: wrote {STARTER_PROMPT} as an example")
    prompts: dict[str, Any] = {}
    by_name: dict[str, PromptFile] = {}
    for pf in prompt_files:
        stem = pf.path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        name = component_name(stem, prompts)
        prompts[name] = {"file": pf.path, "model": main_model}
        by_name[name] = pf
    cases = [{"id": f"{name}-starter", "prompt": name,
              "description": "Starter case: put a real input in vars, and assert what a good answer must say",
              "vars": {v: f"example {v.replace('_', ' ')}" for v in pf.vars}, "assert": list(STARTER_ASSERTS)}
             for name, pf in list(by_name.items())[:MAX_STARTER_CASES]]
    if len(by_name) > MAX_STARTER_CASES:
        plan.notes.append(f"{len(by_name) - MAX_STARTER_CASES} more prompts have no starter case yet")
    doc = manifest_doc(component_name(repo_name) or "llm-system", models, prompts, found.tools, STARTER_DATASET,
                       judge=main_model if red_team else None)
    rt = red_team_cases({name: pf.vars for name, pf in by_name.items()}, judged=True) if red_team else RedTeam()
    if red_team:
        if rt.cases:
            doc["evals"]["datasets"].append(REDTEAM_DATASET)
            plan.notes.append(summary(rt) + f"; their rubrics are graded by evals.judge {main_model} (a model of "
                              "another family judges more fairly; `gating calibrate` measures it)")
        plan.notes += rt.notes
    plan.files[MANIFEST_PATH] = manifest_text(doc, "The LLM system gating snapshots, diffs and evaluates. Written by "
                                              "`gating init`: review it.\nEvery key: README, \"The manifest\".")
    plan.files[STARTER_DATASET] = dataset_text(cases)
    if rt.cases:
        plan.files[REDTEAM_DATASET] = dataset_text(rt.cases)
    return plan


def validate(files: Mapping[str, str], listing: Iterable[str],
             read: Callable[[str], bytes | None] | None = None) -> None:
    """Parse the planned manifest and dataset as `gating eval` will; raises ManifestError/DatasetError.
    `read` gives the repository's files the cases read (`evals.files`)."""
    m = parse_manifest(files[MANIFEST_PATH].encode("utf-8"), MANIFEST_PATH)
    refs = resolve_files(m, sorted(set(listing) | set(files)))
    datasets = {p: files[p].encode("utf-8") for p in m.evals.get("datasets", []) if p in files}
    data = {r.path: (read(r.path) if read else None) or b"" for r in refs if r.category == "evalfile"}
    load_datasets(datasets, m.prompts, has_judge=bool(m.evals.get("judge")),
                  shared=Shared(m.evals.get("defaults") or {}, data))
