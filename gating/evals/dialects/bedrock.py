"""AWS Bedrock: the Converse API for answers and InvokeModel for Titan and Cohere embeddings, signed with
SigV4 by botocore (its SigV4Auth and its standard credential chain), which the `bedrock` extra installs.

Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN from the run's
environment first, else botocore's chain (profiles, SSO, web identity, containers, instance
metadata). Region: the model's `region`, else AWS_REGION, else AWS_DEFAULT_REGION. Endpoint: the
model's `base_url`, else AWS_ENDPOINT_URL_BEDROCK_RUNTIME, else AWS_ENDPOINT_URL, else the region's.
Errors name their kind in the `x-amzn-ErrorType` header and carry `{"message": ...}`.
"""

from __future__ import annotations

import threading
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
from gating.evals.providers import ChatRequest, ProviderError, retry_after_seconds

SERVICE = "bedrock"  # the SigV4 signing name of bedrock-runtime
INFERENCE = {"max_tokens": "maxTokens", "temperature": "temperature", "top_p": "topP", "stop": "stopSequences"}
FILTERED = {"guardrail_intervened", "content_filtered"}
THROTTLED = {"ThrottlingException", "ModelNotReadyException", "ServiceQuotaExceededException",
             "TooManyRequestsException"}
SETUP = {"AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException",
         "MissingAuthenticationTokenException", "ResourceNotFoundException", "IncompleteSignatureException"}
_chain_lock = threading.Lock()
_chain: Any = None  # botocore's resolved credentials (refreshable ones refresh themselves)
_chain_resolved = False  # the chain is asked once per process (instance metadata can take seconds to answer)


def _botocore() -> Any:
    try:
        import botocore.auth
        import botocore.awsrequest
        import botocore.credentials
        import botocore.session
    except ImportError:
        raise ProviderError("setup", "provider bedrock signs its requests with botocore, which is not installed: "
                            "pip install 'gating[bedrock]'") from None
    return botocore


def credentials(env: Mapping[str, str]) -> Any:
    """Frozen credentials: the run's environment first, then botocore's standard chain."""
    bc = _botocore()
    creds = bc.credentials.EnvProvider(environ=dict(env)).load()
    if creds is None:
        global _chain, _chain_resolved
        with _chain_lock:
            if not _chain_resolved:
                _chain, _chain_resolved = bc.session.get_session().get_credentials(), True
            creds = _chain
    if creds is None:
        raise ProviderError("setup", "no AWS credentials for bedrock: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                            "(and AWS_SESSION_TOKEN for temporary ones), or AWS_PROFILE, or run where the AWS "
                            "credential chain finds a role; or run on recorded cassettes")
    return creds.get_frozen_credentials()


def converse_body(req: ChatRequest) -> dict[str, Any]:
    system, turns = system_and_turns(req)
    body: dict[str, Any] = {"messages": [{"role": r, "content": [{"text": c}]} for r, c in turns]}
    if system:
        body["system"] = [{"text": system}]
    inference, extra = {}, {}
    for k, v in req.params:
        if k in INFERENCE:
            inference[INFERENCE[k]] = [v] if k == "stop" and isinstance(v, str) else v
        else:
            extra[k] = v
    if inference:
        body["inferenceConfig"] = inference
    if extra:
        body["additionalModelRequestFields"] = extra
    return body


