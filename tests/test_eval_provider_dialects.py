"""The native provider dialects (Azure OpenAI, Gemini, Vertex AI, Bedrock, Ollama) over real HTTP to the
test LLM server speaking each one: request shape, credentials, answers, embeddings and error mapping."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from eval_support import a, fast_retries, llm, load, write_repo  # noqa: F401

from gating.evals.dialects import EmbedRequest, bedrock
from gating.evals.providers import (
    ChatRequest,
    ClientPool,
    ProviderError,
    RetryPolicy,
    call_embed,
    call_live,
    call_with_retries,
)
from gating.evals.runner import run_evals
from gating.system.manifest import ManifestError, parse_manifest
from gating.testing.llm_server import LLMServer

MODELS = {
    "azure": ("gpt-4o-2024-08-06", (("deployment", "prod-4o"),)),
    "google": ("gemini-2.0-flash-001", ()),
    "vertex": ("gemini-2.0-flash-001", (("location", "europe-west4"), ("project", "acme-evals"))),
    "bedrock": ("anthropic.claude-3-5-haiku-20241022-v1:0", (("region", "eu-west-1"),)),
    "ollama": ("llama3.1:8b", ()),
}
NATIVE = list(MODELS)


def request(provider: str, content: str, *, system: str | None = None, params: tuple = (("temperature", 0),),
            api_key_env: str | None = None) -> ChatRequest:
    model, options = MODELS[provider]
    msgs = ((("system", system),) if system else ()) + (("user", content),)
    return ChatRequest(provider, model, msgs, params, api_key_env=api_key_env, options=options)


def call(server: LLMServer, req: ChatRequest, env: dict[str, str] | None = None,
         policy: RetryPolicy | None = None, timeout_s: float | None = None) -> Any:
    async def go() -> Any:
        pool = ClientPool(2, timeout_s or 10)
        try:
            if policy is None:
                return await call_live(pool, req, env if env is not None else server.env(), timeout_s)
            waits: list[float] = []
            got = await call_with_retries(pool, req, env if env is not None else server.env(), policy, timeout_s,
                                          on_retry=lambda err, w: waits.append(w))
            return got, waits
        finally:
            await pool.aclose()

    return asyncio.run(go())


def embed(server: LLMServer, req: EmbedRequest, env: dict[str, str] | None = None) -> list[list[float]]:
    async def go() -> list[list[float]]:
        pool = ClientPool(2, 10)
        try:
            return await call_embed(pool, req, env if env is not None else server.env())
        finally:
            await pool.aclose()

    return asyncio.run(go())


def error_of(server: LLMServer, req: ChatRequest, env: dict[str, str] | None = None,
             timeout_s: float | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as e:
        call(server, req, env, timeout_s=timeout_s)
    return e.value


# -- request shapes --------------------------------------------------------------------------------


def test_azure_calls_the_deployment_with_api_version_and_api_key(llm: LLMServer) -> None:  # noqa: F811
    got = call(llm, request("azure", a("Hello there"), system="Be brief."))
    assert (got.text, got.tokens_in, got.tokens_out) == ("Hello there", 17, 2)
    sent = llm.log[-1]
    assert sent["path"] == "/openai/deployments/prod-4o/chat/completions"
    assert sent["query"] == {"api-version": "2024-10-21"}
    assert sent["headers"]["api-key"] == "test-key" and "authorization" not in sent["headers"]
    assert sent["body"] == {"temperature": 0, "messages": [{"role": "system", "content": "Be brief."},
                                                           {"role": "user", "content": "[[answer: Hello there]]"}]}


def test_azure_api_version_from_the_model_or_the_sdk_variable(llm: LLMServer) -> None:  # noqa: F811
    req = request("azure", "hi")
    call(llm, ChatRequest(req.provider, req.model, req.messages, options=(("api_version", "2024-06-01"),)))
    assert llm.log[-1]["query"] == {"api-version": "2024-06-01"}
    assert llm.log[-1]["path"] == "/openai/deployments/gpt-4o-2024-08-06/chat/completions"  # deployment = model
    call(llm, req, {**llm.env(), "OPENAI_API_VERSION": "2025-01-01-preview"})
    assert llm.log[-1]["query"] == {"api-version": "2025-01-01-preview"}


def test_azure_sends_an_entra_token_as_bearer_when_no_key_is_given(llm: LLMServer) -> None:  # noqa: F811
    env = {k: v for k, v in llm.env().items() if k != "AZURE_OPENAI_API_KEY"} | {"AZURE_OPENAI_AD_TOKEN": "entra-tok"}
    call(llm, request("azure", "hi"), env)
    assert llm.log[-1]["headers"]["authorization"] == "Bearer entra-tok"
    assert "api-key" not in llm.log[-1]["headers"]


def test_gemini_generate_content_with_system_instruction_and_generation_config(llm: LLMServer) -> None:  # noqa: F811
    req = request("google", a("Bonjour"), system="Be brief.",
                  params=(("max_tokens", 64), ("temperature", 0.2), ("top_p", 0.9)))
    got = call(llm, req)
    assert (got.text, got.tokens_out) == ("Bonjour", 1)
    sent = llm.log[-1]
    assert sent["path"] == "/v1beta/models/gemini-2.0-flash-001:generateContent"
    assert sent["headers"]["x-goog-api-key"] == "test-key"
    assert sent["body"] == {
        "contents": [{"role": "user", "parts": [{"text": "[[answer: Bonjour]]"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 64, "temperature": 0.2, "topP": 0.9},
    }


def test_gemini_assistant_turns_are_model_turns(llm: LLMServer) -> None:  # noqa: F811
    req = ChatRequest("google", "gemini-2.0-flash-001", (("user", "a"), ("assistant", "b"), ("user", a("c"))))
    assert call(llm, req).text == "c"
    assert [c["role"] for c in llm.log[-1]["body"]["contents"]] == ["user", "model", "user"]


def test_vertex_calls_the_project_and_location_with_a_bearer_token(llm: LLMServer) -> None:  # noqa: F811
    got = call(llm, request("vertex", a("Hallo")))
    assert got.text == "Hallo"
    sent = llm.log[-1]
    assert sent["path"] == ("/v1/projects/acme-evals/locations/europe-west4/publishers/google/models/"
                            "gemini-2.0-flash-001:generateContent")
    assert sent["headers"]["authorization"] == "Bearer test-key"
    req = ChatRequest("vertex", "gemini-2.0-flash-001", (("user", "x"),))  # project and location from the env
    call(llm, req)
    assert "/projects/test-project/locations/us-central1/" in llm.log[-1]["path"]


def test_vertex_without_a_project_says_where_to_set_it(llm: LLMServer) -> None:  # noqa: F811
    env = {k: v for k, v in llm.env().items() if k != "GOOGLE_CLOUD_PROJECT"}
    err = error_of(llm, ChatRequest("vertex", "gemini-2.0-flash-001", (("user", "x"),)), env)
    assert err.category == "setup"
    assert "vertex needs `project`" in err.message and "GOOGLE_CLOUD_PROJECT" in err.message


def test_bedrock_converse_is_sigv4_signed_and_shaped(llm: LLMServer) -> None:  # noqa: F811
    req = request("bedrock", a("Hola"), system="Be brief.", params=(("max_tokens", 50), ("top_k", 5)))
    got = call(llm, req)
    assert (got.text, got.tokens_out) == ("Hola", 1)
    sent = llm.log[-1]
    assert sent["path"] == "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    auth = sent["headers"]["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDLOCALTEST/") and "/eu-west-1/bedrock/aws4_request" in auth
    assert sent["body"] == {"messages": [{"role": "user", "content": [{"text": "[[answer: Hola]]"}]}],
                            "system": [{"text": "Be brief."}], "inferenceConfig": {"maxTokens": 50},
                            "additionalModelRequestFields": {"top_k": 5}}


def test_bedrock_session_token_is_signed_too(llm: LLMServer) -> None:  # noqa: F811
    call(llm, request("bedrock", "hi"), {**llm.env(), "AWS_SESSION_TOKEN": "sess"})
    assert llm.log[-1]["headers"]["x-amz-security-token"] == "sess"


def test_ollama_native_chat_with_options(llm: LLMServer) -> None:  # noqa: F811
    got = call(llm, request("ollama", a("Ciao"), params=(("max_tokens", 20), ("temperature", 0))))
    assert (got.text, got.tokens_out) == ("Ciao", 1)
    sent = llm.log[-1]
    assert sent["path"] == "/api/chat" and "authorization" not in sent["headers"]
    assert sent["body"] == {"model": "llama3.1:8b", "stream": False,
                            "messages": [{"role": "user", "content": "[[answer: Ciao]]"}],
                            "options": {"num_predict": 20, "temperature": 0}}


def test_ollama_host_without_a_scheme_and_an_openai_style_base_url(llm: LLMServer) -> None:  # noqa: F811
    env = {"OLLAMA_HOST": f"{llm.host}:{llm.port}"}
    assert call(llm, request("ollama", a("x")), env).text == "x"
    req = ChatRequest("ollama", "llama3.1:8b", (("user", a("y")),), base_url=llm.url + "/v1")
    assert call(llm, req, {}).text == "y"


# -- credentials --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("provider", "status", "said", "fix"), [
    ("azure", 401, "Access denied due to invalid subscription key", "set a valid AZURE_OPENAI_API_KEY"),
    ("google", 400, "API key not valid", "set a valid GEMINI_API_KEY or GOOGLE_API_KEY"),
    ("vertex", 401, "Request had invalid authentication credentials", "set a valid GOOGLE_OAUTH_ACCESS_TOKEN"),
    ("ollama", 401, "unauthorized", "set a valid OLLAMA_API_KEY"),
], ids=["azure", "google", "vertex", "ollama"])
def test_a_wrong_key_gets_the_providers_answer_and_a_setup_error(provider: str, status: int, said: str,
                                                                 fix: str) -> None:
    with LLMServer(api_key="right-key") as server:
        env = {**server.env(), "OLLAMA_API_KEY": "test-key"}
        err = error_of(server, request(provider, "hi"), env)
    assert (err.category, err.status) == ("setup", status)
    assert said in err.message and fix in err.message


def test_gemini_without_a_key_is_refused_as_unregistered() -> None:
    with LLMServer(api_key="right-key") as server:
        env = {k: v for k, v in server.env().items() if k != "GEMINI_API_KEY"}
        err = error_of(server, request("google", "hi"), env)
    assert (err.category, err.status) == ("setup", 403)
    assert "unregistered callers" in err.message and "no API key was sent: set GEMINI_API_KEY" in err.message


@pytest.mark.parametrize(("secret_env", "kind"), [
    ({"AWS_SECRET_ACCESS_KEY": "wrong-secret"}, "InvalidSignatureException"),
    ({"AWS_ACCESS_KEY_ID": "AKIDUNKNOWN"}, "UnrecognizedClientException"),
], ids=["wrong-secret", "unknown-key-id"])
def test_bedrock_wrong_credentials_are_refused_by_signature(llm: LLMServer, secret_env: dict[str, str],  # noqa: F811
                                                            kind: str) -> None:
    err = error_of(llm, request("bedrock", "hi"), {**llm.env(), **secret_env})
    assert (err.category, err.status) == ("setup", 403)
    assert kind in err.message and "the AWS credentials were refused" in err.message


def test_a_public_endpoint_without_a_key_fails_before_sending() -> None:
    for provider, fix in (("google", "set GEMINI_API_KEY or GOOGLE_API_KEY"),
                          ("azure", "set AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY"),
                          ("vertex", "set GOOGLE_OAUTH_ACCESS_TOKEN")):
        req = request(provider, "hi")
        env = {"GOOGLE_CLOUD_PROJECT": "p"}
        with pytest.raises(ProviderError, match=fix) as e:
            asyncio.run(call_live(ClientPool(1), req, env))
        assert e.value.category == "setup"


def test_bedrock_without_botocore_names_the_extra(monkeypatch: pytest.MonkeyPatch, llm: LLMServer) -> None:  # noqa: F811
    monkeypatch.setitem(sys.modules, "botocore.auth", None)
    err = error_of(llm, request("bedrock", "hi"))
    assert err.category == "setup" and "pip install 'gating[bedrock]'" in err.message


def test_bedrock_without_credentials_or_region_says_what_to_set(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN",
              "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
              "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(bedrock, "_chain", None)
    monkeypatch.setattr(bedrock, "_chain_resolved", False)
    env = {k: v for k, v in llm.env().items() if not k.startswith("AWS_") or k == "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"}
    err = error_of(llm, request("bedrock", "hi"), env)
    assert err.category == "setup" and "no AWS credentials for bedrock" in err.message
    req = ChatRequest("bedrock", "amazon.nova-lite-v1:0", (("user", "hi"),))
    err = error_of(llm, req, {**env, "AWS_ACCESS_KEY_ID": "AKIDLOCALTEST", "AWS_SECRET_ACCESS_KEY": "x"})
    assert "bedrock needs `region`" in err.message and "AWS_REGION or AWS_DEFAULT_REGION" in err.message


@pytest.mark.parametrize("provider", NATIVE)
def test_a_model_the_credentials_may_not_use_is_a_setup_error(provider: str) -> None:
    with LLMServer(refuse=403) as server:
        err = error_of(server, request(provider, "hi"))
    assert (err.category, err.status) == ("setup", 403)


@pytest.mark.parametrize(("provider", "fix"), [
    ("azure", "is deployment 'prod-4o' deployed at AZURE_OPENAI_ENDPOINT="),
    ("google", "is model 'gemini-2.0-flash-001' served there?"),
    ("bedrock", "is model 'anthropic.claude-3-5-haiku-20241022-v1:0' available in region eu-west-1?"),
    ("ollama", "pull the model first (`ollama pull llama3.1:8b`)"),
], ids=["azure", "google", "bedrock", "ollama"])
def test_an_unknown_model_or_deployment_says_what_to_check(provider: str, fix: str) -> None:
    with LLMServer(refuse=404) as server:
        err = error_of(server, request(provider, "hi"))
    assert (err.category, err.status) == ("setup", 404)
    assert fix in err.message


def test_azure_without_api_version_support_is_a_404_naming_the_version(llm: LLMServer) -> None:  # noqa: F811
    req = request("azure", "hi")
    err = error_of(llm, ChatRequest(req.provider, req.model, req.messages, options=(("api_version", "latest"),)))
    assert (err.category, err.status) == ("setup", 404)
    assert "Resource not found" in err.message and "does it accept api-version latest?" in err.message


# -- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", NATIVE)
def test_rate_limits_are_retried_then_answered(llm: LLMServer, provider: str) -> None:  # noqa: F811
    got, waits = call(llm, request(provider, a("finally") + "[[fault:429 retry_after=0.05 times=2]]"),
                      policy=fast_retries())
    assert got.text == "finally" and len(waits) == 2
    if provider in ("azure", "google", "vertex", "ollama"):  # the server's wait, in the provider's own form
        assert waits == [0.05, 0.05]


@pytest.mark.parametrize("provider", NATIVE)
def test_rate_limit_server_error_and_timeout_categories(llm: LLMServer, provider: str) -> None:  # noqa: F811
    err = error_of(llm, request(provider, "[[fault:429 retry_after=7]]"))
    assert (err.category, err.status, err.retryable) == ("rate_limit", 429, True)
    if provider in ("google", "vertex"):
        assert err.retry_after == 7.0  # from the RetryInfo detail; Gemini sends no Retry-After header
    err = error_of(llm, request(provider, "[[fault:500]]"))
    assert (err.category, err.status, err.retryable) == ("provider", 500, True)
    err = error_of(llm, request(provider, "[[fault:slow delay=2]]"), timeout_s=0.2)
    assert err.category == "timeout"
    err = error_of(llm, request(provider, "[[fault:malformed]]"))
    assert err.category == "parse"


def test_bedrock_throttling_names_the_exception(llm: LLMServer) -> None:  # noqa: F811
    err = error_of(llm, request("bedrock", "[[fault:429]]"))
    assert err.category == "rate_limit"
    assert "ThrottlingException" in err.message and "Too many requests" in err.message


@pytest.mark.parametrize(("provider", "said"), [
    ("azure", "content management policy"),
    ("google", "blockReason: SAFETY"),
    ("vertex", "blockReason: SAFETY"),
    ("bedrock", "stopReason: guardrail_intervened"),
], ids=["azure", "google", "vertex", "bedrock"])
def test_content_filters_are_content_filter_errors(llm: LLMServer, provider: str, said: str) -> None:  # noqa: F811
    err = error_of(llm, request(provider, "[[fault:content_filter]]"))
    assert err.category == "content_filter" and said in err.message


# -- embeddings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("provider", "model", "options", "path"), [
    ("openai", "text-embedding-3-small", (), "/v1/embeddings"),
    ("azure", "text-embedding-3-small", (("deployment", "emb"),), "/openai/deployments/emb/embeddings"),
    ("google", "text-embedding-004", (), "/v1beta/models/text-embedding-004:batchEmbedContents"),
    ("vertex", "text-embedding-005", (), "/v1/projects/test-project/locations/us-central1/publishers/google/"
                                         "models/text-embedding-005:predict"),
    ("bedrock", "cohere.embed-english-v3", (("region", "us-east-1"),), "/model/cohere.embed-english-v3/invoke"),
    ("ollama", "nomic-embed-text", (), "/api/embed"),
])
def test_embeddings_one_vector_per_text_in_order(llm: LLMServer, provider: str, model: str,  # noqa: F811
                                                 options: tuple, path: str) -> None:
    vecs = embed(llm, EmbedRequest(provider, model, ("refund window", "window refund", "shipping"), options=options))
    assert len(vecs) == 3 and all(len(v) == 64 for v in vecs)
    assert vecs[0] == vecs[1] and vecs[0] != vecs[2]  # the server's bag-of-words vectors
    assert llm.log[-1]["path"] == path


def test_bedrock_titan_embeds_one_text_per_request(llm: LLMServer) -> None:  # noqa: F811
    (vec,) = embed(llm, EmbedRequest("bedrock", "amazon.titan-embed-text-v2:0", ("hello",)))
    assert len(vec) == 64 and llm.log[-1]["body"] == {"inputText": "hello"}
    with pytest.raises(ProviderError, match="one text per request"):
        embed(llm, EmbedRequest("bedrock", "amazon.titan-embed-text-v2:0", ("a", "b")))


def test_anthropic_has_no_embeddings(llm: LLMServer) -> None:  # noqa: F811
    with pytest.raises(ProviderError, match="anthropic has no embeddings API"):
        embed(llm, EmbedRequest("anthropic", "claude", ("a",)))


# -- the manifest and a whole run -------------------------------------------------------------------------


def test_provider_settings_belong_to_their_provider() -> None:
    ok = (b"version: 1\nname: t\ncomponents:\n  models:\n"
          b"    a: {provider: azure, model: gpt-4o-2024-08-06, deployment: prod, api_version: '2024-10-21'}\n"
          b"    b: {provider: bedrock, model: amazon.nova-lite-v1:0, region: us-east-1}\n"
          b"    c: {provider: vertex, model: gemini-2.0-flash-001, project: p, location: us-central1}\n")
    parse_manifest(ok)
    with pytest.raises(ManifestError) as e:
        parse_manifest(b"version: 1\nname: t\ncomponents:\n  models:\n"
                       b"    a: {provider: openai, model: gpt-4o-2024-08-06, region: us-east-1}\n")
    assert "gating.yml:5:" in str(e.value) and "`region` is a setting of provider bedrock, not of openai" in str(e.value)


@pytest.mark.parametrize("provider", NATIVE)
def test_a_run_through_each_native_provider(tmp_path: Path, llm: LLMServer, provider: str) -> None:  # noqa: F811
    model, options = MODELS[provider]
    models = {"m": {"provider": provider, "model": model, **dict(options)},
              "j": {"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}}
    root = write_repo(tmp_path, [{"id": "c1", "prompt": "p", "vars": {"q": a("42")},
                                  "assert": [{"type": "equals", "value": "42"}]},
                                 {"id": "c2", "prompt": "p", "vars": {"q": "[[fault:500]]"}}], models=models)
    snap, reader = load(root)
    run = run_evals(snap, reader, env=llm.env(), cache_dir=None, retry=fast_retries())
    by = {c.id: c for c in run.cases}
    assert by["c1"].passed and by["c1"].provider == provider
    assert by["c2"].error == "provider"
