"""Webhook acknowledgement latency and job throughput of the App under gunicorn on loopback.

Sends N signed deliveries (real `pull_request` payloads from the vendored webhook examples, adapted
by the GitHub emulator) over C concurrent connections to `gunicorn app.wsgi:app`, and prints the
acknowledgement latency percentiles (target: p99 under 50 ms) and the time until every job is done.

Two job kinds:
  approvals (default)  the real handler: each job reads the pull request through the emulator's REST
                       API, builds both snapshots, evaluates the rules and posts the check run;
  noop                 a handler that only decodes the payload: the queue's own overhead.

    .venv/bin/python bench/webhook_ack.py [-n 1000] [-c 50] [--jobs approvals|noop] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

WARMUP = 3  # rounds of GET /healthz on every client before the timed deliveries
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# -- the noop handler module (GATING_HANDLERS=webhook_ack, with bench/ on PYTHONPATH) -------------------


def register(registry) -> None:
    registry.on("pull_request")(decode_only)


def decode_only(ctx) -> None:
    assert ctx.payload["pull_request"]["number"]


# -- the GitHub side, in its own process ---------------------------------------------------------------


def github_process(conn, root: str, prs: int, n: int) -> None:
    """Run the emulator with one repository and `prs` open pull requests; send back the App's identity
    and `n` signed deliveries, then serve until told to stop."""
    from gating.testing.github_emulator import start_emulator
    from gating.testing.pytest_plugin import EXAMPLE

    emu = start_emulator(root)
    repo = emu.create_repo("acme/support-bot", source_dir=EXAMPLE)
    emu.add_team_member("acme", "ml-platform", "carol")
    emu.add_collaborator(repo, "carol", "write")
    manifest = (EXAMPLE / "gating.yml").read_text()
    numbers = []
    for i in range(prs):
        text = manifest.replace("gpt-4o-2024-08-06", f"gpt-4o-2024-11-{10 + i:02d}")
        emu.push(repo, f"pr-{i}", {"gating.yml": text}, f"Pin {i}", user="alice")
        numbers.append(emu.create_pull(repo, f"pr-{i}", "main", f"Pin {i}", "alice")["number"])
        emu.add_review(repo, numbers[-1], "carol", "APPROVED")
    actions = ["labeled", "synchronize", "edited", "opened"]
    deliveries = [emu.webhook("pull_request", actions[k % len(actions)], repo, number=numbers[k % prs])
                  for k in range(n)]
    conn.send({"api_url": emu.api_url, "app_id": emu.app.app_id, "key": emu.app.private_key_pem,
               "secret": emu.app.webhook_secret,
               "deliveries": [(d.body_bytes, dict(d.headers)) for d in deliveries]})
    conn.recv()
    runs = [r for r in emu.list_check_runs(repo) if r["name"] == "gating / approval"]
    conn.send(len(runs))
    emu.stop()


# -- the load ------------------------------------------------------------------------------------------


async def send_all(port: int, deliveries: list[tuple[bytes, dict[str, str]]],
                   concurrency: int, server: list[float]) -> tuple[list[float], float]:
    """`concurrency` clients, each sending its next delivery as soon as the previous one is
    acknowledged, one connection per delivery as GitHub does; requests are serialised up front so the
    client spends almost no CPU per request. Returns latencies (ms) and when the first one was sent."""
    requests = [b"POST /webhooks HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: %d\r\n"
                b"%s\r\n%s" % (len(body), "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode(), body)
                for body, headers in deliveries]
    latencies: list[float] = []
    codes: dict[bytes, int] = {}
    todo = iter(requests)

    async def post(req: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]))
        writer.close()
        return head

    async def client() -> None:
        await ready.wait()
        for req in todo:
            t0 = time.perf_counter()
            head = await post(req)
            latencies.append((time.perf_counter() - t0) * 1000)
            server.append(float(head.split(b"app;dur=")[1].split(b"\r\n")[0]))
            code = head.split(b" ", 2)[1]
            codes[code] = codes.get(code, 0) + 1

    ready = asyncio.Event()
    clients = [asyncio.create_task(client()) for _ in range(concurrency)]
    for _ in range(WARMUP):  # every server thread opens its database connection before timing starts
        await asyncio.gather(*(post(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                               for _ in range(concurrency)))
    started = time.perf_counter()
    ready.set()
    await asyncio.gather(*clients)
    if set(codes) != {b"202"}:
        print(f"responses by status: {codes}")
    return latencies, started


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1000, help="deliveries (default 1000)")
    ap.add_argument("-c", type=int, default=50, help="concurrent connections (default 50)")
    ap.add_argument("--jobs", choices=["approvals", "noop"], default="approvals")
    ap.add_argument("--prs", type=int, default=10, help="open pull requests the deliveries are about")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    ap.add_argument("--threads", type=int, default=4, help="request threads per worker (default 4)")
    ap.add_argument("--worker-class", default="gthread", help="gunicorn worker class (default gthread)")
    ap.add_argument("--job-threads", type=int, default=2, help="job threads per worker (default 2)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="webhook-ack-"))
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    gh = ctx.Process(target=github_process, args=(child, str(tmp / "github"), args.prs, args.n), daemon=True)
    gh.start()
    world = parent.recv()
    port = _free_port()
    env = {**os.environ, "APP_ID": str(world["app_id"]), "PRIVATE_KEY": world["key"], "WEBHOOK_SECRET": world["secret"],
           "GITHUB_API_URL": world["api_url"], "GATING_DB": str(tmp / "jobs.db"), "LOG_LEVEL": "WARNING",
           "GATING_JOB_THREADS": str(args.job_threads), "GATING_POLL_SECONDS": "0.2",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")])}
    if args.jobs == "noop":
        env["GATING_HANDLERS"] = "webhook_ack"
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "app.wsgi:app", "-b", f"127.0.0.1:{port}",
                               "-w", str(args.workers), "--threads", str(args.threads), "-k", args.worker_class,
                               "--backlog", "2048"], env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base)
        deliveries = world["deliveries"]
        print(f"{len(deliveries)} signed pull_request deliveries, {args.c} connections, gunicorn {args.worker_class} "
              f"{args.workers} workers x {args.threads} threads, {args.job_threads} job threads each, jobs: {args.jobs}")
        server_ms: list[float] = []
        lat, t0 = asyncio.run(send_all(port, deliveries, args.c, server_ms))
        sent = time.perf_counter() - t0
        print(f"acknowledged {len(lat)} in {sent:.2f} s ({len(lat) / sent:.0f}/s)")
        print(f"ack latency ms: p50 {pct(lat, 50):.1f}  p90 {pct(lat, 90):.1f}  p99 {pct(lat, 99):.1f}  "
              f"max {max(lat):.1f}  mean {statistics.mean(lat):.1f}   (target p99 < 50 ms: "
              f"{'met' if pct(lat, 99) < 50 else 'NOT met'})")
        print(f"  of which inside the App (Server-Timing): p50 {pct(server_ms, 50):.1f}  p99 {pct(server_ms, 99):.1f}"
              f"  max {max(server_ms):.1f}; the rest is waiting for a free worker thread and the CPU", flush=True)
        if args.job_threads > 0:
            failed = _wait_done(base)
            done = time.perf_counter() - t0
            with sqlite3.connect(tmp / "jobs.db") as db:
                covered = db.execute("SELECT COUNT(*) FROM jobs WHERE coalesced_into IS NOT NULL").fetchone()[0]
            print(f"every job done {done:.2f} s after the first delivery ({len(lat) / done:.0f} jobs/s); "
                  f"{len(lat) - covered} handler runs, {covered} jobs covered by a run for the same pull request "
                  f"that started after they were queued; failed: {failed}")
    finally:
        server.terminate()
        server.wait(15)
        parent.send("stop")
        if args.jobs == "approvals":
            print(f"gating / approval check runs on the emulator: {parent.recv()}")
        gh.join(10)
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("gunicorn did not become healthy")


def _wait_done(base: str, timeout: float = 1800) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        q = httpx.get(base + "/healthz", timeout=10).json()["queue"]
        if q["depth"] == 0:
            return q["failed"]
        time.sleep(0.05)
    raise SystemExit("jobs did not finish")


if __name__ == "__main__":
    sys.exit(main())
