"""A local LLM server for tests, benchmarks and recording cassettes: OpenAI, Anthropic, and (through
llm_dialects) Azure OpenAI, Gemini, Vertex AI, Bedrock Converse and Ollama's native API.

Real HTTP/1.1 with keep-alive on loopback, served by asyncio (one event loop, so hundreds of
concurrent slow requests cost no threads). Answers are deterministic: an `answer` function of the
request, else a `[[answer: ...]]` directive in the messages, else an echo of the last user message.
Faults are injected by directives in the messages, so a dataset can provoke them:

    [[fault:429 retry_after=0.3 times=2]]   429 with Retry-After for the first 2 requests of this prompt
    [[fault:500 times=1]]                   500 once, then normal answers
    [[fault:503 retry_after=1]]             503 (service unavailable), with Retry-After when given
    [[fault:529 retry_after=1]]             529 (Anthropic's overloaded_error), with Retry-After when given
    [[fault:slow delay=2]]                  answer after 2 s (for client timeouts)
    [[fault:malformed]]                     200 with a truncated JSON body
    [[fault:content_filter]]                the provider's content-filter refusal

`times` counts per distinct request body; without it the fault is permanent; each dialect answers a
fault in its provider's own shape. Like the real APIs it serves only their paths (`/v1/chat/completions`,
`/v1/messages`, `/openai/deployments/D/chat/completions?api-version=V`, `/v1beta/models/M:generateContent`,
`/v1/projects/P/locations/L/publishers/google/models/M:generateContent`, `/model/M/converse`,
`/api/chat`, and their embeddings; any other path is a 404, so a base URL that lacks `/v1` fails as it
would in production); `api_key` makes it answer a request without that key as the provider would (401,
or Gemini's 400 API_KEY_INVALID), Bedrock requests must carry a valid SigV4 signature by a key in
`aws_keys`, and `refuse` answers every request with that status (403: the key may not use the model).
`limits` (a llm_ratelimit.RateLimits) makes it a rate-limited provider: requests and tokens per window,
429 with Retry-After past them, and the provider's rate-limit headers on every answer. Run standalone
with `python -m gating.testing.llm_server --latency 0.1 [--rpm N] [--tpm N]` (prints the URL, serves
until killed).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from gating.testing import llm_dialects
from gating.testing.llm_ratelimit import RateLimits

Answer = Callable[[str, dict[str, Any]], "str | None"]  # (api, request body) -> text or None

_DIRECTIVE = re.compile(r"\[\[(answer|fault):\s*(.*?)\]\]", re.S)
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
            529: "Overloaded"}
PATHS = {"/v1/chat/completions": "openai", "/v1/messages": "anthropic"}
AWS_KEY_ID, AWS_SECRET = "AKIDLOCALTEST", "local-test-secret"  # the SigV4 credentials env() hands out
_REFUSALS = {401: "Incorrect API key provided", 403: "You are not allowed to use this model",
             404: "The model does not exist or you do not have access to it"}


@dataclass
class Fault:
    kind: str  # 429 | 500 | 503 | 529 | slow | malformed | content_filter
    retry_after: float | None = None
    delay: float = 0.0
    times: int | None = None


def parse_fault(spec: str) -> Fault:
    kind, *opts = spec.split()
    kv = dict(o.split("=", 1) for o in opts if "=" in o)
    return Fault(
        kind=kind,
        retry_after=float(kv["retry_after"]) if "retry_after" in kv else None,
        delay=float(kv.get("delay", 0)),
        times=int(kv["times"]) if "times" in kv else None,
    )


def _texts(api: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) of every message, the Anthropic `system` included."""
    out: list[tuple[str, str]] = []
    if api == "anthropic" and body.get("system"):
        sys_ = body["system"]
        out.append(("system", sys_ if isinstance(sys_, str) else " ".join(b.get("text", "") for b in sys_)))
    for m in body.get("messages") or []:
        c = m.get("content")
        if isinstance(c, list):
            c = " ".join(b.get("text", "") for b in c if isinstance(b, dict))
        out.append((str(m.get("role")), str(c or "")))
    return out


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: words and punctuation marks."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def default_answer(api: str, body: dict[str, Any]) -> str:
    return answer_of(_texts(api, body))


