"""`gating import promptfoo`: a promptfooconfig's prompts, providers and tests as gating's manifest and
dataset. Every (prompt, provider) pair becomes a prompt component, since a gating prompt calls one
model; what has no gating equivalent is counted in `skipped`, by kind, never dropped in silence.

promptfoo's Python test generators (`tests: file://gen.py:fn`, `{path: file://gen.py:fn, config: ...}`)
stay the user's code: a written module (GENERATORS) makes each one a function of `evals.generate` that
calls it and converts the tests it returns as written tests are converted here (convert_generated),
failing with what it cannot convert. The generator and the modules beside it that it imports become
files of `evals.python`, so they are part of the snapshot and the diff."""

from __future__ import annotations

import fnmatch
import json
import keyword
import posixpath
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
from gating.evals.dataset import DatasetError, csv_rows
from gating.system.manifest import MANIFEST_PATH

DATASET = "evals/promptfoo.jsonl"
GENERATORS = "evals/promptfoo_generators.py"
_JS_EXTS = (".js", ".mjs", ".cjs", ".ts")
EMBEDDING_MODEL = "text-embedding-3-large"
# promptfoo provider prefix -> gating provider; the model id is what follows the last known segment.
PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "vertex": "vertex", "google": "google",
             "bedrock": "bedrock", "ollama": "ollama", "azureopenai": "azure", "azure": "azure",
             "litellm": "litellm", "vllm": "vllm"}
_KIND_SEGMENTS = {"chat", "messages", "completion"}
PARAMS = {"temperature": "temperature", "max_tokens": "max_tokens", "top_p": "top_p", "seed": "seed"}
SETTINGS = {"apiBaseUrl": "base_url", "apiKeyEnvar": "api_key_env"}
# promptfoo's provider-specific config keys -> the model's settings in gating.yml
PROVIDER_SETTINGS = {"azure": {"apiHost": "base_url", "apiVersion": "api_version"},
                     "vertex": {"projectId": "project", "region": "location", "apiHost": "base_url"},
                     "bedrock": {"region": "region", "endpoint": "base_url"},
                     "ollama": {"baseUrl": "base_url"}}


@dataclass
class Imported(Plan):
    skipped: Counter[str] = field(default_factory=Counter)
    python: set[str] = field(default_factory=set)  # -> evals.python
    data_files: set[str] = field(default_factory=set)  # -> evals.files
    generators: list[_Generator] = field(default_factory=list)  # -> evals.generate, through GENERATORS


@dataclass
class _Generator:
    """A promptfoo Python test generator: its file, function, and the config promptfoo passes it."""

    path: str
    fn: str
    config: Any = None
    has_config: bool = False


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
    files = _Files(here, read, out)
    defaults = _defaults(config, files, out)
    cases = _cases(config, list(pairs), files, out)
    needs_judge = bool(out.generators) or any(  # what a generator returns is known only when it runs
        a["type"].removeprefix("not-") in MODEL_GRADED
        for a in [*(a for c in cases for a in c["assert"]), *defaults.get("assert", [])])
    doc = manifest_doc(component_name(str(config.get("description") or repo_name)), models, pairs, [], DATASET,
                       judge if needs_judge else None)
    if any(a["type"].removeprefix("not-") == "similar"
           for a in [*(a for c in cases for a in c["assert"]), *defaults.get("assert", [])]):
        doc["components"]["models"]["embedding"] = {"provider": "openai", "model": EMBEDDING_MODEL}
        doc["evals"]["embedding"] = "embedding"
        out.notes.append(f"`similar` embeds with {EMBEDDING_MODEL} (promptfoo's default): the model `embedding`")
    if out.generators:
        out.files[GENERATORS] = _generators_module(out.generators, list(pairs), out)
        if out.generators:
            out.python.add(GENERATORS)
            doc["evals"]["generate"] = [f"file://{GENERATORS}:{name}" for name in _generator_names(out.generators)]
            n = len(out.generators)
            out.notes.append(f"{n} Python test generator{'s' * (n != 1)} run at eval time through {GENERATORS} "
                             "(`evals.generate`); a generated test gating cannot convert fails the run, naming it")
        else:
            del out.files[GENERATORS]
    for key, found in (("python", out.python), ("files", out.data_files)):
        if found:
            doc["evals"][key] = sorted(found)
    if defaults:
        doc["evals"]["defaults"] = defaults
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
            elif k in PROVIDER_SETTINGS.get(provider, {}) and isinstance(v, str):
                key = PROVIDER_SETTINGS[provider][k]
                entry[key] = ("https://" + v if key == "base_url" and "://" not in v else v)
            else:
                out.skipped[f"provider config key `{k}`"] += 1
        models[component_name(label or ":".join(rest), models)] = entry
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


