"""Telemetry in: the OpenTelemetry SDK exports GenAI-convention spans and metrics to the App on loopback,
and the minute roll-ups read back through the store say what was sent."""

from __future__ import annotations

import gzip
import json
import multiprocessing

import httpx
import pytest
from google.rpc.status_pb2 import Status
from monitor_support import MODEL, REPO, SHA, TOKEN, minute_start, request_trace, served, tracer
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from gating.monitor.rollup import WHOLE_SYSTEM, Rollup, total
from gating.server import create_app
from gating.server.rollup_store import RollupStore

PROTO = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}


def window(store, **key) -> Rollup:
    return total(store.rollups(REPO, since=0, until=2**40, **key))


def test_sdk_spans_become_minute_rollups_per_stage_and_component_with_errors_tokens_cost_and_feedback(tmp_path):
    start = minute_start(5)
    llm_ms = [100.0 + 7 * i for i in range(60)]
    errors = {3: "RateLimitError", 11: "openai.RateLimitError", 17: "APITimeoutError", 29: "JSONDecodeError",
              41: "ConnectionResetError"}
    with served(tmp_path) as s:
        with tracer(s.url) as tr:
            for i, ms in enumerate(llm_ms):
                request_trace(tr, start + i * 500_000_000, llm_ms=ms, error=errors.get(i), filtered=i == 50,
                              feedback={5: "negative", 6: "negative", 7: "positive", 8: "completed"}.get(i))
        store = s.store
        request = window(store, system=SHA, component=WHOLE_SYSTEM, stage="request")
        assert request.requests == 60
        assert request.errors == {"rate_limit": 2, "timeout": 1, "parse": 1, "other": 1}
        assert request.feedback == {"negative": 2, "positive": 1, "completed": 1}
        assert (request.input_tokens, request.output_tokens, request.cost) == (0, 0, 0.0)
        for component in (WHOLE_SYSTEM, "answer"):
            llm = window(store, system=SHA, component=component, stage="llm")
            assert llm.requests == 60
            assert llm.errors == {"rate_limit": 2, "timeout": 1, "parse": 1, "other": 1, "content_filter": 1}
            assert (llm.input_tokens, llm.output_tokens) == (55 * 100, 55 * 50)
            assert llm.cost == pytest.approx(55 * (100 * 2.5 + 50 * 10.0) / 1e6)
            exact = sorted(llm_ms)
            for q in (0.5, 0.9, 0.99):
                want = exact[int(q * (len(exact) - 1))]
                assert llm.latency.quantile(q) == pytest.approx(want, rel=0.011)
        embedding = window(store, system=SHA, component=WHOLE_SYSTEM, stage="embedding")
        assert (embedding.requests, embedding.input_tokens) == (60, 60 * 20)
        assert embedding.cost == 0.0  # the price table has no embedding model: unknown adds nothing
        retrieval = window(store, system=SHA, stage="retrieval")
        assert retrieval.requests == 60 and retrieval.latency.quantile(0.5) == pytest.approx(20.0, rel=0.011)
        assert window(store, system=SHA, stage="post").requests == 60
        minutes = {r.minute for r in store.rollups(REPO, since=0, until=2**40, stage="request")}
        assert minutes == {start // 60_000_000_000}  # 60 requests in the first 30 s of one minute
        assert list(store.rollups("other/repo", since=0, until=2**40)) == []


def _span(trace: str, span: str, name: str, start: int, end: int, parent: str = "", **attrs) -> dict:
    kv = [{"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
          for k, v in attrs.items()]
    return {"traceId": trace, "spanId": span, "parentSpanId": parent, "name": name, "kind": 3,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(end), "attributes": kv}


def _resource(spans: list[dict], **attrs) -> dict:
    return {"resource": {"attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]},
            "scopeSpans": [{"scope": {"name": "by-hand"}, "spans": spans}]}


TRACE = "5b8efff798038103d269b633813fc60c"


def test_otlp_json_by_hand_is_read_and_spans_that_cannot_be_attributed_are_rejected_with_reasons(tmp_path):
    t = minute_start(3)
    ok = [_span(TRACE, "eee19b7ec3c1b174", "POST /answer", t, t + 900_000_000),
          _span(TRACE, "eee19b7ec3c1b175", "chat", t + 100_000_000, t + 800_000_000, parent="eee19b7ec3c1b174",
                **{"gen_ai.operation.name": "chat", "gen_ai.request.model": MODEL, "gen_ai.system": "openai",
                   "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 200, "gating.component": "answer"})]
    nameless = [_span("5b8efff798038103d269b633813fc60d", "eee19b7ec3c1b176", "POST /answer", t, t + 1)]
    future = [_span("5b8efff798038103d269b633813fc60e", "eee19b7ec3c1b177", "POST /answer", t, t + 3600 * 10**9)]
    doc = {"resourceSpans": [_resource(ok, **{"service.version": SHA, "gating.repository": REPO}),
                             _resource(nameless, **{"gating.repository": REPO}),
                             _resource(future, **{"service.version": SHA, "gating.repository": REPO})],
           "somethingNew": {"ignored": True}}
    with served(tmp_path) as s:
        r = httpx.post(s.url + "/v1/traces", content=json.dumps(doc), headers=JSON)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        partial = r.json()["partialSuccess"]
        assert partial["rejectedSpans"] == "2"
        assert "1 rejected: no service.version, gating.commit or gating.snapshot" in partial["errorMessage"]
        assert "1 rejected: span ending more than 300 s in the future" in partial["errorMessage"]
        llm = window(s.store, system=SHA, component="answer", stage="llm")
        assert (llm.requests, llm.input_tokens, llm.output_tokens) == (1, 1000, 200)
        assert llm.cost == pytest.approx((1000 * 2.5 + 200 * 10) / 1e6)
        assert window(s.store, stage="request").latency.quantile(0.5) == pytest.approx(900.0, rel=0.011)
        assert s.store.trace(TRACE) == (REPO, SHA, WHOLE_SYSTEM)

        fb = [httpx.post(s.url + "/feedback", json={"trace_id": TRACE, "kind": "negative"}, headers=JSON),
              httpx.post(s.url + "/feedback", json={"trace_id": TRACE.upper(), "kind": "edited"}, headers=JSON),
              httpx.post(s.url + "/feedback", json={"system": SHA, "component": "answer", "repository": REPO,
                                                    "kind": "followup"}, headers=JSON),
              httpx.post(s.url + "/feedback", json={"trace_id": TRACE, "component": "answer", "kind": "completed"},
                         headers=JSON)]
        assert [f.status_code for f in fb] == [200, 200, 200, 200], [f.text for f in fb]
        assert fb[2].json() == {"status": "recorded", "repository": REPO, "system": SHA, "component": "answer",
                                "kind": "followup"}
        assert window(s.store, component=WHOLE_SYSTEM, stage="request").feedback == \
            {"negative": 1, "edited": 1, "followup": 1, "completed": 1}
        assert window(s.store, component="answer", stage="request").feedback == {"followup": 1, "completed": 1}

        unknown = httpx.post(s.url + "/feedback", json={"trace_id": "0" * 32, "kind": "negative"}, headers=JSON)
        assert unknown.status_code == 404 and "has not arrived (yet)" in unknown.json()["message"]
        bad = httpx.post(s.url + "/feedback", json={"trace_id": TRACE, "kind": "meh"}, headers=JSON)
        assert bad.status_code == 400 and "kind must be one of positive, negative" in bad.json()["message"]
        nobody = httpx.post(s.url + "/feedback", json={"trace_id": TRACE, "kind": "positive"})
        assert nobody.status_code == 401


def test_a_token_bound_to_a_repository_sends_for_that_repository_only(tmp_path):
    t = minute_start(2)
    bound = "acme/support-bot:bound-token-0123456789abcdef,acme/other:second-token-0123456789"
    spans = lambda trace: [_span(trace, "eee19b7ec3c1b174", "POST /answer", t, t + 10**8)]  # noqa: E731
    doc = {"resourceSpans": [_resource(spans(TRACE), **{"service.version": SHA}),
                             _resource(spans("5b8efff798038103d269b633813fc60f"),
                                       **{"service.version": SHA, "gating.repository": "acme/other"})]}
    with served(tmp_path, GATING_OTLP_TOKEN=bound) as s:
        headers = {**JSON, "Authorization": "Bearer bound-token-0123456789abcdef"}
        r = httpx.post(s.url + "/v1/traces", content=json.dumps(doc), headers=headers)
        assert r.json()["partialSuccess"]["rejectedSpans"] == "1"
        assert "gating.repository acme/other is not the repository this token sends for (acme/support-bot)" in \
            r.json()["partialSuccess"]["errorMessage"]
        assert window(s.store, stage="request").requests == 1
        assert list(s.store.rollups("acme/other", since=0, until=2**40)) == []
        other = {**JSON, "Authorization": "Bearer second-token-0123456789"}
        stolen = httpx.post(s.url + "/feedback", json={"trace_id": TRACE, "kind": "negative"}, headers=other)
        assert stolen.status_code == 403 and "belongs to acme/support-bot" in stolen.json()["message"]


def test_without_a_token_configured_or_with_a_missing_or_wrong_one_everything_is_refused(tmp_path):
    body = ExportTraceServiceRequest().SerializeToString()
    (tmp_path / "unset").mkdir()
    with served(tmp_path / "unset", GATING_OTLP_TOKEN="") as s:
        for path in ("/v1/traces", "/v1/metrics"):
            r = httpx.post(s.url + path, content=body, headers=PROTO)
            assert r.status_code == 403
            status = Status.FromString(r.content)
            assert "no GATING_OTLP_TOKEN" in status.message and status.code == 7
        assert httpx.post(s.url + "/feedback", json={"trace_id": TRACE, "kind": "negative"},
                          headers=JSON).status_code == 403
    with served(tmp_path) as s:
        for headers in ({"Content-Type": "application/x-protobuf"},
                        {**PROTO, "Authorization": "Bearer not-the-token-at-all"},
                        {**PROTO, "Authorization": f"Basic {TOKEN}"},
                        {**PROTO, "Authorization": f"Bearer {TOKEN}x"}):
            r = httpx.post(s.url + "/v1/traces", content=body, headers=headers)
            assert r.status_code == 401, headers
            assert "Authorization: Bearer <GATING_OTLP_TOKEN>" in Status.FromString(r.content).message
        with tracer(s.url, token="wrong-token-0123456789") as tr:
            request_trace(tr, minute_start(1), llm_ms=50)
        assert list(s.store.rollups(REPO, since=0, until=2**40)) == []


def test_bad_input_gets_otlp_error_responses_in_the_request_encoding(tmp_path):
    with served(tmp_path, GATING_OTLP_MAX_BODY_BYTES=4096) as s:
        url = s.url + "/v1/traces"
        r = httpx.post(url, content=b"{}", headers={**PROTO, "Content-Type": "text/plain"})
        assert r.status_code == 415
        assert "Content-Type must be application/x-protobuf or application/json, not 'text/plain'" in r.json()["message"]
        r = httpx.post(url, content=b"\x00" * 5000, headers=PROTO)
        assert r.status_code == 413
        assert Status.FromString(r.content).message == \
            "body of 5000 bytes is over the limit of 4096 (GATING_OTLP_MAX_BODY_BYTES)"
        bomb = gzip.compress(b" " * 100_000)
        r = httpx.post(url, content=bomb, headers={**JSON, "Content-Encoding": "gzip"})
        assert r.status_code == 413 and "once decompressed" in r.json()["message"]
        r = httpx.post(url, content=b"\x0a\xff\xff\xff\x0f", headers=PROTO)
        assert r.status_code == 400 and r.headers["content-type"] == "application/x-protobuf"
        assert Status.FromString(r.content).message.startswith("body is not a protobuf ExportTraceServiceRequest")
        r = httpx.post(url, content=b"{not json", headers=JSON)
        assert r.status_code == 400 and r.json()["message"].startswith("body is not JSON")
        r = httpx.post(url, content=json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
            {"traceId": "xyz", "spanId": "eee19b7ec3c1b174"}]}]}]}), headers=JSON)
        assert r.status_code == 400 and r.json() == {"code": 3, "message": "traceId 'xyz' is not hex"}
        r = httpx.post(url, content=json.dumps({"resourceSpans": "many"}), headers=JSON)
        assert r.status_code == 400 and "not an OTLP/JSON ExportTraceServiceRequest" in r.json()["message"]
        small = gzip.compress(json.dumps({"resourceSpans": []}).encode())
        r = httpx.post(url, content=small, headers={**JSON, "Content-Encoding": "gzip"})
        assert r.status_code == 200 and r.json() == {}
        r = httpx.post(url, content=ExportTraceServiceRequest().SerializeToString(), headers=PROTO)
        assert r.status_code == 200 and ExportTraceServiceResponse.FromString(r.content) == ExportTraceServiceResponse()


