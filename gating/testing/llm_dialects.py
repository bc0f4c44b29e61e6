"""The test LLM server's native dialects: Azure OpenAI, Gemini, Vertex AI, Bedrock Converse and Ollama.

Each follows its provider's published shapes: the paths, where the credentials go (and the error
body and status a wrong one gets), how messages and usage are written, and what rate limits,
server errors and content filters look like. Bedrock requests are checked by recomputing their
SigV4 signature here (hashlib and hmac, independently of the client's botocore).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

Reply = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class Route:
    api: str  # azure | gemini | vertex | bedrock | ollama | openai (embeddings)
    kind: str  # chat | embed
    model: str


_ROUTES = [
    (re.compile(r"^/openai/deployments/([^/]+)/chat/completions$"), "azure", "chat"),
    (re.compile(r"^/openai/deployments/([^/]+)/embeddings$"), "azure", "embed"),
    (re.compile(r"^/v1beta/models/([^/:]+):generateContent$"), "gemini", "chat"),
    (re.compile(r"^/v1beta/models/([^/:]+):batchEmbedContents$"), "gemini", "embed"),
    (re.compile(r"^/v1/projects/[^/]+/locations/[^/]+/publishers/google/models/([^/:]+):generateContent$"),
     "vertex", "chat"),
    (re.compile(r"^/v1/projects/[^/]+/locations/[^/]+/publishers/google/models/([^/:]+):predict$"), "vertex", "embed"),
    (re.compile(r"^/model/([^/]+)/converse$"), "bedrock", "chat"),
    (re.compile(r"^/model/([^/]+)/invoke$"), "bedrock", "embed"),
    (re.compile(r"^/api/chat$"), "ollama", "chat"),
    (re.compile(r"^/api/embed$"), "ollama", "embed"),
    (re.compile(r"^/v1/embeddings$"), "openai", "embed"),
]
AZURE_VERSIONS = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")


def route(method: str, raw_path: str) -> Route | None:
    if method != "POST":
        return None
    for rx, api, kind in _ROUTES:
        m = rx.match(raw_path)
        if m:
            return Route(api, kind, unquote(m.group(1)) if m.groups() else "")
    return None


def _j(d: Any) -> bytes:
    return json.dumps(d).encode()


def google_error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> Reply:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return code, {}, _j({"error": err})


def bedrock_error(status: int, kind: str, message: str) -> Reply:
    return status, {"x-amzn-errortype": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"}, \
        _j({"message": message})


def azure_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    return status, headers or {}, _j({"error": {"code": code, "message": message}})


# -- credentials -----------------------------------------------------------------------------------


def check_auth(r: Route, headers: dict[str, str], query: dict[str, str], key: str | None,
               aws: dict[str, str], method: str, raw_path: str, raw_query: str, body: bytes) -> Reply | None:
    """The provider's own answer to missing or wrong credentials, or None when they are right."""
    if r.api == "bedrock":
        return check_sigv4(headers, aws, method, raw_path, raw_query, body)
    if r.api == "azure" and not AZURE_VERSIONS.match(query.get("api-version", "")):
        return azure_error(404, "404", "Resource not found")
    if key is None:
        return None
    bearer = headers.get("authorization", "").removeprefix("Bearer ")
    if r.api == "azure":
        sent = headers.get("api-key") or bearer
        if sent != key:
            return azure_error(401, "401", "Access denied due to invalid subscription key or wrong API endpoint. Make "
                               "sure to provide a valid key for an active subscription and use a correct regional "
                               "API endpoint for your resource.")
    elif r.api == "gemini":
        sent = headers.get("x-goog-api-key") or query.get("key") or ""
        if not sent:
            return google_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without "
                                "established identity). Please use API Key or other form of API consumer identity "
                                "to call this API.")
        if sent != key:
            return google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                                [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                                  "domain": "googleapis.com",
                                  "metadata": {"service": "generativelanguage.googleapis.com"}}])
    elif r.api == "vertex":
        if bearer != key:
            return google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected "
                                "OAuth 2 access token, login cookie or other valid authentication credential.")
    elif r.api in ("ollama", "openai") and bearer != key:
        return 401, {}, _j({"error": "unauthorized"} if r.api == "ollama" else
                           {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
    return None


_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                   r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def check_sigv4(headers: dict[str, str], aws: dict[str, str], method: str, raw_path: str, raw_query: str,
                body: bytes) -> Reply | None:
    """Recompute the request's SigV4 signature (service `bedrock`) with the secret of its access key."""
    auth = headers.get("authorization")
    if not auth:
        return bedrock_error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    m = _AUTH.match(auth)
    if not m:
        return bedrock_error(403, "IncompleteSignatureException", "Authorization header requires 'Credential', "
                             "'Signature' and 'SignedHeaders' parameters.")
    key_id, day, region, service, signed, signature = m.groups()
    secret = aws.get(key_id)
    if secret is None:
        return bedrock_error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    amz_date = headers.get("x-amz-date", "")
    names = signed.split(";")
    if service != "bedrock" or not amz_date.startswith(day) or "host" not in names or any(n not in headers for n in names):
        return bedrock_error(403, "InvalidSignatureException", "Credential should be scoped to correct service: "
                             "'bedrock'. " if service != "bedrock" else "The request signature is incomplete.")
    query = "&".join(sorted(raw_query.split("&"))) if raw_query else ""
    canonical = "\n".join([method, quote(raw_path, safe="/~"), query,
                           "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in names), signed,
                           hashlib.sha256(body).hexdigest()])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    k = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), day), region), service), "aws4_request")
    if not hmac.compare_digest(hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest(), signature):
        return bedrock_error(403, "InvalidSignatureException", "The request signature we calculated does not match "
                             "the signature you provided. Check your AWS Secret Access Key and signing method. "
                             "Consult the service documentation for details.")
    return None


