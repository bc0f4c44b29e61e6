"""Provider calls over real HTTP to the local test LLM server: retries, timeouts, error categories."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from eval_support import a, fast_retries, live_env, llm, load, write_repo  # noqa: F401

from gating.evals.providers import (
    ChatRequest,
    ClientPool,
    ProviderError,
    RetryPolicy,
    call_live,
    call_with_retries,
    endpoint,
    retry_after_seconds,
)
from gating.evals.runner import run_evals
from gating.testing.llm_server import LLMServer


def call(server: LLMServer, content: str, provider: str = "openai", policy: RetryPolicy | None = None,
         timeout_s: float | None = None, system: str | None = None):
    msgs = ((("system", system),) if system else ()) + (("user", content),)
    req = ChatRequest(provider, "gpt-4o-mini-2024-07-18" if provider == "openai" else "claude-3-5-haiku-20241022",
                      msgs, (("temperature", 0),))

    async def go():
        pool = ClientPool(4, timeout_s or 10)
        try:
            if policy is None:
                return await call_live(pool, req, server.env(), timeout_s)
            waits: list[float] = []
            got = await call_with_retries(pool, req, server.env(), policy, timeout_s,
                                          on_retry=lambda err, w: waits.append(w))
            return got, waits
        finally:
            await pool.aclose()

    return asyncio.run(go())


def test_openai_chat_completion_with_usage(llm: LLMServer) -> None:  # noqa: F811
    got = call(llm, a("Hello there"))
    assert (got.text, got.tokens_in, got.tokens_out) == ("Hello there", 11, 2)  # 8 word/punctuation tokens + 3 per message
    sent = llm.log[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer test-key"
    assert sent["body"] == {"model": "gpt-4o-mini-2024-07-18", "temperature": 0,
                            "messages": [{"role": "user", "content": "[[answer: Hello there]]"}]}


def test_anthropic_messages_with_system_and_usage(llm: LLMServer) -> None:  # noqa: F811
    got = call(llm, a("Bonjour"), provider="anthropic", system="Be brief.")
    assert (got.text, got.tokens_out) == ("Bonjour", 1)
    sent = llm.log[-1]
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == "test-key"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert sent["body"]["system"] == "Be brief."
    assert sent["body"]["max_tokens"] == 1024
    assert sent["body"]["messages"] == [{"role": "user", "content": "[[answer: Bonjour]]"}]


def test_retries_honour_retry_after(llm: LLMServer) -> None:  # noqa: F811
    t0 = time.monotonic()
    (got, waits) = call(llm, a("finally") + "[[fault:429 retry_after=0.3 times=2]]", policy=fast_retries())
    elapsed = time.monotonic() - t0
    assert got.text == "finally"
    assert waits == [0.3, 0.3]  # the server's Retry-After, not the 10 ms backoff of the policy
    times = [e["t"] for e in llm.log]
    gaps = [b - a_ for a_, b in zip(times, times[1:], strict=False)]
    assert len(times) == 3
    assert all(0.3 <= g < 1.0 for g in gaps), gaps
    assert 0.6 <= elapsed < 3.0


def test_backoff_without_retry_after_is_exponential_with_jitter() -> None:
    import random

    p = RetryPolicy(max_retries=4, base_s=1.0, max_delay_s=3.0, rng=random.Random(7))
    err = ProviderError("provider", "HTTP 500", retryable=True)
    waits = [p.delay(i, err) for i in range(1, 6)]
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0 and 1.5 <= waits[2] <= 3.0 and 1.5 <= waits[3] <= 3.0
    assert waits[4] is None  # gave up after max_retries
    assert p.delay(1, ProviderError("provider", "HTTP 400")) is None  # not retryable
    limited = ProviderError("rate_limit", "HTTP 429", retry_after=120.0, retryable=True)
    assert p.delay(1, limited) == 120.0  # the server's wait, exactly
    limited.retry_after = 3600.0
    assert p.delay(1, limited) is None  # an hour: give up rather than stall the run


def test_server_error_is_retried_then_succeeds(llm: LLMServer) -> None:  # noqa: F811
    (got, waits) = call(llm, a("ok") + "[[fault:500 times=1]]", policy=fast_retries())
    assert got.text == "ok" and len(waits) == 1 and llm.requests == 2


@pytest.mark.parametrize(("fault", "category", "message"), [
    ("[[fault:malformed]]", "parse", "response body is not JSON"),
    ("[[fault:content_filter]]", "content_filter", "the provider filtered the answer"),
    ("[[fault:500]]", "provider", "HTTP 500 from {url}/v1/chat/completions: boom"),
    ("[[fault:429]]", "rate_limit", "HTTP 429 from {url}/v1/chat/completions: slow down"),
], ids=["malformed", "content-filter", "server-error", "rate-limit"])
def test_failures_are_classified(llm: LLMServer, fault: str, category: str, message: str) -> None:  # noqa: F811
    with pytest.raises(ProviderError) as e:
        call(llm, fault)
    assert e.value.category == category
    assert e.value.message.startswith(message.format(url=llm.url))


def test_timeout_is_classified(llm: LLMServer) -> None:  # noqa: F811
    t0 = time.monotonic()
    with pytest.raises(ProviderError) as e:
        call(llm, "[[fault:slow delay=2]]", timeout_s=0.2)
    assert e.value.category == "timeout"
    assert e.value.message.startswith(f"no answer from {llm.openai_base_url}/chat/completions within 0.2 s")
    assert time.monotonic() - t0 < 1.5  # gave up long before the 2 s answer


def test_connection_refused_is_a_transport_error() -> None:
    server = LLMServer().start()
    server.stop()  # the port is closed now

    with pytest.raises(ProviderError) as e:
        call(server, "hi")
    assert e.value.category == "transport"
    v1 = server.openai_base_url
    assert e.value.message.startswith(f"cannot connect to {v1}/chat/completions: is the server running, and is "
                                      f"OPENAI_BASE_URL={v1} right? (ConnectError")


def test_run_completes_and_reports_every_failure(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    cases = [
        {"id": "ok", "prompt": "p", "vars": {"q": a("fine")}, "assert": [{"type": "equals", "value": "fine"}]},
        {"id": "slow", "prompt": "p", "vars": {"q": "[[fault:slow delay=2]]"}},
        {"id": "garbled", "prompt": "p", "vars": {"q": "[[fault:malformed]]"}},
        {"id": "filtered", "prompt": "p", "vars": {"q": "[[fault:content_filter]]"}},
        {"id": "limited", "prompt": "p", "vars": {"q": "[[fault:429 retry_after=0.05]]"}},
        {"id": "broken", "prompt": "p", "vars": {"q": "[[fault:500]]"}},
    ]
    snap, reader = load(write_repo(tmp_path / "r", cases))
    run = run_evals(snap, reader, env=live_env(llm), timeout_s=0.3, retry=fast_retries(1))
    got = {c.id: (c.passed, c.error) for c in run.cases}
    assert got == {"ok": (True, None), "slow": (False, "timeout"), "garbled": (False, "parse"),
                   "filtered": (False, "content_filter"), "limited": (False, "rate_limit"),
                   "broken": (False, "provider")}
    m = run.metrics
    assert (m["errors"], m["error_rate:timeout"], m["error_rate:rate_limit"]) == (5, 1 / 6, 1 / 6)
    assert run.stats["retries"] == {"provider": 1, "rate_limit": 1, "timeout": 1}


def test_base_url_and_key_from_the_environment_like_the_sdks() -> None:
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1/", "OPENAI_API_KEY": "k1",
           "ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "ANTHROPIC_API_KEY": "k2", "MY_KEY": "k3"}
    assert endpoint("openai", None, None, env) == ("http://127.0.0.1:9/v1", "k1")
    assert endpoint("vllm", None, None, env) == ("http://127.0.0.1:9/v1", "k1")
    assert endpoint("anthropic", None, None, env) == ("http://127.0.0.1:9", "k2")
    assert endpoint("openai", "http://127.0.0.1:11434/v1", "MY_KEY", env) == ("http://127.0.0.1:11434/v1", "k3")
    assert endpoint("ollama", "http://127.0.0.1:11434/v1", None, {}) == ("http://127.0.0.1:11434", None)  # native API


def test_no_key_for_a_public_endpoint_fails_before_sending() -> None:
    with pytest.raises(ProviderError) as e:
        endpoint("openai", None, None, {})
    assert e.value.message.startswith("no API key for openai: set OPENAI_API_KEY")
    assert e.value.category == "setup"


def test_a_retry_after_too_long_to_take_says_so(llm: LLMServer) -> None:  # noqa: F811
    with pytest.raises(ProviderError) as e:
        call(llm, a("never") + "[[fault:429 retry_after=500]]", policy=fast_retries())
    assert e.value.category == "rate_limit"
    assert e.value.message.endswith("(the server asked to wait 500 s; a request waits at most 120 s)")


def test_retry_after_forms() -> None:
    assert retry_after_seconds(httpx.Headers({"retry-after": "2"})) == 2.0
    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    assert retry_after_seconds(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}),
                               now=1445412480.0) == 10.0
    assert retry_after_seconds(httpx.Headers({"retry-after": "soon"})) is None


# -- answers whose shape is unusual: real HTTP from a server that replies with a fixed body ---------

SHAPED = {
    "parts": {"choices": [{"finish_reason": "stop", "message": {"content": [{"type": "text", "text": "hel"},
                                                                            {"type": "text", "text": "lo"}]}}]},
    "number": {"choices": [{"finish_reason": "stop", "message": {"content": 42}}]},
    "text-usage": {"choices": [{"finish_reason": "stop", "message": {"content": "ok"}}],
                   "usage": {"prompt_tokens": "5", "completion_tokens": "many"}},
    "array": [1, 2],
    "openai-error": {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota"}},
    "anthropic-error": {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
}


REFUSED = {  # status, body of a provider's refusal to answer at all
    "anthropic-blocked": (400, {"type": "error", "error": {"type": "invalid_request_error",
                                                           "message": "Output blocked by content filtering policy"}}),
    "azure-filtered": (400, {"error": {"code": "content_filter", "message": "The response was filtered"}}),
}


class ShapedServer(LLMServer):
    """Replies 200 with SHAPED[name] (or REFUSED[name]) to a message holding `<<name>>`."""

    async def _respond(self, method, path, raw, headers):  # type: ignore[no-untyped-def]
        for name, body in SHAPED.items():
            if f"<<{name}>>".encode() in raw:
                self.requests += 1
                return 200, {}, __import__("json").dumps(body).encode()
        for name, (status, body) in REFUSED.items():
            if f"<<{name}>>".encode() in raw:
                self.requests += 1
                return status, {}, __import__("json").dumps(body).encode()
        return await super()._respond(method, path, raw, headers)


@pytest.mark.parametrize(("name", "provider", "category", "message"), [
    ("number", "openai", "parse", "unexpected response shape: `content` is int, not text"),
    ("array", "openai", "parse", "unexpected response shape: the body is a JSON list, not an object"),
    ("openai-error", "openai", "provider", "the provider answered 200 with an error: You exceeded your current quota"),
    ("anthropic-error", "anthropic", "provider", "the provider answered 200 with an error: Overloaded"),
    ("anthropic-blocked", "anthropic", "content_filter",
     "HTTP 400 from {url}/v1/messages: Output blocked by content filtering policy"),
    ("azure-filtered", "openai", "content_filter", "HTTP 400 from {url}/v1/chat/completions: The response was filtered"),
], ids=["content-number", "json-array", "openai-error-body", "anthropic-error-body", "anthropic-blocked",
        "azure-filtered"])
def test_unusable_answers_are_classified_with_a_readable_message(name: str, provider: str, category: str,
                                                                 message: str) -> None:
    with ShapedServer() as server, pytest.raises(ProviderError) as e:
        call(server, f"<<{name}>>", provider=provider)
    assert (e.value.category, e.value.message) == (category, message.format(url=server.url))


def test_content_parts_are_joined_and_unreadable_usage_is_unknown() -> None:
    with ShapedServer() as server:
        got = call(server, "<<parts>>")
        assert (got.text, got.tokens_in, got.tokens_out) == ("hello", None, None)
        got = call(server, "<<text-usage>>")
        assert (got.text, got.tokens_in, got.tokens_out) == ("ok", None, None)


def test_a_run_survives_odd_answers_and_prices_only_what_it_can(tmp_path: Path) -> None:
    names = ["parts", "number", "text-usage", "array", "openai-error"]
    cases = [{"id": n, "prompt": "p", "vars": {"q": f"<<{n}>>"}, "assert": [{"type": "icontains", "value": "o"}]}
             for n in names]
    snap, reader = load(write_repo(tmp_path / "r", cases))
    with ShapedServer() as server:
        run = run_evals(snap, reader, env=live_env(server), retry=fast_retries(1))
    got = {c.id: (c.passed, c.error, c.cost_usd) for c in run.cases}
    assert got == {"parts": (True, None, None), "number": (False, "parse", None),
                   "text-usage": (True, None, None), "array": (False, "parse", None),
                   "openai-error": (False, "provider", None)}
