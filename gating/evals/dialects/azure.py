"""Azure OpenAI: chat completions and embeddings of a deployment, with `api-version` and the `api-key` header.

The model's `deployment` (default: its `model`) names the deployment; `api_version` (default
OPENAI_API_VERSION, else DEFAULT_API_VERSION) is sent on every request. The key comes from
AZURE_OPENAI_API_KEY in an `api-key` header; a Microsoft Entra token (AZURE_OPENAI_AD_TOKEN) is sent
as a bearer token instead when it is given and no key is, as the openai SDK's AzureOpenAI does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from gating.evals.dialects import Dialect, EmbedRequest, Prepared, Request, json_body, vectors
from gating.evals.providers import ChatRequest, ProviderError, parse_response

DEFAULT_API_VERSION = "2024-10-21"  # the current GA data-plane version
AD_TOKEN_ENV = "AZURE_OPENAI_AD_TOKEN"


class Azure(Dialect):
    name = "azure"
    speaks = "Azure OpenAI chat completions and embeddings (deployments, `api-version`)"
    url_envs = ("AZURE_OPENAI_ENDPOINT",)
    key_envs = ("AZURE_OPENAI_API_KEY",)
    settings = ("deployment", "api_version")

    def _url(self, req: Request, env: Mapping[str, str], op: str) -> str:
        base = self.require_url(req, env).removesuffix("/openai")
        deployment = dict(req.options).get("deployment") or req.model
        version = self.option(req, "api_version", env, "OPENAI_API_VERSION", default=DEFAULT_API_VERSION)
        return f"{base}/openai/deployments/{quote(str(deployment), safe='')}/{op}?api-version={quote(version)}"

    def _auth(self, req: Request, env: Mapping[str, str]) -> tuple[dict[str, str], bool]:
        key = self.key(req, env)
        if key:
            return {"api-key": key}, True
        token = env.get(AD_TOKEN_ENV)
        if token:
            return {"authorization": f"Bearer {token}"}, True
        return {}, False

    def _check_endpoint(self, req: Request, env: Mapping[str, str], sent: bool) -> None:
        if not sent and not req.base_url and not env.get("AZURE_OPENAI_ENDPOINT"):
            raise ProviderError("setup", "no endpoint and no credentials for azure: set AZURE_OPENAI_ENDPOINT and "
                                f"{self.key_env(req)} (or {AD_TOKEN_ENV}), or run on recorded cassettes")

    def prepare(self, req: ChatRequest, env: Mapping[str, str]) -> Prepared:
        headers, sent = self._auth(req, env)
        self._check_endpoint(req, env, sent)
        body: dict[str, Any] = {**dict(req.params), "messages": [{"role": r, "content": c} for r, c in req.messages]}
        return Prepared(self._url(req, env, "chat/completions"), {"content-type": "application/json", **headers},
                        json_body(body), sent)

    def parse(self, data: Any) -> tuple[str, int | None, int | None]:
        return parse_response("openai", data)

    def prepare_embed(self, req: EmbedRequest, env: Mapping[str, str]) -> Prepared:
        headers, sent = self._auth(req, env)
        self._check_endpoint(req, env, sent)
        return Prepared(self._url(req, env, "embeddings"), {"content-type": "application/json", **headers},
                        json_body({"input": list(req.texts)}), sent)

    def parse_embed(self, data: Any, n: int) -> list[list[float]]:
        rows = data.get("data") if isinstance(data, dict) else None
        if isinstance(rows, list):
            rows = [r.get("embedding") if isinstance(r, dict) else None
                    for r in sorted(rows, key=lambda r: r.get("index", 0) if isinstance(r, dict) else 0)]
        return vectors(rows, n, "`data[].embedding`")

    def setup_error(self, resp: httpx.Response, req: Request, env: Mapping[str, str], key_sent: bool,
                    said: str) -> ProviderError:
        if resp.status_code == 404:
            deployment = dict(req.options).get("deployment") or req.model
            version = dict(req.options).get("api_version") or env.get("OPENAI_API_VERSION") or DEFAULT_API_VERSION
            return ProviderError("setup", f"{said} -- is deployment {deployment!r} deployed at "
                                 f"{self.url_setting(req, env)}, and does it accept api-version {version}? (set "
                                 "`deployment:` on the model when its name differs from the model's)",
                                 status=404)
        if resp.status_code == 401:
            fix = (f"the credentials were refused: set a valid {self.key_env(req)} (or {AD_TOKEN_ENV})" if key_sent
                   else f"no credentials were sent: set {self.key_env(req)} or {AD_TOKEN_ENV}")
            return ProviderError("setup", f"{said} -- {fix}", status=401)
        return super().setup_error(resp, req, env, key_sent, said)
