"""Rate limits for the test LLM server: requests and tokens per window, as the hosted APIs enforce them.

Each limit is a token bucket that holds `limit` units and refills continuously at `limit / window_s`
(OpenAI: "replenished continuously"), so a full bucket allows a burst and then the steady rate. A
request is charged on arrival (one request and its prompt tokens) and with the tokens of its answer
once answered (so the token bucket can go below zero). A refused request gets 429
with `retry-after` (whole seconds, rounded up) and `retry-after-ms`, the time until its cost fits.

Every answer carries the dialect's headers: OpenAI's (and Azure's) `x-ratelimit-limit-requests`,
`x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests` (a duration such as `1s`, `120ms`,
`6m0s`: until the bucket is full again) and the same for `-tokens`; Anthropic's
`anthropic-ratelimit-requests-limit`, `-remaining`, `-reset` (an RFC 3339 time) and the same for
`-tokens`. The other dialects send only `retry-after` on a 429, as theirs do.

`accepted` and `rejected` count requests per window (index = seconds since start // window_s) and
`spent` the tokens, so a benchmark reads the throughput the server saw, not what the client thinks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

OPENAI_STYLE = ("openai", "azure")


@dataclass
class Bucket:
    """`limit` units per `window_s`, refilled continuously; `level` may go below zero after a settle."""

    limit: int
    window_s: float
    level: float = -1.0
    at: float = 0.0

    def __post_init__(self) -> None:
        if self.level < 0:
            self.level = float(self.limit)

    @property
    def rate(self) -> float:
        return self.limit / self.window_s

    def refill(self, now: float) -> None:
        self.level = min(float(self.limit), self.level + (now - self.at) * self.rate)
        self.at = now

    def wait(self, cost: float) -> float:
        """Seconds until `cost` units fit (0 when they do now)."""
        return max(0.0, (min(cost, self.limit) - self.level) / self.rate)

    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.limit - self.level) / self.rate)


@dataclass
class RateLimits:
    """The server's limits; None turns one off. `window_s` is 60 for per-minute limits (tests shorten it)."""

    requests: int | None = None
    tokens: int | None = None
    window_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    send_headers: bool = True  # False: only Retry-After on a 429, as providers without rate-limit headers
    accepted: dict[int, int] = field(default_factory=dict)
    rejected: dict[int, int] = field(default_factory=dict)
    spent: dict[int, int] = field(default_factory=dict)  # tokens charged per window
    _req: Bucket | None = None
    _tok: Bucket | None = None
    _t0: float = 0.0

    def __post_init__(self) -> None:
        if self.window_s <= 0:
            raise ValueError(f"rate limit window must be positive, not {self.window_s}")
        now = self.now()
        self._t0 = now
        self._req = Bucket(self.requests, self.window_s, at=now) if self.requests else None
        self._tok = Bucket(self.tokens, self.window_s, at=now) if self.tokens else None

    def now(self) -> float:
        return self.clock()

    def window(self, now: float) -> int:
        return int((now - self._t0) // self.window_s)

    def admit(self, tokens: int) -> float | None:
        """Charge one request with `tokens` prompt tokens; None when admitted, else seconds to wait."""
        now = self.now()
        wait = 0.0
        for b, cost in ((self._req, 1), (self._tok, tokens)):
            if b is not None:
                b.refill(now)
                wait = max(wait, b.wait(cost))
        w = self.window(now)
        if wait > 0:
            self.rejected[w] = self.rejected.get(w, 0) + 1
            return wait
        if self._req is not None:
            self._req.level -= 1
        if self._tok is not None:
            self._tok.level -= tokens
        self.accepted[w] = self.accepted.get(w, 0) + 1
        self.spent[w] = self.spent.get(w, 0) + tokens
        return None

    def settle(self, tokens: int) -> None:
        """Charge the tokens of an answer."""
        now = self.now()
        w = self.window(now)
        self.spent[w] = self.spent.get(w, 0) + tokens
        if self._tok is not None and tokens > 0:
            self._tok.refill(now)
            self._tok.level -= tokens

    def headers(self, api: str, retry_after: float | None = None) -> dict[str, str]:
        """The dialect's rate-limit headers, and the Retry-After of a refusal."""
        now = self.now()
        out: dict[str, str] = {}
        if retry_after is not None:
            out["retry-after"] = str(max(1, math.ceil(retry_after)))
            out["retry-after-ms"] = str(max(1, math.ceil(retry_after * 1000)))
        for name, b in (("requests", self._req), ("tokens", self._tok)):
            if b is None or not self.send_headers:
                continue
            b.refill(now)
            remaining = str(max(0, math.floor(b.level)))
            if api in OPENAI_STYLE:
                out[f"x-ratelimit-limit-{name}"] = str(b.limit)
                out[f"x-ratelimit-remaining-{name}"] = remaining
                out[f"x-ratelimit-reset-{name}"] = go_duration(b.reset_s())
            elif api == "anthropic":
                out[f"anthropic-ratelimit-{name}-limit"] = str(b.limit)
                out[f"anthropic-ratelimit-{name}-remaining"] = remaining
                when = datetime.fromtimestamp(time.time() + b.reset_s(), UTC)
                out[f"anthropic-ratelimit-{name}-reset"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return out

    def steady_windows(self) -> list[tuple[int, int, int]]:
        """(accepted, rejected, tokens) of every window but the first (the full bucket's burst) and the last."""
        last = max([*self.accepted, *self.rejected], default=0)
        return [(self.accepted.get(w, 0), self.rejected.get(w, 0), self.spent.get(w, 0)) for w in range(1, last)]


def go_duration(seconds: float) -> str:
    """A duration as OpenAI writes it (Go's format): `120ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    m, s = divmod(seconds, 60)
    return f"{int(m)}m{round(s, 3):g}s"
