"""Model access for a run: cassettes (replay), or the response cache then the live provider (with retries).

Modes: `live` calls providers; `replay` serves cassettes only; `record` calls providers and keeps
every answer for the cassettes. Which one runs is an explicit choice (`--record`, `--replay`,
GATING_PROVIDER=live|replay|record), else the setting `evals.mode` of the revision that judges (the
base of a pull request): never whether a revision happens to hold cassettes, since a pull request
could add them. Replay never reads the cache: the committed cassettes are the truth, the cache only
spares live calls (and is keyed by the server, so two servers never share it).
Errors are never cached or recorded, and neither is an answer its caller cannot use (a judge reply
that does not parse): `complete(..., check=)` vets it first.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gating.evals.cache import ResponseCache, cache_key, cassette_entry, request_key
from gating.evals.providers import (
    ChatRequest,
    ClientPool,
    Completion,
    ProviderError,
    RetryPolicy,
    base_url_of,
    call_with_retries,
)
from gating.system.evidence import resolve_mode as resolve_mode  # where a check that calls no model reads it


@dataclass
class Stats:
    requests: int = 0  # HTTP requests sent to providers, retries included
    live: int = 0  # answers obtained live
    cache_hits: int = 0
    replayed: int = 0
    retries: dict[str, int] = field(default_factory=dict)  # category -> count
    waited_s: float = 0.0  # total backoff sleep
    rate_limits: list[dict[str, Any]] = field(default_factory=list)  # each process's pacer summary, if limited

    def add(self, other: Stats) -> None:
        """Count another process's share of the same run in this one."""
        self.requests += other.requests
        self.live += other.live
        self.cache_hits += other.cache_hits
        self.replayed += other.replayed
        for k, n in other.retries.items():
            self.retries[k] = self.retries.get(k, 0) + n
        self.waited_s += other.waited_s
        self.rate_limits.extend(other.rate_limits)

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "live": self.live, "cache_hits": self.cache_hits,
                "replayed": self.replayed, "retries": dict(sorted(self.retries.items())),
                "waited_s": round(self.waited_s, 3)}


class LLM:
    def __init__(self, mode: str, env: Mapping[str, str], pool: ClientPool | None, policy: RetryPolicy,
                 cache: ResponseCache | None, cassettes: Mapping[str, dict[str, Any]], timeout_s: float | None):
        self.mode = mode
        self.env = env
        self.pool = pool
        self.policy = policy
        self.cache = cache
        self.cassettes = cassettes
        self.timeout_s = timeout_s
        self.stats = Stats()
        self.recorded: dict[str, dict[str, dict[str, Any]]] = {}  # dataset path -> key -> entry
        self._inflight: dict[str, asyncio.Future[Completion]] = {}

    async def complete(self, req: ChatRequest, dataset: str = "",
                       check: Callable[[str], object] | None = None) -> Completion:
        """The answer to `req`. `check(text)` raises when the caller cannot use an answer: such an
        answer is an error, so it is neither cached nor recorded (and a cached one is not served)."""
        if self.mode == "replay" or req.provider == "replay":
            return self._replay(req)
        key = cache_key(req, base_url_of(req.provider, req.base_url, self.env, req.options))
        if self.cache is not None and self.mode != "record":
            hit = self.cache.get(key)
            if hit is not None and _usable(hit, check):
                self.stats.cache_hits += 1
                return hit
        if self.pool is None:
            raise ProviderError("provider", "live calls are not available in this run")
        pending = self._inflight.get(key)
        if pending is not None:  # an identical request is on its way: share its answer (or its error)
            self.stats.cache_hits += 1
            got = await asyncio.shield(pending)
            return Completion(got.text, got.tokens_in, got.tokens_out, got.latency_ms, "cache")
        fut: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            got = await self._live(req, key, dataset, check)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except Exception as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            fut.set_result(got)
        finally:
            del self._inflight[key]
        return got

    async def embed(self, req: Any, dataset: str = "") -> list[list[float]]:
        """Embeddings of an EmbedRequest, through the same cache, cassettes and retries as answers."""
        got = await self.complete(req, dataset, check=_vectors)
        return _vectors(got.text)

    def _replay(self, req: ChatRequest) -> Completion:
        key = request_key(req)
        entry = self.cassettes.get(key)
        if entry is None:
            raise ProviderError(
                "provider",
                f"no recorded response for this request to {req.provider}/{req.model} in the cassettes "
                f"(key {key[:12]}); record it with `gating eval --record` against a live provider",
            )
        self.stats.replayed += 1
        return Completion.from_dict(entry["response"], "replay")

    async def _live(self, req: ChatRequest, key: str, dataset: str,
                    check: Callable[[str], object] | None) -> Completion:
        self.stats.requests += 1

        def on_retry(err: ProviderError, wait: float) -> None:
            self.stats.retries[err.category] = self.stats.retries.get(err.category, 0) + 1
            self.stats.waited_s += wait
            self.stats.requests += 1

        assert self.pool is not None  # complete() answers without a pool before it gets here
        got = await call_with_retries(self.pool, req, self.env, self.policy, self.timeout_s, on_retry)
        self.stats.live += 1
        got.latency_ms = round(got.latency_ms, 3)  # as stored, so record and replay agree exactly
        if check is not None:
            check(got.text)  # raises: an unusable answer is an error, kept nowhere
        if self.cache is not None:
            self.cache.put(key, got)
        if self.mode == "record":
            rkey = request_key(req)
            self.recorded.setdefault(dataset, {})[rkey] = cassette_entry(rkey, req, got)
        return got


def _vectors(text: str) -> list[list[float]]:
    try:
        v = json.loads(text)
    except ValueError:
        v = None
    if not isinstance(v, list) or not all(isinstance(r, list) for r in v):
        raise ProviderError("parse", "a recorded embedding is not a list of vectors")
    return v


def _usable(got: Completion, check: Callable[[str], object] | None) -> bool:
    """A cached answer the caller can use (an older cache may hold one it cannot)."""
    if check is None:
        return True
    try:
        check(got.text)
    except Exception:
        return False
    return True
