"""Helpers for the monitor's ingest tests: the App with an OTLP token on loopback, and GenAI-convention
traffic sent through the real OpenTelemetry SDK."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app_support import app_settings, serve_in_thread
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from gating.server import create_app

TOKEN = "otlp-token-for-tests-0123456789"
REPO = "acme/support-bot"
SHA = "4f1c2a9e8d7b6c5a4f3e2d1c0b9a8f7e6d5c4b3a"
MODEL = "gpt-4o-2024-08-06"  # in the price table: 2.5 / 10 USD per million tokens
BATCH = 512  # the SDK's default export batch


def minute_start(minutes_ago: int) -> int:
    """Unix nanoseconds at the start of the minute `minutes_ago` minutes before this one."""
    return (int(time.time() // 60) - minutes_ago) * 60 * 1_000_000_000


@dataclass
class Served:
    app: Any
    url: str

    @property
    def store(self) -> Any:
        return self.app.extensions["gating"].rollups

    @property
    def state(self) -> Any:
        return self.app.extensions["gating"]


@contextlib.contextmanager
def served(tmp_path: Path, **overrides: Any) -> Iterator[Served]:
    settings = {"GATING_OTLP_TOKEN": TOKEN, "GATING_JOB_THREADS": 0, **overrides}
    app = create_app(app_settings(tmp_path, **settings))
    with serve_in_thread(app) as url:
        yield Served(app, url)


@contextlib.contextmanager
def tracer(url: str, token: str = TOKEN, **resource: Any) -> Iterator[Any]:
    """A tracer whose spans go to `url` through OTLPSpanExporter (HTTP, protobuf) in batches;
    every span is exported when the block ends."""
    attrs = {"service.name": "support-bot", "service.version": SHA, "gating.repository": REPO, **resource}
    provider = TracerProvider(resource=Resource.create(attrs))
    exporter = OTLPSpanExporter(endpoint=url + "/v1/traces", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=BATCH, schedule_delay_millis=60000))
    try:
        yield provider.get_tracer("support-bot")
    finally:
        assert provider.force_flush(60_000)
        provider.shutdown()


def request_trace(tr: Any, start: int, *, llm_ms: float, error: str | None = None, filtered: bool = False,
                  feedback: str | None = None, component: str = "answer", tokens: tuple[int, int] = (100, 50)) -> None:
    """One request as an instrumented RAG service traces it: a root span, an embedding call, a vector
    search, a chat completion (with GenAI attributes) and post-processing; times in unix ns."""
    ms = 1_000_000
    root = tr.start_span("POST /answer", start_time=start)
    ctx = set_span_in_context(root)
    emb = tr.start_span("embeddings text-embedding-3-small", context=ctx, start_time=start + 1 * ms, attributes={
        "gen_ai.operation.name": "embeddings", "gen_ai.request.model": "text-embedding-3-small",
        "gen_ai.system": "openai", "gen_ai.usage.input_tokens": 20})
    emb.end(end_time=start + 6 * ms)
    search = tr.start_span("qdrant search", context=ctx, start_time=start + 6 * ms,
                           attributes={"db.system": "qdrant", "db.operation": "search"})
    search.end(end_time=start + 26 * ms)
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": MODEL,
             "gen_ai.system": "openai", "gating.component": component}
    if error is None:
        attrs |= {"gen_ai.usage.input_tokens": tokens[0], "gen_ai.usage.output_tokens": tokens[1]}
    else:
        attrs["error.type"] = error
    if filtered:
        attrs["gen_ai.response.finish_reasons"] = ["content_filter"]
    chat = tr.start_span(f"chat {MODEL}", context=ctx, start_time=start + 26 * ms, attributes=attrs)
    if error:
        chat.set_status(Status(StatusCode.ERROR, error))
    llm_end = start + 26 * ms + int(llm_ms * ms)
    chat.end(end_time=llm_end)
    post = tr.start_span("postprocess answer", context=ctx, start_time=llm_end)
    post.end(end_time=llm_end + 2 * ms)
    if feedback:
        root.add_event("gating.feedback", {"kind": feedback}, timestamp=llm_end + 3 * ms)
    if error:
        root.set_status(Status(StatusCode.ERROR, error))
        root.set_attribute("error.type", error)
    root.end(end_time=llm_end + 3 * ms)
