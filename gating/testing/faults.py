"""Per-route fault injection, so clients' retry and backoff code is tested against real failures."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

# *_after_write: the request is carried out (the comment or check run exists), then the client gets a
# 5xx or a dropped connection anyway, as after GitHub's read timeouts or a proxy's 502.
KINDS = ("5xx", "secondary_rate_limit", "latency", "reset", "5xx_after_write", "reset_after_write")
AFTER_WRITE = ("5xx_after_write", "reset_after_write")
SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you "
    "reach out to GitHub Support for help, please include the request ID."
)


@dataclass
class Fault:
    kind: str
    method: str | None = None
    path: str | None = None  # regex searched in the request path (without the API prefix)
    times: int | None = 1  # None: every matching request
    status: int = 502  # a secondary rate limit: 403 (the default for it) or 429
    retry_after: int | None = 1  # None: no Retry-After header (GitHub's advice: wait at least a minute)
    delay: float = 0.2
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return self.path is None or re.search(self.path, path) is not None


class Faults:
    """The faults armed on one emulator; the first matching fault with uses left fires."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, method: str | None = None, path: str | None = None, kind: str = "5xx", times: int | None = 1,
            status: int = 502, retry_after: int | None = 1, delay: float = 0.2) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; choose from {', '.join(KINDS)}")
        if kind in ("5xx", "5xx_after_write") and not 500 <= status <= 599:
            raise ValueError(f"a 5xx fault needs a 5xx status, not {status}")
        if kind == "secondary_rate_limit":
            status = status if status in (403, 429) else 403
        if path is not None:
            re.compile(path)
        fault = Fault(kind, method, path, times, status, retry_after, delay)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path) and (fault.times is None or fault.hits < fault.times):
                    fault.hits += 1
                    return fault
        return None

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for f in self._faults if f.times is None or f.hits < f.times)
