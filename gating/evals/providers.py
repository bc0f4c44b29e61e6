"""The one place that speaks to LLMs: OpenAI-compatible chat completions and Anthropic messages here,
and the native dialects of Azure OpenAI, Gemini, Vertex AI, Bedrock and Ollama in gating/evals/dialects.

Transport: without a proxy, one lean HTTP/1.1 pool on asyncio with h11 (gating/evals/http1.py), which
costs less than half the CPU per request of httpx on httpcore; behind a proxy, httpx.AsyncClients in
small shards (SHARD_CONNECTIONS connections each), the least busy first, since one httpcore pool
re-scans every connection each time a request starts or ends. Every failure becomes a ProviderError
with a category.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import re
import ssl
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if "httpx" not in sys.modules:
    # httpx's package imports its command-line client (rich, click, pygments: ~50 ms of start-up) when
    # those are installed; gating never calls it, so that import fails once here and httpx keeps the
    # stub it defines for a missing CLI. The marker is removed at once, so an explicit import still works.
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx
    finally:
        if sys.modules.get("httpx._main", 0) is None:
            del sys.modules["httpx._main"]
else:
    import httpx

from gating.errors import ServiceError
from gating.evals.gate import RequestGate

if TYPE_CHECKING:
    from gating.evals.dialects import Dialect
    from gating.evals.pacing import Pacer

try:
    import sniffio  # noqa: F401
except ImportError:
    # httpcore imports sniffio on every lock it takes; Python does not cache a failed import, so each
    # attempt searches sys.path again (about a millisecond of CPU per request). Record the absence once.
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

SHARD_CONNECTIONS = 4
DEFAULT_TIMEOUT_S = 60.0
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
ENV_NAMES = {"openai": ("OPENAI_BASE_URL", "OPENAI_API_KEY"), "anthropic": ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY")}
# Providers that speak the OpenAI chat-completions dialect.
OPENAI_DIALECT = {"openai", "vllm", "litellm"}


class ProviderError(ServiceError):
    """A request that did not produce an answer; `category` is one of records.ERROR_CATEGORIES."""

    def __init__(self, category: str, message: str, *, retry_after: float | None = None,
                 status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.category = category
        self.message = message
        self.retry_after = retry_after
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True)
class ChatRequest:
    """A rendered request to one model: what the cache and cassettes are keyed on."""

    provider: str
    model: str
    messages: tuple[tuple[str, str], ...]  # (role, content)
    params: tuple[tuple[str, Any], ...] = ()
    base_url: str | None = None  # from the manifest; not part of the cassette key (the cache key has it)
    api_key_env: str | None = None
    repeat: int = 0  # repeat index > 0 makes an otherwise identical request a distinct sample
    options: tuple[tuple[str, Any], ...] = ()  # the provider's own settings: deployment, region, project, ...

    def key_material(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "params": dict(self.params),
            "messages": [list(m) for m in self.messages],
        }
        if self.repeat:
            d["repeat"] = self.repeat
        if self.options:  # a deployment or a region can serve another model: part of the key
            d["options"] = dict(self.options)
        return d


@dataclass
class Completion:
    text: str
    tokens_in: int | None
    tokens_out: int | None
    latency_ms: float
    source: str = "live"  # live | cache | replay

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "tokens_in": self.tokens_in, "tokens_out": self.tokens_out,
                "latency_ms": round(self.latency_ms, 3)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str) -> Completion:
        return cls(str(d["text"]), d.get("tokens_in"), d.get("tokens_out"), float(d.get("latency_ms", 0.0)), source)


def _native(provider: str) -> Dialect | None:
    from gating.evals.dialects import dialect

    return dialect(provider)


def base_url_of(provider: str, base_url: str | None, env: Mapping[str, str],
                options: tuple[tuple[str, Any], ...] = ()) -> str | None:
    """The base URL a request goes to: manifest first, then the SDK environment variable, then the default."""
    native = _native(provider)
    if native is not None:
        return native.base_url(ChatRequest(provider, "", (), base_url=base_url, options=options), env)
    dialect = "openai" if provider in OPENAI_DIALECT else provider
    url_env = ENV_NAMES.get(dialect, ("", ""))[0]
    url = base_url or env.get(url_env) or DEFAULT_BASE_URLS.get(dialect)
    return url.rstrip("/") if url else None


def key_env_of(provider: str, api_key_env: str | None) -> str:
    """The environment variable the API key comes from (the manifest's api_key_env, else the SDK's)."""
    native = _native(provider)
    if native is not None:
        return native.key_env(ChatRequest(provider, "", (), api_key_env=api_key_env))
    dialect = "openai" if provider in OPENAI_DIALECT else provider
    return api_key_env or ENV_NAMES.get(dialect, ("", ""))[1]


def url_setting(provider: str, base_url: str | None, env: Mapping[str, str]) -> str:
    """Where the base URL came from, as the user would fix it: `OPENAI_BASE_URL=...`, the manifest, the default."""
    dialect = "openai" if provider in OPENAI_DIALECT else provider
    url_env = ENV_NAMES.get(dialect, ("", ""))[0]
    if base_url:
        return f"base_url: {base_url} in gating.yml"
    if env.get(url_env):
        return f"{url_env}={env[url_env]}"
    return f"the default base URL {DEFAULT_BASE_URLS.get(dialect)}; set {url_env} or base_url in gating.yml"


def endpoint(provider: str, base_url: str | None, api_key_env: str | None,
             env: Mapping[str, str]) -> tuple[str, str | None]:
    """(base URL, API key): manifest first, then the SDK environment variables, then the default.
    No URL, or no key for a public provider, is a `setup` error raised before anything is sent."""
    native = _native(provider)
    if native is not None:
        req = ChatRequest(provider, "", (), base_url=base_url, api_key_env=api_key_env)
        url = native.require_url(req, env)
        return url, native.require_key(req, env, url)
    dialect = "openai" if provider in OPENAI_DIALECT else provider
    key_env = key_env_of(provider, api_key_env)
    found = base_url_of(provider, base_url, env)
    if not found:
        raise ProviderError("setup", f"no base URL for provider {provider!r}: set base_url in gating.yml")
    url = found
    key = env.get(key_env) if key_env else None
    if not key and url == DEFAULT_BASE_URLS.get(dialect):
        raise ProviderError("setup", f"no API key for {provider}: set {key_env} (or a base_url "
                            f"for a local server), or run on recorded cassettes")
    return url, key


class ClientPool:
    """The HTTP client of a run's process: keep-alive connections, at most `concurrency` of them.

    Without a proxy it is one http1.Pool (asyncio and h11: the HTTP/1.1 that httpx speaks, without
    the per-request CPU of httpcore's pool, its locks and httpx's request model). When the environment
    names a proxy (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY), it is httpx.AsyncClients, which honour it, in
    shards of SHARD_CONNECTIONS connections, least busy first. Either way failures surface as httpx
    exceptions and answers as httpx.Response.

    Every request first passes `gate` (gating/evals/gate.py): the run-wide in-flight bound and
    rate-limit pause, shared with the run's other worker processes when it has any. With a `pacer`
    (gating.evals.pacing), each request first waits for its adaptive slot and reports its answer to it:
    the pacer is per process (it adapts this process's share), the gate is per run."""

    def __init__(self, concurrency: int, timeout_s: float = DEFAULT_TIMEOUT_S, gate: RequestGate | None = None,
                 pacer: Pacer | None = None):
        self.gate = gate if gate is not None else RequestGate(max(1, concurrency))
        self.pacer = pacer
        self.timeout_s = timeout_s
        self.direct = not _proxied()
        self.clients: list[Any]
        self._tls: ssl.SSLContext | None = None
        if self.direct:
            from gating.evals.http1 import Pool

            self.clients = [Pool(concurrency, self.tls, _DEFAULT_HEADERS)]
        else:
            tls = self.tls()
            limits = httpx.Limits(max_connections=SHARD_CONNECTIONS, max_keepalive_connections=SHARD_CONNECTIONS)
            self.clients = [httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout_s), verify=tls)
                            for _ in range(max(1, -(-concurrency // SHARD_CONNECTIONS)))]
        self.busy = [0] * len(self.clients)

    def tls(self) -> ssl.SSLContext:
        """One trust store for all shards (loading it costs ~30 ms each), loaded when first needed."""
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def post(self, url: str, body: bytes, headers: Mapping[str, str],
                   timeout_s: float | None = None) -> httpx.Response:
        if self.pacer is None:
            return await self._post(url, body, headers, timeout_s)
        sent = await self.pacer.acquire()
        resp: httpx.Response | None = None
        try:
            resp = await self._post(url, body, headers, timeout_s)
            return resp
        finally:
            self.pacer.done(sent, None if resp is None else resp.status_code, {} if resp is None else resp.headers)

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str],
                    timeout_s: float | None = None) -> httpx.Response:
        await self.gate.acquire()
        try:
            if self.direct:
                sent = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
                resp: httpx.Response = await self.clients[0].post(url, body, sent, timeout_s or self.timeout_s)
                if resp.status_code >= 300:  # an error names the URL it came from
                    resp.request = httpx.Request("POST", url)
                return resp
            i = self.busy.index(min(self.busy))
            self.busy[i] += 1
            try:
                kw: dict[str, Any] = {"timeout": httpx.Timeout(timeout_s)} if timeout_s else {}
                resp = await self.clients[i].post(url, content=body, headers=headers, **kw)
                return resp
            finally:
                self.busy[i] -= 1
        finally:
            self.gate.release()

    def backoff(self, err: ProviderError, wait: float) -> None:
        """A request will wait `wait` s before its retry: a rate limit's Retry-After holds every request back."""
        if err.category == "rate_limit" and err.retry_after is not None:
            self.gate.pause(wait)

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients))