def test_what_was_acknowledged_survives_a_restart_and_merges_with_what_comes_after(tmp_path):
    start = minute_start(4)
    with served(tmp_path) as s, tracer(s.url) as tr:
        for i in range(30):
            request_trace(tr, start + i * 10**9, llm_ms=80)
    # a new App on the same database: nothing of the first one's memory remains
    with served(tmp_path) as s:
        assert window(s.store, stage="request").requests == 30
        with tracer(s.url) as tr:
            for i in range(12):
                request_trace(tr, start + i * 10**9, llm_ms=120, error="RateLimitError")
        llm = window(s.store, component="answer", stage="llm")
        assert llm.requests == 42 and llm.errors == {"rate_limit": 12} and llm.input_tokens == 3000
    assert window(RollupStore(str(tmp_path / "jobs.db")), component=WHOLE_SYSTEM, stage="request").requests == 42


def test_retention_drops_old_minutes_in_the_timed_job_and_refuses_spans_older_than_it(tmp_path):
    now_minute = minute_start(0) // 60_000_000_000
    with served(tmp_path, GATING_MONITOR_RETENTION_DAYS=1, GATING_JOB_THREADS=1) as s:
        old, fresh = now_minute - 2 * 1440, now_minute - 60
        s.store.write([Rollup(REPO, SHA, WHOLE_SYSTEM, "request", m, requests=5) for m in (old, old + 1, fresh)],
                      [("a" * 32, REPO, SHA, WHOLE_SYSTEM, old), ("b" * 32, REPO, SHA, WHOLE_SYSTEM, fresh)])
        queue = s.state.queue
        payload = {"action": "monitor_retention", "period": 1, "every_seconds": 3600.0}
        ids = queue.enqueue("schedule:monitor_retention:1", "schedule", "monitor_retention", json.dumps(payload),
                            [("rollups.prune", "schedule:monitor_retention")])
        s.state.worker.wake(len(ids))
        assert queue.wait_idle(30)
        assert [j.status for j in queue.list("done")] == ["done"]
        assert [r.minute for r in s.store.rollups(REPO, since=0, until=2**40)] == [fresh]
        assert s.store.trace("a" * 32) is None and s.store.trace("b" * 32) is not None
        with tracer(s.url) as tr:
            request_trace(tr, (old + 3) * 60_000_000_000, llm_ms=10)
        assert [r.minute for r in s.store.rollups(REPO, since=0, until=2**40)] == [fresh]


