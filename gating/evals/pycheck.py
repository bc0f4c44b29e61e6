"""Python assertions and output transforms: the user's functions, run in a child process with limits.

A reference is `file://evals/checks.py:fn` (default function `get_assert` for an assertion,
`get_transform` for a transform), or an inline expression (`output.startswith("Hi")`), or an inline
body that `return`s. Functions are called as `fn(output, context)`; an inline one sees `output`,
`context` and `vars`. The source always comes from the judging revision's snapshot (the files
`evals.python` declares), never from the working tree, so a pull request (and a fork's) changes to
its checks take effect after merge. A check imports its sibling modules and packages (`from helpers
import x` beside evals/checks.py) from those declared files too: the child runs `python -I` (no
working directory on its path) with an import finder over the declared files' directories.

The child is one `python -I` process per run, fed JSON lines; it gets no environment beyond PATH and
the locale (no provider keys), an address-space cap, and a wall-clock timeout per call (on timeout it
is killed and the next call starts a fresh one). Whatever a check raises, returns in a shape that is
not a verdict, or a timeout is a case error, never a score of 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gating.evals.assertions import PYTHON, base_type
from gating.evals.dataset import Case, DatasetError
from gating.evals.providers import ProviderError

DEFAULT_TIMEOUT_S = 10.0
STARTUP_TIMEOUT_S = 60.0
MEMORY_BYTES = 2 << 30
MAX_REPLY = 16 << 20  # bytes of one answer from the child
_REF = re.compile(r"^file://([^:]+?\.py)(?::([A-Za-z_][A-Za-z0-9_]*))?$")


class CheckError(ProviderError):
    """A Python check or transform that could not give a verdict (the case's `assertion` error)."""

    def __init__(self, message: str):
        super().__init__("assertion", message)


@dataclass(frozen=True)
class Ref:
    """A parsed reference: a file and function, or inline code."""

    path: str | None
    fn: str | None
    inline: str | None

    @property
    def label(self) -> str:
        return f"{self.path}:{self.fn}" if self.path else "inline python"


def parse_ref(value: str, default_fn: str) -> Ref:
    """`file://path.py[:fn]` or inline code; raises ValueError with what is wrong."""
    if value.startswith("file://"):
        m = _REF.match(value.strip())
        if not m:
            raise ValueError(f"{value!r} is not file://PATH.py or file://PATH.py:FUNCTION")
        path = m.group(1)
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"{path!r} must be a path inside the repository")
        return Ref(path, m.group(2) or default_fn, None)
    code = value.strip()
    if not code:
        raise ValueError("inline python is empty")
    try:
        compile(code, "<inline>", "eval")
    except SyntaxError:
        try:
            compile(_as_function(code), "<inline>", "exec")
        except SyntaxError as e:
            raise ValueError(f"inline python does not compile: {e.msg} (line {e.lineno})") from None
    return Ref(None, None, code)


def _as_function(body: str) -> str:
    return "def __inline__(output, context, vars):\n" + "".join(f"    {line}\n" for line in body.splitlines())


def python_refs(cases: list[Case], transform: str | None) -> list[tuple[str, Ref]]:
    """(where, reference) of every Python check and transform the cases use."""
    refs = [("gating.yml: evals.transform", parse_ref(transform, "get_transform"))] if transform else []
    for c in cases:
        if c.transform:
            refs.append((f"{c.where}: case {c.id!r}: transform", parse_ref(c.transform, "get_transform")))
        refs += [(f"{c.where}: case {c.id!r}: python", parse_ref(a["value"], "get_assert"))
                 for a in c.asserts if base_type(a["type"]) == PYTHON]
    return refs


def check_refs(refs: list[tuple[str, Ref]], sources: Mapping[str, bytes]) -> None:
    """Every file a reference names is declared (evals.python) and defines its function."""
    problems = []
    for where, ref in refs:
        if ref.path is None:
            continue
        if ref.path not in sources:
            problems.append(f"{where}: {ref.path} is not a declared Python file of the evals: add it to "
                            "`evals.python` in gating.yml (the checks the evals run are part of the system)")
        elif not re.search(rf"^(?:async\s+)?def\s+{re.escape(ref.fn or '')}\s*\(|^{re.escape(ref.fn or '')}\s*=",
                           sources[ref.path].decode("utf-8", "replace"), re.M):
            problems.append(f"{where}: {ref.path} defines no function {ref.fn!r}")
    if problems:
        raise DatasetError(sorted(set(problems)))