_DEFAULT_HEADERS = [(b"accept", b"*/*"), (b"user-agent", f"python-httpx/{httpx.__version__}".encode())]


def _proxied() -> bool:
    """Whether the environment sends HTTP through a proxy (which only the httpx clients honour)."""
    found = urllib.request.getproxies()
    return any(found.get(k) for k in ("http", "https", "all"))


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Retry-After as seconds (delta or HTTP date), or retry-after-ms; None when absent or bad."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    v = headers.get("retry-after")
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(v).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _server_message(resp: httpx.Response) -> str | None:
    try:
        err = resp.json().get("error")
        msg = err.get("message") if isinstance(err, dict) else err
    except (ValueError, AttributeError):
        msg = None
    return str(msg) if msg else None


def _where(resp: httpx.Response) -> str:
    """`HTTP 404 from <url>`: the status and the URL that answered it (when the response knows its request)."""
    try:
        return f"HTTP {resp.status_code} from {resp.request.url}"
    except RuntimeError:
        return f"HTTP {resp.status_code}"


# OpenAI `content_policy_violation`, Azure `content_filter`, Anthropic "blocked by content filtering policy".
_FILTERED = re.compile(r"content[_ ](?:filter|policy)", re.I)
SETUP_STATUSES = (401, 403, 404)  # the key or the URL is wrong: asking again does not help