def _merge_many(path: str, n: int) -> None:
    store = RollupStore(path)
    for i in range(n):
        r = Rollup(REPO, SHA, "answer", "llm", 1000, requests=1, errors={"timeout": 1}, input_tokens=3,
                   cost=0.5, feedback={"positive": 1})
        r.latency.add(10.0 + i % 7)
        store.write([r])


def test_writers_in_several_processes_merge_into_one_minute_without_losing_a_count(queue_location):
    path = queue_location  # a SQLite file, or the PostgreSQL database App replicas share
    RollupStore(path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_merge_many, args=(path, 150)) for _ in range(3)]
    for p in procs:
        p.start()
    _merge_many(path, 150)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    (row,) = RollupStore(path).rollups(REPO, since=1000, until=1001)
    assert (row.requests, row.errors, row.input_tokens, row.feedback) == (600, {"timeout": 600}, 1800,
                                                                           {"positive": 600})
    assert row.cost == pytest.approx(300.0) and row.latency.count == 600


def test_both_engines_merge_errors_feedback_and_latency_alike(tmp_path, postgres_url):
    """The merge functions SQLite runs in Python and PostgreSQL in SQL give the same minute."""
    batches = []
    for i in range(6):
        r = Rollup(REPO, SHA, "answer", "llm", 1000, requests=i + 1, errors={"timeout": i} if i % 2 else {},
                   input_tokens=i, output_tokens=2 * i, cost=0.25 * i, feedback={"positive": 1, f"tag{i % 3}": 2})
        for ms in (0.0, 3.0 + i, 250.0 * i):
            r.latency.add(ms)
        batches.append(r)
    got = []
    for location in (str(tmp_path / "jobs.db"), postgres_url):
        store = RollupStore(location)
        for r in batches:
            store.write([r], [(f"{len(got):02d}" * 16, REPO, SHA, "answer", 1000)])
        (row,) = store.rollups(REPO, since=1000, until=1001)
        got.append(row)
        assert store.trace(f"{len(got) - 1:02d}" * 16) == (REPO, SHA, "answer")
    sqlite_row, postgres_row = got
    assert postgres_row == sqlite_row
    assert postgres_row.errors == {"timeout": 9} and postgres_row.feedback == {"positive": 6, "tag0": 4, "tag1": 4,
                                                                                "tag2": 4}
    assert postgres_row.latency.count == 18


