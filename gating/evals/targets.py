"""What an eval case is run against: a prompt component, the user's command, or an HTTP endpoint.

Prompt templates are Jinja2 in a sandbox with StrictUndefined: a variable the case does not define is
an error, never an empty string, and whatever a template raises for one case's vars (`{{ 1/0 }}`, an
overflowing `range`, an unknown filter) fails that case with category `render`, never the run. A prompt file is plain text (the user message) or a YAML list of
chat messages; a prompt may name a system prompt component, rendered first. Command and HTTP
targets receive the case as JSON and answer with JSON; the per-stage timings they report
(embedding, retrieval, llm, post, ...) are kept.
"""

from __future__ import annotations

import asyncio
import json
import os
import posixpath
import re
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from ruamel.yaml.error import YAMLError

from gating import limits
from gating.errors import InputError
from gating.evals.dataset import Case
from gating.evals.llm import LLM
from gating.evals.providers import ChatRequest, ClientPool, ProviderError, RetryPolicy, classify_status
from gating.system.schema import PROVIDER_SETTINGS

ROLES = ("system", "user", "assistant")
MAX_REPEATED = 1_000_000  # items `*` may build in a template (a prompt is far smaller)
MAX_EXPONENT = 10_000  # an integer `**` beyond this is CPU for nothing