def classify_status(resp: httpx.Response) -> ProviderError:
    s = resp.status_code
    said = _server_message(resp)
    msg = _where(resp) + (f": {said}" if said else "")
    if s == 429:
        return ProviderError("rate_limit", msg, retry_after=retry_after_seconds(resp.headers), status=s,
                             retryable=True)
    if s in (408, 504):
        return ProviderError("timeout", msg, status=s, retryable=True)
    if s == 400 and _FILTERED.search(resp.text):
        return ProviderError("content_filter", msg, status=s)
    if s >= 500 or s == 409:
        return ProviderError("provider", msg, retry_after=retry_after_seconds(resp.headers), status=s,
                             retryable=True)
    if s in SETUP_STATUSES:
        return ProviderError("setup", msg, status=s)
    return ProviderError("provider", msg, status=s)


def explain_setup(resp: httpx.Response, req: ChatRequest, env: Mapping[str, str], key_sent: bool) -> ProviderError:
    """A 401/403/404 from a model provider, with the fix: which variable to set, or what the URL lacks."""
    said = _server_message(resp)
    tail = f" (the server said: {said})" if said else ""
    key_env = key_env_of(req.provider, req.api_key_env)
    base = base_url_of(req.provider, req.base_url, env) or ""
    if resp.status_code == 401:
        fix = f"the API key was refused: set a valid {key_env}" if key_sent else f"no API key was sent: set {key_env}"
    elif resp.status_code == 403:
        fix = f"the API key may not use model {req.model!r}: check the access of {key_env}"
    elif req.provider in OPENAI_DIALECT and not base.endswith("/v1"):
        fix, tail = "is the base URL missing /v1?", f" ({url_setting(req.provider, req.base_url, env)})"
    else:
        setting = url_setting(req.provider, req.base_url, env)
        fix, tail = f"is model {req.model!r} served there?", f" ({setting}" + (f"; the server said: {said})" if said else ")")
    return ProviderError("setup", f"{_where(resp)}: {fix}{tail}", status=resp.status_code)


def build_body(req: ChatRequest) -> dict[str, Any]:
    params = dict(req.params)
    if req.provider == "anthropic":
        system = "\n\n".join(c for r, c in req.messages if r == "system")
        body: dict[str, Any] = {"model": req.model, "max_tokens": params.pop("max_tokens", 1024), **params,
                                "messages": [{"role": r, "content": c} for r, c in req.messages if r != "system"]}
        if system:
            body["system"] = system
        return body
    return {"model": req.model, **params, "messages": [{"role": r, "content": c} for r, c in req.messages]}


