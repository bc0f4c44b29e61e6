"""What a repository already holds of an LLM system: prompt files, model ids, tool schemas, promptfoo
configs. Pure: it takes file names and bytes (the command lists and reads them, within limits)."""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import jinja2.meta
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from gating.adopt.pins import provider_of

MAX_FILE_BYTES = 256 * 1024  # a prompt, schema or source file larger than this is not read
MAX_FILES = 20_000  # files looked at; a larger repository is scanned in part, and the report says so
TEMPLATE_EXTS = {".md", ".txt", ".j2", ".jinja", ".jinja2", ".prompt"}
PROMPT_EXTS = TEMPLATE_EXTS | {".yml", ".yaml"}
CODE_EXTS = {".py", ".ts", ".tsx", ".js", ".mjs", ".cjs", ".yml", ".yaml", ".json", ".toml"}
PROMPT_DIRS = {"prompts", "prompt", "templates"}
SKIP_DIRS = {".git", ".github", "node_modules", ".venv", "venv", "dist", "build", "__pycache__", ".tox", "docs"}
SKIP_NAMES = re.compile(r"^(readme|changelog|license|contributing|code_of_conduct|security)\b", re.I)
PROMPTFOO_NAMES = {"promptfooconfig.yaml", "promptfooconfig.yml", "promptfooconfig.json"}
_MARKER = re.compile(r"\{\{\s*[A-Za-z_][\w.]*\s*(\|[^}]*)?\}\}|\{%-?\s*(if|for|set|include)\b")
# A model id as a string literal (or a bare YAML/TOML value): "gpt-4o", 'claude-3-5-sonnet-latest'.
_ID = r"(?:gpt-[0-9][\w.:-]*|chatgpt-[\w.-]+|o[134](?:-(?:mini|pro|preview))?(?:-\d{4}-\d{2}-\d{2})?|claude-[\w.@-]+|gemini-[\w.@-]+)"
_QUOTED = re.compile(r"""["'`](""" + _ID + r""")["'`]""")
_BARE = re.compile(r"""(?:^|[:=])\s*(""" + _ID + r""")\s*(?:#.*)?$""", re.M)
_EMBEDDING = re.compile(r"embedding|embed-", re.I)


@dataclass(frozen=True)
class PromptFile:
    path: str
    vars: tuple[str, ...]  # the template's variables, for a starter case


@dataclass
class Scan:
    prompts: list[PromptFile] = field(default_factory=list)
    models: dict[str, list[str]] = field(default_factory=dict)  # id -> ["path:line", ...], most used first
    tools: list[str] = field(default_factory=list)
    promptfoo: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why it was left out)


def candidates(paths: list[str]) -> list[str]:
    """The files worth reading, by name alone."""
    out = []
    for p in paths:
        parts = p.split("/")
        if any(d in SKIP_DIRS for d in parts[:-1]) or SKIP_NAMES.match(parts[-1]):
            continue
        ext = posixpath.splitext(p)[1].lower()
        if ext in PROMPT_EXTS or ext in CODE_EXTS or parts[-1] in PROMPTFOO_NAMES:
            out.append(p)
    return out


def scan(files: Mapping[str, bytes]) -> Scan:
    """Sort the files into prompts, model ids, tool schemas and promptfoo configs."""
    s = Scan()
    uses: dict[str, list[str]] = {}
    tool_names: dict[str, str] = {}
    for path in sorted(files):
        try:
            text = files[path].decode("utf-8")
        except UnicodeDecodeError:
            continue
        name = posixpath.basename(path)
        ext = posixpath.splitext(path)[1].lower()
        if name in PROMPTFOO_NAMES:
            s.promptfoo.append(path)
            continue
        if name == "gating.yml":
            continue
        in_prompt_dir = any(d in PROMPT_DIRS for d in path.split("/")[:-1])
        if ext in PROMPT_EXTS and (in_prompt_dir or (ext in TEMPLATE_EXTS and _MARKER.search(text))):
            why = _prompt_problem(path, text)
            if why:
                s.skipped.append((path, why))
            else:
                s.prompts.append(PromptFile(path, template_vars(text, path)))
            continue
        tool = _tool_name(text) if ext == ".json" else None
        if tool:
            if tool in tool_names:  # the snapshot names a tool by its `name`: one file per name
                s.skipped.append((path, f"tool {tool!r} is also defined in {tool_names[tool]}"))
            else:
                tool_names[tool] = path
                s.tools.append(path)
            continue
        if ext in CODE_EXTS:
            for rx in (_QUOTED, _BARE):
                for m in rx.finditer(text):
                    model = m.group(1)
                    if provider_of(model) and not _EMBEDDING.search(model):
                        uses.setdefault(model, []).append(f"{path}:{text.count(chr(10), 0, m.start(1)) + 1}")
    s.models = {k: list(dict.fromkeys(v)) for k, v in sorted(uses.items(), key=lambda kv: -len(kv[1]))}
    return s


def template_vars(text: str, path: str) -> tuple[str, ...]:
    """The variables a Jinja2 template (or a YAML message list's contents) reads."""
    sources = [m["content"] for m in _messages(text)] if path.endswith((".yml", ".yaml")) else [text]
    env = jinja2.Environment()
    found: set[str] = set()
    for src in sources:
        found |= jinja2.meta.find_undeclared_variables(env.parse(src))
    return tuple(sorted(found))


def _prompt_problem(path: str, text: str) -> str | None:
    """Why this prompt-like file cannot be a gating prompt, or None."""
    if path.endswith((".yml", ".yaml")) and not _messages(text):
        return "not a prompt: a YAML prompt is a list of messages with `role` and `content`"
    try:
        template_vars(text, path)
    except jinja2.TemplateSyntaxError as e:
        return f"not a Jinja2 template (line {e.lineno}: {e.message})"
    return None


def _messages(text: str) -> list[dict]:
    try:
        doc = YAML(typ="safe").load(text)
    except YAMLError:
        return []
    ok = isinstance(doc, list) and doc and all(
        isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
        for m in doc)
    return doc if ok else []


def _tool_name(text: str) -> str | None:
    """The name of a function-calling schema: {name, parameters}, {type: function, function: {...}} or
    Anthropic's {name, input_schema}; None for any other JSON."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    fn: Any = doc.get("function") if doc.get("type") == "function" else doc
    ok = (isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"]
          and any(isinstance(fn.get(k), dict) for k in ("parameters", "input_schema")))
    return str(fn["name"]) if ok else None