_WORKER = r'''
import json, os, sys, types
try:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
except Exception:
    pass
proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
sys.stdout = sys.stderr  # a check's prints never reach the protocol
modules = {}
SOURCES = {}  # the declared files (evals.python) of the judging revision: what a check may import
ROOTS = []  # their directories, as a script's own directory is on its path


class Siblings:
    """Imports a check's sibling modules and packages from SOURCES, never from the disk."""

    def find_spec(self, name, path=None, target=None):
        import importlib.util
        rel = name.replace(".", "/")
        for root in ROOTS:
            for cand, pkg in ((root + rel + ".py", False), (root + rel + "/__init__.py", True)):
                if cand in SOURCES:
                    return importlib.util.spec_from_loader(name, self, origin=cand, is_package=pkg)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        path = module.__spec__.origin
        module.__file__ = path
        exec(compile(SOURCES[path], path, "exec"), module.__dict__)


def register(sources):
    SOURCES.update(sources)
    ROOTS[:] = sorted({p.rsplit("/", 1)[0] + "/" if "/" in p else "" for p in SOURCES})
    if not any(isinstance(f, Siblings) for f in sys.meta_path):
        at = next((i for i, f in enumerate(sys.meta_path) if getattr(f, "__name__", "") == "PathFinder"),
                  len(sys.meta_path))
        sys.meta_path.insert(at, Siblings())


proto.write("ready\n")
proto.flush()

def load(path, sha, src):
    got = modules.get(path)
    if got is None or got[0] != sha:
        m = types.ModuleType("gating_check_" + sha[:12])
        m.__file__ = path
        exec(compile(src, path, "exec"), m.__dict__)
        got = modules[path] = (sha, m)
    return got[1]

for line in sys.stdin:
    req = json.loads(line)
    try:
        if req.get("sources"):
            register(req["sources"])
        ctx = req.get("context") or {}
        if req.get("inline") is not None:
            code = req["inline"]
            ns = {"output": req["output"], "context": ctx, "vars": ctx.get("vars", {}), "json": json}
            try:
                result = eval(compile(code, "<inline>", "eval"), ns)
            except SyntaxError:
                exec(compile(req["wrapped"], "<inline>", "exec"), ns)
                result = ns["__inline__"](req["output"], ctx, ctx.get("vars", {}))
        else:
            fn = getattr(load(req["path"], req["sha"], req["src"]), req["fn"], None)
            if not callable(fn):
                raise LookupError(f"{req['path']} defines no function {req['fn']!r}")
            result = fn(*req["args"]) if "args" in req else fn(req["output"], ctx)
        out = json.dumps({"ok": True, "result": result})
    except BaseException as e:
        tb = e.__traceback__
        where = ""
        while tb is not None:
            if tb.tb_frame.f_code.co_filename in (req.get("path"), "<inline>") or \
                    tb.tb_frame.f_code.co_filename in SOURCES:
                where = f" ({tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})"
            tb = tb.tb_next
        hint = ("; a module the checks import must be a file of `evals.python` (beside them, or in a package "
                "there)" if isinstance(e, ModuleNotFoundError) else "")
        out = json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}{where}{hint}"[:2000]})
    proto.write(out + "\n")
    proto.flush()
'''