def _tokens(v: Any) -> int | None:
    """A usage count, or None when the server reported something that is not one."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _text(content: Any) -> str:
    """The answer text: a string, or a list of content parts (as some OpenAI-compatible servers send)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return "".join(str(p.get("text") or "") for p in content if p.get("type", "text") == "text")
    raise ProviderError("parse", f"unexpected response shape: `content` is {type(content).__name__}, not text")


def parse_response(provider: str, data: Any) -> tuple[str, int | None, int | None]:
    """(text, tokens in, tokens out) from a provider's JSON; refusals raise content_filter, an error
    body sent with 200 (some gateways do) is a provider error with the server's message."""
    if not isinstance(data, dict):
        raise ProviderError("parse", f"unexpected response shape: the body is a JSON {_json_kind(data)}, not an object")
    err = data.get("error")
    if err and "choices" not in data and "content" not in data:
        msg = err.get("message") if isinstance(err, dict) else err
        kind = str(err.get("type") or err.get("code") or "") if isinstance(err, dict) else ""
        raise ProviderError("rate_limit" if "rate_limit" in kind else "provider",
                            f"the provider answered 200 with an error: {msg or kind or 'no message'}")
    try:
        if provider == "anthropic":
            if data.get("stop_reason") == "refusal":
                raise ProviderError("content_filter", "the provider refused (stop_reason: refusal)")
            text = "".join(str(b.get("text") or "") for b in data["content"] if b.get("type") == "text")
            usage = u if isinstance(u := data.get("usage"), dict) else {}
            return text, _tokens(usage.get("input_tokens")), _tokens(usage.get("output_tokens"))
        choice = data["choices"][0]
        if choice.get("finish_reason") == "content_filter":
            raise ProviderError("content_filter", "the provider filtered the answer (finish_reason: content_filter)")
        text = _text(choice["message"].get("content"))
        usage = u if isinstance(u := data.get("usage"), dict) else {}
        return text, _tokens(usage.get("prompt_tokens")), _tokens(usage.get("completion_tokens"))
    except KeyError as e:
        raise ProviderError("parse", f"unexpected response shape: missing {e}") from None
    except (IndexError, TypeError, AttributeError):
        raise ProviderError("parse", "unexpected response shape: no answer in "
                            + json.dumps(data, ensure_ascii=False)[:120]) from None


def _json_kind(v: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(v), "null")


async def call_live(pool: ClientPool, req: ChatRequest, env: Mapping[str, str],
                    timeout_s: float | None = None) -> Completion:
    """One HTTP request, no retries. Raises ProviderError."""
    native = _native(req.provider)
    if native is not None:
        prepared = native.prepare(req, env)
        t0 = time.perf_counter()
        resp = await _post(pool, prepared.url, prepared.body, prepared.headers, timeout_s,
                           native.url_setting(req, env))
        latency = (time.perf_counter() - t0) * 1000
        if resp.status_code != 200:
            raise native.error(resp, req, env, prepared.key_sent)
        text, tin, tout = native.parse(_json_of(resp))
        return Completion(text, tin, tout, latency)
    base, key = endpoint(req.provider, req.base_url, req.api_key_env, env)
    headers = {"content-type": "application/json"}
    if req.provider == "anthropic":
        url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if key:
            headers["x-api-key"] = key
    elif req.provider in OPENAI_DIALECT:
        url = base + "/chat/completions"
        if key:
            headers["authorization"] = f"Bearer {key}"
    else:
        raise ProviderError("setup", f"provider {req.provider!r} is not supported for live calls")
    body = json.dumps(build_body(req)).encode()
    t0 = time.perf_counter()
    resp = await _post(pool, url, body, headers, timeout_s, url_setting(req.provider, req.base_url, env))
    latency = (time.perf_counter() - t0) * 1000
    if resp.status_code != 200:
        err = classify_status(resp)
        raise explain_setup(resp, req, env, bool(key)) if err.category == "setup" else err
    text, tin, tout = parse_response(req.provider, _json_of(resp))
    return Completion(text, tin, tout, latency)