@dataclass
class _Files:
    """Resolves promptfoo's `file://` references (relative to the config) to repository paths."""

    here: str
    read: Callable[[str], bytes | None]
    out: Imported

    def path(self, ref: str, kind: str) -> str | None:
        rel = ref[len("file://"):]
        fn = ""
        if kind == "python" and ":" in rel:
            rel, fn = rel.rsplit(":", 1)
        path = posixpath.normpath(posixpath.join(self.here, rel))
        if path.startswith("../") or self.read(path) is None:
            self.out.skipped[f"{kind} {ref} (not a file of this repository)"] += 1
            return None
        (self.out.python if kind == "python" else self.out.data_files).add(path)
        return path + (f":{fn}" if fn else "")

    def vars(self, vars_: dict[str, Any]) -> dict[str, Any] | None:
        out = {}
        for k, v in vars_.items():
            if isinstance(v, str) and v.startswith("file://"):
                if posixpath.splitext(v.split(":", 2)[-1])[1].lower() in (".py", ".js"):
                    self.out.skipped["var computed by a script (file://...py/js)"] += 1
                    return None
                path = self.path(v, "var file")
                if path is None:
                    return None
                v = "file://" + path
            out[k] = v
        return out

    def transform(self, spec: Any) -> str | None:
        if isinstance(spec, str) and spec.startswith("file://") and ".py" in spec:
            path = self.path(spec if ":" in spec[7:] else spec + ":get_transform", "python")
            return None if path is None else "file://" + path
        self.out.skipped["transform in JavaScript"] += 1
        return None


def _assertions(specs: list[Any], files: _Files, out: Imported, expected: Any) -> list[dict[str, Any]]:
    asserts = []
    for spec in specs:
        if not isinstance(spec, dict):
            out.skipped["assertion that is not a mapping"] += 1
            continue
        v = spec.get("value")
        if str(spec.get("type", "")).removeprefix("not-") == "python" and isinstance(v, str) and v.startswith("file://"):
            path = files.path(v if ":" in v[7:] else v + ":get_assert", "python")
            if path is None:
                continue
            spec = {**spec, "value": "file://" + path}
        converted, why = convert_assertion(spec)
        bad = check_spec(converted, {"expected": expected}) if converted is not None else None
        if converted is None or bad:
            out.skipped[why or f"assertion `{spec.get('type')}`: {bad}"] += 1
            continue
        asserts.append(converted)
    return asserts


def _options(test: dict[str, Any], files: _Files, into: dict[str, Any], out: Imported, what: str) -> None:
    """A test's (or defaultTest's) options and threshold, as gating's `transform` and `threshold`."""
    opts = o if isinstance(o := test.get("options"), dict) else {}
    for key in sorted(set(opts) - {"transform"}):
        out.skipped[f"{what} option `{key}`"] += 1
    if "transform" in opts:
        t = files.transform(opts["transform"])
        if t:
            into["transform"] = t
    if isinstance(test.get("threshold"), (int, float)) and 0 <= test["threshold"] <= 1:
        into["threshold"] = test["threshold"]


def _defaults(config: dict[str, Any], files: _Files, out: Imported) -> dict[str, Any]:
    """defaultTest as `evals.defaults`: vars, assertions, a transform and a threshold shared by every case."""
    default = dt if isinstance(dt := config.get("defaultTest"), dict) else {}
    for key in sorted(set(default) - {"vars", "assert", "options", "threshold"}):
        out.skipped[f"defaultTest key `{key}`"] += 1
    d: dict[str, Any] = {}
    vars_ = files.vars(default.get("vars") or {}) if isinstance(default.get("vars"), dict) else {}
    if vars_:
        d["vars"] = vars_
    asserts = _assertions(default.get("assert") or [], files, out, "")
    if asserts:
        d["assert"] = asserts
    _options(default, files, d, out, "defaultTest")
    return d