class PythonChecks:
    """The child process that runs one run's Python checks; calls are serialised."""

    def __init__(self, sources: Mapping[str, bytes], timeout_s: float = DEFAULT_TIMEOUT_S,
                 cwd: str | None = None):
        self.sources = sources
        self.timeout_s = timeout_s
        self.cwd = cwd
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._told = False  # whether this process has the sources its checks may import

    async def _start(self) -> asyncio.subprocess.Process:
        if self._proc is None or self._proc.returncode is not None:
            env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "SYSTEMROOT") if k in os.environ}
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-c", _WORKER, str(MEMORY_BYTES), cwd=self.cwd, env=env,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                limit=MAX_REPLY)
            assert self._proc.stdout is not None
            try:  # the interpreter's start is not the check's time: wait for it apart
                ready = await asyncio.wait_for(self._proc.stdout.readline(), STARTUP_TIMEOUT_S)
            except TimeoutError:
                ready = b""
            if ready.strip() != b"ready":
                await self._kill()
                raise CheckError(f"the Python process for checks did not start within {STARTUP_TIMEOUT_S:g} s")
            self._told = False
        return self._proc

    async def call(self, ref: Ref, output: str, context: Mapping[str, Any]) -> Any:
        """The function's return value; raises CheckError."""
        req: dict[str, Any] = {"output": output, "context": context}
        if ref.inline is not None:
            req |= {"inline": ref.inline, "wrapped": _as_function(ref.inline)}
        else:
            src = self.sources.get(ref.path or "")
            if src is None:
                raise CheckError(f"{ref.path} is not a declared Python file of the judging revision's evals "
                                 "(`evals.python`); a check added in a pull request takes effect after merge")
            req |= {"path": ref.path, "fn": ref.fn, "sha": hashlib.sha256(src).hexdigest(),
                    "src": src.decode("utf-8", "replace")}
        try:
            line = (json.dumps(req, default=str) + "\n").encode()
        except ValueError as e:
            raise CheckError(f"{ref.label}: the case cannot be passed to Python: {e}") from None
        async with self._lock:
            proc = await self._start()
            assert proc.stdin is not None and proc.stdout is not None
            if not self._told:  # once per process: the modules its checks may import
                line = (json.dumps({**req, "sources": _texts(self.sources)}, default=str) + "\n").encode()
                self._told = True
            try:
                proc.stdin.write(line)
                await proc.stdin.drain()
                raw = await asyncio.wait_for(proc.stdout.readline(), self.timeout_s)
            except TimeoutError:
                await self._kill()
                raise CheckError(f"{ref.label} did not return within {self.timeout_s:g} s") from None
            except (ConnectionError, ValueError, asyncio.LimitOverrunError) as e:
                await self._kill()
                raise CheckError(f"{ref.label}: the Python process failed ({type(e).__name__})") from None
        if not raw:
            await self._kill()
            raise CheckError(f"{ref.label}: the Python process exited (out of memory, or the check ended it)")
        got = json.loads(raw)
        if not got.get("ok"):
            raise CheckError(f"{ref.label} raised {got.get('error')}")
        return got.get("result")

    async def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()
        self._proc = None

    async def aclose(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except TimeoutError:
                await self._kill()
        self._proc = None


def _texts(sources: Mapping[str, bytes]) -> dict[str, str]:
    """The declared Python files as text: a check imports its siblings from these, never from the disk."""
    return {p: b.decode("utf-8", "replace") for p, b in sources.items() if p.endswith(".py")}


def verdict(result: Any, threshold: float | None) -> tuple[bool, float, str]:
    """(passed, score, reason) from what a check returned: a bool, a number, or {pass, score, reason}."""
    if isinstance(result, bool):
        return result, 1.0 if result else 0.0, "returned True" if result else "returned False"
    if isinstance(result, (int, float)):
        score = float(result)
        ok = score >= threshold if threshold is not None else score > 0
        return ok, score, f"score {score:g}" + (f" (threshold {threshold:g})" if threshold is not None else "")
    if isinstance(result, dict):
        passed = result.get("pass", result.get("pass_"))
        scored = result.get("score")
        if passed is None and isinstance(scored, (int, float)) and not isinstance(scored, bool):
            passed = scored >= threshold if threshold is not None else scored > 0
        if not isinstance(passed, bool):
            raise CheckError("a check's mapping needs `pass` (true or false) or a numeric `score`")
        if scored is None:
            scored = 1.0 if passed else 0.0
        if not isinstance(scored, (int, float)) or isinstance(scored, bool):
            raise CheckError(f"a check's `score` must be a number, got {type(scored).__name__}")
        return passed, float(scored), str(result.get("reason") or ("passed" if passed else "failed"))
    raise CheckError(f"a check returns true/false, a number or {{pass, score, reason}}, not {type(result).__name__}")


def generate(ref: Ref, sources: Mapping[str, bytes], timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Any]:
    """The cases a generator function returns (`evals.generate`), run like a check; raises DatasetError."""
    import subprocess

    src = sources.get(ref.path or "")
    if src is None or ref.path is None:
        raise DatasetError([f"gating.yml: evals.generate: {ref.path} is not a declared Python file of the evals: add "
                            "it to `evals.python`"])
    req: dict[str, Any] = {"path": ref.path, "fn": ref.fn, "sha": hashlib.sha256(src).hexdigest(),
                           "src": src.decode("utf-8", "replace"), "args": [], "sources": _texts(sources)}
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "SYSTEMROOT") if k in os.environ}
    try:
        done = subprocess.run([sys.executable, "-I", "-c", _WORKER, str(MEMORY_BYTES)], input=json.dumps(req) + "\n",
                              capture_output=True, text=True, timeout=timeout_s + STARTUP_TIMEOUT_S, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise DatasetError([f"gating.yml: evals.generate: {ref.label} did not return within {timeout_s:g} s"]) from None
    first = [ln for ln in done.stdout.splitlines() if ln != "ready"][:1]
    got = json.loads(first[0]) if first else {"ok": False, "error": "the Python process exited"}
    if not got.get("ok"):
        raise DatasetError([f"gating.yml: evals.generate: {ref.label} raised {got.get('error')}"])
    cases = got.get("result")
    if not isinstance(cases, list):
        raise DatasetError([f"gating.yml: evals.generate: {ref.label} returned {type(cases).__name__}, not a list of "
                            "cases"])
    return cases
