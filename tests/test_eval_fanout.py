"""Worker processes for one run: the same result as one process, one in-flight bound and one rate-limit
pause for all of them, against the real test LLM server on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from eval_support import a, fast_retries, live_env, llm, load, self_signed, write_repo  # noqa: F401

from gating.errors import GatingError
from gating.evals import fanout
from gating.evals.gate import RequestGate
from gating.evals.records import RunResult
from gating.evals.runner import run_evals
from gating.testing.llm_server import LLMServer

pytestmark = pytest.mark.skipif(not fanout.can_fork(), reason="worker processes are forked (Linux)")

CHECKS = '''\
def has_order(output, context):
    return {"pass": "order" in output, "score": 0.75 if "order" in output else 0.25, "reason": "looked"}
'''


def cases(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        q = a(f"order {i} ships" if i % 3 else f"nothing for {i}")
        if i % 17 == 5:
            q += " [[fault:500]]"  # never answers: an error case after the retries
        if i % 11 == 3:
            q += f" [[fault:429 retry_after=0.01 times=1]] {i}"  # answers on the retry
        out.append({"id": f"c{i:04d}", "prompt": "p", "vars": {"q": q}, "tags": ["t" + str(i % 4)],
                    "assert": [{"type": "icontains", "value": f"order {i}"},
                               {"type": "python", "value": "file://evals/checks.py:has_order"},
                               {"type": "max-tokens", "value": 200}]})
    return out


def comparable(run: RunResult, server: LLMServer) -> dict[str, Any]:
    """A run as a reader compares it: everything but measured durations, timestamps and the server's port."""
    d = asdict(run)
    for key in ("started_at", "finished_at"):
        d.pop(key)
    d["metrics"] = {k: v for k, v in d["metrics"].items() if "latency" not in k}
    d["stats"].pop("waited_s")
    d["stats"]["rate_limit"] = "rate_limit" in d["stats"]  # its figures are timings; that it was met is not
    for c in d["cases"]:
        c.pop("latency_ms")
        c.pop("repeat_latency_ms")
        c["error_message"] = c["error_message"].replace(server.url, "<server>")
    return d


def test_worker_processes_give_the_same_result_as_one_process(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    root = write_repo(tmp_path / "r", cases(150), files={"evals/checks.py": CHECKS},
                      evals={"python": ["evals/checks.py"]})
    snap, reader = load(root)
    with LLMServer() as server:  # a server of its own for each run: its faults count per request body
        one = comparable(run_evals(snap, reader, env=live_env(server), cache_dir=None, retry=fast_retries(2),
                                   concurrency=8, workers=1), server)
    seen: list[int] = []

    class Count:
        def begin(self, total: int) -> None:
            seen.append(total)

        def advance(self, result: Any) -> None:
            seen.append(1)

        def end(self) -> None:
            seen.append(-1)

    with caplog.at_level(logging.INFO, logger="gating.evals.runner"), LLMServer() as server:
        many = run_evals(snap, reader, env=live_env(server), cache_dir=None, retry=fast_retries(2), concurrency=8,
                         workers=3, progress=Count())
        assert comparable(many, server) == one
    assert "evaluating 150 cases in 3 processes" in caplog.text
    assert [c.id for c in many.cases] == [f"c{i:04d}" for i in range(150)]
    assert many.metrics["errors"] == 9 and many.stats["retries"]["rate_limit"] == 13
    assert seen == [150] + [1] * 150 + [-1]  # progress saw every case, from every process


def test_the_in_flight_bound_holds_across_processes(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "r", [{"id": f"c{i}", "prompt": "p", "vars": {"q": a(f"x {i}")},
                                        "assert": [{"type": "icontains", "value": "x"}]} for i in range(120)])
    snap, reader = load(root)
    with LLMServer(latency=0.02) as server:
        got = run_evals(snap, reader, env=live_env(server), cache_dir=None, concurrency=6, workers=2)
        assert got.metrics["passed"] == 120
        assert 1 <= server.max_inflight <= 6


def test_a_retry_after_seen_by_one_process_holds_back_the_others(tmp_path: Path) -> None:
    n = 240
    rows = [{"id": f"c{i:03d}", "prompt": "p", "vars": {"q": a(f"x {i}")}, "assert": [{"type": "icontains", "value": "x"}]}
            for i in range(n)]
    rows[30]["vars"]["q"] += " [[fault:429 retry_after=3 times=1]]"
    root = write_repo(tmp_path / "r", rows)
    snap, reader = load(root)
    with LLMServer(latency=0.01) as server:
        got = run_evals(snap, reader, env=live_env(server), cache_dir=None, concurrency=4, workers=2)
        log = list(server.log)
    assert got.metrics["passed"] == n and got.stats["retries"] == {"rate_limit": 1}
    limited = [e["t"] for e in log if "fault:429" in e["body"]["messages"][-1]["content"]]
    assert len(limited) == 2  # the 429, then its retry
    # after the 429 was answered, no process sent anything until the server's Retry-After had passed
    # (what was already on its way when the 429 came back arrives within the first moments)
    told = limited[0] + 0.01
    during = [t for t in (e["t"] for e in log) if told + 1.0 < t < told + 2.9]
    assert during == []
    assert sum(1 for e in log if e["t"] > told + 2.9) > 100  # the rest of the run came after the pause


def _pauser(gate: RequestGate, ready: Any) -> None:
    gate.pause(30)
    ready.set()


def _holder(gate: RequestGate, n: int, hold: float) -> None:
    async def one() -> None:
        await gate.acquire()
        try:
            await asyncio.sleep(hold)
        finally:
            gate.release()

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(n)))

    asyncio.run(main())