def answer_of(texts: list[tuple[str, str]]) -> str:
    """The `[[answer: ...]]` of the messages (the last one wins), else an echo of the last user message."""
    for _role, t in reversed(texts):
        for kind, arg in _DIRECTIVE.findall(t):
            if kind == "answer":
                return str(arg).strip()
    last_user = next((t for r, t in reversed(texts) if r == "user"), "")
    return "echo: " + _DIRECTIVE.sub("", last_user).strip()


@dataclass
class LLMServer:
    """Start with `.start()` (background thread) or use as a context manager; `.url` is the base."""

    latency: float = 0.0
    answer: Answer | None = None
    host: str = "127.0.0.1"
    port: int = 0
    requests: int = 0
    inflight: int = 0  # requests being answered now
    max_inflight: int = 0  # the most answered at once: what a client's concurrency bound is checked by
    log: list[dict[str, Any]] = field(default_factory=list)
    keep_log: bool = True
    api_key: str | None = None  # when set, a request without this key is answered 401
    refuse: int | None = None  # when set, every request is answered with this status and an error body
    aws_keys: dict[str, str] = field(default_factory=lambda: {AWS_KEY_ID: AWS_SECRET})  # SigV4: key id -> secret
    limits: RateLimits | None = None  # requests and tokens per window; None: unlimited
    connections: int = 0  # connections accepted: what a client's connection reuse is checked by
    gzip: bool = False  # gzip an answer when the request accepts it, as the public APIs do
    chunked: bool = False  # send answers with chunked transfer encoding, in small chunks
    keep_alive: int | None = None  # answers per connection before the server closes it (None: no bound)
    idle_timeout: float | None = None  # seconds a kept-alive connection may wait for a request before it is closed
    tls: ssl.SSLContext | None = None  # serve https with this server context
    _seen: dict[str, int] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.AbstractServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    def env(self) -> dict[str, str]:
        """Environment that points every provider's SDK conventions at this server."""
        return {
            "OPENAI_BASE_URL": self.openai_base_url,
            "OPENAI_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": "test-key",
            "AZURE_OPENAI_ENDPOINT": self.url,
            "AZURE_OPENAI_API_KEY": "test-key",
            "GOOGLE_GEMINI_BASE_URL": self.url,
            "GEMINI_API_KEY": "test-key",
            "GOOGLE_VERTEX_BASE_URL": self.url,
            "GOOGLE_OAUTH_ACCESS_TOKEN": "test-key",
            "GOOGLE_CLOUD_PROJECT": "test-project",
            "GOOGLE_CLOUD_LOCATION": "us-central1",
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": self.url,
            "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
            "AWS_REGION": "us-east-1",
            "OLLAMA_HOST": self.url,
        }

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> LLMServer:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self.port, backlog=1024, ssl=self.tls)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            self._server.close()
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

        self._thread = threading.Thread(target=run, name="llm-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the test LLM server did not start")
        return self

    def stop(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def serve_forever(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=1024, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        print(f"listening on {self.url}", flush=True)
        async with self._server:
            await self._server.serve_forever()

    # -- HTTP ------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), self.idle_timeout)
                except TimeoutError:  # closed without a word, as a provider's load balancer does
                    break
                if not line.strip():
                    break
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                self.inflight += 1
                self.max_inflight = max(self.max_inflight, self.inflight)
                try:
                    status, extra, payload = await self._respond(method, path, body, headers)
                finally:
                    self.inflight -= 1
                answered += 1
                last = (headers.get("connection", "").lower() == "close"
                        or (self.keep_alive is not None and answered >= self.keep_alive))
                head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", "content-type: application/json"]
                head += [f"{k}: {v}" for k, v in extra.items()]
                if self.gzip and "gzip" in headers.get("accept-encoding", ""):
                    payload = gzip.compress(payload)
                    head.append("content-encoding: gzip")
                if last:
                    head.append("connection: close")
                if self.chunked:
                    head.append("transfer-encoding: chunked")
                    parts = [payload[i:i + 64] for i in range(0, len(payload), 64)] + [b""]
                    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
                    for part in parts:  # one write each, so the client reads the chunks apart
                        writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                        await writer.drain()
                        await asyncio.sleep(0)
                else:
                    head.append(f"content-length: {len(payload)}")
                    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
                    await writer.drain()
                if last:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _respond(self, method: str, target: str, raw: bytes,
                       headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        path, _, raw_query = target.partition("?")
        native = llm_dialects.route(method, path)
        if native is not None:
            return await self._native(native, method, path, raw_query, raw, headers)
        if method == "GET" and path == "/stats":
            doc: dict[str, Any] = {"requests": self.requests, "cpu_s": time.process_time(),
                                   "max_inflight": self.max_inflight}
            if self.limits is not None:  # what the server admitted and refused, per window
                lim = self.limits
                doc["rate_limits"] = {"requests": lim.requests, "tokens": lim.tokens, "window_s": lim.window_s,
                                      "accepted": lim.accepted, "rejected": lim.rejected, "spent": lim.spent}
            return 200, {}, json.dumps(doc).encode()
        api = PATHS.get(path)
        if method != "POST" or api is None:
            return 404, {}, _error(f"Invalid URL ({method} {path})", "invalid_request_error")
        self.requests += 1
        sent = headers.get("x-api-key") if api == "anthropic" else headers.get("authorization", "").removeprefix("Bearer ")
        if self.api_key is not None and sent != self.api_key:
            return 401, {}, _error(_REFUSALS[401] if sent else "You didn't provide an API key", "invalid_api_key")
        if self.refuse is not None:
            return self.refuse, {}, _error(_REFUSALS.get(self.refuse, "refused"), "permission_error")
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, {}, b'{"error": {"message": "request body is not JSON"}}'
        entry = {"api": api, "path": path, "body": body, "headers": headers, "t": time.monotonic()}
        if self.keep_log:
            self.log.append(entry)
        tin = sum(count_tokens(t) + 3 for _, t in _texts(api, body))
        wait = self.limits.admit(tin) if self.limits is not None else None
        if wait is not None:
            return 429, self._limit_headers(api, wait), _error("Rate limit reached: please try again later",
                                                               "rate_limit_error" if api == "anthropic" else "requests")
        fault = self._fault(api, body, raw)
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault:
            if fault.kind == "429":
                hdr = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
                entry["answered"] = time.monotonic()  # when the 429 left: a test of the pause reads it
                return 429, hdr, json.dumps({"error": {"type": "rate_limit_error", "message": "slow down"}}).encode()
            if fault.kind == "500":
                return 500, {}, json.dumps({"error": {"type": "server_error", "message": "boom"}}).encode()
            if fault.kind in ("503", "529"):
                hdr = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
                entry["answered"] = time.monotonic()
                return int(fault.kind), hdr, json.dumps({"type": "error", "error": {
                    "type": "overloaded_error", "message": "Overloaded"}}).encode()
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
            if fault.kind == "malformed":
                return 200, {}, b'{"id": "x", "choices": [{"message": {"content": "trunc'
        text = (self.answer(api, body) if self.answer else None)
        if text is None:
            text = default_answer(api, body)
        filtered = bool(fault and fault.kind == "content_filter")
        tout = 0 if filtered else count_tokens(text)
        if self.limits is not None:
            self.limits.settle(tout)
        return 200, self._limit_headers(api), json.dumps(self._body(api, body, text, tin, tout, filtered)).encode()

    async def _native(self, r: llm_dialects.Route, method: str, path: str, raw_query: str, raw: bytes,
                      headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """A request in one of the native dialects (llm_dialects), answered in the same dialect."""
        self.requests += 1
        query = dict(parse_qsl(raw_query))
        denied = llm_dialects.check_auth(r, headers, query, self.api_key, self.aws_keys, method, path, raw_query, raw)
        if denied is not None:
            return denied
        if self.refuse is not None:
            return llm_dialects.refusal(r, self.refuse)
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, {}, b'{"error": {"message": "request body is not JSON"}}'
        if self.keep_log:
            self.log.append({"api": r.api, "path": path, "query": query, "body": body, "headers": headers,
                             "t": time.monotonic()})
        if r.kind == "embed":
            return llm_dialects.embed_reply(r, body)
        texts = llm_dialects.texts(r.api, body)
        tin = sum(count_tokens(t) + 3 for _, t in texts)
        wait = self.limits.admit(tin) if self.limits is not None else None
        if wait is not None:
            status, hdr, payload = llm_dialects.fault_reply(r.api, "429", wait) or (429, {}, b"{}")
            return status, {**hdr, **self._limit_headers(r.api, wait)}, payload
        fault = self._fault_in(texts, raw)
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault and fault.kind == "slow":
            await asyncio.sleep(fault.delay)
        elif fault:
            got = llm_dialects.fault_reply(r.api, fault.kind, fault.retry_after)
            if got is not None:
                return got
        text = self.answer(r.api, body) if self.answer else None
        if text is None:
            text = answer_of(texts)
        filtered = bool(fault and fault.kind == "content_filter")
        tout = 0 if filtered else count_tokens(text)
        if self.limits is not None:
            self.limits.settle(tout)
        status, hdr, payload = llm_dialects.answer_body(r.api, r.model or str(body.get("model", "")), text, tin,
                                                        tout, filtered)
        return status, {**hdr, **self._limit_headers(r.api)}, payload

    def _limit_headers(self, api: str, retry_after: float | None = None) -> dict[str, str]:
        return self.limits.headers(api, retry_after) if self.limits is not None else {}

    def _fault(self, api: str, body: dict[str, Any], raw: bytes) -> Fault | None:
        return self._fault_in(_texts(api, body), raw)

    def _fault_in(self, texts: list[tuple[str, str]], raw: bytes) -> Fault | None:
        for _role, t in texts:
            for kind, arg in _DIRECTIVE.findall(t):
                if kind != "fault":
                    continue
                f = parse_fault(arg)
                if f.times is None:
                    return f
                key = hashlib.sha256(raw).hexdigest()
                n = self._seen.get(key, 0)
                self._seen[key] = n + 1
                return f if n < f.times else None
        return None

    @staticmethod
    def _body(api: str, req: dict[str, Any], text: str, tin: int, tout: int, filtered: bool) -> dict[str, Any]:
        model = req.get("model", "test-model")
        if api == "openai":
            return {
                "id": "chatcmpl-local", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "finish_reason": "content_filter" if filtered else "stop",
                             "message": {"role": "assistant", "content": None if filtered else text}}],
                "usage": {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout},
            }
        return {
            "id": "msg_local", "type": "message", "role": "assistant", "model": model,
            "content": [] if filtered else [{"type": "text", "text": text}],
            "stop_reason": "refusal" if filtered else "end_turn",
            "usage": {"input_tokens": tin, "output_tokens": tout},
        }


def _error(message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind}}).encode()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="local OpenAI/Anthropic-compatible test LLM server")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    ap.add_argument("--no-log", action="store_true", help="do not keep request bodies in memory")
    ap.add_argument("--rpm", type=int, help="requests per window (default: unlimited)")
    ap.add_argument("--tpm", type=int, help="tokens per window (default: unlimited)")
    ap.add_argument("--window", type=float, default=60.0, help="the rate limits' window in seconds (default 60)")
    ap.add_argument("--no-rate-headers", action="store_true", help="send only Retry-After, on a 429")
    args = ap.parse_args(argv)
    limits = RateLimits(args.rpm, args.tpm, args.window, send_headers=not args.no_rate_headers) \
        if args.rpm or args.tpm else None
    server = LLMServer(latency=args.latency, port=args.port, keep_log=not args.no_log, limits=limits)
    try:
        asyncio.run(server.serve_forever())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
