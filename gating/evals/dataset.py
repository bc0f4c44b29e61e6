"""Golden datasets: JSONL, YAML or CSV cases with a stable id, checked before anything is sent.

A case names the prompt component it exercises, its template vars, an optional expected answer,
its assertions and tags. Everything wrong with a dataset is reported at once, each with file:line.
As people write them: `evals.defaults` (vars, assertions, a transform, a threshold) apply to every
case, a var `file://PATH` reads a file of `evals.files`, `{{ var }}` in an assertion's value is
filled from the case's vars, and a case's `threshold` passes it on its weighted score. A case's
`weight` (default 1) is how much it counts in the run's pass rate and scores and in the paired test.
"""

from __future__ import annotations

import csv
import datetime
import difflib
import hashlib
import io
import json
import math
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from gating import limits
from gating.errors import InputError, count
from gating.evals.assertions import MODEL_GRADED, check_spec

CASE_KEYS = {"id", "prompt", "vars", "expected", "assert", "tags", "description", "metadata", "transform",
             "threshold", "weight"}
DEFAULT_KEYS = {"vars", "assert", "transform", "threshold"}  # evals.defaults


class DatasetError(InputError):
    """The dataset cannot be used; `problems` are "file:line: message" strings."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems), problems)
        self.message = f"{count(len(self.problems), 'problem')} in the eval dataset"


@dataclass(frozen=True)
class Case:
    id: str
    prompt: str | None
    vars: dict[str, Any] = field(default_factory=dict)
    expected: Any = None
    asserts: tuple[dict[str, Any], ...] = ()
    tags: tuple[str, ...] = ()
    file: str = ""
    line: int = 0
    description: str = ""
    transform: str | None = None  # Python applied to the output before the assertions (pycheck.py)
    threshold: float | None = None  # pass when the weighted score reaches it (None: every assertion passes)
    weight: float = 1.0  # how much the case counts in the metrics and the paired test

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def uses_judge(self) -> bool:
        return any(a["type"].removeprefix("not-") in MODEL_GRADED for a in self.asserts)


def dataset_digest(datasets: Mapping[str, str]) -> str:
    """One digest for all datasets of a run: sha256 over sorted `path sha256` lines."""
    text = "".join(f"{p} {s}\n" for p, s in sorted(datasets.items()))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class _BadLine:
    """A JSONL line that does not parse: reported in its place, the other lines still checked."""

    problem: str


def _rows(path: str, data: bytes) -> Iterable[tuple[int, Any]]:
    """(line, raw case) pairs; a bad JSONL line is a _BadLine, other syntax errors raise DatasetError."""
    try:
        limits.check_size(path, len(data))
        text = data.decode("utf-8-sig")  # a byte order mark (Windows editors) is not part of line 1
    except limits.LimitError as e:
        raise DatasetError([str(e)]) from None
    except UnicodeDecodeError:
        raise DatasetError([f"{path}:1: dataset is not UTF-8 text"]) from None
    ext = posixpath.splitext(path)[1].lower()
    if ext in (".jsonl", ".ndjson"):
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("//"):
                continue
            try:
                out.append((n, limits.load_json(line, path, limits.LINE, line=n)))
            except limits.LimitError as e:
                raise DatasetError([str(e)]) from None
            except json.JSONDecodeError as e:
                out.append((n, _BadLine(f"{path}:{n}: invalid JSON at column {e.colno}: {e.msg}")))
        return out
    if ext in (".yml", ".yaml", ".json"):
        try:
            doc = limits.load_yaml(text, path, typ="rt")
        except limits.LimitError as e:
            raise DatasetError([str(e)]) from None
        except YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise DatasetError([f"{path}:{mark.line + 1 if mark else 1}: invalid YAML: "
                                f"{getattr(e, 'problem', None) or e}"]) from None
        if isinstance(doc, CommentedMap) and "cases" in doc:
            doc = doc["cases"]
        if not isinstance(doc, CommentedSeq):
            raise DatasetError([f"{path}:1: expected a list of cases (or a mapping with `cases:`)"])
        return [(doc.lc.item(i)[0] + 1, _plain(item)) for i, item in enumerate(doc)]
    if ext == ".csv":
        return csv_rows(path, text)
    raise DatasetError([f"{path}:1: unsupported dataset format {ext or '(none)'!r}; use .jsonl, .yml, .yaml or .csv"])


# promptfoo's `__expected` shorthand: "contains: refund" -> {type: contains, value: refund}
_SHORTHAND = {"grade": "rubric", "llm-rubric": "rubric", "starts-with": "regex"}


def _expected_assertion(text: str) -> dict[str, Any]:
    head, sep, rest = text.partition(":")
    t = head.strip()
    base = t.removeprefix("not-")
    if sep and (base in _SHORTHAND or _known_type(base)):
        value = rest.strip()
        name = _SHORTHAND.get(base, base)
        if base == "starts-with":
            import re

            value = "^" + re.escape(value)
        return {"type": ("not-" if t.startswith("not-") else "") + name, **({"value": value} if value else {})}
    if not sep and _known_type(base):
        return {"type": t}
    return {"type": "equals", "value": text}


def _known_type(t: str) -> bool:
    from gating.evals.assertion_types import TYPES

    return t in TYPES


def csv_rows(path: str, text: str) -> list[tuple[int, Any]]:
    """CSV as cases: a header row; `id`/`__id`, `prompt`/`__prompt`, `__description`, `__tags` (comma
    separated), `__threshold`, `__weight` and `__expected`, `__expected2`, ... (an assertion such as `contains:
    refund`; a bare text means `equals`) are the case's, every other column is a var. A row without an
    id is named by its content (`row-` and a hash), which stays stable while the row does."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    if not header:
        raise DatasetError([f"{path}:1: a CSV dataset needs a header row (the var names)"])
    out: list[tuple[int, Any]] = []
    start = 2
    for row in reader:
        line, start = start, reader.line_num + 1
        if None in row:
            out.append((line, _BadLine(f"{path}:{line}: more cells than the header has columns")))
            continue
        case: dict[str, Any] = {"vars": {}}
        asserts = []
        for k, v in row.items():
            v = v or ""
            if k in ("id", "__id"):
                case["id"] = v
            elif k in ("prompt", "__prompt"):
                if v:
                    case["prompt"] = v
            elif k == "__description":
                case["description"] = v
            elif k == "__tags":
                case["tags"] = [t.strip() for t in v.split(",") if t.strip()]
            elif k in ("__threshold", "__weight"):
                try:
                    if v.strip():  # an empty cell: the default
                        case[k[2:]] = float(v)
                except ValueError:
                    out.append((line, _BadLine(f"{path}:{line}: {k} {v!r} is not a number")))
                    break
            elif k.startswith("__expected"):
                if v.strip():
                    asserts.append(_expected_assertion(v.strip()))
            elif k.startswith("__"):
                out.append((line, _BadLine(f"{path}:{line}: unknown special column {k!r} (known: __id, __prompt, "
                                           "__description, __tags, __threshold, __weight, __expected...)")))
                break
            else:
                case["vars"][k] = v
        else:
            if asserts:
                case["assert"] = asserts
            if not case.get("id"):
                digest = hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()[:10]
                case["id"] = f"row-{digest}"
            out.append((line, case))
    return out


