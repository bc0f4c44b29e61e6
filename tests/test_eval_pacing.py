"""Adaptive concurrency under rate limits (gating.evals.pacing) and the test LLM server's rate limits.

The controller is tested on a hand-moved clock; the runs against the rate-limited server assert
what the server counted (requests admitted and refused), never wall-clock throughput (that is
bench/rate_limit.py's job, with the load average beside it).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from check_support import Harness, greet_prompt, write_system
from eval_support import MODELS, live_env, load, write_repo

from gating.commands.cli import main
from gating.evals.pacing import (
    INITIAL_SLOTS,
    RATE_CUT,
    RATE_FIRST,
    RATE_MIN_ANSWERS,
    RATE_PROBE_FIRST,
    Pacer,
    PaceState,
    describe,
    parse_reset,
    read_headers,
)
from gating.evals.providers import RetryPolicy
from gating.evals.runner import run_evals
from gating.git.repository import commit_all, init_repo
from gating.testing.llm_ratelimit import RateLimits, go_duration
from gating.testing.llm_server import LLMServer

WALL = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def pacer(cap: int = 8, initial: int | None = None) -> tuple[Pacer, Clock]:
    """A pacer on a hand-moved clock, starting at `initial` slots (default: all of them)."""
    clock = Clock()
    return Pacer(cap, clock=clock, wall=lambda: WALL, initial=initial or cap), clock


def take(p: Pacer) -> float:
    return asyncio.run(asyncio.wait_for(p.acquire(), 5))


# -- reading the providers' headers ------------------------------------------------------------------


@pytest.mark.parametrize("value, seconds", [
    ("1s", 1.0), ("6m0s", 360.0), ("120ms", 0.12), ("1.5s", 1.5), ("1h2m3s", 3723.0), ("2", 2.0),
    ("2026-01-15T08:00:01.500Z", 1.5), (None, None), ("soon", None),
], ids=["seconds", "minutes", "millis", "fraction", "hours", "plain", "rfc3339", "absent", "junk"])
def test_reset_in_every_form_the_providers_write(value: str | None, seconds: float | None) -> None:
    wall = 1768464000.0  # 2026-01-15T08:00:00Z
    got = parse_reset(value, wall)
    assert got == (None if seconds is None else pytest.approx(seconds))


def test_openai_and_anthropic_headers_read_alike() -> None:
    openai = read_headers({"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499",
                           "x-ratelimit-reset-requests": "120ms", "x-ratelimit-limit-tokens": "30000",
                           "x-ratelimit-remaining-tokens": "29000", "x-ratelimit-reset-tokens": "2s"}, WALL)
    assert (openai.requests.limit, openai.requests.remaining, openai.requests.reset_s) == (500, 499, 0.12)
    assert openai.tokens.refill_rate() == pytest.approx(500.0)  # 1,000 tokens back in 2 s
    anthropic = read_headers({"anthropic-ratelimit-requests-limit": "50",
                              "anthropic-ratelimit-requests-remaining": "0",
                              "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:01Z",
                              "retry-after": "1"}, 1800000000.0)
    assert (anthropic.requests.limit, anthropic.requests.remaining, anthropic.retry_after) == (50, 0, 1.0)
    assert anthropic.tokens.remaining is None


# -- the controller ----------------------------------------------------------------------------------


def test_aimd_halves_once_per_round_and_grows_back_to_the_bound() -> None:
    p, clock = pacer(8)
    sent = [take(p) for _ in range(8)]
    clock.t += 1
    p.done(sent[0], 429, {})
    assert p.state.limit == 4  # halved
    p.done(sent[1], 429, {})  # sent before the cut: the same congestion, no second cut
    assert p.state.limit == 4
    for s in sent[2:]:
        p.done(s, 200, {})
    assert 5 < p.state.limit < 6  # about one slot per round of answers
    later = take(p)
    clock.t += 1
    p.done(later, 429, {})  # sent after the cut: a new round, a new cut
    assert p.state.limit == pytest.approx(2.65, abs=0.01)
    for _ in range(1000):
        p.done(take(p), 200, {})
    assert p.state.limit == 8  # never above evals.concurrency
    for _ in range(20):
        clock.t += 1
        p.done(take(p), 429, {})
    assert p.state.limit == 1  # never below one


def test_growth_slows_near_the_limit_where_the_last_429_came() -> None:
    state = PaceState(10)
    state.cut(0.0, 0.5, 1.0)
    assert state.limit == 5
    for _ in range(5):
        state.grow(64)  # 5 -> ~6: about one slot for a round of five answers
    assert 5.9 < state.limit < 6.1
    for _ in range(15):
        state.grow(64)  # to 8.09: 80% of the 10 where the 429 came
    assert 8.0 < state.limit < 8.1
    for _ in range(10):
        state.grow(64)  # from there, a tenth of the pace
    assert 8.1 < state.limit < 8.25


def test_slots_are_bounded_by_the_limit() -> None:
    state = PaceState(2)
    assert state.take(0.0) == 0.0 and state.take(0.0) == 0.0
    assert state.take(0.0) is None  # wait for a release
    state.release()
    assert state.take(0.0) == 0.0


def test_retry_after_of_one_request_pauses_every_other() -> None:
    p, clock = pacer(4)
    sent = [take(p) for _ in range(4)]
    p.done(sent[0], 429, {"retry-after": "2"})
    for s in sent[1:]:
        p.done(s, 200, {})
    assert p.state.take(clock.t) == pytest.approx(2.0)  # any request, not only the refused one
    clock.t += 1.5
    assert p.state.take(clock.t) == pytest.approx(0.5)
    clock.t += 0.5
    assert p.state.take(clock.t) == 0.0
    assert p.summary()["paused_s"] == pytest.approx(2.0)  # type: ignore[index]


def test_a_low_budget_spaces_requests_at_its_refill_rate_and_shrinks_the_limit() -> None:
    p, clock = pacer(8)
    p.state.limit = 6.0
    sent = take(p)
    # 4 requests left of 100, and 96 come back in 1.92 s: 50 a second, one every 20 ms at the target
    # of one request per slot (6); with fewer left, slower: 6/4 of that
    p.done(sent, 200, {"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "4",
                       "x-ratelimit-reset-requests": "1.92s"})
    assert p.state.interval == pytest.approx(0.03)
    assert p.state.limit == 2.0  # twice what was in flight (this one): what the refill rate needs, with room
    assert p.state.take(clock.t) == 0.0 and p.state.take(clock.t) == 0.0  # a late start may catch up once
    assert p.state.take(clock.t) == pytest.approx(0.03)
    clock.t += 0.03
    assert p.state.take(clock.t) is None  # and both slots are taken
    for _ in range(2):
        p.state.release()
    # the token budget counts in tokens per request, learnt from the answers' usage: 300 tokens left
    # is below two requests of 100 per slot (2): spaced at 100 tokens at 1,000 a second, 200/300 of that
    p.tokens(100)
    p.done(sent, 200, {"x-ratelimit-limit-tokens": "10000", "x-ratelimit-remaining-tokens": "300",
                       "x-ratelimit-reset-tokens": "9.7s"})
    assert p.state.interval == pytest.approx(0.1 * 200 / 300)
    # plenty left: no spacing, and the limit grows again
    p.done(sent, 200, {"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "90",
                       "x-ratelimit-reset-requests": "200ms"})
    assert p.state.interval == 0.0 and p.state.limit == 2.5


def test_waiters_get_a_released_slot() -> None:
    async def scenario() -> list[str]:
        p = Pacer(1)
        order: list[str] = []

        async def request(name: str, hold: float) -> None:
            sent = await p.acquire()
            order.append(name)
            await asyncio.sleep(hold)
            p.done(sent, 200, {})

        await asyncio.gather(request("a", 0.01), request("b", 0), request("c", 0))
        return order

    assert asyncio.run(scenario()) == ["a", "b", "c"]


def test_the_run_says_what_limit_it_found() -> None:
    p, clock = pacer(8)
    assert p.summary() is None  # never limited: nothing to say
    sent = take(p)
    clock.t += 1
    p.done(sent, 429, {"retry-after": "1", "x-ratelimit-limit-requests": "3000",
                       "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20ms"})
    clock.t += 1  # the pause is over
    for _ in range(60):
        sent = take(p)
        clock.t += 0.5
        p.done(sent, 200, {})
    got = p.summary()
    assert got is not None and got["throttled"] == 1 and got["requests_per_min"] == 116  # 60 answers in the 31 s since the 429
    assert got["provider_limits"] == {"requests": 3000}
    assert describe(got, 1) == ("rate limited: settled at ~1 concurrent, 116 requests/min; retries 1 "
                                "(the provider's limits: 3,000 requests per window)")


# -- the server's limits -----------------------------------------------------------------------------


def test_go_durations() -> None:
    assert [go_duration(s) for s in (0.0123, 1.5, 360, 61.25)] == ["12ms", "1.5s", "6m0s", "1m1.25s"]


def test_server_answers_429_with_retry_after_and_rate_limit_headers() -> None:
    with LLMServer(limits=RateLimits(requests=2, tokens=10_000, window_s=60)) as server:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "[[answer: four words right here]]"}]}
        with httpx.Client(base_url=server.openai_base_url) as c:
            first = c.post("/chat/completions", json=body)
            c.post("/chat/completions", json=body)
            third = c.post("/chat/completions", json=body)
        anthropic = httpx.post(server.url + "/v1/messages", json={**body, "max_tokens": 10})
        limits = server.limits
    h = first.headers
    assert first.status_code == 200
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("2", "1")
    assert re.fullmatch(r"\d+(\.\d+)?s", h["x-ratelimit-reset-requests"])  # about 30 s: one request back
    used = first.json()["usage"]["total_tokens"]
    assert (h["x-ratelimit-limit-tokens"], h["x-ratelimit-remaining-tokens"]) == ("10000", str(10_000 - used))
    assert third.status_code == 429 and third.json()["error"]["type"] == "requests"
    assert third.headers["retry-after"] == "30" and 29_000 < int(third.headers["retry-after-ms"]) <= 30_000
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert anthropic.status_code == 429 and anthropic.json()["error"]["type"] == "rate_limit_error"
    assert anthropic.headers["anthropic-ratelimit-requests-limit"] == "2"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", anthropic.headers["anthropic-ratelimit-requests-reset"])
    assert "x-ratelimit-limit-requests" not in anthropic.headers
    assert limits is not None and sum(limits.accepted.values()) == 2
    assert sum(limits.rejected.values()) == 2


def test_native_dialects_answer_the_limit_in_their_own_shape() -> None:
    with LLMServer(limits=RateLimits(requests=1, window_s=60)) as server:
        url = f"{server.url}/openai/deployments/d/chat/completions?api-version=2024-10-21"
        body = {"messages": [{"role": "user", "content": "hi"}]}
        ok = httpx.post(url, json=body, headers={"api-key": "k"})
        refused = httpx.post(url, json=body, headers={"api-key": "k"})
    assert ok.status_code == 200 and ok.headers["x-ratelimit-remaining-requests"] == "0"  # Azure's headers
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "429"
    assert refused.headers["retry-after"] == "60"


# -- runs against the rate-limited server ------------------------------------------------------------


def _cases(n: int, extra: dict[int, str] | None = None) -> list[dict[str, Any]]:
    return [{"id": f"c{i:03d}", "prompt": "p",
             "vars": {"q": f"{(extra or {}).get(i, '')}[[answer: order {i} ships today]] where is order {i}?"},
             "assert": [{"type": "contains", "value": f"order {i}"}]} for i in range(n)]


def _run(tmp_path: Path, limits: RateLimits, n: int, *, latency: float = 0.05, concurrency: int = 32,
         evals: dict[str, Any] | None = None, retries: int = 8, provider: str = "openai") -> tuple[Any, RateLimits]:
    models = {"m": {"provider": provider, "model": "a-model-2025-01-01"}, "j": MODELS["j"]}
    snap, reader = load(write_repo(tmp_path / "repo", _cases(n), evals=evals, models=models))
    with LLMServer(latency=latency, limits=limits) as server:
        run = run_evals(snap, reader, concurrency=concurrency, env=live_env(server),
                        retry=RetryPolicy(max_retries=retries, base_s=0.05, max_delay_s=0.5))
    return run, limits


@pytest.mark.parametrize("provider, limits, told", [
    ("openai", RateLimits(requests=50, window_s=1.0), {"requests": 50}),
    ("openai", RateLimits(tokens=1500, window_s=1.0), {"tokens": 1500}),
    ("anthropic", RateLimits(requests=100, tokens=1500, window_s=1.0), {"requests": 100, "tokens": 1500}),
], ids=["requests", "tokens", "anthropic"])
def test_a_rate_limited_run_stays_under_the_limit(tmp_path: Path, provider: str, limits: RateLimits,
                                                  told: dict[str, int]) -> None:
    run, lim = _run(tmp_path, limits, 200, provider=provider)
    assert run.metrics["passed"] == 200  # every case answered
    refused, admitted = sum(lim.rejected.values()), sum(lim.accepted.values())
    assert admitted == 200 and refused < 0.05 * (admitted + refused)  # retries under 5% of requests
    found = run.stats["rate_limit"]
    assert found["provider_limits"] == told and found["throttled"] == refused
    assert 1 <= found["concurrency"] <= 32


def test_pacing_off_hammers_the_limit(tmp_path: Path) -> None:
    # 10 requests a minute and no retries: every request past the tenth is refused, paced or not,
    # but with pacing off all 30 go at once and 20 cases fail on the limit
    run, lim = _run(tmp_path, RateLimits(requests=10, window_s=60), 30, concurrency=30,
                    evals={"pacing": False}, retries=0)
    assert sum(lim.accepted.values()) == 10 and sum(lim.rejected.values()) == 20
    assert sum(1 for c in run.cases if c.error == "rate_limit") == 20
    assert "rate_limit" not in run.stats


@pytest.mark.parametrize("status, provider, category", [
    ("429", "openai", "rate_limit"),
    ("503", "openai", "provider"),  # service unavailable
    ("529", "anthropic", "provider"),  # Anthropic's overloaded_error
])
def test_a_retry_after_pauses_the_requests_in_flight_elsewhere(tmp_path: Path, status: str, provider: str,
                                                               category: str) -> None:
    # c000 is refused with Retry-After: 1 while c001-c003 are still being answered (slow); their
    # workers' next requests wait for the pause too, so the server sees nothing for a second
    cases = _cases(8, {0: f"[[fault:{status} retry_after=1 times=1]] ", **{i: "[[fault:slow delay=0.4]] "
                                                                                for i in range(1, 8)}})
    models = {"m": {"provider": provider, "model": "a-model-2025-01-01"}, "j": MODELS["j"]}
    snap, reader = load(write_repo(tmp_path / "repo", cases, models=models))
    with LLMServer(latency=0.1) as server:
        run = run_evals(snap, reader, concurrency=4, env=live_env(server),
                        retry=RetryPolicy(max_retries=2, base_s=0.05))
        log = list(server.log)
    assert run.metrics["passed"] == 8 and run.stats["retries"] == {category: 1}
    refused = next(e for e in log if "answered" in e)["answered"]
    quiet = [e["t"] - refused for e in log if refused + 0.2 < e["t"] < refused + 1.0]
    assert quiet == []  # without the shared pause, three requests would arrive ~0.4 s after the 429
    assert sum(1 for e in log if e["t"] >= refused + 1.0) == 5  # the retry and c004-c007
    assert run.stats["rate_limit"]["paused_s"] >= 1.0


def test_eval_prints_the_limit_it_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    g = init_repo(tmp_path / "repo")
    write_repo(g.root, _cases(40))
    commit_all(g, "evals")
    with LLMServer(latency=0.02, limits=RateLimits(requests=20, window_s=1.0)) as server:
        for k, v in live_env(server).items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("GATING_CACHE_DIR", str(tmp_path / "cache"))
        assert main(["-C", str(g.root), "eval", "--concurrency", "16"]) == 0
    last = capsys.readouterr().err.splitlines()[-1]
    assert re.fullmatch(r"gating: rate limited: settled at ~[\d.]+ concurrent, [\d,]+ requests/min; retries \d+ "
                        r"\(the provider's limits: 20 requests per window\)", last), last


def test_a_retry_after_too_long_to_take_pauses_nobody() -> None:
    p, clock = pacer(4)
    p.done(take(p), 429, {"retry-after": "3600"})  # that request gives up; the others need not wait an hour
    assert p.state.take(clock.t) == 0.0


def test_the_check_run_says_the_limit_its_runs_met(github, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = github.create_repo("acme/tiny-bot", source_dir=write_system(tmp_path / "src"))
    with LLMServer(latency=0.02, limits=RateLimits(requests=4, window_s=1.0)) as server:
        h = Harness(github, repo, server, tmp_path, monkeypatch)
        pr = h.open_pr("warm", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")
        ran = h.run(pr)  # the base has no eval note: its 12 cases run, and meet the 4 a second
    assert ran.rc == 0, ran.stderr
    [run] = h.check_runs(pr["head"]["sha"])
    said = re.compile(r"LLM requests: (\d+) \(cache hits 0, replayed 0\) · rate limited on base: settled at "
                      r"~[\d.]+ concurrent(, [\d,]+ requests/min)?; retries (\d+) \(the provider's limits: 4 "
                      r"requests per window\)")
    got = said.search(run["output"]["summary"])
    assert got is not None, run["output"]["summary"]
    assert said.search(ran.summary) is not None  # the job summary shows the same
    assert int(got[1]) == 14 + ran.report["head_run"]["stats"]["retries"].get("rate_limit", 0) + int(got[3])


@pytest.mark.parametrize("status", [503, 529])
def test_an_overloaded_provider_pauses_and_slows_the_run_as_a_429_does(status: int) -> None:
    p, clock = pacer(8)
    sent = [take(p) for _ in range(8)]
    clock.t += 1
    p.done(sent[0], status, {"retry-after": "2"})
    assert p.state.take(clock.t) == pytest.approx(2.0) and p.state.limit == 4
    got = p.summary()
    assert got is not None and got["overloaded"] == 1 and got["throttled"] == 0 and got["paused_s"] == 2.0
    p.done(sent[1], 500, {"retry-after": "2"})  # a server error is not a sign of load: no pause, no cut
    assert p.state.limit == 4 and p.summary()["overloaded"] == 1  # type: ignore[index]


PLENTY = {"x-ratelimit-limit-requests": "1000", "x-ratelimit-remaining-requests": "990",
          "x-ratelimit-reset-requests": "600ms"}


def test_a_run_starts_with_a_few_slots_and_doubles_them_a_round_till_a_first_sign_of_the_limit() -> None:
    # a provider serves the first burst from its full bucket, so its limit shows only once the run is past
    # it, and every request then on its way is refused: the fewer slots then, and the later sent, the better
    assert Pacer(64).state.limit == INITIAL_SLOTS and Pacer(2).state.limit == 2
    for headers in (PLENTY, {}):
        p, clock = pacer(64, initial=4)
        sent = [take(p) for _ in range(4)]
        clock.t += 0.1
        for s in sent:
            p.done(s, 200, headers)
        if headers:  # the provider says what remains, 990 requests, room for a round at all 64: nothing to guess
            assert p.state.limit == 64 and p.state.interval == 0.0
        else:  # no word on the budgets: a slot an answer, the next round's starts spread over half a round trip
            assert p.state.limit == 8 and p.state.interval == pytest.approx(0.5 * 0.1 / 7)
    p.state.interval = 0.0
    clock.t += 1
    p.done(take(p), 429, {})
    assert p.state.limit == 4
    for _ in range(4):
        p.done(take(p), 200, {})
    assert 4.9 < p.state.limit < 5.1 and p.state.interval == 0.0  # past it, a slot a round, unspread


def test_after_a_pause_the_waiting_requests_restart_one_by_one_at_the_rate_answers_came() -> None:
    p, clock = pacer(8)
    for _ in range(10):  # ten answers 50 ms apart: the provider gives about 20 a second
        p.done(take(p), 200, {})
        clock.t += 0.05
    sent = [take(p) for _ in range(8)]
    clock.t += 0.01
    p.done(sent[0], 429, {"retry-after": "1"})
    for s in sent[1:]:
        p.done(s, 429, {})
    assert p.state.limit == 4  # cut once
    clock.t += 1.0  # the pause is over: one may go, the next 50 ms later, not all four slots at once
    assert p.state.take(clock.t) == 0.0
    assert p.state.take(clock.t) == pytest.approx(0.05, rel=0.02)
    clock.t += 0.05
    assert p.state.take(clock.t) == 0.0
    for _ in range(2):
        p.state.release()
    clock.t += 0.05
    p.done(take(p), 200, {})
    assert p.state.limit == 2  # restarting one by one, one was in flight: the limit is twice that, not 4
    for _ in range(8):  # once that many have restarted, nothing holds them back
        clock.t += 0.05
        p.done(take(p), 200, {})
    assert p.state.interval == 0.0


def test_a_wait_under_a_second_spaces_the_restarts_at_least_that_far_apart() -> None:
    # retry-after-ms says when one request fits: the refill time of a request, a better guess than the
    # rate of the answers so far, which came from the bucket's first burst
    p, clock = pacer(8)
    for _ in range(10):  # 5 ms apart
        p.done(take(p), 200, {})
        clock.t += 0.005
    sent = take(p)
    clock.t += 0.01
    p.done(sent, 429, {"retry-after-ms": "40", "retry-after": "1"})
    clock.t += 0.04
    assert p.state.take(clock.t) == 0.0
    assert p.state.take(clock.t) == pytest.approx(0.04)


def test_worker_processes_pace_their_shares_under_one_limit(tmp_path: Path) -> None:
    # two processes, each pacing half the concurrency against the provider's one budget: the server
    # still refuses under 5% of requests, and the run reports one limit found by both
    models = {"m": {"provider": "openai", "model": "a-model-2025-01-01"}, "j": MODELS["j"]}
    snap, reader = load(write_repo(tmp_path / "repo", _cases(240), models=models))
    lim = RateLimits(requests=60, window_s=1.0)
    with LLMServer(latency=0.05, limits=lim) as server:
        run = run_evals(snap, reader, concurrency=32, env=live_env(server), workers=2,
                        retry=RetryPolicy(max_retries=8, base_s=0.05, max_delay_s=0.5))
    assert run.metrics["passed"] == 240
    refused, admitted = sum(lim.rejected.values()), sum(lim.accepted.values())
    assert admitted == 240 and refused < 0.05 * (admitted + refused)
    found = run.stats["rate_limit"]
    assert found["processes"] == 2 and found["provider_limits"] == {"requests": 60}
    assert found["throttled"] == refused and 1 <= found["concurrency"] <= 32


def test_without_budget_headers_the_second_429_sets_a_start_rate_under_what_was_admitted() -> None:
    # a provider that sends only Retry-After: the first 429 ends the full bucket's burst; between it and
    # the next, 40 answers came in 2.5 s (1 s of them paused): 40 / 1.5 s admitted, and it refused more
    p, clock = pacer(16)
    for _ in range(20):
        p.done(clock.t, 200, {})
        clock.t += 0.01
    p.done(clock.t, 429, {"retry-after": "1"})
    assert p.rate is None  # the burst's rate says nothing of the limit
    clock.t += 1
    for _ in range(40):
        clock.t += 0.0375
        p.done(clock.t - 0.03, 200, {})
    p.done(clock.t, 429, {})
    second = clock.t
    assert p.rate == pytest.approx(RATE_FIRST * 40 / 1.5, rel=0.01)
    # from then on starts are spaced at the rate, which grows by RATE_PROBE_FIRST of itself a second till
    # a 429 comes at a rate of its own, RATE_PROBE after
    start = p.rate
    clock.t += 1
    p.done(clock.t - 0.03, 200, {})
    assert p.state.interval == pytest.approx(1 / start)
    assert p.rate == pytest.approx(start + RATE_PROBE_FIRST)
    # after a lull one start catches up, the next waits its turn
    assert [p.state.take(clock.t) for _ in range(3)] == [0.0, 0.0, pytest.approx(1 / start)]
    # a third 429 (a new round) cuts from the lower of the rate and what was admitted, once a round
    before = clock.t
    clock.t += 0.1
    for _ in range(RATE_MIN_ANSWERS):
        clock.t += 0.001
        p.done(clock.t, 200, {})
    rate, admitted = p.rate, (1 + RATE_MIN_ANSWERS) / (clock.t - second)
    assert admitted < rate  # the provider let fewer through than the pacer started
    p.done(clock.t, 429, {})
    assert p.rate == pytest.approx(RATE_CUT * admitted)
    p.done(before, 429, {})  # sent before that cut: the same congestion
    assert p.rate == pytest.approx(RATE_CUT * admitted)
    assert p.summary()["throttled"] == 4


def test_with_budget_headers_the_pacer_never_paces_by_its_own_rate() -> None:
    # the headers say what remains: the budget sets the spacing, not a rate guessed from 429s
    p, clock = pacer(16)
    for _ in range(3):
        for _ in range(20):
            clock.t += 0.01
            p.done(clock.t - 0.005, 200, PLENTY)
        clock.t += 0.1
        p.done(clock.t, 429, {"retry-after": "0.1"})
    assert p.rate is None and p.throttled == 3


def test_headers_with_room_for_a_round_at_full_concurrency_skip_the_slow_start_and_too_little_does_not() -> None:
    low = {"x-ratelimit-limit-requests": "1000", "x-ratelimit-remaining-requests": "100",  # < 2 rounds of 64
           "x-ratelimit-reset-requests": "6s"}
    tokens_unknown = {**PLENTY, "x-ratelimit-limit-tokens": "100000", "x-ratelimit-remaining-tokens": "99000",
                      "x-ratelimit-reset-tokens": "1s"}
    for headers, tokens, expected in ((low, None, 5), (tokens_unknown, None, 5), (tokens_unknown, 500, 64),
                                      (tokens_unknown, 1000, 5)):
        p, clock = pacer(64, initial=4)
        if tokens is not None:
            p.tokens(tokens)  # a request's tokens, as the last answer said: 64 x 2 x 500 fits in 99,000; x 1000 not
        clock.t += 0.1
        p.done(take(p), 200, headers)
        assert p.state.limit == expected, (headers, tokens)