# -- requests and answers ----------------------------------------------------------------------------


def texts(api: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) of every message of a native request, the system text included."""
    out: list[tuple[str, str]] = []
    if api in ("gemini", "vertex"):
        sys_ = body.get("systemInstruction") or {}
        if sys_:
            out.append(("system", " ".join(str(p.get("text", "")) for p in sys_.get("parts") or [])))
        for c in body.get("contents") or []:
            role = "assistant" if c.get("role") == "model" else "user"
            out.append((role, " ".join(str(p.get("text", "")) for p in c.get("parts") or [])))
        return out
    if api == "bedrock":
        for b in body.get("system") or []:
            out.append(("system", str(b.get("text", ""))))
        for msg in body.get("messages") or []:
            out.append((str(msg.get("role")), " ".join(str(b.get("text", "")) for b in msg.get("content") or [])))
        return out
    for msg in body.get("messages") or []:  # azure, ollama: OpenAI-style messages
        c = msg.get("content")
        out.append((str(msg.get("role")), c if isinstance(c, str) else ""))
    return out


def answer_body(api: str, model: str, text: str, tin: int, tout: int, filtered: bool) -> Reply:
    """A 200 answer in the dialect (or the dialect's refusal when `filtered`)."""
    if api == "azure":
        if filtered:  # Azure filters the prompt with a 400 (an answer filtered on the way out has finish_reason)
            return 400, {}, _j({"error": {
                "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management "
                           "policy. Please modify your prompt and retry.", "type": None, "param": "prompt",
                "code": "content_filter", "status": 400,
                "innererror": {"code": "ResponsibleAIPolicyViolation",
                               "content_filter_result": {"hate": {"filtered": True, "severity": "high"}}}}})
        return 200, {}, _j({"id": "chatcmpl-azure", "object": "chat.completion", "model": model,
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": text},
                                         "content_filter_results": {}}],
                            "usage": {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout}})
    if api in ("gemini", "vertex"):
        if filtered:
            return 200, {}, _j({"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True}]},
                "usageMetadata": {"promptTokenCount": tin, "totalTokenCount": tin}, "modelVersion": model})
        return 200, {}, _j({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                            "finishReason": "STOP", "index": 0}],
                            "usageMetadata": {"promptTokenCount": tin, "candidatesTokenCount": tout,
                                              "totalTokenCount": tin + tout}, "modelVersion": model})
    if api == "bedrock":
        return 200, {}, _j({"output": {"message": {"role": "assistant",
                                                   "content": [] if filtered else [{"text": text}]}},
                            "stopReason": "guardrail_intervened" if filtered else "end_turn",
                            "usage": {"inputTokens": tin, "outputTokens": tout, "totalTokens": tin + tout},
                            "metrics": {"latencyMs": 1}})
    return 200, {}, _j({"model": model, "created_at": "2026-01-01T00:00:00Z",
                        "message": {"role": "assistant", "content": text}, "done": True, "done_reason": "stop",
                        "total_duration": 1000, "prompt_eval_count": tin, "eval_count": tout})


