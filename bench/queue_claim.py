"""Benchmark: what a job claim costs as the App's queue grows. Targets at 40,000 queued jobs: on the
embedded SQLite, a claim and its completion take at most 1 ms (the queue itself drains a backlog at
1,000 jobs a second or more); on PostgreSQL, whose round trips cost more, at most twice what they
cost at 1,000 (a deep backlog drains as fast as a short one).

A burst (a mass rebase across an organisation's repositories, GitHub redelivering an outage's
deliveries) leaves a backlog, and every job of it is claimed once: a claim that costs more the deeper
the queue makes the backlog drain slower the larger it is. Fills a fresh queue (SQLite, or the
PostgreSQL of `--db postgresql://...`) with N keyed jobs, as deliveries for 200 repositories' pull
requests, then claims and completes `--claims` of them, and prints the cost of each at each depth with
the load average (1 minute) beside it: the machine may be shared, and a figure means little without it.

    .venv/bin/python bench/queue_claim.py [--depths 1000,10000,40000] [--claims 300] [--db URL]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from gating.server.jobs import JobQueue

TARGET_MS = 1.0  # SQLite: claim + complete, at the deepest queue
TARGET_RATIO = 2.0  # PostgreSQL: deepest / shallowest


def depth_cost(location: str, depth: int, claims: int) -> tuple[float, float]:
    """(enqueue us per job, claim + complete ms per job) on a queue `depth` jobs deep."""
    q = JobQueue(location)
    t0 = time.perf_counter()
    for i in range(depth):
        q.enqueue(f"bench-{depth}-{i}", "pull_request", "synchronize", "{}", [("h", f"acme/r{i % 200}#{i % 50}")])
    t1 = time.perf_counter()
    for _ in range(claims):
        job = q.claim("bench")
        if job is None:
            raise SystemExit(f"the queue ran dry at depth {depth}: raise the depth or lower --claims")
        q.complete(job, "bench")
    t2 = time.perf_counter()
    if location.startswith("postgres"):
        q.db.write("DELETE FROM jobs")
    return (t1 - t0) / depth * 1e6, (t2 - t1) / claims * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depths", default="1000,10000,40000")
    ap.add_argument("--claims", type=int, default=300)
    ap.add_argument("--db", help="a postgresql:// URL to measure instead of a SQLite file (its jobs are deleted)")
    args = ap.parse_args(argv)
    depths = [int(d) for d in args.depths.split(",")]
    costs: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="gating-queue-") as tmp:
        for depth in depths:
            location = args.db or os.path.join(tmp, f"jobs-{depth}.db")
            load = os.getloadavg()[0]
            enqueue_us, claim_ms = depth_cost(location, depth, args.claims)
            costs[depth] = claim_ms
            print(f"{depth:>7,} queued: enqueue {enqueue_us:.0f} us a job; claim + complete {claim_ms:.2f} ms a job "
                  f"(load average {load:.2f})", flush=True)
    low, high = costs[min(depths)], costs[max(depths)]
    if args.db:
        met, target = high / low <= TARGET_RATIO, f"PostgreSQL target <= {TARGET_RATIO:g}x"
    else:
        met, target = high <= TARGET_MS, f"SQLite target <= {TARGET_MS:g} ms"
    print(f"claim + complete at {max(depths):,} queued: {high:.2f} ms, {high / low:.1f}x what it costs at "
          f"{min(depths):,} ({target}) -> " + ("ok" if met else "MISSED")
          + f"; load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    return 0 if met else 1

if __name__ == "__main__":
    sys.exit(main())