class Bedrock(Dialect):
    name = "bedrock"
    speaks = "the Bedrock Converse API, SigV4-signed (needs the `bedrock` extra); Titan and Cohere embeddings"
    url_envs = ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL")
    key_envs = ("AWS_ACCESS_KEY_ID",)
    settings = ("region",)

    def region(self, req: Request, env: Mapping[str, str]) -> str:
        return self.option(req, "region", env, "AWS_REGION", "AWS_DEFAULT_REGION")

    def base_url(self, req: Request, env: Mapping[str, str]) -> str | None:
        url = super().base_url(req, env)
        if url:
            return url
        region = dict(req.options).get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        return f"https://bedrock-runtime.{region}.amazonaws.com" if region else None

    def url_setting(self, req: Request, env: Mapping[str, str]) -> str:
        if req.base_url or any(env.get(v) for v in self.url_envs):
            return super().url_setting(req, env)
        return f"the region's endpoint {self.base_url(req, env)}"

    def _signed(self, req: Request, env: Mapping[str, str], op: str, body: dict[str, Any]) -> Prepared:
        region = self.region(req, env)
        url = f"{self.require_url(req, env)}/model/{quote(req.model, safe='')}/{op}"
        bc = _botocore()
        raw = json_body(body)
        aws = bc.awsrequest.AWSRequest(method="POST", url=url, data=raw,
                                       headers={"content-type": "application/json", "accept": "application/json"})
        bc.auth.SigV4Auth(credentials(env), SERVICE, region).add_auth(aws)
        return Prepared(url, {k.lower(): v for k, v in aws.headers.items()}, raw, True)

    def prepare(self, req: ChatRequest, env: Mapping[str, str]) -> Prepared:
        return self._signed(req, env, "converse", converse_body(req))

    def parse(self, data: Any) -> tuple[str, int | None, int | None]:
        if not isinstance(data, dict):
            raise ProviderError("parse", "unexpected response shape: the body is not a JSON object")
        if data.get("stopReason") in FILTERED:
            raise ProviderError("content_filter", f"the provider filtered the answer (stopReason: {data['stopReason']})")
        msg = (data.get("output") or {}).get("message") if isinstance(data.get("output"), dict) else None
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, list):
            raise ProviderError("parse", "unexpected response shape: no `output.message.content`")
        text = "".join(str(b.get("text") or "") for b in content if isinstance(b, dict))
        usage = u if isinstance(u := data.get("usage"), dict) else {}
        return text, tokens(usage.get("inputTokens")), tokens(usage.get("outputTokens"))

    def prepare_embed(self, req: EmbedRequest, env: Mapping[str, str]) -> Prepared:
        if req.model.startswith("cohere."):
            return self._signed(req, env, "invoke", {"texts": list(req.texts), "input_type": "search_document"})
        if not req.model.startswith("amazon.titan-embed") or len(req.texts) != 1:
            raise ProviderError("setup", f"bedrock embeddings: model {req.model!r} is neither an amazon.titan-embed "
                                "model (one text per request) nor a cohere.embed model")
        return self._signed(req, env, "invoke", {"inputText": req.texts[0]})

    def parse_embed(self, data: Any, n: int) -> list[list[float]]:
        if not isinstance(data, dict):
            return vectors(None, n, "the response")
        if "embedding" in data:
            return vectors([data["embedding"]], n, "`embedding`")
        return vectors(data.get("embeddings"), n, "`embeddings`")

    def error(self, resp: httpx.Response, req: Request, env: Mapping[str, str], key_sent: bool) -> ProviderError:
        kind = resp.headers.get("x-amzn-errortype", "").split(":", 1)[0]
        try:
            body = resp.json()
            said = body.get("message") or body.get("Message") if isinstance(body, dict) else None
        except ValueError:
            said = None
        msg = f"HTTP {resp.status_code} {kind or 'error'} from {resp.request.url}" + (f": {said}" if said else "")
        s = resp.status_code
        if kind in THROTTLED or s == 429:
            return ProviderError("rate_limit", msg, retry_after=retry_after_seconds(resp.headers), status=s,
                                 retryable=True)
        if kind == "ModelTimeoutException" or s in (408, 504):
            return ProviderError("timeout", msg, status=s, retryable=True)
        if kind in SETUP or s in (401, 403, 404):
            if kind in ("UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException",
                        "IncompleteSignatureException", "MissingAuthenticationTokenException"):
                fix = ("the AWS credentials were refused: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and "
                       "AWS_SESSION_TOKEN (or the profile the credential chain found)")
            elif kind == "ResourceNotFoundException" or s == 404:
                fix = f"is model {req.model!r} available in region {self.region(req, env)}?"
            else:
                fix = (f"the AWS identity may not invoke model {req.model!r}: grant bedrock:InvokeModel and request "
                       "access to the model in the Bedrock console")
            return ProviderError("setup", f"{msg} -- {fix}", status=s)
        if s >= 500 or kind in ("ServiceUnavailableException", "InternalServerException"):
            return ProviderError("provider", msg, status=s, retryable=True)
        return ProviderError("provider", msg, status=s)
