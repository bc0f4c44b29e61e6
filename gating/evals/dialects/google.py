"""Google Gemini: `generateContent` on the Gemini API (an `x-goog-api-key`) and on Vertex AI (a bearer
token, a project and a location), and their embeddings.

Both answer errors as `{"error": {"code", "message", "status", "details"}}`; an invalid Gemini API
key is a 400 with reason API_KEY_INVALID (a setup error, not a bad request), and a 429 carries its
wait in a RetryInfo detail (`retryDelay: "37s"`) rather than a Retry-After header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from gating.evals.dialects import (
    Dialect,
    EmbedRequest,
    Prepared,
    Request,
    json_body,
    system_and_turns,
    tokens,
    vectors,
)
from gating.evals.providers import ChatRequest, ProviderError, classify_status

# Gemini's generationConfig names for the manifest's params; others pass through as written.
PARAMS = {"max_tokens": "maxOutputTokens", "top_p": "topP", "top_k": "topK", "stop": "stopSequences"}
BLOCKED = {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_SAFETY"}
_DELAY = re.compile(r"^\s*([0-9.]+)s\s*$")


def generate_body(req: ChatRequest) -> dict[str, Any]:
    system, turns = system_and_turns(req)
    body: dict[str, Any] = {"contents": [{"role": "model" if r == "assistant" else "user", "parts": [{"text": c}]}
                                         for r, c in turns]}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    params = {PARAMS.get(k, k): v for k, v in req.params}
    if isinstance(params.get("stopSequences"), str):
        params["stopSequences"] = [params["stopSequences"]]
    if params:
        body["generationConfig"] = params
    return body


def parse_generate(data: Any) -> tuple[str, int | None, int | None]:
    if not isinstance(data, dict):
        raise ProviderError("parse", "unexpected response shape: the body is not a JSON object")
    feedback = f if isinstance(f := data.get("promptFeedback"), dict) else {}
    if feedback.get("blockReason"):
        raise ProviderError("content_filter", f"the provider blocked the prompt (blockReason: {feedback['blockReason']})")
    cands = data.get("candidates")
    if not isinstance(cands, list) or not cands or not isinstance(cands[0], dict):
        raise ProviderError("parse", "unexpected response shape: no `candidates`")
    cand = cands[0]
    if cand.get("finishReason") in BLOCKED:
        raise ProviderError("content_filter", f"the provider filtered the answer (finishReason: {cand['finishReason']})")
    parts = (cand.get("content") or {}).get("parts") if isinstance(cand.get("content"), dict) else None
    if not isinstance(parts, list):
        raise ProviderError("parse", "unexpected response shape: the candidate has no `content.parts`")
    text = "".join(str(p.get("text") or "") for p in parts if isinstance(p, dict) and not p.get("thought"))
    usage = u if isinstance(u := data.get("usageMetadata"), dict) else {}
    return text, tokens(usage.get("promptTokenCount")), tokens(usage.get("candidatesTokenCount"))


def _error_of(resp: httpx.Response) -> dict[str, Any]:
    try:
        err = resp.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return err if isinstance(err, dict) else {}


def _retry_delay(err: Mapping[str, Any]) -> float | None:
    for d in err.get("details") or []:
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
            m = _DELAY.match(str(d.get("retryDelay", "")))
            if m:
                return float(m.group(1))
    return None


def _reasons(err: Mapping[str, Any]) -> set[str]:
    return {str(d.get("reason")) for d in err.get("details") or [] if isinstance(d, dict) and d.get("reason")}


class _Google(Dialect):
    def error(self, resp: httpx.Response, req: Request, env: Mapping[str, str], key_sent: bool) -> ProviderError:
        base = classify_status(resp)
        err = _error_of(resp)
        status = str(err.get("status") or "")
        if resp.status_code == 429 or status == "RESOURCE_EXHAUSTED":
            wait = _retry_delay(err)
            return ProviderError("rate_limit", base.message, retry_after=wait if wait is not None else base.retry_after,
                                 status=resp.status_code, retryable=True)
        if status == "DEADLINE_EXCEEDED":
            return ProviderError("timeout", base.message, status=resp.status_code, retryable=True)
        if resp.status_code in (401, 403, 404) or "API_KEY_INVALID" in _reasons(err) or status == "UNAUTHENTICATED":
            return self.setup_error(resp, req, env, key_sent, base.message)
        return base

    def parse(self, data: Any) -> tuple[str, int | None, int | None]:
        return parse_generate(data)


class Gemini(_Google):
    name = "google"
    speaks = "the Gemini API (`generateContent`, `batchEmbedContents`)"
    url_envs = ("GOOGLE_GEMINI_BASE_URL",)
    key_envs = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    default_url = "https://generativelanguage.googleapis.com"

    def _model_url(self, req: Request, env: Mapping[str, str], op: str) -> tuple[str, dict[str, str], bool]:
        base = self.require_url(req, env)
        key = self.require_key(req, env, base)
        version = "" if base.rsplit("/", 1)[-1].startswith("v1") else "/v1beta"
        model = req.model.removeprefix("models/")
        headers = {"content-type": "application/json", **({"x-goog-api-key": key} if key else {})}
        return f"{base}{version}/models/{quote(model, safe='')}:{op}", headers, bool(key)

    def prepare(self, req: ChatRequest, env: Mapping[str, str]) -> Prepared:
        url, headers, sent = self._model_url(req, env, "generateContent")
        return Prepared(url, headers, json_body(generate_body(req)), sent)

    def prepare_embed(self, req: EmbedRequest, env: Mapping[str, str]) -> Prepared:
        url, headers, sent = self._model_url(req, env, "batchEmbedContents")
        name = "models/" + req.model.removeprefix("models/")
        body = {"requests": [{"model": name, "content": {"parts": [{"text": t}]}} for t in req.texts]}
        return Prepared(url, headers, json_body(body), sent)

    def parse_embed(self, data: Any, n: int) -> list[list[float]]:
        rows = data.get("embeddings") if isinstance(data, dict) else None
        if isinstance(rows, list):
            rows = [r.get("values") if isinstance(r, dict) else None for r in rows]
        return vectors(rows, n, "`embeddings[].values`")

    def setup_error(self, resp: httpx.Response, req: Request, env: Mapping[str, str], key_sent: bool,
                    said: str) -> ProviderError:
        if resp.status_code in (400, 401) or (resp.status_code == 403 and not key_sent):
            names = req.api_key_env or " or ".join(self.key_envs)
            fix = f"the API key was refused: set a valid {names}" if key_sent else f"no API key was sent: set {names}"
            return ProviderError("setup", f"{said} -- {fix}", status=resp.status_code)
        return super().setup_error(resp, req, env, key_sent, said)


class Vertex(_Google):
    name = "vertex"
    speaks = "Gemini on Vertex AI (`generateContent`, `predict` for embeddings; a bearer token, `project`, `location`)"
    url_envs = ("GOOGLE_VERTEX_BASE_URL",)
    key_envs = ("GOOGLE_OAUTH_ACCESS_TOKEN",)
    settings = ("project", "location")

    def base_url(self, req: Request, env: Mapping[str, str]) -> str | None:
        url = super().base_url(req, env)
        if url:
            return url
        loc = dict(req.options).get("location") or env.get("GOOGLE_CLOUD_LOCATION") or "global"
        return "https://aiplatform.googleapis.com" if loc == "global" else f"https://{loc}-aiplatform.googleapis.com"

    def _model_url(self, req: Request, env: Mapping[str, str], op: str) -> tuple[str, dict[str, str], bool]:
        base = self.require_url(req, env)
        project = self.option(req, "project", env, "GOOGLE_CLOUD_PROJECT")
        location = self.option(req, "location", env, "GOOGLE_CLOUD_LOCATION", default="global")
        token = self.key(req, env)
        if not token and base.endswith(".googleapis.com"):
            raise ProviderError("setup", f"no access token for vertex: set {self.key_env(req)} (for example from "
                                "`gcloud auth print-access-token`), or run on recorded cassettes")
        version = "" if base.rsplit("/", 1)[-1].startswith("v1") else "/v1"
        path = (f"/projects/{quote(project, safe='')}/locations/{quote(location, safe='')}/publishers/google/models/"
                f"{quote(req.model, safe='')}:{op}")
        headers = {"content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {})}
        return base + version + path, headers, bool(token)

    def prepare(self, req: ChatRequest, env: Mapping[str, str]) -> Prepared:
        url, headers, sent = self._model_url(req, env, "generateContent")
        return Prepared(url, headers, json_body(generate_body(req)), sent)

    def prepare_embed(self, req: EmbedRequest, env: Mapping[str, str]) -> Prepared:
        url, headers, sent = self._model_url(req, env, "predict")
        return Prepared(url, headers, json_body({"instances": [{"content": t} for t in req.texts]}), sent)

    def parse_embed(self, data: Any, n: int) -> list[list[float]]:
        rows = data.get("predictions") if isinstance(data, dict) else None
        if isinstance(rows, list):
            rows = [((r.get("embeddings") or {}).get("values") if isinstance(r, dict)
                     and isinstance(r.get("embeddings"), dict) else None) for r in rows]
        return vectors(rows, n, "`predictions[].embeddings.values`")
