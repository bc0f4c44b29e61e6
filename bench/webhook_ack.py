"""Webhook acknowledgement latency and job throughput of the App under gunicorn on loopback.

Sends N signed deliveries (real `pull_request` payloads from the vendored webhook examples, adapted
by the GitHub emulator) over C concurrent connections to `gunicorn gating.server.wsgi:app` (as `gating app
serve` runs it), and prints the acknowledgement latency percentiles (target: p99 under 50 ms at 100
connections) and the time until every job is done. The client is a closed loop: C connections in flight, each
delivery on a new one, as GitHub sends them. It runs in one thread on non-blocking sockets, because
it shares the machine's CPU with the server; it prints its own CPU time per delivery next to the
server's, and the load average (1, 5, 15 minutes) before and after the run beside the figures: the
machine may be shared, and a figure means little without it.

Two job kinds:
  approvals (default)  the real handler: each job reads the pull request through the emulator's REST
                       API, builds both snapshots, evaluates the rules and posts the check run;
  noop                 a handler that only decodes the payload: the queue's own overhead.

    .venv/bin/python bench/webhook_ack.py [-n 1000] [-c 100] [--jobs approvals|noop] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import multiprocessing
import os
import selectors
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gating.commands.app import THREADS, WORKERS, gunicorn_argv

WARMUP = 3  # rounds of GET /healthz on every client before the timed deliveries
TARGET_P99_MS = 50.0
CONNECTIONS = 100
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


def serialise(deliveries: list[tuple[bytes, dict[str, str]]]) -> list[bytes]:
    """Each delivery as the bytes of one HTTP/1.1 request on its own connection, as GitHub sends it."""
    return [b"POST /webhooks HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: %d\r\n"
            b"%s\r\n%s" % (len(body), "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode(), body)
            for body, headers in deliveries]


@dataclass
class _Exchange:
    started: float
    unsent: memoryview
    received: bytearray = field(default_factory=bytearray)


def send_all(port: int, requests: list[bytes], concurrency: int) -> tuple[list[float], list[bytes], float]:
    """A closed loop of `concurrency` clients: each sends its next request on a new connection as soon
    as the previous response is complete. One thread and non-blocking sockets, so the client costs
    little of the CPU it shares with the server. A latency runs from just before the connection is
    opened to the last byte of the response. Returns latencies (ms), response heads, and the start."""
    sel = selectors.DefaultSelector()
    todo = iter(requests)
    latencies: list[float] = []
    heads: list[bytes] = []

    def connect() -> None:
        req = next(todo, None)
        if req is None:
            return
        t0 = time.perf_counter()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        if (err := s.connect_ex(("127.0.0.1", port))) not in (0, errno.EINPROGRESS):
            raise OSError(err, f"cannot connect to 127.0.0.1:{port}: {os.strerror(err)}")
        sel.register(s, selectors.EVENT_WRITE, _Exchange(t0, memoryview(req)))

    started = time.perf_counter()
    for _ in range(concurrency):
        connect()
    while sel.get_map():
        for key, _mask in sel.select():
            s, ex = key.fileobj, key.data
            if ex.unsent:
                with contextlib.suppress(BlockingIOError):
                    ex.unsent = ex.unsent[s.send(ex.unsent):]
                if not ex.unsent:
                    sel.modify(s, selectors.EVENT_READ, ex)
                continue
            data = s.recv(65536)
            ex.received += data
            end = ex.received.find(b"\r\n\r\n")
            if data and (end < 0 or len(ex.received) < end + 4 + _content_length(ex.received[:end])):
                continue
            if end < 0:
                raise RuntimeError(f"the server closed a connection without an answer: {bytes(ex.received)!r}")
            latencies.append((time.perf_counter() - ex.started) * 1000)
            heads.append(bytes(ex.received[:end]))
            sel.unregister(s)
            s.close()
            connect()
    sel.close()
    return latencies, heads, started


def _content_length(head: bytes | bytearray) -> int:
    for line in bytes(head).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1000, help="deliveries (default 1000)")
    ap.add_argument("-c", type=int, default=CONNECTIONS, help=f"concurrent connections (default {CONNECTIONS})")
    ap.add_argument("--jobs", choices=["approvals", "noop"], default="approvals")
    ap.add_argument("--prs", type=int, default=10, help="open pull requests the deliveries are about")
    ap.add_argument("--workers", type=int, default=WORKERS, help=f"gunicorn workers (default {WORKERS}, as serve)")
    ap.add_argument("--threads", type=int, default=THREADS,
                    help=f"request threads per worker (default {THREADS}, as serve: the sync worker; more: gthread)")
    ap.add_argument("--job-threads", type=int, default=2, help="job threads per worker (default 2)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="webhook-ack-"))
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    gh = ctx.Process(target=github_process, args=(child, str(tmp / "github"), args.prs, args.n), daemon=True)
    gh.start()
    world = parent.recv()
    port = _free_port()
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "APP_ID": str(world["app_id"]), "PRIVATE_KEY": world["key"], "WEBHOOK_SECRET": world["secret"],
           "GITHUB_API_URL": world["api_url"], "GATING_DB": str(tmp / "jobs.db"), "LOG_LEVEL": "WARNING",
           "GATING_JOB_THREADS": str(args.job_threads), "GATING_POLL_SECONDS": "0.2", "GATING_NO_AUDIT": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")])}
    if args.jobs == "noop":
        env["GATING_HANDLERS"] = "webhook_ack"
    server = subprocess.Popen(gunicorn_argv(f"127.0.0.1:{port}", args.workers, args.threads), env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base)
        deliveries = world["deliveries"]
        kind = "sync (gating's AckWorker)" if args.threads <= 1 else f"gthread x {args.threads} threads"
        print(f"{len(deliveries)} signed pull_request deliveries, {args.c} connections, gunicorn {args.workers} workers "
              f"{kind}, {args.job_threads} job threads each, jobs: {args.jobs}")
        requests = serialise(deliveries)
        for _ in range(WARMUP):  # every server thread opens its database connection before timing starts
            send_all(port, [b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"] * args.c,
                     args.c)
        pids = _process_tree(server.pid)
        load = os.getloadavg()
        (user0, sys0), own0 = _cpu_seconds(pids), time.process_time()
        lat, heads, t0 = send_all(port, requests, args.c)
        sent = time.perf_counter() - t0
        (user, system), own = _cpu_seconds(pids), time.process_time() - own0
        user, system = user - user0, system - sys0
        cpu = user + system
        after = os.getloadavg()
        server_ms = [float((_header(h, b"server-timing") or b"app;dur=0").split(b"dur=")[1]) for h in heads]
        codes: dict[bytes, int] = {}
        for h in heads:
            codes[h.split(b" ", 2)[1]] = codes.get(h.split(b" ", 2)[1], 0) + 1
        if set(codes) != {b"202"}:
            print(f"responses by status: {codes}")
        print(f"acknowledged {len(lat)} in {sent:.2f} s ({len(lat) / sent:.0f}/s)")
        met = "met" if pct(lat, 99) < TARGET_P99_MS else "NOT met"
        print(f"ack latency ms: p50 {pct(lat, 50):.1f}  p90 {pct(lat, 90):.1f}  p99 {pct(lat, 99):.1f}  "
              f"max {max(lat):.1f}  mean {statistics.mean(lat):.1f}   (target p99 < {TARGET_P99_MS:.0f} ms at "
              f"{CONNECTIONS} connections: {met}; load average {_load(load)} before, {_load(after)} after, "
              f"{os.cpu_count()} cores)")
        print(f"  of which inside the App (Server-Timing): p50 {pct(server_ms, 50):.1f}  p99 {pct(server_ms, 99):.1f}"
              f"  max {max(server_ms):.1f}; the rest is waiting for a free worker thread and the CPU")
        print(f"  CPU per delivery: gunicorn {cpu / len(lat) * 1e6:.0f} us (user {user / len(lat) * 1e6:.0f}, system "
              f"{system / len(lat) * 1e6:.0f}; its job threads included), this client "
              f"{own / len(lat) * 1e6:.0f} us", flush=True)
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


def _load(avg: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in avg)


def _process_tree(pid: int) -> list[int]:
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *map(int, kids)]


def _cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """User and system CPU time of these processes so far (Linux /proc)."""
    user = system = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]), system + int(fields[12])
    return user / os.sysconf("SC_CLK_TCK"), system / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
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