def test_the_gate_is_one_state_for_every_process() -> None:
    ctx = multiprocessing.get_context("fork")
    gate = RequestGate(3, shared=True)
    procs = [ctx.Process(target=_holder, args=(gate, 4, 0.01)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert gate.peak <= 3 and gate.inflight == 0  # 12 requests from 3 processes, never more than 3 at once

    ready = ctx.Event()
    p = ctx.Process(target=_pauser, args=(gate, ready))
    p.start()
    assert ready.wait(30)
    p.join(30)
    assert gate.try_acquire() > 20  # another process's pause holds this one back
    assert gate.paused_until > time.monotonic() + 20


def test_the_gate_limit_can_be_lowered_while_a_run_goes_on() -> None:
    gate = RequestGate(4)
    assert all(gate.try_acquire() == 0 for _ in range(4))
    gate.set_limit(2)
    gate.release()
    gate.release()
    assert gate.try_acquire() > 0  # two still in flight, the limit is two
    gate.release()
    assert gate.try_acquire() == 0


def test_when_a_run_fans_out() -> None:
    wc = fanout.worker_count
    assert wc(None, cases=2000, concurrency=64, mode="live", target="prompt", cores=2) == 2
    assert wc(None, cases=2000, concurrency=64, mode="live", target="prompt", cores=8) == 4  # 16 in flight each
    assert wc(None, cases=2000, concurrency=64, mode="live", target="prompt", cores=1) == 1
    assert wc(None, cases=2000, concurrency=16, mode="live", target="prompt", cores=8) == 1
    assert wc(None, cases=50, concurrency=64, mode="live", target="prompt", cores=8) == 1
    assert wc(None, cases=2000, concurrency=64, mode="replay", target="prompt", cores=8) == 1
    assert wc(None, cases=2000, concurrency=64, mode="live", target="command", cores=8) == 1
    assert wc(3, cases=2000, concurrency=64, mode="record", target="http", cores=1) == 3
    assert wc(9, cases=5, concurrency=4, mode="live", target="prompt", cores=1) == 4
    assert fanout.shares(64, 3) == [22, 21, 21] and sum(fanout.shares(7, 7)) == 7


def test_the_worker_count_is_forced_by_option_then_environment_then_manifest() -> None:
    rw = fanout.requested_workers
    assert rw(2, {"GATING_EVAL_WORKERS": "4"}, 6) == 2
    assert rw(None, {"GATING_EVAL_WORKERS": "4"}, 6) == 4
    assert rw(None, {"GATING_EVAL_WORKERS": "auto"}, 6) == 6
    assert rw(None, {}, None) is None
    with pytest.raises(GatingError, match="GATING_EVAL_WORKERS='many' is not a positive number"):
        rw(None, {"GATING_EVAL_WORKERS": "many"}, None)


def test_behind_a_proxy_the_pool_uses_httpx_which_honours_it(llm: LLMServer,  # noqa: F811
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from gating.evals.providers import ChatRequest, ClientPool, call_live

    assert ClientPool(4).direct  # no proxy: the engine's own HTTP/1.1 pool
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    pool = ClientPool(4)
    assert not pool.direct

    async def go() -> str:
        try:
            return (await call_live(pool, ChatRequest("openai", "m", (("user", a("via httpx")),)), llm.env())).text
        finally:
            await pool.aclose()

    assert asyncio.run(go()) == "via httpx"


def test_a_worker_process_that_fails_fails_the_run_and_says_why() -> None:
    import os

    from gating.evals.records import CaseResult

    parent = os.getpid()

    def make(gate: RequestGate, share: int) -> fanout.Engine:
        if os.getpid() != parent:
            raise RuntimeError("no pool for this worker")

        async def case(c: int) -> CaseResult:
            await asyncio.sleep(0.01)
            return CaseResult(id=str(c), prompt=None, passed=True, score=1.0)

        async def finish() -> tuple[Any, Any]:
            return None, {}

        return fanout.Engine(case, finish)

    with pytest.raises(GatingError, match="an eval worker process failed:(.|\n)*no pool for this worker"):
        asyncio.run(fanout.run_forked(make, list(range(50)), 4, 2, None))


def _plain(n: int) -> list[dict[str, Any]]:
    return [{"id": f"c{i:03d}", "prompt": "p", "vars": {"q": a(f"order {i}")},
             "assert": [{"type": "icontains", "value": f"order {i}"}]} for i in range(n)]


def test_recording_in_worker_processes_writes_the_cassette_one_process_writes(tmp_path: Path,
                                                                             llm: LLMServer) -> None:  # noqa: F811
    files = {}
    for workers in (1, 3):
        root = write_repo(tmp_path / f"w{workers}", _plain(90))
        snap, reader = load(root)
        got = run_evals(snap, reader, env=live_env(llm), cache_dir=None, record=True, concurrency=6, workers=workers)
        assert got.stats["live"] == 90 and list(got.stats["cassettes_written"]) == ["evals/cassettes/cases.jsonl"]
        lines = (root / "evals/cassettes/cases.jsonl").read_text().splitlines()
        files[workers] = [{**e, "response": {**e["response"], "latency_ms": 0}} for e in map(json.loads, lines)]
    assert files[3] == files[1] and len(files[1]) == 90  # the same entries in the same order (but durations)
    snap, reader = load(tmp_path / "w3")
    replayed = run_evals(snap, reader, env={"GATING_PROVIDER": "replay"}, cache_dir=None)
    assert replayed.metrics["passed"] == 90 and replayed.stats["replayed"] == 90


def test_worker_processes_fill_and_read_one_response_cache(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    snap, reader = load(write_repo(tmp_path / "r", _plain(90)))
    cache = tmp_path / "cache"
    first = run_evals(snap, reader, env=live_env(llm), cache_dir=cache, concurrency=6, workers=3)
    before = llm.requests
    again = run_evals(snap, reader, env=live_env(llm), cache_dir=cache, concurrency=6, workers=2)
    assert (first.stats["live"], again.stats["live"], again.stats["cache_hits"]) == (90, 0, 90)
    assert llm.requests == before and again.metrics["passed"] == 90
    assert len(list(cache.glob("seg-*.jsonl"))) == 3  # one segment per writing process


def test_the_pool_speaks_https_and_checks_the_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    import httpx

    from gating.evals.providers import ClientPool

    crt, pem = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(crt, pem)
    body = b'{"ok": true}'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readline() not in (b"\r\n", b""):
            pass
        await reader.readexactly(2)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
                     + body)
        await writer.drain()
        writer.close()

    async def go(trusted: bool) -> httpx.Response:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        if trusted:
            monkeypatch.setenv("SSL_CERT_FILE", str(crt))
        pool = ClientPool(1, 10)
        try:
            return await pool.post(f"https://localhost:{port}/v1/x", b"{}", {"content-type": "application/json"})
        finally:
            await pool.aclose()
            server.close()

    assert asyncio.run(go(trusted=True)).json() == {"ok": True}
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(go(trusted=False))
