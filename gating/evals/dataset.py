"""Golden datasets: JSONL or YAML cases with a stable id, checked before anything is sent.

A case names the prompt component it exercises, its template vars, an optional expected answer,
its assertions and tags. Everything wrong with a dataset is reported at once, each with file:line.
"""

from __future__ import annotations

import datetime
import difflib
import hashlib
import json
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from gating import limits
from gating.errors import GatingError, count
from gating.evals.assertions import MODEL_GRADED, check_spec

CASE_KEYS = {"id", "prompt", "vars", "expected", "assert", "tags", "description", "metadata"}


class DatasetError(GatingError):
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
    raise DatasetError([f"{path}:1: unsupported dataset format {ext or '(none)'!r}; use .jsonl, .yml or .yaml"])


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


def load_cases(path: str, data: bytes, prompts: Mapping[str, Any], *, prompt_required: bool = True,
               has_judge: bool = True, seen: dict[str, str] | None = None) -> list[Case]:
    """Parse one dataset; `seen` (id -> where) carries duplicate detection across datasets."""
    seen = {} if seen is None else seen
    problems: list[Any] = []  # strings, and _Repeated assertion problems
    repeated: dict[str, list[int]] = {}  # assertion problem -> lines of the later cases with it
    cases: list[Case] = []
    for line, raw in _rows(path, data):
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
        asserts = raw.get("assert", [])
        if not isinstance(asserts, list):
            problems.append(f"{where}: case {cid!r}: `assert` must be a list")
            asserts = []
        norm: list[dict[str, Any]] = []
        for i, spec in enumerate(asserts):
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
        cases.append(Case(cid, prompt, dict(vars_), raw.get("expected"), tuple(norm), tuple(tags), path, line,
                          str(raw.get("description", ""))))
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
                  has_judge: bool = True) -> list[Case]:
    """All cases of several datasets in order; problems of every file are reported together."""
    seen: dict[str, str] = {}
    cases: list[Case] = []
    problems: list[str] = []
    for path, data in files.items():
        try:
            cases += load_cases(path, data, prompts, prompt_required=prompt_required, has_judge=has_judge,
                                seen=seen)
        except DatasetError as e:
            problems += e.problems
    if problems:
        raise DatasetError(problems)
    return cases