def test_genai_metrics_in_delta_temporality_are_read_and_cumulative_ones_refused(tmp_path):
    with served(tmp_path) as s:
        def meter(temporality):
            exporter = OTLPMetricExporter(endpoint=s.url + "/v1/metrics", headers={"Authorization": f"Bearer {TOKEN}"},
                                          preferred_temporality={Histogram: temporality})
            reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
            resource = Resource.create({"service.version": SHA, "gating.repository": REPO})
            return MeterProvider(metric_readers=[reader], resource=resource)

        provider = meter(AggregationTemporality.DELTA)
        m = provider.get_meter("genai")
        duration = m.create_histogram("gen_ai.client.operation.duration", unit="s")
        usage = m.create_histogram("gen_ai.client.token.usage", unit="{token}")
        chat = {"gen_ai.operation.name": "chat", "gen_ai.request.model": MODEL, "gen_ai.system": "openai",
                "gating.component": "answer"}
        for _ in range(40):
            duration.record(0.8, chat)
            usage.record(100, {**chat, "gen_ai.token.type": "input"})
            usage.record(50, {**chat, "gen_ai.token.type": "output"})
        for _ in range(3):
            duration.record(2.0, {**chat, "error.type": "RateLimitError"})
        duration.record(0.05, {**chat, "gen_ai.operation.name": "embeddings"})
        assert provider.force_flush(30_000)
        provider.shutdown()
        llm = window(s.store, component="answer", stage="llm")
        assert (llm.requests, llm.errors, llm.input_tokens, llm.output_tokens) == (43, {"rate_limit": 3}, 4000, 2000)
        assert llm.cost == pytest.approx(40 * (100 * 2.5 + 50 * 10.0) / 1e6)
        assert llm.latency.quantile(0.5) == pytest.approx(800.0, rel=0.011)
        assert window(s.store, component=WHOLE_SYSTEM, stage="embedding").requests == 1

        provider = meter(AggregationTemporality.CUMULATIVE)
        provider.get_meter("genai").create_histogram("gen_ai.client.operation.duration", unit="s").record(1.0, chat)
        assert provider.force_flush(30_000)
        provider.shutdown()
        assert window(s.store, component="answer", stage="llm").requests == 43

        r = httpx.post(s.url + "/v1/metrics", headers=JSON, content=json.dumps({"resourceMetrics": [{
            "resource": {"attributes": [{"key": "service.version", "value": {"stringValue": SHA}},
                                        {"key": "gating.repository", "value": {"stringValue": REPO}}]},
            "scopeMetrics": [{"metrics": [{"name": "gen_ai.client.operation.duration", "histogram": {
                "aggregationTemporality": 2, "dataPoints": [{"count": "1", "timeUnixNano": str(minute_start(0))}]}}]}],
        }]}))
        assert r.status_code == 200
        assert r.json()["partialSuccess"]["rejectedDataPoints"] == "1"
        assert "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta" in r.json()["partialSuccess"]["errorMessage"]


