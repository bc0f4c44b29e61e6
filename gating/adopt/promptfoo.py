"""`gating import promptfoo`: a promptfooconfig's prompts, providers and tests as gating's manifest and
dataset. Every (prompt, provider) pair becomes a prompt component, since a gating prompt calls one
model; what has no gating equivalent is counted in `skipped`, by kind, never dropped in silence."""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gating.adopt.layout import (
    DEFAULT_MODEL,
    Plan,
    component_name,
    dataset_text,
    manifest_doc,
    manifest_text,
    model_entry,
)
from gating.adopt.promptfoo_assertions import convert_assertion
from gating.adopt.scan import TEMPLATE_EXTS
from gating.evals.assertions import MODEL_GRADED, check_spec
from gating.system.manifest import MANIFEST_PATH

DATASET = "evals/promptfoo.jsonl"
# promptfoo provider prefix -> gating provider; the model id is what follows the last known segment.
PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "vertex": "google", "google": "google",
             "bedrock": "bedrock", "ollama": "ollama", "azureopenai": "azure", "azure": "azure",
             "litellm": "litellm", "vllm": "vllm"}
_KIND_SEGMENTS = {"chat", "messages", "completion"}
PARAMS = {"temperature": "temperature", "max_tokens": "max_tokens", "top_p": "top_p", "seed": "seed"}
SETTINGS = {"apiBaseUrl": "base_url", "apiKeyEnvar": "api_key_env"}
_VAR = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")


@dataclass
class Imported(Plan):
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass
class _Prompt:
    label: str
    file: str


def convert(config: Any, config_path: str, read: Callable[[str], bytes | None], listing: list[str],
            repo_name: str) -> Imported:
    """The whole conversion. `read` gives a repository file's bytes (None: missing)."""
    out = Imported()
    if not isinstance(config, dict):
        out.skipped["the config is not a mapping"] += 1
        config = {}
    here = posixpath.dirname(config_path)
    for key in sorted(set(config) - {"description", "prompts", "providers", "tests", "defaultTest"}):
        out.skipped[f"config key `{key}`"] += 1
    prompts = _prompts(config.get("prompts"), here, read, listing, out)
    models = _providers(config.get("providers"), out)
    if not models:
        models["main"] = {"provider": "openai", "model": DEFAULT_MODEL}
        out.notes.append(f"no provider could be converted: gating.yml names {DEFAULT_MODEL}; set yours")
    pairs: dict[str, dict[str, Any]] = {}
    for p in prompts:
        for mname in models:
            label = p.label if len(models) == 1 else f"{p.label}-{mname}"
            pairs[component_name(label, pairs)] = {"file": p.file, "model": mname}
    judge = next(iter(models))
    cases = _cases(config, list(pairs), out)
    needs_judge = any(a["type"].removeprefix("not-") in MODEL_GRADED for c in cases for a in c["assert"])
    doc = manifest_doc(component_name(str(config.get("description") or repo_name)), models, pairs, [], DATASET,
                       judge if needs_judge else None)
    out.files[MANIFEST_PATH] = manifest_text(doc, f"Converted from {config_path} by `gating import promptfoo`.")
    out.files[DATASET] = dataset_text(cases)
    return out


def _prompts(spec: Any, here: str, read: Callable[[str], bytes | None], listing: list[str],
             out: Imported) -> list[_Prompt]:
    items: list[tuple[Any, str | None]]
    if isinstance(spec, dict):  # the old form: {file://path: label}
        items = [(k, v if isinstance(v, str) else None) for k, v in spec.items()]
    elif isinstance(spec, list):
        items = [(s.get("id") or s.get("raw"), s.get("label")) if isinstance(s, dict) else (s, None) for s in spec]
    elif isinstance(spec, str):
        items = [(spec, None)]
    else:
        items = []
    found: list[_Prompt] = []
    taken: set[str] = set()
    for i, (src, label) in enumerate(items, 1):
        if not isinstance(src, str) or not src.strip():
            out.skipped["prompt that is not text or a file://"] += 1
            continue
        if not src.startswith("file://"):
            name = component_name(label or f"prompt-{i}", taken)
            path = f"prompts/{name}.md"
            out.files[path] = src if src.endswith("\n") else src + "\n"
            found.append(_Prompt(name, path))
            taken.add(name)
            continue
        rel = posixpath.normpath(posixpath.join(here, src[len("file://"):]))
        paths = sorted(f for f in listing if fnmatch.fnmatchcase(f, rel)) if any(c in rel for c in "*?[") else [rel]
        for path in paths:
            made = _file_prompt(path, read, out)
            if made:
                name = component_name(label if len(paths) == 1 and label else posixpath.basename(path).rsplit(".", 1)[0],
                                      taken)
                found.append(_Prompt(name, made))
                taken.add(name)
        if not paths:
            out.skipped[f"prompt {src} (no such file)"] += 1
    if not found and not items:
        out.skipped["no prompts in the config"] += 1
    return found