def _plain(node: Any) -> Any:
    if isinstance(node, CommentedMap):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    if isinstance(node, datetime.date):  # YAML timestamps: a case stays JSON-like data
        return node.isoformat()
    return node


@dataclass(frozen=True)
class Shared:
    """What every case of a revision's datasets shares: `evals.defaults` and the files of `evals.files`."""

    defaults: Mapping[str, Any] = field(default_factory=dict)
    files: Mapping[str, bytes] = field(default_factory=dict)


def load_cases(path: str, data: bytes, prompts: Mapping[str, Any], *, prompt_required: bool = True,
               has_judge: bool = True, seen: dict[str, str] | None = None, shared: Shared | None = None) -> list[Case]:
    """Parse one dataset; `seen` (id -> where) carries duplicate detection across datasets."""
    return load_rows(path, _rows(path, data), prompts, prompt_required=prompt_required, has_judge=has_judge,
                     seen=seen, shared=shared)


def load_rows(path: str, rows: Iterable[tuple[int, Any]], prompts: Mapping[str, Any], *, prompt_required: bool = True,
              has_judge: bool = True, seen: dict[str, str] | None = None, shared: Shared | None = None) -> list[Case]:
    """Cases from (line, raw case) pairs: a dataset's rows, or what a generator returned."""
    seen = {} if seen is None else seen
    shared = shared or Shared()
    defaults = shared.defaults
    problems: list[Any] = []  # strings, and _Repeated assertion problems
    repeated: dict[str, list[int]] = {}  # assertion problem -> lines of the later cases with it
    cases: list[Case] = []
    for line, raw in rows:
        where = f"{path}:{line}"
        if isinstance(raw, _BadLine):
            problems.append(raw.problem)
            continue
        if not isinstance(raw, dict):
            problems.append(f"{where}: a case must be a mapping, got {type(raw).__name__}")
            continue
        unknown = sorted(set(raw) - CASE_KEYS)
        for k in unknown:
            hint = difflib.get_close_matches(k, sorted(CASE_KEYS), n=1)
            problems.append(f"{where}: unknown key {k!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        cid = raw.get("id")
        if isinstance(cid, int) and not isinstance(cid, bool):
            cid = str(cid)
        if not isinstance(cid, str) or not cid.strip():
            problems.append(f"{where}: every case needs a stable `id` (a non-empty string)")
            continue
        if cid in seen:
            problems.append(f"{where}: duplicate id {cid!r} (first defined at {seen[cid]})")
            continue
        seen[cid] = where
        prompt = raw.get("prompt")
        if prompt is None and prompt_required:
            problems.append(f"{where}: case {cid!r} has no `prompt` (which prompt component it exercises)")
        elif prompt is not None and not isinstance(prompt, str):
            problems.append(f"{where}: case {cid!r}: `prompt` must be the name of a prompt component, got {prompt!r}")
        elif prompt is not None and prompt not in prompts:
            hint = difflib.get_close_matches(str(prompt), sorted(prompts), n=1)
            known = ", ".join(sorted(prompts)) or "none"
            problems.append(f"{where}: case {cid!r}: unknown prompt {prompt!r}"
                            + (f" (did you mean {hint[0]!r}?)" if hint else f"; defined: {known}"))
        vars_ = raw.get("vars", {})
        if not isinstance(vars_, dict):
            problems.append(f"{where}: case {cid!r}: `vars` must be a mapping")
            vars_ = {}
        vars_ = {**(defaults.get("vars") or {}), **vars_}
        for k, v in list(vars_.items()):
            if isinstance(v, str) and v.startswith("file://"):
                try:
                    vars_[k] = file_var(v[len("file://"):], shared.files)
                except ValueError as e:
                    problems.append(f"{where}: case {cid!r}: vars.{k}: {e}")
        asserts = raw.get("assert", [])
        if not isinstance(asserts, list):
            problems.append(f"{where}: case {cid!r}: `assert` must be a list")
            asserts = []
        asserts = [*(defaults.get("assert") or []), *asserts]
        norm: list[dict[str, Any]] = []
        for i, spec in enumerate(asserts):
            try:
                spec = fill_templates(spec, vars_)
            except ValueError as e:
                problems.append(f"{where}: case {cid!r}: assert[{i}]: {e}")
                continue
            msg = check_spec(spec, raw)
            if msg:
                if msg in repeated:  # said once per assertion, with where else it recurs
                    repeated[msg].append(line)
                else:
                    repeated[msg] = []
                    problems.append(_Repeated(f"{where}: case {cid!r}: assert[{i}]: {msg}", msg))
                continue
            if spec["type"].removeprefix("not-") in MODEL_GRADED and not has_judge:
                problems.append(f"{where}: case {cid!r}: assert[{i}]: {spec['type']} needs a judge model "
                                "(set evals.judge in gating.yml)")
                continue
            norm.append(dict(spec))
        tags = raw.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            problems.append(f"{where}: case {cid!r}: `tags` must be a list of strings")
            tags = []
        threshold = raw.get("threshold", defaults.get("threshold"))
        if threshold is not None and (not isinstance(threshold, (int, float)) or isinstance(threshold, bool)
                                      or not 0 <= threshold <= 1):
            problems.append(f"{where}: case {cid!r}: `threshold` must be a number between 0 and 1 (the weighted "
                            "score the case needs to pass)")
            threshold = None
        weight = raw.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
            problems.append(f"{where}: case {cid!r}: `weight` must be a positive number (how much the case counts in "
                            f"the pass rate, scores and the paired test), got {weight!r}")
            weight = 1.0
        transform = raw.get("transform", defaults.get("transform"))
        if transform is not None:
            from gating.evals.pycheck import parse_ref

            try:
                if not isinstance(transform, str):
                    raise ValueError("`transform` is file://PATH.py:FUNCTION or inline Python")
                parse_ref(transform, "get_transform")
            except ValueError as e:
                problems.append(f"{where}: case {cid!r}: transform: {e}")
                transform = None
        cases.append(Case(cid, prompt, dict(vars_), raw.get("expected"), tuple(norm), tuple(tags), path, line,
                          str(raw.get("description", "")), transform,
                          None if threshold is None else float(threshold), float(weight)))
    if problems:
        raise DatasetError([p.text(repeated[p.msg]) if isinstance(p, _Repeated) else p for p in problems])
    return cases


@dataclass(frozen=True)
class _Repeated:
    """An assertion problem reported once for every case that repeats it."""

    first: str
    msg: str

    def text(self, more_lines: list[int]) -> str:
        if not more_lines:
            return self.first
        shown = ", ".join(map(str, more_lines[:10])) + (f" and {len(more_lines) - 10} more" if len(more_lines) > 10
                                                         else "")
        n = len(more_lines)
        return f"{self.first} (the same in {n} more case{'s' if n != 1 else ''}, line{'s' if n != 1 else ''} {shown})"


def load_datasets(files: Mapping[str, bytes], prompts: Mapping[str, Any], *, prompt_required: bool = True,
                  has_judge: bool = True, shared: Shared | None = None,
                  generated: Iterable[tuple[str, list[Any]]] = ()) -> list[Case]:
    """All cases of several datasets in order, then those of generators ((label, cases) pairs);
    problems of every file are reported together."""
    seen: dict[str, str] = {}
    cases: list[Case] = []
    problems: list[str] = []
    if shared is not None:
        problems += check_defaults(shared.defaults)
    for path, data in files.items():
        try:
            cases += load_cases(path, data, prompts, prompt_required=prompt_required, has_judge=has_judge,
                                seen=seen, shared=shared)
        except DatasetError as e:
            problems += e.problems
    for label, rows in generated:
        try:
            cases += load_rows(label, list(enumerate(rows, 1)), prompts, prompt_required=prompt_required,
                               has_judge=has_judge, seen=seen, shared=shared)
        except DatasetError as e:
            problems += e.problems
    if problems:
        raise DatasetError(problems)
    return cases


def check_defaults(defaults: Mapping[str, Any]) -> list[str]:
    """Problems of `evals.defaults` itself, said once (the schema checks the types)."""
    out = []
    for i, spec in enumerate(defaults.get("assert") or []):
        if isinstance(spec, dict) and isinstance(spec.get("value"), str) and "{{" in spec["value"]:
            continue  # filled per case, checked there
        msg = check_spec(spec, {"expected": ""})
        if msg:
            out.append(f"gating.yml: evals.defaults.assert[{i}]: {msg}")
    return out


def file_var(path: str, files: Mapping[str, bytes]) -> Any:
    """A var read from a file of `evals.files`: JSON and YAML parsed, anything else as text."""
    if path not in files:
        raise ValueError(f"file://{path} is not a file of `evals.files` in gating.yml (a file the cases read is "
                         "part of the system: list it there)")
    data = files[path]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"file://{path} is not UTF-8 text") from None
    ext = posixpath.splitext(path)[1].lower()
    try:
        if ext == ".json":
            return limits.load_json(text, path)
        if ext in (".yml", ".yaml"):
            return _plain(limits.load_yaml(text, path, typ="rt"))
    except (ValueError, YAMLError, limits.LimitError) as e:
        raise ValueError(f"file://{path} does not parse: {e}") from None
    return text


_TEMPLATES: Any = None


def fill_templates(spec: Any, vars_: Mapping[str, Any]) -> Any:
    """The assertion with `{{ var }}` in its string values filled from the case's vars (a Python
    assertion's code and JSON Schema objects are left as written); raises ValueError."""
    if not isinstance(spec, dict) or spec.get("type", "").removeprefix("not-") == "python":
        return spec
    v = spec.get("value")
    if isinstance(v, str) and ("{{" in v or "{%" in v):
        return {**spec, "value": _render(v, vars_)}
    if isinstance(v, list) and any(isinstance(x, str) and "{{" in x for x in v):
        return {**spec, "value": [_render(x, vars_) if isinstance(x, str) else x for x in v]}
    return spec


def _render(text: str, vars_: Mapping[str, Any]) -> str:
    global _TEMPLATES
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    if _TEMPLATES is None:
        _TEMPLATES = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    try:
        return str(_TEMPLATES.from_string(text).render(**vars_))
    except jinja2.UndefinedError as e:
        raise ValueError(f"value template: {e.message} (add it to the case's vars)") from None
    except Exception as e:
        raise ValueError(f"value template: {type(e).__name__}: {e}") from None
