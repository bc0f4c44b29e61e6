"""The engine's own HTTP/1.1 pool (gating/evals/http1.py) against the real local test LLM server:
framing, compression, keep-alive and its bound, TLS, and the failures a run reports."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from eval_support import a, self_signed

from gating.evals.http1 import Pool
from gating.evals.providers import ChatRequest, ClientPool, ProviderError, call_live
from gating.testing.llm_server import LLMServer

LONG = " ".join(f"word{i}" for i in range(200))  # an answer of many 64-byte chunks


def ask(server: LLMServer, texts: list[str], *, concurrency: int = 4, timeout_s: float = 10,
        env: dict[str, str] | None = None) -> list[str]:
    async def go() -> list[str]:
        pool = ClientPool(concurrency, timeout_s)
        try:
            reqs = [ChatRequest("openai", "m", (("user", t),)) for t in texts]
            got = await asyncio.gather(*(call_live(pool, r, env or server.env()) for r in reqs))
            return [g.text for g in got]
        finally:
            await pool.aclose()

    return asyncio.run(go())


def test_concurrent_requests_share_kept_alive_connections() -> None:
    with LLMServer(latency=0.05) as server:
        texts = [a(f"answer {i}") for i in range(64)]
        assert ask(server, texts * 3, concurrency=16) == [f"answer {i}" for i in range(64)] * 3
        assert server.max_inflight <= 16
        assert server.connections <= 16  # 192 requests, each connection reused


def test_the_pool_opens_no_more_connections_than_its_bound() -> None:
    async def go(url: str) -> list[int]:
        pool = Pool(2, ssl.create_default_context)
        body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
        try:
            got = await asyncio.gather(*(pool.post(url, body, [(b"content-type", b"application/json")], 10)
                                         for _ in range(8)))
            return [r.status_code for r in got]
        finally:
            await pool.aclose()

    with LLMServer(latency=0.05) as server:
        assert asyncio.run(go(server.openai_base_url + "/chat/completions")) == [200] * 8
        assert (server.connections, server.max_inflight) == (2, 2)


def test_a_caller_waiting_for_a_connection_times_out_naming_the_endpoint() -> None:
    async def go(url: str) -> list[Any]:
        pool = Pool(1, ssl.create_default_context)
        slow = b'{"model": "m", "messages": [{"role": "user", "content": "[[fault:slow delay=1]]"}]}'
        try:
            return await asyncio.gather(pool.post(url, slow, [], 5), pool.post(url, slow, [], 0.2),
                                        return_exceptions=True)
        finally:
            await pool.aclose()

    with LLMServer() as server:
        first, second = asyncio.run(go(server.openai_base_url + "/chat/completions"))
    assert first.status_code == 200
    assert isinstance(second, httpx.PoolTimeout)
    assert str(second) == f"no free connection to 127.0.0.1:{server.port} within 0.2 s (1 in use)"


def test_gzip_answers_are_decoded_and_chunked_ones_joined() -> None:
    with LLMServer(gzip=True, chunked=True) as server:
        assert ask(server, [a(LONG), a("short")]) == [LONG, "short"]
        assert server.log[-1]["headers"]["accept-encoding"] == "gzip, deflate"


def test_a_server_that_closes_after_each_answer_gets_a_new_connection_each_time() -> None:
    with LLMServer(keep_alive=1) as server:
        texts = [a(f"n{i}") for i in range(12)]
        assert ask(server, texts, concurrency=3) == [f"n{i}" for i in range(12)]
        assert server.connections == 12


def test_a_slow_answer_is_a_timeout_and_the_pool_goes_on(llm: LLMServer) -> None:  # noqa: F811
    async def go() -> tuple[str, str]:
        pool = ClientPool(2, 10)
        env = llm.env()
        try:
            with pytest.raises(ProviderError) as e:
                await call_live(pool, ChatRequest("openai", "m", (("user", "[[fault:slow delay=2]]"),)), env, 0.2)
            got = await call_live(pool, ChatRequest("openai", "m", (("user", a("after")),)), env)
            return e.value.category + ": " + e.value.message, got.text
        finally:
            await pool.aclose()

    err, after = asyncio.run(go())
    assert err == f"timeout: no answer from {llm.openai_base_url}/chat/completions within 0.2 s (ReadTimeout)"
    assert after == "after"


def test_nothing_listening_is_a_transport_error_naming_the_url_and_setting() -> None:
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "k"}
    with pytest.raises(ProviderError) as e:
        ask(LLMServer(), ["hi"], env=env)
    assert e.value.category == "transport"
    assert e.value.message.startswith("cannot connect to http://127.0.0.1:9/v1/chat/completions: is the server "
                                      "running, and is OPENAI_BASE_URL=http://127.0.0.1:9/v1 right? (ConnectError: "
                                      "cannot connect to 127.0.0.1:9:")


def test_a_rate_limit_answer_keeps_its_status_headers_and_url() -> None:
    async def go(url: str) -> httpx.Response:
        pool = ClientPool(2, 10)
        body = b'{"model": "m", "messages": [{"role": "user", "content": "[[fault:429 retry_after=7]]"}]}'
        try:
            return await pool.post(url, body, {"content-type": "application/json"})
        finally:
            await pool.aclose()

    with LLMServer() as server:
        url = server.openai_base_url + "/chat/completions"
        resp = asyncio.run(go(url))
    assert (resp.status_code, resp.headers["retry-after"], str(resp.request.url)) == (429, "7", url)


def test_https_is_verified_against_the_trust_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path)
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    with LLMServer(host="localhost", tls=served, chunked=True) as server:
        env = {**server.env(), "OPENAI_BASE_URL": f"https://localhost:{server.port}/v1"}
        with pytest.raises(ProviderError) as e:  # a certificate nobody vouches for is refused
            ask(server, [a("untrusted")], env=env)
        assert e.value.category == "transport" and "CERTIFICATE_VERIFY_FAILED" in e.value.message
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the trust store the default context reads
        assert ask(server, [a(f"over tls {i}") for i in range(6)], concurrency=2, env=env) == \
            [f"over tls {i}" for i in range(6)]
        assert server.connections <= 3  # the refused handshake, then two kept alive


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def go(server: LLMServer) -> list[str]:
        pool = ClientPool(2, 10)
        env = server.env()
        try:
            first = await call_live(pool, ChatRequest("openai", "m", (("user", a("before")),)), env)
            kept = [c for conns in pool.clients[0]._idle.values() for c in conns]
            for _ in range(200):  # till the server has closed the kept-alive connection
                if all(c.dead for c in kept):
                    break
                await asyncio.sleep(0.05)
            second = await call_live(pool, ChatRequest("openai", "m", (("user", a("after")),)), env)
            return [first.text, second.text]
        finally:
            await pool.aclose()

    with LLMServer(idle_timeout=0.1) as server:
        assert asyncio.run(go(server)) == ["before", "after"]
        assert server.connections == 2
