"""Adaptive concurrency under a provider's rate limits: run just under the limit instead of hammering it.

Every request to a provider (and to an HTTP target) takes a slot from the Pacer before it is sent and
gives it back with the status and headers of its answer. The Pacer adapts in three ways:

- AIMD on the concurrency limit (as TCP's congestion window): each success adds 1/limit (about one
  slot per round of requests; a tenth of that from 80% of the limit where the last 429 came, so it
  probes there slowly), each 429 halves it, once per round: answers to requests sent before the last
  cut do not cut again, since they report the same congestion. It never exceeds `evals.concurrency`
  and never goes below one. Till a first sign of the limit it starts at INITIAL_SLOTS and each
  success adds a whole slot (twice the slots a round: slow start), unless the answer's rate-limit
  headers say the budgets hold NEAR rounds at full concurrency: then the limit is the cap at once
  (OpenAI and Anthropic send them on every answer). A provider serves the first burst
  from its full bucket, so its limit shows only once the run is past it, and every request then on
  its way is refused; without rate-limit headers to say so beforehand, a round's starts are spread
  over half its round trip, so the first refusal comes back, and pauses the run, before the rest of
  the round is sent.
- Ahead of the limit, from the rate-limit headers (OpenAI's `x-ratelimit-remaining-requests`,
  `-tokens` and their `-reset`; Anthropic's `anthropic-ratelimit-*`): when what remains of a budget
  falls below two requests per slot, starts are spaced around the budget's refill rate ((limit -
  remaining) / reset): exactly at it when one request per slot remains (for those that may be on
  their way), faster above, slower below. The budget settles there: never dry (which means 429s),
  never full (which means a limit left unused). The limit, instead of growing, shrinks to twice the
  requests in flight: what the refill rate needs, with room, and a smaller reserve kept unused.
- Without rate-limit headers (providers and gateways that say only Retry-After), from the second 429
  on: starts are spaced at a rate, RATE_FIRST of what the provider admitted between the first two 429s
  (paused time left out), growing by RATE_PROBE_FIRST of itself a second; each later 429 sets it to
  RATE_CUT of the lower of it and what was admitted since the last, and it grows by RATE_PROBE, and
  by RATE_PROBE_NEAR once past the rate where the last 429 came; the concurrency limit follows as
  twice what the rate keeps in flight.
  A concurrency limit meets a per-minute limit badly: the rate it makes moves with latency, and AIMD
  probes into a 429 every round, where a rate probed slowly settles under the limit (bench/rate_limit.py
  --no-headers: 1,500 cases, 2-4% refused, all but a few in the first burst, where the full bucket hides
  the limit and every request then on its way is refused; 0.98 of the limit).
- A Retry-After pauses every request of the run, not only the one that got it: the others would be
  refused too. (One over MAX_PAUSE_S pauses nobody: the request that got it fails, as it would alone.)
  A provider that says it is overloaded (503, Anthropic's 529) is answered as a 429: cut and pause.
  When the pause ends, the requests that waited restart one by one, spaced at the rate answers came
  before it (the refill rate, when the run was at the limit), not all at once: the pause refilled
  the budget for about one request, and a crowd restarting together would be refused again; the limit
  shrinks meanwhile to twice the requests in flight, so the run does not burst once they are all back.

The state all of this changes is one small PaceState (the limit, the requests in flight, the earliest
next start, the spacing, the last cut), reached only through its methods (the rate is the pacer's own:
each process measures what its share was admitted), so the engine can put it in
memory shared by several worker processes without touching the controller.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gating.evals.providers import retry_after_seconds

CUT_ON_429 = 0.5
PROBE = 0.8  # from this share of the limit where the last 429 came, the limit grows ten times slower
NEAR = 2.0  # a budget is near its end below NEAR requests per slot: pace, and stop growing the limit
MAX_SPACING = 4.0  # a dry budget spaces requests at most this many refill steps apart
INITIAL_SLOTS = 16  # the concurrency limit a run starts at (at most evals.concurrency): 4 cost 2 rounds of latency
SPREAD = 0.5  # before a limit shows, starts are at least this share of a round trip / the limit apart
RATE_SAMPLE = 32  # answers the rate of answers is measured over (the spacing after a pause)
RATE_CUT = 0.9  # without budget headers, a 429 sets the start rate this far under the rate admitted
RATE_FIRST = 0.95  # ... the first time: that rate, measured across the restarts after the burst, is under the limit
RATE_PROBE = 0.02  # ... which then grows by this share a second while no 429 comes
RATE_PROBE_FIRST = 0.05  # ... this share till the first 429 at a rate of its own (the first is a guess from below)
RATE_PROBE_NEAR = 0.005  # ... and by this share past the rate where the last 429 came
RATE_MIN_ANSWERS = 8  # successes between two 429s before their rate says what the provider admits
MAX_PAUSE_S = 120.0  # a longer Retry-After pauses nobody: the request gives up (RetryPolicy.max_retry_after_s)
_HEADERS = ("x-ratelimit-", "anthropic-ratelimit-", "retry-after")
OVERLOADED = (503, 529)  # service unavailable, Anthropic's overloaded_error: back off as from a 429


class PaceState:
    """What every request of a run shares. The controller changes it only through these methods and
    reads only `limit`, `inflight` and `not_before`, so a process-shared version (the fields in shared
    memory, each method under one lock, the three as properties) can take its place unchanged."""

    def __init__(self, limit: float) -> None:
        self.limit = float(limit)
        self.inflight = 0
        self.not_before = 0.0  # no request starts before this (a Retry-After, or the spacing)
        self.interval = 0.0  # seconds between starts; 0: no spacing
        self.last_cut = -math.inf
        self.ceiling = math.inf  # the limit when the last 429 came

    def take(self, now: float) -> float | None:
        """Start a request: 0.0 when it may go now (it is then in flight), else seconds to wait (a
        pause or the spacing), or None when every slot is taken (wait for a release)."""
        if now < self.not_before:
            return self.not_before - now
        if self.inflight >= max(1, int(self.limit)):
            return None
        self.inflight += 1
        if self.interval:  # on the schedule, so a late start lets the next catch up (by one interval at most)
            self.not_before = max(self.not_before, now - self.interval) + self.interval
        return 0.0

    def release(self) -> None:
        self.inflight = max(0, self.inflight - 1)

    def pause(self, until: float) -> None:
        self.not_before = max(self.not_before, until)

    def space(self, interval: float) -> None:
        self.interval = interval

    def cut(self, sent: float, factor: float, now: float) -> bool:
        """Multiply the limit by `factor`, once per round: not for a request sent before the last cut."""
        if sent < self.last_cut:
            return False
        self.ceiling = self.limit
        self.limit = max(1.0, self.limit * factor)
        self.last_cut = now
        return True

    def shrink(self, to: float) -> None:
        self.limit = max(1.0, min(self.limit, to))

    def grow(self, cap: float, fast: bool = False) -> None:
        """About one slot per round of answers (`fast`: one an answer); a tenth of that near the limit
        where the last 429 came."""
        step = 1.0 if fast else 1.0 / self.limit
        if self.limit >= PROBE * self.ceiling:
            step *= 0.1
        self.limit = min(float(cap), self.limit + step)


@dataclass(frozen=True)
class Budget:
    """One rate limit as the provider reported it: its size, what remains, seconds until it is full."""

    limit: int | None
    remaining: int | None
    reset_s: float | None

    def refill_rate(self) -> float | None:
        """Units per second the provider gives back (a token bucket refills (limit - remaining) in reset_s)."""
        if self.limit is None or self.remaining is None or not self.reset_s or self.remaining >= self.limit:
            return None
        return (self.limit - self.remaining) / self.reset_s


@dataclass(frozen=True)
class Reading:
    """The rate-limit headers of one answer."""

    requests: Budget
    tokens: Budget
    retry_after: float | None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_reset(value: str | None, wall_now: float) -> float | None:
    """Seconds until a budget is full: OpenAI's Go duration (`1s`, `6m0s`, `120ms`), Anthropic's RFC 3339
    time, or plain seconds; None when absent or unreadable."""
    if not value:
        return None
    v = value.strip()
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    parts = _DURATION.findall(v)
    if parts and "".join(n + u for n, u in parts) == v:
        return sum(float(n) * _UNIT[u] for n, u in parts)
    try:
        return max(0.0, datetime.fromisoformat(v).timestamp() - wall_now)
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def read_headers(headers: Mapping[str, str], wall_now: float) -> Reading:
    def budget(name: str) -> Budget:
        if f"anthropic-ratelimit-{name}-remaining" in headers:
            get = (lambda k: headers.get(f"anthropic-ratelimit-{name}-{k}"))  # noqa: E731
        else:
            get = (lambda k: headers.get(f"x-ratelimit-{k}-{name}"))  # noqa: E731
        return Budget(_int(get("limit")), _int(get("remaining")), parse_reset(get("reset"), wall_now))

    return Reading(budget("requests"), budget("tokens"), retry_after_seconds(headers, wall_now))


class Pacer:
    """The controller: `await acquire()` before a request (returns when it was sent), then
    `done(sent, status, headers)` with its answer (status None: no answer), and `tokens(n)` with
    the tokens it used when known."""

    def __init__(self, max_concurrency: int, state: PaceState | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 initial: int = INITIAL_SLOTS, budget_share: float = 1.0) -> None:
        self.cap = max(1, max_concurrency)
        # the part of the provider's budget this pacer may spend: a run in several processes paces each
        # on its share, since every process reads the same remaining budget in the answers' headers
        self.share = min(1.0, max(budget_share, 1e-3))
        self.state = state or PaceState(min(self.cap, max(1, initial)))
        self.clock = clock
        self.wall = wall
        self.cost: float | None = None  # tokens per request (a moving average), once an answer said
        self.throttled = 0  # 429s
        self.overloaded = 0  # 503s and 529s
        self.paused_s = 0.0
        self.limited_since: float | None = None  # the first sign of a limit (a 429 or a low budget)
        self.ok_since_limited = 0
        self.last_done = 0.0
        self._inflight_sum = 0
        self._starts = 0
        self._reading: Reading | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._answers: deque[float] = deque(maxlen=RATE_SAMPLE)  # when the last successes came
        self._stagger = 0.0  # the spacing of the restarts after a pause ...
        self._stagger_until = -math.inf  # ... until then
        self._rtt: float | None = None  # seconds from start to answer (a moving average)
        # without budget headers, once 429s have shown the limit twice: requests a second to start at
        self.rate: float | None = None
        self._rate_ceiling = math.inf  # the rate when the last 429 came
        self._cut_at: float | None = None  # the last cut (or the first answer), and what was paused ...
        self._cut_paused = 0.0
        self._ok_since_cut = 0  # ... and the successes since

    async def acquire(self) -> float:
        while True:
            now = self.clock()
            wait = self.state.take(now)
            if wait == 0.0:
                if self.limited_since is not None:
                    self._inflight_sum += self.state.inflight
                    self._starts += 1
                return now
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, wait)
            except TimeoutError:
                pass
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)

    def tokens(self, n: int) -> None:
        self.cost = float(n) if self.cost is None else 0.8 * self.cost + 0.2 * n

    def done(self, sent: float, status: int | None, headers: Mapping[str, str]) -> None:
        now = self.clock()
        st = self.state
        st.release()
        try:
            if status is None:
                return
            told = any(k.startswith(_HEADERS) for k in headers)  # one pass (httpx: lower case), most answers say nothing
            r = read_headers(headers, self.wall()) if told else None
            if r is not None and (r.requests.remaining is not None or r.tokens.remaining is not None):
                self._reading = r
            if status == 429 or status in OVERLOADED:
                if status == 429:
                    self.throttled += 1
                else:
                    self.overloaded += 1
                self._limited(now)
                if st.cut(sent, CUT_ON_429, now) and self._reading is None:
                    self._cut_rate(now)
                if r is not None and r.retry_after and r.retry_after <= MAX_PAUSE_S:
                    self.paused_s += max(0.0, now + r.retry_after - max(st.not_before, now))
                    st.pause(now + r.retry_after)
                    self._restart_gradually(st.not_before, r.retry_after)
            elif status < 400:
                rtt = now - sent
                self._rtt = rtt if self._rtt is None else 0.8 * self._rtt + 0.2 * rtt
                self._success(now, r)
        finally:
            self._wake()

    def _restart_gradually(self, until: float, wait: float) -> None:
        """Space the restarts after a pause at the rate answers came before it, for a round of them. A
        wait under a second (`retry-after-ms`: what one request needs to fit) is the refill time of a
        request: no shorter, since the rate of answers may still be that of the bucket's first burst."""
        n = len(self._answers)
        span = self._answers[-1] - self._answers[0] if n > 1 else 0.0
        step = max(span / (n - 1) if span > 0 else 0.0, wait if wait < 1.0 else 0.0)
        if step <= 0:
            return
        self._stagger = step
        self._stagger_until = until + self._stagger * max(1, int(self.state.limit))
        self.state.space(max(self.state.interval, self._stagger))

    def _cut_rate(self, now: float) -> None:
        """No budget headers: start requests at a rate under what the provider admitted between this
        429 and the last one (paused time left out), since it refused more. A concurrency limit meets a
        per-minute limit badly (the rate it makes moves with latency, and each slot more is another
        rtt's worth of requests a second), so it keeps probing into 429s; a rate probed slowly does not.
        The first 429 ends the full bucket's burst, whose rate says nothing of the limit: from the second."""
        if self._cut_at is not None:
            span = now - self._cut_at - (self.paused_s - self._cut_paused)
            if self._ok_since_cut >= RATE_MIN_ANSWERS and span > 0 and self.limited_since is not None \
                    and self._cut_at >= self.limited_since:
                admitted = self._ok_since_cut / span
                if self.rate is None:  # what was admitted since the burst, restarts and all: at most the limit
                    self.rate = RATE_FIRST * admitted
                else:
                    self._rate_ceiling, self.rate = self.rate, RATE_CUT * min(admitted, self.rate)
        self._cut_at, self._cut_paused, self._ok_since_cut = now, self.paused_s, 0

    def _success(self, now: float, r: Reading | None) -> None:
        st = self.state
        slots = max(1, int(st.limit))
        near = False
        interval = self._stagger if now < self._stagger_until else 0.0
        self._ok_since_cut += 1
        self._answers.append(now)
        if self._cut_at is None:
            self._cut_at = now
        if self.rate is not None and self._reading is None:
            # pace at the rate, probing upward; as many slots as it keeps busy, with room
            interval = max(interval, 1.0 / self.rate)
            self.rate += (RATE_PROBE_FIRST if self._rate_ceiling == math.inf else
                          RATE_PROBE_NEAR if self.rate >= self._rate_ceiling else RATE_PROBE)
            st.space(interval)
            if self._rtt:
                st.limit = min(float(self.cap), max(2.0, NEAR * self.rate * self._rtt))
            self.ok_since_limited += 1
            self.last_done = now
            return
        if self.limited_since is None and self._rtt and r is None:
            # no word on the budgets: spread a round's starts over its round trip, so the one that finds
            # the bucket empty comes back before the rest of the round is sent
            interval = max(interval, SPREAD * self._rtt / max(1.0, st.limit))
        if r is not None:
            for b, cost in ((r.requests, 1.0), (r.tokens, self.cost)):
                if b.remaining is None or cost is None:
                    continue
                remaining = b.remaining * self.share
                # keep a request per slot in the budget (at most half of it) for those that may be on
                # their way: the answer read here was counted before they arrived
                target = min(slots * cost, b.limit * self.share / NEAR if b.limit else math.inf)
                if remaining >= NEAR * target:
                    continue
                near = True
                rate = b.refill_rate()
                if rate:
                    # send at the refill rate when the budget is at its target, faster above it, slower
                    # below: the budget settles there, neither dry (429s) nor full (a limit left unused)
                    steady = cost / (rate * self.share)
                    interval = max(interval, min(MAX_SPACING * steady, steady * target / max(remaining, 1e-9)))
        st.space(interval)
        if near or now < self._stagger_until:  # restarting one by one: as many as that keeps busy, with room
            self._limited(now)
            st.shrink(NEAR * (st.inflight + 1))
        elif self.limited_since is None and r is not None and self._room_for_a_full_round(r):
            st.limit = float(self.cap)  # the provider says a round at full concurrency fits: no slow start
        else:
            st.grow(self.cap, fast=self.limited_since is None)  # slow start, till a first sign of the limit
        if self.limited_since is not None:
            self.ok_since_limited += 1
            self.last_done = now

    def _room_for_a_full_round(self, r: Reading) -> bool:
        """Every budget the answer told of holds NEAR rounds at the concurrency cap (a token budget only
        once a request's tokens are known)."""
        told = False
        for b, cost in ((r.requests, 1.0), (r.tokens, self.cost)):
            if b.remaining is None:
                continue
            if cost is None or b.remaining * self.share < NEAR * self.cap * cost:
                return False
            told = True
        return told

    def _limited(self, now: float) -> None:
        if self.limited_since is None:
            self.limited_since = now

    def _wake(self) -> None:
        while self._waiters:
            fut = self._waiters.pop(0)
            if not fut.done():
                fut.set_result(None)
                return

    def summary(self) -> dict[str, Any] | None:
        """What the run found out about the provider's limit; None when it never met one."""
        if self.limited_since is None:
            return None
        span = self.last_done - self.limited_since
        out: dict[str, Any] = {
            "concurrency": round(self._inflight_sum / self._starts, 1) if self._starts else round(self.state.limit, 1),
            "limit": round(self.state.limit, 1),
            "requests_per_min": round(self.ok_since_limited / span * 60) if span > 0 else None,
            "throttled": self.throttled,
            **({"overloaded": self.overloaded} if self.overloaded else {}),
            "paused_s": round(self.paused_s, 3),
        }
        r = self._reading
        if r is not None:
            out["provider_limits"] = {k: b.limit for k, b in (("requests", r.requests), ("tokens", r.tokens))
                                      if b.limit is not None}
        return out


