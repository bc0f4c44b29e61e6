"""The native dialects of the providers that do not speak OpenAI chat completions or Anthropic messages.

Each dialect knows its provider's environment conventions (where the base URL, the key and the
provider's own settings come from), how a request is written and signed, how an answer and an
embedding are read, and how the provider's error bodies map onto ProviderError categories. The
transport (pool, timeouts, retries) stays in providers.py, shared by all of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from gating.evals.providers import ChatRequest, ProviderError, classify_status


@dataclass(frozen=True)
class EmbedRequest:
    """Texts to embed with one model (the request key of an embedding, as ChatRequest is of an answer)."""

    provider: str
    model: str
    texts: tuple[str, ...]
    base_url: str | None = None
    api_key_env: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    repeat: int = 0  # embeddings are deterministic: never a distinct sample

    def key_material(self) -> dict[str, Any]:
        d: dict[str, Any] = {"provider": self.provider, "model": self.model, "embed": list(self.texts)}
        if self.options:
            d["options"] = dict(self.options)
        return d


Request = ChatRequest | EmbedRequest


@dataclass(frozen=True)
class Prepared:
    """One HTTP request ready to send."""

    url: str
    headers: dict[str, str]
    body: bytes
    key_sent: bool


class Dialect:
    """A provider's conventions. Subclasses set the class attributes and implement the four methods."""

    name = ""
    speaks = ""  # what the reference says it speaks
    url_envs: tuple[str, ...] = ()  # base URL variables, the first one set wins
    key_envs: tuple[str, ...] = ()  # key variables, the first one set wins
    default_url: str | None = None
    settings: tuple[str, ...] = ()  # the model keys it takes besides provider/model/params/base_url/api_key_env
    embeddings = True

    # -- where requests go ------------------------------------------------------------------------

    def base_url(self, req: Request, env: Mapping[str, str]) -> str | None:
        url = req.base_url or next((env[v] for v in self.url_envs if env.get(v)), None) or self.default_url
        return url.rstrip("/") if url else None

    def url_setting(self, req: Request, env: Mapping[str, str]) -> str:
        """Where the base URL came from, as the user would fix it."""
        if req.base_url:
            return f"base_url: {req.base_url} in gating.yml"
        for v in self.url_envs:
            if env.get(v):
                return f"{v}={env[v]}"
        names = " or ".join(self.url_envs)
        return f"the default base URL {self.default_url}; set {names} or base_url in gating.yml"

    def key_env(self, req: Request) -> str:
        return req.api_key_env or (self.key_envs[0] if self.key_envs else "")

    def key(self, req: Request, env: Mapping[str, str]) -> str | None:
        names = (req.api_key_env,) if req.api_key_env else self.key_envs
        return next((env[v] for v in names if env.get(v)), None)

    def require_url(self, req: Request, env: Mapping[str, str]) -> str:
        url = self.base_url(req, env)
        if not url:
            names = " or ".join(self.url_envs)
            raise ProviderError("setup", f"no base URL for provider {self.name!r}: set {names} or base_url in gating.yml")
        return url

    def require_key(self, req: Request, env: Mapping[str, str], url: str) -> str | None:
        """The key; none for the provider's public endpoint is a setup error before anything is sent."""
        key = self.key(req, env)
        if not key and url == self.default_url:
            names = req.api_key_env or " or ".join(self.key_envs)
            raise ProviderError("setup", f"no API key for {self.name}: set {names} (or a base_url for a local "
                                "server), or run on recorded cassettes")
        return key

    def option(self, req: Request, name: str, env: Mapping[str, str], *envs: str, default: str | None = None) -> str:
        """A provider setting: the model's key in gating.yml, else the variables, else the default."""
        v = dict(req.options).get(name) or next((env[e] for e in envs if env.get(e)), None) or default
        if not v:
            where = " or ".join(envs)
            raise ProviderError("setup", f"provider {self.name} needs `{name}`: set it on the model in gating.yml"
                                + (f" or set {where}" if where else ""))
        return str(v)

    # -- the dialect --------------------------------------------------------------------------------

    def prepare(self, req: ChatRequest, env: Mapping[str, str]) -> Prepared:
        raise NotImplementedError

    def parse(self, data: Any) -> tuple[str, int | None, int | None]:
        raise NotImplementedError

    def prepare_embed(self, req: EmbedRequest, env: Mapping[str, str]) -> Prepared:
        raise ProviderError("setup", f"provider {self.name} has no embeddings API")

    def parse_embed(self, data: Any, n: int) -> list[list[float]]:
        raise NotImplementedError

    def error(self, resp: httpx.Response, req: Request, env: Mapping[str, str], key_sent: bool) -> ProviderError:
        """A non-200 answer as a ProviderError; setup errors say which setting to fix."""
        err = classify_status(resp)
        if err.category != "setup":
            return err
        return self.setup_error(resp, req, env, key_sent, err.message)

    def setup_error(self, resp: httpx.Response, req: Request, env: Mapping[str, str], key_sent: bool,
                    said: str) -> ProviderError:
        key_env = self.key_env(req)
        if resp.status_code == 401:
            fix = f"the credentials were refused: set a valid {key_env}" if key_sent else f"no credentials were sent: set {key_env}"
        elif resp.status_code == 403:
            fix = f"the credentials may not use model {req.model!r}: check the access of {key_env}"
        else:
            fix = f"is model {req.model!r} served there? ({self.url_setting(req, env)})"
        return ProviderError("setup", f"{said} -- {fix}", status=resp.status_code)


def json_body(d: Mapping[str, Any]) -> bytes:
    return json.dumps(d).encode()


def tokens(v: Any) -> int | None:
    """A usage count, or None when the server reported something that is not one."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def vectors(rows: Any, n: int, what: str) -> list[list[float]]:
    """n embedding vectors (lists of numbers), or a parse error naming the provider's field."""
    if not isinstance(rows, list) or len(rows) != n:
        raise ProviderError("parse", f"unexpected embedding response: expected {n} vector(s) in {what}")
    out = []
    for r in rows:
        if not isinstance(r, list) or not r or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                       for x in r):
            raise ProviderError("parse", f"unexpected embedding response: {what} holds something that is not a "
                                "vector of numbers")
        out.append([float(x) for x in r])
    return out


def system_and_turns(req: ChatRequest) -> tuple[str, list[tuple[str, str]]]:
    """The system text (all system messages, joined) and the other messages in order."""
    system = "\n\n".join(c for r, c in req.messages if r == "system")
    return system, [(r, c) for r, c in req.messages if r != "system"]


def dialect(provider: str) -> Dialect | None:
    """The native dialect of `provider`, or None for the OpenAI-compatible and Anthropic paths."""
    return _registry().get(provider)


def _registry() -> dict[str, Dialect]:
    global _DIALECTS
    if _DIALECTS is None:
        from gating.evals.dialects.azure import Azure
        from gating.evals.dialects.bedrock import Bedrock
        from gating.evals.dialects.google import Gemini, Vertex
        from gating.evals.dialects.ollama import Ollama

        _DIALECTS = {d.name: d for d in (Azure(), Gemini(), Vertex(), Bedrock(), Ollama())}
    return _DIALECTS


_DIALECTS: dict[str, Dialect] | None = None


def native_providers() -> dict[str, Dialect]:
    return dict(_registry())
