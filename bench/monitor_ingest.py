"""OTLP span ingest of the App under gunicorn on loopback: spans per second accepted, and ack latency.

Builds N export requests of B spans each (protobuf ExportTraceServiceRequest, as OTLPSpanExporter
sends them: traces of a RAG service with GenAI attributes, 5 spans per request: root, embedding,
vector search, chat, post-processing, over a few components and an error now and then), then posts
them from C client threads to `gunicorn gating.server.wsgi:app` (as `gating app serve` runs it).
Every export is answered only after its roll-ups are committed to the App's SQLite database, so the
ack latency includes the write. Prints spans per second (target >= 10,000) and the ack latency
percentiles (target p99 < 100 ms), each as a ratio to its target, the server's CPU per span, the
load average before the run, and checks that the stored roll-ups count every request sent.

    .venv/bin/python bench/monitor_ingest.py [-n 200] [-b 512] [-c 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from webhook_ack import _cpu_seconds, _free_port, _process_tree, _wait_healthy, pct  # noqa: E402

from gating.commands.app import THREADS, WORKERS, gunicorn_argv  # noqa: E402
from gating.monitor.rollup import WHOLE_SYSTEM, total  # noqa: E402
from gating.server.rollup_store import RollupStore  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"
REPO, SHA = "acme/support-bot", "4f1c2a9e8d7b6c5a4f3e2d1c0b9a8f7e6d5c4b3a"
SPANS_PER_TARGET, P99_TARGET_MS = 10_000, 100.0
COMPONENTS = ("answer", "triage", "summarise")


def _attr(span, key: str, value) -> None:
    kv = span.attributes.add()
    kv.key = key
    if isinstance(value, int):
        kv.value.int_value = value
    else:
        kv.value.string_value = value


def build(batch: int, rng: random.Random, now_ns: int) -> bytes:
    """One export request of `batch` spans (whole traces of 5 spans)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in (("service.name", "support-bot"), ("service.version", SHA), ("gating.repository", REPO)):
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = k, v
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.openai"
    ms = 1_000_000
    for _ in range(batch // 5):
        trace = rng.randbytes(16)
        start = now_ns - rng.randrange(0, 50_000) * ms
        root_id = rng.randbytes(8)
        llm_ms = int(rng.lognormvariate(6, 0.5))
        err = rng.random() < 0.02
        spans = [("POST /answer", b"", 0, 40 + llm_ms), ("embeddings text-embedding-3-small", root_id, 1, 6),
                 ("qdrant search", root_id, 6, 26), ("chat gpt-4o-2024-08-06", root_id, 26, 26 + llm_ms),
                 ("postprocess answer", root_id, 26 + llm_ms, 30 + llm_ms)]
        for i, (name, parent, a, b) in enumerate(spans):
            s = ss.spans.add()
            s.trace_id, s.span_id = trace, root_id if i == 0 else rng.randbytes(8)
            s.parent_span_id, s.name, s.kind = parent, name, 3 if i else 2
            s.start_time_unix_nano, s.end_time_unix_nano = start + a * ms, start + b * ms
            if i == 1:
                _attr(s, "gen_ai.operation.name", "embeddings")
                _attr(s, "gen_ai.request.model", "text-embedding-3-small")
                _attr(s, "gen_ai.usage.input_tokens", 20)
            elif i == 2:
                _attr(s, "db.system", "qdrant")
                _attr(s, "db.operation", "search")
            elif i == 3:
                chat: tuple[tuple[str, str | int], ...] = (
                    ("gen_ai.operation.name", "chat"), ("gen_ai.system", "openai"),
                    ("gen_ai.request.model", "gpt-4o"), ("gen_ai.response.model", "gpt-4o-2024-08-06"),
                    ("gating.component", rng.choice(COMPONENTS)),
                    ("gen_ai.usage.input_tokens", rng.randrange(200, 2000)),
                    ("gen_ai.usage.output_tokens", rng.randrange(20, 400)))
                for key, val in chat:
                    _attr(s, key, val)
                if err:
                    _attr(s, "error.type", "RateLimitError")
                    s.status.code = 2
    return req.SerializeToString()


def post_all(url: str, bodies: list[bytes], concurrency: int, every: float = 0.0,
             server: list[float] | None = None) -> tuple[list[float], list[int], float]:
    """`concurrency` threads posting the bodies, as exporters do: each as soon as a thread is free
    (every=0: the most the App takes), or the k-th at start + k * every seconds (a steady rate; a
    latency then runs from the time the export was due, so a backlog counts against the App)."""
    latencies: list[float] = []
    codes: list[int] = []
    server = [] if server is None else server  # the App's own time per export (Server-Timing)
    lock = threading.Lock()
    todo = iter(enumerate(bodies))
    headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {TOKEN}"}
    start = time.perf_counter() + 0.05

    def run() -> None:
        with httpx.Client(timeout=60) as client:
            while True:
                with lock:
                    k, body = next(todo, (0, None))
                if body is None:
                    return
                due = start + k * every
                if every and due > time.perf_counter():
                    time.sleep(due - time.perf_counter())
                t0 = due if every else time.perf_counter()
                r = client.post(url, content=body, headers=headers)
                ms = (time.perf_counter() - t0) * 1000
                app_ms = float((r.headers.get("server-timing") or "app;dur=0").split("dur=")[1])
                with lock:
                    latencies.append(ms)
                    codes.append(r.status_code)
                    server.append(app_ms)

    threads = [threading.Thread(target=run) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, codes, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=200, help="export requests (default 200)")
    ap.add_argument("-b", type=int, default=512, help="spans per export (default 512, the SDK's batch)")
    ap.add_argument("-c", type=int, default=4, help="concurrent exporters (default 4)")
    ap.add_argument("--workers", type=int, default=WORKERS, help=f"gunicorn workers (default {WORKERS}, as serve)")
    ap.add_argument("--threads", type=int, default=THREADS, help=f"threads per worker (default {THREADS}, as serve)")
    args = ap.parse_args()

    rng = random.Random(16)
    now_ns = time.time_ns()
    bodies = [build(args.b, rng, now_ns) for _ in range(args.n)]
    spans = args.n * (args.b // 5) * 5
    tmp = Path(tempfile.mkdtemp(prefix="monitor-ingest-"))
    db = tmp / "app.db"
    port = _free_port()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    env = {**os.environ, "APP_ID": "1", "PRIVATE_KEY": key, "WEBHOOK_SECRET": "bench", "GATING_DB": str(db),
           "GATING_OTLP_TOKEN": TOKEN, "LOG_LEVEL": "WARNING", "GATING_JOB_THREADS": "1",
           "GITHUB_API_URL": "http://127.0.0.1:9", "GATING_NO_AUDIT": "1", "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(gunicorn_argv(f"127.0.0.1:{port}", args.workers, args.threads), env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base)
        print(f"{args.n} exports of {args.b // 5 * 5} spans ({len(bodies[0]) // 1024} KiB protobuf each), "
              f"{args.c} exporters, gunicorn gthread {args.workers} workers x {args.threads} threads")
        post_all(base + "/v1/traces", bodies[: max(2, args.c)], args.c)  # warm-up: every worker imports and opens
        with_warmup = spans + max(2, args.c) * (args.b // 5) * 5
        pids = _process_tree(server.pid)
        load = os.getloadavg()
        cpu0 = _cpu_seconds(pids)
        lat, codes, wall = post_all(base + "/v1/traces", bodies, args.c)
        cpu = _cpu_seconds(pids) - cpu0
        bad = {c: codes.count(c) for c in set(codes) if c != 200}
        if bad:
            print(f"refused exports by status: {bad}")
        rate, p99 = spans / wall, pct(lat, 99)
        print(f"accepted {spans} spans in {wall:.2f} s: {rate:,.0f} spans/s "
              f"(target >= {SPANS_PER_TARGET:,}: ratio {rate / SPANS_PER_TARGET:.2f})")
        print(f"  ack latency ms at that load: p50 {pct(lat, 50):.1f}  p90 {pct(lat, 90):.1f}  p99 {p99:.1f}  max {max(lat):.1f}  "
              f"mean {statistics.mean(lat):.1f}")
        print(f"  server CPU per span {cpu / spans * 1e6:.1f} us; load average before the run "
              f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs", flush=True)
        every = (args.b // 5 * 5) / SPANS_PER_TARGET
        own: list[float] = []
        lat, codes, wall = post_all(base + "/v1/traces", bodies, args.c, every=every, server=own)
        p99 = pct(lat, 99)
        print(f"at the target rate ({SPANS_PER_TARGET:,} spans/s: one export every {every * 1000:.0f} ms, "
              f"{len(bodies) / wall:.1f} exports/s sent) ack latency ms: p50 {pct(lat, 50):.1f}  p99 {p99:.1f}  "
              f"max {max(lat):.1f}   (target p99 < {P99_TARGET_MS:.0f} ms: ratio {p99 / P99_TARGET_MS:.2f}); "
              f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"  of which inside the App (Server-Timing: decode, roll up, commit): p50 {pct(own, 50):.1f}  "
              f"p99 {pct(own, 99):.1f}; the rest is waiting for a worker thread and the CPU")
        if set(codes) != {200}:
            print(f"refused exports by status: { {c: codes.count(c) for c in set(codes) if c != 200} }")
        with_warmup += spans
        stored = total(RollupStore(str(db)).rollups(REPO, since=0, until=2**40, component=WHOLE_SYSTEM,
                                                    stage="request"))
        sent = with_warmup // 5
        print(f"stored request roll-ups count {stored.requests} requests of {sent} sent "
              f"({'all' if stored.requests == sent else 'MISSING SOME'}); p50 {stored.latency.quantile(0.5):.0f} ms, "
              f"p99 {stored.latency.quantile(0.99):.0f} ms")
    finally:
        server.terminate()
        server.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