class _Sandbox(SandboxedEnvironment):
    """Jinja's sandbox (which already caps `range`), with `*` and `**` bounded too: one case's vars
    cannot make a render take the runner's memory or CPU; going over fails that case."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_REPEATED:
                    raise OverflowError(f"`*` would build {len(seq) * n:,} items; a template may build at most "
                                        f"{MAX_REPEATED:,}")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 \
                and right > MAX_EXPONENT:
            raise OverflowError(f"exponent {right:,} is too large (at most {MAX_EXPONENT:,} in a template)")
        return super().call_binop(context, operator, left, right)


_ENV = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False)


class RenderError(InputError):
    """A prompt could not be rendered for a case (category `render`)."""


@dataclass
class TargetOutput:
    output: str
    tokens_in: int | None = None
    tokens_out: int | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    cost_usd: float | None = None
    cached: bool = False
    provider: str | None = None
    model: str | None = None
    messages: tuple[tuple[str, str], ...] = ()  # what was sent, for the judge's view of the input


@dataclass
class CompiledPrompt:
    name: str
    messages: list[tuple[str, jinja2.Template]]
    model: dict[str, Any] | None
    error: str | None = None


def _parse_prompt_file(path: str, text: str, default_role: str) -> list[tuple[str, str]]:
    if posixpath.splitext(path)[1].lower() not in (".yml", ".yaml"):
        return [(default_role, text)]
    try:
        doc = limits.load_yaml(text, path)
    except limits.LimitError as e:
        raise RenderError(str(e)) from None
    except YAMLError as e:
        raise RenderError(f"{path}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(doc, list) or not doc:
        raise RenderError(f"{path}: a YAML prompt is a non-empty list of messages with `role` and `content`")
    out = []
    for i, m in enumerate(doc):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise RenderError(f"{path}: message {i + 1} needs `role` ({', '.join(ROLES)}) and string `content`")
        out.append((m["role"], m["content"]))
    return out


class PromptLibrary:
    """Every prompt component of a snapshot, compiled once; a broken one fails only its own cases."""

    def __init__(self, prompts: Mapping[str, dict[str, Any]], models: Mapping[str, dict[str, Any]],
                 contents: Mapping[str, bytes]):
        self.prompts: dict[str, CompiledPrompt] = {}
        for name, p in prompts.items():
            model = models.get(p["model"]) if p.get("model") else None
            try:
                msgs: list[tuple[str, str]] = []
                if p.get("system"):
                    sp = prompts[p["system"]]
                    msgs += _parse_prompt_file(sp["file"], contents[sp["file"]].decode("utf-8"), "system")
                msgs += _parse_prompt_file(p["file"], contents[p["file"]].decode("utf-8"), "user")
                compiled = [(role, _ENV.from_string(src)) for role, src in msgs]
                self.prompts[name] = CompiledPrompt(name, compiled, model)
            except (RenderError, jinja2.TemplateSyntaxError) as e:
                where = f"{p['file']}:{e.lineno}: " if isinstance(e, jinja2.TemplateSyntaxError) else ""
                self.prompts[name] = CompiledPrompt(name, [], model, f"prompt {name!r}: {where}{e}")
            except Exception as e:  # the template compiler raising on odd input: this prompt's cases fail
                self.prompts[name] = CompiledPrompt(name, [], model, f"prompt {name!r}: {p['file']}: the template "
                                                    f"could not be compiled: {type(e).__name__}: {e}")

    def render(self, name: str, vars_: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        cp = self.prompts.get(name)
        if cp is None:  # a case the base defines, for a prompt this revision no longer has
            raise RenderError(f"prompt {name!r} is not defined in this revision's manifest (removed or renamed?)")
        if cp.error:
            raise RenderError(cp.error)
        try:
            return tuple((role, t.render(**vars_)) for role, t in cp.messages)
        except jinja2.UndefinedError as e:
            raise RenderError(f"prompt {name!r}: {e.message} (add it to the case's vars)") from None
        except jinja2.TemplateError as e:
            raise RenderError(f"prompt {name!r}: {e}") from None
        except Exception as e:  # raised by the template's own expressions for these vars
            raise RenderError(f"prompt {name!r}: the template raised {type(e).__name__}: {e}") from None


def chat_request(model: Mapping[str, Any], messages: tuple[tuple[str, str], ...], repeat: int = 0,
                 extra_params: Mapping[str, Any] | None = None) -> ChatRequest:
    params = {**(model.get("params") or {}), **(extra_params or {})}
    return ChatRequest(
        provider=model["provider"], model=model["model"], messages=messages,
        params=tuple(sorted(params.items())), base_url=model.get("base_url"),
        api_key_env=model.get("api_key_env"), repeat=repeat,
        options=tuple(sorted((k, model[k]) for k in PROVIDER_SETTINGS if k in model)),
    )


class PromptTarget:
    kind = "prompt"

    def __init__(self, library: PromptLibrary, llm: LLM):
        self.library = library
        self.llm = llm

    async def run(self, case: Case, repeat: int) -> TargetOutput:
        messages = self.library.render(case.prompt or "", case.vars)
        model = self.library.prompts[case.prompt or ""].model
        if model is None:
            raise RenderError(f"prompt {case.prompt!r} names no model to call")
        req = chat_request(model, messages, repeat)
        got = await self.llm.complete(req, case.file)
        # "total" is the model call as recorded, so cached and replayed cases report stable latencies.
        return TargetOutput(
            got.text, got.tokens_in, got.tokens_out, {"llm": got.latency_ms, "total": got.latency_ms},
            cached=got.source != "live", provider=req.provider, model=req.model, messages=messages,
        )


def case_payload(case: Case, repeat: int, messages: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    d: dict[str, Any] = {"id": case.id, "prompt": case.prompt, "vars": case.vars, "repeat": repeat}
    if case.expected is not None:
        d["expected"] = case.expected
    if messages:
        d["messages"] = [{"role": r, "content": c} for r, c in messages]
    return d


def parse_target_reply(raw: bytes, source: str) -> TargetOutput:
    """`{"output": str, "latency_ms": {stage: ms}, "tokens_in", "tokens_out", "cost_usd", "model",
    "error": {"category", "message"}}`; anything else is a parse error."""
    try:
        d = json.loads(raw)
    except ValueError:
        raise ProviderError("parse", f"{source} did not print a JSON object ({raw[:80]!r})") from None
    if not isinstance(d, dict):
        raise ProviderError("parse", f"{source} replied with JSON that is not an object")
    err = d.get("error")
    if err:
        cat = err.get("category", "provider") if isinstance(err, dict) else "provider"
        msg = err.get("message", "") if isinstance(err, dict) else str(err)
        raise ProviderError(cat if cat in ("rate_limit", "timeout", "content_filter", "parse", "transport")
                            else "provider", f"{source}: {msg}")
    if not isinstance(d.get("output"), str):
        raise ProviderError("parse", f"{source} replied without a string `output`")
    stages = d.get("latency_ms") or {}
    lat = {str(k): float(v) for k, v in stages.items() if isinstance(v, (int, float))} if isinstance(stages, dict) else {}
    num = (lambda v: v if isinstance(v, (int, float)) and not isinstance(v, bool) else None)  # noqa: E731
    count = (lambda v: v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None)  # noqa: E731
    return TargetOutput(d["output"], count(d.get("tokens_in")), count(d.get("tokens_out")), lat,
                        cost_usd=num(d.get("cost_usd")), provider=d.get("provider"), model=d.get("model"))


class CommandTarget:
    """Runs the user's pipeline once per case: the case as JSON on stdin, the answer as JSON on stdout."""

    kind = "command"

    def __init__(self, command: str, cwd: str | None, env: Mapping[str, str], timeout_s: float,
                 library: PromptLibrary | None = None):
        self.argv = shlex.split(command)
        self.cwd = cwd
        self.env = {**os.environ, **env} if not env.get("PATH") else dict(env)
        self.timeout_s = timeout_s
        self.library = library

    async def run(self, case: Case, repeat: int) -> TargetOutput:
        messages = self.library.render(case.prompt, case.vars) if self.library and case.prompt else ()
        payload = json.dumps(case_payload(case, repeat, messages)).encode()
        t0 = time.perf_counter()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=self.cwd, env={**self.env, "GATING_CASE_ID": case.id},
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as e:
            raise ProviderError("setup", f"cannot run {self.argv[0]!r} (evals.target.run): {e.strerror or e}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(payload), self.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise ProviderError("timeout", f"command did not answer within {self.timeout_s:g} s") from None
        total = (time.perf_counter() - t0) * 1000
        if proc.returncode != 0:
            tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise ProviderError("provider", f"command exited with {proc.returncode}: {tail[0][:200]}")
        got = parse_target_reply(out, "command")
        got.latency_ms["total"] = total
        got.messages = messages
        return got


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class HttpTarget:
    """POSTs the case as JSON to the user's endpoint; retries 429/5xx like a provider call."""

    kind = "http"

    def __init__(self, url: str, headers: Mapping[str, str], env: Mapping[str, str], pool: ClientPool,
                 policy: RetryPolicy, timeout_s: float, library: PromptLibrary | None = None):
        self.url = url
        self.headers = {"content-type": "application/json",
                        **{k: _VAR.sub(lambda m: env.get(m.group(1), ""), v) for k, v in headers.items()}}
        self.pool = pool
        self.policy = policy
        self.timeout_s = timeout_s
        self.library = library

    async def run(self, case: Case, repeat: int) -> TargetOutput:
        import httpx

        messages = self.library.render(case.prompt, case.vars) if self.library and case.prompt else ()
        body = json.dumps(case_payload(case, repeat, messages)).encode()
        attempt = 0
        while True:
            t0 = time.perf_counter()
            try:
                try:
                    resp = await self.pool.post(self.url, body, self.headers, self.timeout_s)
                except httpx.TimeoutException:
                    raise ProviderError("timeout", f"no answer from {self.url} within {self.timeout_s:g} s",
                                        retryable=True) from None
                except httpx.ConnectError as e:
                    raise ProviderError("transport", f"cannot connect to {self.url}: is the endpoint running, and is "
                                        f"evals.target.url right? ({type(e).__name__}: {e})", retryable=True) from None
                except httpx.HTTPError as e:
                    raise ProviderError("transport", f"{type(e).__name__} from {self.url}: {e}", retryable=True) from None
                if resp.status_code >= 300:
                    raise classify_status(resp)
            except ProviderError as e:
                attempt += 1
                wait = self.policy.delay(attempt, e)
                if wait is None:
                    raise
                self.pool.backoff(e, wait)
                await asyncio.sleep(wait)
                continue
            got = parse_target_reply(resp.content, "endpoint")
            got.latency_ms["total"] = (time.perf_counter() - t0) * 1000
            got.messages = messages
            return got