def _test_files(tests: Any, files: _Files, out: Imported) -> list[Any]:
    """The tests, with `file://` entries (CSV, YAML, JSON, JSONL) read in; CSV rows arrive in gating's form."""
    items = [tests] if isinstance(tests, str) else list(tests) if isinstance(tests, list) else []
    found: list[Any] = []
    for t in items:
        ref = t.get("path") if isinstance(t, dict) and isinstance(t.get("path"), str) else t
        if isinstance(ref, str) and _generator_ref(ref) is not None:
            _generator(ref, t, files, out)
            continue
        if not isinstance(t, str):
            found.append(t)
            continue
        ext = posixpath.splitext(t.split(":", 2)[-1] if t.count(":") > 1 else t)[1].lower()
        path = posixpath.normpath(posixpath.join(files.here, t[len("file://"):])) if t.startswith("file://") else None
        data = files.read(path) if path and not path.startswith("../") else None
        if data is None or ext not in (".csv", ".yaml", ".yml", ".json", ".jsonl"):
            out.skipped["tests from a file that is not in the repository or not CSV/YAML/JSON"] += 1
            continue
        text = data.decode("utf-8-sig", "replace")
        try:
            if ext == ".csv":
                found += [dict(row, _gating=True) for _line, row in csv_rows(path or t, text) if isinstance(row, dict)]
            elif ext == ".jsonl":
                found += [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                doc = json.loads(text) if ext == ".json" else _yaml(text)
                found += doc if isinstance(doc, list) else [doc]
        except (ValueError, DatasetError):
            out.skipped[f"tests file {t} that does not parse"] += 1
    return found


def _generator_ref(ref: str) -> tuple[str, str | None] | None:
    """(path, function) of a test generator reference (`file://`, `python:` or a bare path); None
    for anything else."""
    rel = ref.removeprefix("file://") if ref.startswith("file://") else ref.removeprefix("python:")
    path, _, fn = rel.partition(":") if not rel.endswith(_JS_EXTS + (".py",)) else (rel, "", "")
    if path.lower().endswith(".py") or path.lower().endswith(_JS_EXTS):
        return path, fn or None
    return None


def _generator(ref: str, item: Any, files: _Files, out: Imported) -> None:
    """A Python test generator, kept: its file and the modules beside it it imports become system files."""
    path, fn = _generator_ref(ref) or ("", None)
    if path.lower().endswith(_JS_EXTS):
        out.skipped["tests from a JavaScript generator"] += 1
        return
    rel = posixpath.normpath(posixpath.join(files.here, path))
    data = None if rel.startswith("../") else files.read(rel)
    module = posixpath.basename(rel)[:-3]
    if data is None:
        out.skipped[f"tests from a Python generator {rel} (not a file of this repository)"] += 1
        return
    if not module.isidentifier() or keyword.iskeyword(module):
        out.skipped[f"tests from a Python generator {rel} (its name is not a Python module name: rename it)"] += 1
        return
    if fn is None:
        fn = "generate_tests"
        out.notes.append(f"tests from {rel} name no function: `generate_tests` is called")
    config = item.get("config") if isinstance(item, dict) else None
    plain = json.loads(json.dumps(config, default=str)) if config is not None else None
    out.generators.append(_Generator(rel, fn, plain, config is not None))
    out.python.add(rel)
    _siblings(rel, data, files, out, depth=0)


def _siblings(path: str, data: bytes, files: _Files, out: Imported, depth: int) -> None:
    """The modules beside `path` that it imports (and theirs), as files of `evals.python`: a check
    imports only declared files."""
    import ast

    if depth > 20:
        return
    try:
        tree = ast.parse(data.decode("utf-8", "replace"))
    except SyntaxError:
        return
    here = posixpath.dirname(path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    for name in sorted(names):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            stem = posixpath.join(here, *parts[:i])
            for cand in (stem + ".py", stem + "/__init__.py"):
                if cand in out.python:
                    continue
                got = files.read(cand)
                if got is not None:
                    out.python.add(cand)
                    _siblings(cand, got, files, out, depth + 1)


def _generator_names(gens: list[_Generator]) -> list[str]:
    taken: set[str] = set()
    names = []
    for g in gens:
        name, i = g.fn, 2
        while name in taken:
            name, i = f"{g.fn}_{i}", i + 1
        taken.add(name)
        names.append(name)
    return names


def _generators_module(gens: list[_Generator], prompts: list[str], out: Imported) -> str:
    """The module of `evals.generate` functions that call promptfoo's generators. A generator whose
    module name another declared Python file has too is listed as not converted (an import would be
    ambiguous)."""
    by_module: dict[str, set[str]] = {}
    for p in out.python:
        if not p.endswith("/__init__.py"):
            by_module.setdefault(posixpath.basename(p)[:-3], set()).add(p)
    kept = []
    for g in gens:
        module = posixpath.basename(g.path)[:-3]
        if len(by_module.get(module, ())) > 1:
            out.skipped[f"tests from a Python generator {g.path} (another Python file is named `{module}.py`: "
                        "rename one)"] += 1
            continue
        kept.append(g)
    gens[:] = kept
    lines = ['"""promptfoo\'s Python test generators as gating\'s (`evals.generate`), written by `gating import',
             "promptfoo`: each function calls one and converts the tests it returns as written tests are",
             'converted, failing with what it cannot convert. The generators themselves stay as they are."""',
             "", "import importlib", "", "from gating.adopt.promptfoo import convert_generated", "",
             f"PROMPTS = {prompts!r}"]
    for name, g in zip(_generator_names(gens), gens, strict=True):
        module = posixpath.basename(g.path)[:-3]
        args = repr(g.config) if g.has_config else ""
        lines += ["", "", f"def {name}():",
                  f"    tests = importlib.import_module({module!r}).{g.fn}({args})",
                  f"    return convert_generated(tests, PROMPTS, {(g.path + ':' + g.fn)!r}, {name!r})"]
    return "\n".join(lines) + "\n"


def convert_generated(tests: Any, prompts: list[str], label: str, unnamed: str = "generated") -> list[dict[str, Any]]:
    """The cases of what a promptfoo test generator returned, converted as written tests are (a test
    without a description is `UNNAMED-N`); raises ValueError naming every test part that does not
    convert (nothing is dropped)."""
    if not isinstance(tests, list):
        raise ValueError(f"{label} returned {type(tests).__name__}, not a list of promptfoo tests")
    out = Imported()
    out.skipped["test that is not a mapping"] = sum(not isinstance(t, dict) for t in tests)
    cases = _cases({"tests": [t for t in tests if isinstance(t, dict)]}, prompts, _Files("", lambda _p: None, out),
                   out, unnamed)
    out.skipped += Counter()  # drops the zero count
    if out.skipped:
        what = "; ".join(f"{n} x {k}" for k, n in sorted(out.skipped.items(), key=lambda kv: (-kv[1], kv[0])))
        raise ValueError(f"{label} returned promptfoo tests gating cannot convert: {what}")
    return cases


def _yaml(text: str) -> Any:
    from gating import limits

    return limits.load_yaml(text, "tests")


def _matrix(vars_: dict[str, Any]) -> list[dict[str, Any]]:
    """promptfoo runs a test once per combination of its list-valued vars."""
    import itertools

    keys = [k for k, v in vars_.items() if isinstance(v, list)]
    if not keys:
        return [vars_]
    return [{**vars_, **dict(zip(keys, combo, strict=True))} for combo in itertools.product(*(vars_[k] for k in keys))]


def _cases(config: dict[str, Any], prompts: list[str], files: _Files, out: Imported,
           unnamed: str = "case") -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    ids: set[str] = set()
    tests = _test_files(config.get("tests") or [], files, out)
    for i, test in enumerate(t for t in tests if isinstance(t, dict)):
        own = files.vars(test.get("vars") or {}) if isinstance(test.get("vars"), dict) else {}
        if own is None:
            continue
        if test.get("_gating"):  # a CSV row, already in gating's form
            asserts, extra = list(test.get("assert") or []), {k: test[k] for k in ("threshold", "tags") if k in test}
        else:
            for key in sorted(set(test) - {"description", "vars", "assert", "metadata", "options", "threshold"}):
                out.skipped[f"test key `{key}`"] += 1
            asserts, extra = _assertions(test.get("assert") or [], files, out, test.get("expected")), {}
            _options(test, files, extra, out, "test")
        base = component_name(str(test.get("description") or f"{unnamed}-{i + 1}").lower()[:60], ids)
        combos = _matrix(own)
        for n, vars_ in enumerate(combos, 1):
            for prompt in prompts:
                name = base if len(combos) == 1 else f"{base}-{n}"
                cid = component_name(name if len(prompts) == 1 else f"{name}-{prompt}", ids)
                ids.add(cid)
                case = {"id": cid, "prompt": prompt, "vars": vars_, "assert": asserts, **extra}
                if test.get("description"):
                    case["description"] = str(test["description"])
                cases.append(case)
    return cases