def combine(summaries: Sequence[Mapping[str, Any]], unit: str = "shards") -> dict[str, Any]:
    """The summaries of one side's runs that shared a key, as one: a sharded check's shards (an Actions
    matrix) or a run's worker processes. They ran side by side against one limit, so together they ran
    at the sum of their concurrency and request rates and drew the sum of the 429s; their pauses
    overlapped (the longest is kept); the provider's limits are the key's. `unit` ("shards",
    "processes") says how many met the limit."""
    if len(summaries) == 1:
        return dict(summaries[0])
    rpm = [s["requests_per_min"] for s in summaries if s.get("requests_per_min") is not None]
    told: dict[str, Any] = {}
    for s in summaries:
        told.update(s.get("provider_limits") or {})
    return {"concurrency": round(sum(s.get("concurrency") or 0 for s in summaries), 1),
            "limit": round(sum(s.get("limit") or 0 for s in summaries), 1),
            "requests_per_min": sum(rpm) if rpm else None,
            "throttled": sum(s.get("throttled") or 0 for s in summaries),
            **({"overloaded": n} if (n := sum(s.get("overloaded") or 0 for s in summaries)) else {}),
            "paused_s": max(s.get("paused_s") or 0.0 for s in summaries),
            **({"provider_limits": told} if told else {}),
            unit: sum(s.get(unit) or 1 for s in summaries)}


def combine_summaries(found: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """One summary for a run whose worker processes each paced their share of the concurrency."""
    return combine(found, "processes") if found else None


def describe(summary: Mapping[str, Any], retries: int, where: str = "") -> str:
    """One line for people: `rate limited: settled at ~N concurrent, R requests/min; retries X`
    (`where`: ` on base`, say; a sharded run's line says how many shards met the limit)."""
    rpm = summary.get("requests_per_min")
    told = summary.get("provider_limits") or {}
    said = ", ".join(f"{v:,} {k}" for k, v in told.items())
    shards = summary.get("shards") or 1
    return (f"rate limited{where}" + (f" ({shards} shards together)" if shards > 1 else "")
            + f": settled at ~{summary['concurrency']:g} concurrent"
            + (f", {rpm:,} requests/min" if rpm is not None else "")
            + f"; retries {retries}" + (f" (the provider's limits: {said} per window)" if said else ""))