def _file_prompt(path: str, read: Callable[[str], bytes | None], out: Imported) -> str | None:
    """The repository path of a gating prompt for a promptfoo prompt file, writing one when needed."""
    ext = posixpath.splitext(path)[1].lower()
    data = None if path.startswith("../") or ":" in posixpath.basename(path) else read(path)
    if data is None:
        out.skipped[f"prompt file://{path} (not a file of this repository)"] += 1
        return None
    if ext in TEMPLATE_EXTS:
        return path
    if ext in (".json", ".yml", ".yaml"):
        try:
            msgs = json.loads(data) if ext == ".json" else None
        except ValueError:
            msgs = None
        if ext != ".json":
            return path  # a YAML message list is gating's own format; the snapshot checks it
        if isinstance(msgs, list) and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in msgs):
            target = path[: -len(ext)] + ".yml"
            out.files[target] = manifest_text([{"role": m["role"], "content": m["content"]} for m in msgs], "")
            return target
    out.skipped[f"prompt file with extension `{ext or '(none)'}`"] += 1
    return None


def _providers(spec: Any, out: Imported) -> dict[str, dict[str, Any]]:
    items = spec if isinstance(spec, list) else [spec] if spec else []
    models: dict[str, dict[str, Any]] = {}
    for item in items:
        pid, label, cfg = _provider_item(item)
        parts = pid.split(":")
        provider = PROVIDERS.get(parts[0])
        rest = [p for p in parts[1:] if p not in _KIND_SEGMENTS]
        if provider is None or not rest:
            out.skipped[f"provider `{pid}`"] += 1
            continue
        entry, p = model_entry(":".join(rest), provider)
        if not p.pinned:
            out.pins.append(p)
        for k, v in (cfg.items() if isinstance(cfg, dict) else []):
            if k in PARAMS:
                entry.setdefault("params", {})[PARAMS[k]] = v
            elif k in SETTINGS:
                entry[SETTINGS[k]] = v
            else:
                out.skipped[f"provider config key `{k}`"] += 1
        models[component_name(label or rest[-1], models)] = entry
    return models


def _provider_item(item: Any) -> tuple[str, str | None, Any]:
    """(id, label, config) of the forms promptfoo accepts: "openai:gpt-4o", {id, label, config} and
    {"openai:gpt-4o": {config}} (or, unquoted in YAML, {"exec": "python run.py"})."""
    if isinstance(item, str):
        return item, None, {}
    if isinstance(item, dict) and "id" in item:
        return str(item["id"]), item.get("label"), item.get("config") or {}
    if isinstance(item, dict) and len(item) == 1:
        (key, value), = item.items()
        if isinstance(value, dict):
            return str(key), value.get("label"), value.get("config") or {}
        return f"{key}:{value}", None, {}
    return repr(item), None, {}


def _cases(config: dict[str, Any], prompts: list[str], out: Imported) -> list[dict[str, Any]]:
    default = d if isinstance(d := config.get("defaultTest"), dict) else {}
    for key in sorted(set(default) - {"vars", "assert"}):
        out.skipped[f"defaultTest key `{key}`"] += 1
    tests = config.get("tests") or []
    if isinstance(tests, str) or (isinstance(tests, list) and any(isinstance(t, str) for t in tests)):
        n = 1 if isinstance(tests, str) else sum(isinstance(t, str) for t in tests)
        out.skipped["tests loaded from a file (file://, CSV, ...)"] += n
        tests = [] if isinstance(tests, str) else [t for t in tests if not isinstance(t, str)]
    cases: list[dict[str, Any]] = []
    ids: set[str] = set()
    for i, test in enumerate(t for t in tests if isinstance(t, dict)):
        vars_ = {**(default.get("vars") or {}), **(test.get("vars") or {})}
        if any(isinstance(v, list) or (isinstance(v, str) and v.startswith("file://")) for v in vars_.values()):
            out.skipped["test with a list or file:// var"] += 1
            continue
        for key in sorted(set(test) - {"description", "vars", "assert", "metadata"}):
            out.skipped[f"test key `{key}`"] += 1
        asserts = []
        for spec in [*(default.get("assert") or []), *(test.get("assert") or [])]:
            filled = _fill(spec, vars_) if isinstance(spec, dict) else {}
            if filled is None:
                out.skipped[f"assertion `{spec.get('type')}` with a templated value"] += 1
                continue
            converted, why = convert_assertion(filled)
            bad = check_spec(converted, {"expected": test.get("expected")}) if converted is not None else None
            if converted is None or bad:
                out.skipped[why or f"assertion `{filled.get('type')}`: {bad}"] += 1
                continue
            asserts.append(converted)
        base = component_name(str(test.get("description") or f"case-{i + 1}").lower()[:60], ids)
        for prompt in prompts:
            cid = component_name(base if len(prompts) == 1 else f"{base}-{prompt}", ids)
            ids.add(cid)
            case = {"id": cid, "prompt": prompt, "vars": vars_, "assert": asserts}
            if test.get("description"):
                case["description"] = str(test["description"])
            cases.append(case)
    return cases


def _fill(spec: dict[str, Any], vars_: dict[str, Any]) -> dict[str, Any] | None:
    """promptfoo renders `{{var}}` in an assertion's value; gating's values are literal, so fill them in
    (None: a template this cannot fill)."""
    v = spec.get("value")
    if isinstance(v, str) and "{{" in v:
        filled = _VAR.sub(lambda m: str(vars_[m.group(1)]) if m.group(1) in vars_ else m.group(0), v)
        return None if "{{" in filled else {**spec, "value": filled}
    return spec
