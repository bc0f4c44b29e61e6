"""Bounded loaders: every YAML and JSON document read from a revision goes through here.

A pull request controls the bytes, so a parse must cost no more than the bytes are worth: a YAML
alias bomb ("billion laughs") is a few hundred bytes that expand to a billion nodes in whatever walks
the result, and a 10,000-deep JSON array overflows the recursion of every consumer. Before anything is
built, a streaming pass over the parser's events (libyaml when present) measures depth, nodes as
expanded through aliases, and alias count, and stops at the first event past a limit; JSON is parsed
by the stdlib and then measured without recursion. What exceeds a limit is a `LimitError` naming the
file, the line where it is known, the limit and the setting.

A job in the App also carries a `Budget` (wall clock and process memory) that these loaders and the
GitHub client check at each step: see `budget`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # ruamel is imported by the first YAML read (a quick start for the CLI)
    from ruamel.yaml import YAML

from gating.errors import FAILED, InputError

try:  # the App's install brings orjson: it reads large documents several times faster than the stdlib
    import orjson as _orjson
except ImportError:  # pragma: no cover - the Action's slim install: the stdlib alone
    _orjson = None  # type: ignore[assignment]

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one document read from a revision may cost (README: Security, "Parsers with limits")."""

    max_bytes: int = 10 * MiB  # the file as stored
    max_depth: int = 100  # nested mappings and lists
    max_nodes: int = 1_000_000  # scalars, mappings and lists, counted as expanded through aliases
    max_aliases: int = 1_000  # YAML `*name` references


DEFAULT = Limits()
MANIFEST = replace(DEFAULT, max_bytes=1 * MiB, max_nodes=100_000)
LINE = replace(DEFAULT, max_bytes=1 * MiB)  # one line of a JSONL file (a case, a cassette entry, a rating)
NOTE = replace(DEFAULT, max_depth=2 * DEFAULT.max_depth)  # a git note embeds documents read with DEFAULT


class LimitError(InputError):
    """A document exceeds a limit: refused before it is built, naming the file and the limit."""

    def __init__(self, file: str, message: str, line: int = 1, column: int = 1):
        self.file, self.message, self.line, self.column = file, message, line, column
        super().__init__(f"{file}:{line}: {message}")


# -- YAML -------------------------------------------------------------------------------------------


def _event_parser() -> YAML:
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=False)  # libyaml's parser when ruamel.yaml.clib is installed


def check_yaml(text: str, source: str, limits: Limits = DEFAULT) -> None:
    """Raise LimitError if `text` is too large, too deep, or expands (through aliases) past the limits.

    Syntax errors are left to the loader that follows, which reports them in its own words: it
    reads no further than this pass did before the error.
    """
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, ScalarEvent

    check_budget(source)
    check_size(source, len(text) if len(text) * 4 <= limits.max_bytes else len(text.encode("utf-8")), limits)
    depth = expanded = aliases = 0
    sizes: dict[str, int] = {}  # anchor -> expanded node count of its node
    open_anchors: list[tuple[str | None, int]] = []  # per open collection: its anchor, `expanded` before it
    try:
        for ev in _event_parser().parse(text):
            if isinstance(ev, ScalarEvent):
                expanded += 1
                if ev.anchor:
                    sizes[ev.anchor] = 1
            elif isinstance(ev, CollectionStartEvent):
                depth += 1
                if depth > limits.max_depth:
                    raise _yaml_limit(source, ev, f"nested more than {limits.max_depth} levels deep "
                                                  f"(limit max_depth={limits.max_depth})")
                open_anchors.append((ev.anchor, expanded))
                expanded += 1
            elif isinstance(ev, CollectionEndEvent):
                depth -= 1
                anchor, before = open_anchors.pop()
                if anchor:
                    sizes[anchor] = expanded - before
            elif isinstance(ev, AliasEvent):
                aliases += 1
                if aliases > limits.max_aliases:
                    raise _yaml_limit(source, ev, f"more than {limits.max_aliases:,} aliases "
                                                  f"(limit max_aliases={limits.max_aliases:,})")
                if any(a == ev.anchor for a, _ in open_anchors):
                    raise _yaml_limit(source, ev, f"alias *{ev.anchor} refers to a node that contains it "
                                                  "(a recursive structure)")
                expanded += sizes.get(ev.anchor, 1)
            else:
                continue
            if expanded > limits.max_nodes:
                what = "through aliases " if aliases else ""
                raise _yaml_limit(source, ev, f"expands {what}to more than {limits.max_nodes:,} nodes "
                                              f"(limit max_nodes={limits.max_nodes:,})")
    except YAMLError:
        return


