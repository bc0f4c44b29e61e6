"""Ollama's native API: `/api/chat` (not streamed) and `/api/embed`.

Base URL: the model's `base_url`, else OLLAMA_HOST (a bare `host:port` as the ollama CLI accepts
it), else http://localhost:11434; a trailing `/v1` (the OpenAI-compatible path) is dropped. No key
is needed locally; OLLAMA_API_KEY, when set, is sent as a bearer token (hosted Ollama). Errors are
`{"error": "..."}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from gating.evals.dialects import Dialect, EmbedRequest, Prepared, Request, json_body, tokens, vectors
from gating.evals.providers import ChatRequest, ProviderError

OPTIONS = {"max_tokens": "num_predict"}


class Ollama(Dialect):
    name = "ollama"
    speaks = "Ollama's native API (`/api/chat`, `/api/embed`)"
    url_envs = ("OLLAMA_HOST",)
    key_envs = ("OLLAMA_API_KEY",)
    default_url = "http://localhost:11434"

    def base_url(self, req: Request, env: Mapping[str, str]) -> str | None:
        url = super().base_url(req, env)
        if not url:
            return None
        if "://" not in url:
            url = "http://" + url
        return url.removesuffix("/v1").removesuffix("/api")

    def _headers(self, req: Request, env: Mapping[str, str]) -> tuple[dict[str, str], bool]:
        key = self.key(req, env)
        return {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}, bool(key)

    def prepare(self, req: ChatRequest, env: Mapping[str, str]) -> Prepared:
        headers, sent = self._headers(req, env)
        body: dict[str, Any] = {"model": req.model, "messages": [{"role": r, "content": c} for r, c in req.messages],
                                "stream": False}
        if req.params:
            body["options"] = {OPTIONS.get(k, k): v for k, v in req.params}
        return Prepared(self.require_url(req, env) + "/api/chat", headers, json_body(body), sent)

    def parse(self, data: Any) -> tuple[str, int | None, int | None]:
        if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
            raise ProviderError("parse", "unexpected response shape: no `message`")
        content = data["message"].get("content")
        if content is not None and not isinstance(content, str):
            raise ProviderError("parse", "unexpected response shape: `message.content` is not text")
        return content or "", tokens(data.get("prompt_eval_count")), tokens(data.get("eval_count"))

    def prepare_embed(self, req: EmbedRequest, env: Mapping[str, str]) -> Prepared:
        headers, sent = self._headers(req, env)
        return Prepared(self.require_url(req, env) + "/api/embed", headers,
                        json_body({"model": req.model, "input": list(req.texts)}), sent)

    def parse_embed(self, data: Any, n: int) -> list[list[float]]:
        return vectors(data.get("embeddings") if isinstance(data, dict) else None, n, "`embeddings`")

    def setup_error(self, resp: httpx.Response, req: Request, env: Mapping[str, str], key_sent: bool,
                    said: str) -> ProviderError:
        if resp.status_code == 404:
            return ProviderError("setup", f"{said} -- pull the model first (`ollama pull {req.model}`), or check "
                                 f"{self.url_setting(req, env)}", status=404)
        return super().setup_error(resp, req, env, key_sent, said)