def test_a_settings_token_too_short_to_be_safe_stops_the_app(tmp_path):
    from app_support import app_settings

    from gating.server.settings import SettingsError

    with pytest.raises(SettingsError, match="GATING_OTLP_TOKEN: the token for acme/x is shorter than 16"):
        create_app(app_settings(tmp_path, GATING_OTLP_TOKEN="acme/x:short"))


def test_json_ids_are_hex_in_and_a_protobuf_body_of_the_same_spans_reads_the_same(tmp_path):
    t = minute_start(1)
    doc = {"resourceSpans": [_resource([_span(TRACE, "eee19b7ec3c1b174", "POST /answer", t, t + 5 * 10**8)],
                                       **{"gating.commit": SHA, "gating.repository": REPO})]}
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add()
    for k, v in (("gating.commit", SHA), ("gating.repository", REPO)):
        kv = span.resource.attributes.add()
        kv.key, kv.value.string_value = k, v
    sp = span.scope_spans.add().spans.add()
    sp.trace_id, sp.span_id, sp.name = bytes.fromhex(TRACE), bytes.fromhex("eee19b7ec3c1b174"), "POST /answer"
    sp.start_time_unix_nano, sp.end_time_unix_nano = t, t + 5 * 10**8
    with served(tmp_path) as s:
        assert httpx.post(s.url + "/v1/traces", content=json.dumps(doc), headers=JSON).json() == {}
        r = httpx.post(s.url + "/v1/traces", content=req.SerializeToString(), headers=PROTO)
        assert r.status_code == 200 and r.content == b""
        assert window(s.store, system=SHA, stage="request").requests == 2
        assert s.store.trace(TRACE) == (REPO, SHA, WHOLE_SYSTEM)


@pytest.mark.parametrize(("length", "status", "message"), [
    ("many", 400, "Content-Length 'many' is not a number"),
    ("5000", 413, "body of 5000 bytes is over the limit of 4096 (GATING_OTLP_MAX_BODY_BYTES)"),
])
def test_a_body_is_refused_in_the_words_the_webhooks_use_naming_the_setting_only_for_its_size(
        tmp_path, length, status, message):
    from app_support import app_settings

    app = create_app(app_settings(tmp_path, GATING_OTLP_TOKEN=TOKEN, GATING_JOB_THREADS=0,
                                  GATING_OTLP_MAX_BODY_BYTES=4096, GATING_MAX_BODY_BYTES=4096))
    for path in ("/v1/traces", "/webhooks"):
        r = app.test_client().post(path, data=b"{}", headers=JSON, environ_overrides={"CONTENT_LENGTH": length})
        assert r.status_code == status
        said = r.json["message"] if path == "/v1/traces" else r.json["error"]
        assert said == (message if path == "/v1/traces" else message.replace(" (GATING_OTLP_MAX_BODY_BYTES)", ""))