def _yaml_limit(source: str, ev: Any, message: str) -> LimitError:
    mark = getattr(ev, "start_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return LimitError(source, f"refused: {message}", line, col)


def load_yaml(text: str, source: str, *, typ: str = "safe", limits: Limits = DEFAULT,
              yaml: YAML | None = None) -> Any:
    """`YAML(typ=typ).load(text)` (or the given loader's), after `check_yaml`; raises LimitError or
    the loader's YAMLError."""
    check_yaml(text, source, limits)
    if yaml is None:
        from ruamel.yaml import YAML

        yaml = YAML(typ=typ)
    return yaml.load(text)


# -- JSON -------------------------------------------------------------------------------------------


def load_json(data: str | bytes, source: str, limits: Limits = DEFAULT, line: int = 1) -> Any:
    """`json.loads` with limits; raises LimitError, or ValueError (json.JSONDecodeError) on bad JSON.
    `line` is where the text starts in its file (one line of a JSONL file)."""
    check_budget(source)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    check_size(source, len(raw), limits, line)
    brackets = raw.count(b"[") + raw.count(b"{")  # read once: for the parser's choice and the limits
    try:
        doc = _loads(data, raw, brackets)
    except RecursionError:
        raise LimitError(source, f"refused: nested more than {limits.max_depth} levels deep "
                                 f"(limit max_depth={limits.max_depth})", line) from None
    # the text alone shows most documents are within the limits, so they need not be walked: every
    # node starts at a character of its own (nodes <= length), and N levels of nesting need N brackets
    if len(data) > limits.max_nodes or brackets > limits.max_depth:
        measure(doc, source, limits, line)
    return doc


_DIGIT_MAP = bytes(0x31 if 0x30 <= b <= 0x39 else 0x30 for b in range(256))  # a digit -> "1", else "0"
_LONG_NUMBER = b"1" * 19
_MANY_BRACKETS = 500  # GitHub's example webhook payloads have at most 176


def loads(data: str | bytes) -> Any:
    """`json.loads(data)`: the same value, or the same exception. orjson reads it when installed and the
    two read the text alike; what orjson refuses (NaN, a lone surrogate, a byte order mark, UTF-16,
    nesting past 1024, bad JSON) goes to the stdlib, which gives its own answer or error. So does a text
    with a run of 19 digits (orjson reads an integer past 64 bits as a float) and one with more than
    500 brackets: the stdlib stops at the interpreter's recursion limit (about 1000 levels less the
    caller's stack), orjson only past 1024, and a document between the two must stay refused."""
    if _orjson is None:
        return json.loads(data)
    try:
        raw = data.encode("utf-8") if isinstance(data, str) else data
    except UnicodeEncodeError:
        return json.loads(data)
    return _loads(data, raw, raw.count(b"[") + raw.count(b"{"))


def _loads(data: str | bytes, raw: bytes, brackets: int) -> Any:
    """`loads` given the text's UTF-8 bytes and its count of opening brackets."""
    if _orjson is not None and brackets <= _MANY_BRACKETS and _LONG_NUMBER not in raw.translate(_DIGIT_MAP):
        try:
            return _orjson.loads(raw)
        except _orjson.JSONDecodeError:
            pass
    return json.loads(data)


def measure(doc: Any, source: str, limits: Limits = DEFAULT, line: int = 1) -> None:
    """Depth and node count of parsed JSON-like data, without recursion. Visits the nodes depth first,
    last child first, so a document past both limits names the same one whichever way it is walked; a
    container's children are walked from an iterator, not pushed one by one (notes hold thousands)."""
    max_nodes, max_depth = limits.max_nodes, limits.max_depth
    nodes, stack = 0, [(iter((doc,)), 1)]
    while stack:
        children, depth = stack[-1]
        for node in children:
            nodes += 1
            if nodes > max_nodes:
                raise LimitError(source, f"refused: more than {max_nodes:,} nodes (limit max_nodes={max_nodes:,})",
                                 line)
            if isinstance(node, (dict, list)):
                if depth > max_depth:
                    raise LimitError(source, f"refused: nested more than {max_depth} levels deep "
                                             f"(limit max_depth={max_depth})", line)
                stack.append((reversed(node.values() if isinstance(node, dict) else node), depth + 1))
                break
        else:
            stack.pop()


def check_size(source: str, size: int, limits: Limits = DEFAULT, line: int = 1) -> None:
    """Raise LimitError when a file (or a line) of `size` bytes is past `limits.max_bytes`."""
    if size > limits.max_bytes:
        raise LimitError(source, f"refused: {size:,} bytes is more than {limits.max_bytes:,} "
                                 f"(limit max_bytes={limits.max_bytes:,})", line)


# -- a job's budget: wall clock and memory ----------------------------------------------------------


class BudgetExceeded(LimitError):
    """A job ran past its wall-clock or memory bound; `file` is what it was doing then."""

    exit_code = FAILED

    def __str__(self) -> str:
        return f"{self.message}, while reading {self.file}"


@dataclass(frozen=True)
class Budget:
    """Until when a job may run (time.monotonic) and how much resident memory its process may hold."""

    deadline: float | None = None
    max_rss_bytes: int | None = None
    seconds: float = 0.0


_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("gating_budget", default=None)


@contextlib.contextmanager
def budget(seconds: float | None, max_memory_mb: float | None) -> Iterator[Budget]:
    """Run the body under a budget (0 or None: no bound of that kind); nested budgets replace it."""
    b = Budget(time.monotonic() + seconds if seconds else None,
               int(max_memory_mb * MiB) if max_memory_mb else None, float(seconds or 0))
    token = _BUDGET.set(b)
    try:
        yield b
    finally:
        _BUDGET.reset(token)


@contextlib.contextmanager
def unbounded() -> Iterator[None]:
    """Lift the budget, e.g. to report that it ran out."""
    token = _BUDGET.set(None)
    try:
        yield
    finally:
        _BUDGET.reset(token)


def check_budget(what: str) -> None:
    """Raise BudgetExceeded if the current job is past its deadline or its process past its memory."""
    b = _BUDGET.get()
    if b is None:
        return
    if b.deadline is not None and time.monotonic() > b.deadline:
        raise BudgetExceeded(what, f"refused: the job ran longer than {b.seconds:g} s "
                                   "(setting GATING_JOB_SECONDS)")
    if b.max_rss_bytes is not None:
        rss = _rss_bytes()
        if rss is not None and rss > b.max_rss_bytes:
            raise BudgetExceeded(what, f"refused: the App's process holds {rss // MiB:,} MB, more than "
                                       f"{b.max_rss_bytes // MiB:,} MB (setting GATING_JOB_MAX_MEMORY_MB)")


def _rss_bytes() -> int | None:
    """Resident memory of this process now (Linux /proc); None where that cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