def fault_reply(api: str, kind: str, retry_after: float | None) -> Reply | None:
    """The dialect's rate limit (429), server error (500), overload (503, 529) or truncated body."""
    if kind == "429":
        hdr = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
        if api == "azure":
            return azure_error(429, "429", "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
                               "version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing "
                               "tier. Please retry after 1 second.", hdr)
        if api in ("gemini", "vertex"):
            details = ([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after:g}s"}]
                       if retry_after is not None else None)
            return google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", details)
        if api == "bedrock":
            return bedrock_error(429, "ThrottlingException", "Too many requests, please wait before trying again.")
        return 429, hdr, _j({"error": "too many requests"})
    if kind == "500":
        if api == "azure":
            return azure_error(500, "InternalServerError", "The server had an error while processing your request.")
        if api in ("gemini", "vertex"):
            return google_error(500, "INTERNAL", "An internal error has occurred. Please retry or report in "
                                "https://developers.generativeai.google/guide/troubleshooting")
        if api == "bedrock":
            return bedrock_error(500, "InternalServerException", "The server encountered an internal error.")
        return 500, {}, _j({"error": "an internal error occurred"})
    if kind in ("503", "529"):  # overloaded: the service's load, not the caller's quota
        hdr = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
        if api in ("gemini", "vertex"):
            code, _, body = google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
            return code, hdr, body
        if api == "bedrock":
            code, h, body = bedrock_error(503, "ServiceUnavailableException", "Too many connections, please wait "
                                          "before trying your request again.")
            return code, {**h, **hdr}, body
        return int(kind), hdr, _j({"error": "the service is overloaded"})
    if kind == "malformed":
        return 200, {}, b'{"candidates": [{"content": {"parts": [{"text": "trunc'
    return None


# -- embeddings --------------------------------------------------------------------------------------

DIMS = 64


def embedding(text: str) -> list[float]:
    """A deterministic bag-of-words vector: texts sharing words point the same way."""
    v = [0.0] * DIMS
    for w in re.findall(r"\w+", text.lower()):
        v[int(hashlib.sha256(w.encode()).hexdigest(), 16) % DIMS] += 1.0
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [round(x / n, 6) for x in v]


def embed_reply(r: Route, body: dict[str, Any]) -> Reply:
    if r.api in ("azure", "openai"):
        inp = body.get("input")
        items = [inp] if isinstance(inp, str) else list(inp or [])
        return 200, {}, _j({"object": "list", "model": r.model or body.get("model"),
                            "data": [{"object": "embedding", "index": i, "embedding": embedding(t)}
                                     for i, t in enumerate(items)],
                            "usage": {"prompt_tokens": len(items), "total_tokens": len(items)}})
    if r.api == "gemini":
        return 200, {}, _j({"embeddings": [{"values": embedding(" ".join(p.get("text", "")
                                                                         for p in q["content"]["parts"]))}
                                           for q in body.get("requests") or []]})
    if r.api == "vertex":
        return 200, {}, _j({"predictions": [{"embeddings": {"values": embedding(i.get("content", "")),
                                                            "statistics": {"truncated": False, "token_count": 1}}}
                                            for i in body.get("instances") or []]})
    if r.api == "bedrock":
        if "texts" in body:
            return 200, {}, _j({"id": "e", "embeddings": [embedding(t) for t in body["texts"]],
                                "texts": body["texts"], "response_type": "embeddings_floats"})
        return 200, {}, _j({"embedding": embedding(body.get("inputText", "")), "inputTextTokenCount": 1})
    inp = body.get("input")
    items = [inp] if isinstance(inp, str) else list(inp or [])
    return 200, {}, _j({"model": body.get("model"), "embeddings": [embedding(t) for t in items]})


def refusal(r: Route, status: int) -> Reply:
    """The dialect's answer when the credentials may not use the model (403) or it does not exist (404)."""
    if r.api == "bedrock":
        if status == 404:
            return bedrock_error(404, "ResourceNotFoundException", "Could not resolve the foundation model from the "
                                 "provided model identifier.")
        return bedrock_error(status, "AccessDeniedException", "You don't have access to the model with the specified "
                             "model ID.")
    if r.api in ("gemini", "vertex"):
        if status == 404:
            return google_error(404, "NOT_FOUND", f"models/{r.model} is not found for API version v1beta, or is not "
                                "supported for generateContent.")
        return google_error(status, "PERMISSION_DENIED", "Permission denied on resource (or it may not exist).")
    if r.api == "azure":
        if status == 404:
            return azure_error(404, "DeploymentNotFound", "The API deployment for this resource does not exist. If you "
                               "created the deployment within the last 5 minutes, please wait a moment and try again.")
        return azure_error(status, str(status), "Principal does not have access to API/Operation.")
    return status, {}, _j({"error": f"model '{r.model}' not found" if status == 404 else "forbidden"})