async def _post(pool: ClientPool, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float | None,
                setting: str) -> httpx.Response:
    """POST, with transport failures as ProviderErrors that name the setting to check."""
    try:
        return await pool.post(url, body, headers, timeout_s)
    except httpx.TimeoutException as e:
        raise ProviderError("timeout", f"no answer from {url} within {timeout_s or pool.timeout_s:g} s "
                            f"({type(e).__name__})", retryable=True) from None
    except httpx.ConnectError as e:
        raise ProviderError("transport", f"cannot connect to {url}: is the server running, and is "
                            f"{setting} right? ({type(e).__name__}: {e})", retryable=True) from None
    except httpx.HTTPError as e:
        raise ProviderError("transport", f"{type(e).__name__} from {url}: {e}", retryable=True) from None


def _json_of(resp: httpx.Response) -> Any:
    try:
        return json.loads(resp.content)
    except ValueError:
        raise ProviderError("parse", f"response body is not JSON ({len(resp.content)} bytes)") from None


async def call_embed(pool: ClientPool, req: Any, env: Mapping[str, str], timeout_s: float | None = None) -> list[list[float]]:
    """Embeddings of `req.texts` (a dialects.EmbedRequest), one vector per text, in order. Raises ProviderError."""
    native = _native(req.provider)
    if native is not None:
        prepared = native.prepare_embed(req, env)
        resp = await _post(pool, prepared.url, prepared.body, prepared.headers, timeout_s,
                           native.url_setting(req, env))
        if resp.status_code != 200:
            raise native.error(resp, req, env, prepared.key_sent)
        return native.parse_embed(_json_of(resp), len(req.texts))
    if req.provider not in OPENAI_DIALECT:
        raise ProviderError("setup", f"provider {req.provider} has no embeddings API; name an embedding model of "
                            "another provider")
    base, key = endpoint(req.provider, req.base_url, req.api_key_env, env)
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
    body = json.dumps({"model": req.model, "input": list(req.texts)}).encode()
    resp = await _post(pool, base + "/embeddings", body, headers, timeout_s,
                       url_setting(req.provider, req.base_url, env))
    if resp.status_code != 200:
        err = classify_status(resp)
        if err.category == "setup":
            chat = ChatRequest(req.provider, req.model, (), base_url=req.base_url, api_key_env=req.api_key_env)
            raise explain_setup(resp, chat, env, bool(key))
        raise err
    from gating.evals.dialects.azure import Azure

    return Azure().parse_embed(_json_of(resp), len(req.texts))  # Azure's embeddings are OpenAI's shape


async def embed_completion(pool: ClientPool, req: Any, env: Mapping[str, str],
                           timeout_s: float | None = None) -> Completion:
    """call_embed as a Completion (the vectors as JSON text), so the cache and cassettes keep embeddings too."""
    t0 = time.perf_counter()
    vectors = await call_embed(pool, req, env, timeout_s)
    return Completion(json.dumps(vectors), None, None, (time.perf_counter() - t0) * 1000)


@dataclass
class RetryPolicy:
    """Exponential backoff, each wait jittered between half and all of its step; a server's Retry-After
    wins when it is given (one over max_retry_after_s gives up rather than stall the run)."""

    max_retries: int = 3
    base_s: float = 0.5
    max_delay_s: float = 30.0
    max_retry_after_s: float = 120.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, err: ProviderError) -> float | None:
        """Seconds to wait before retry `attempt` (1-based), or None to give up."""
        if not err.retryable or attempt > self.max_retries:
            return None
        if err.retry_after is not None:
            return err.retry_after if err.retry_after <= self.max_retry_after_s else None
        cap = min(self.max_delay_s, self.base_s * 2.0 ** (attempt - 1))
        return cap / 2 + self.rng.uniform(0, cap / 2)


async def call_with_retries(pool: ClientPool, req: ChatRequest, env: Mapping[str, str], policy: RetryPolicy,
                            timeout_s: float | None = None, on_retry: Any = None) -> Completion:
    attempt = 0
    call = embed_completion if hasattr(req, "texts") else call_live
    while True:
        try:
            got = await call(pool, req, env, timeout_s)
            if pool.pacer is not None and got.tokens_in is not None:
                pool.pacer.tokens(got.tokens_in + (got.tokens_out or 0))
            return got
        except ProviderError as err:
            attempt += 1
            wait = policy.delay(attempt, err)
            if wait is None:
                if err.retryable and err.retry_after is not None and err.retry_after > policy.max_retry_after_s:
                    raise ProviderError(err.category, f"{err.message} (the server asked to wait "
                                        f"{err.retry_after:g} s; a request waits at most "
                                        f"{policy.max_retry_after_s:g} s)", retry_after=err.retry_after,
                                        status=err.status) from err
                raise
            if on_retry:
                on_retry(err, wait)
            pool.backoff(err, wait)
            await asyncio.sleep(wait)
