"""How long the monitor's rules take to evaluate over a day of production traffic.

A day at 100,000 requests (the example's evals.traffic.requests_per_day), with the weekly pattern of
real traffic (a daytime peak, quiet nights), as minute roll-ups for two prompts and four stages, plus
the three weeks before it (what the example's weekly anomaly rule looks back at):
records (about 250,000) in an indexed in-memory source (gating.monitor.rollup.IndexedRollups). Then the example's
`monitor:` rules (six: error rate, retrieval p95, tokens and cost against the eval's projection,
negative feedback, a weekly traffic anomaly) are evaluated at every minute of the day, as the App's
timed job does at GATING_MONITOR_SECONDS=60.

Prints the time of one evaluation (p50, p99, against a 50 ms target: a tick of the App's scheduler
must leave room for many repositories) and of the whole day's 1,440 evaluations (against 60 s).

    python bench/monitor_rules.py [--requests 100000] [--minutes 1440]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gating.monitor.rollup import IndexedRollups, Rollup  # noqa: E402
from gating.monitor.rules import evaluate, parse_monitor, projection_from  # noqa: E402
from gating.system.manifest import parse_manifest  # noqa: E402

TICK_TARGET_MS = 50.0
DAY_TARGET_S = 60.0
REPO, SYSTEM, WEEK, DAY = "acme/support-bot", "a" * 40, 7 * 1440, 1440
START = 29_400_000 - 29_400_000 % WEEK  # a week boundary, in unix minutes
LATENCY = {"request": 900.0, "embedding": 40.0, "retrieval": 120.0, "llm": 700.0}


def shape(minute: int) -> float:
    """Relative traffic at a minute of the week: a daytime curve, weekends at 40%."""
    day, hour = ((minute - START) // DAY) % 7, ((minute - START) % DAY) / 60
    daily = 0.15 + 0.85 * max(0.0, math.sin(math.pi * (hour - 6) / 18)) ** 2 if hour >= 6 else 0.15
    return daily * (0.4 if day >= 5 else 1.0)


def generate(requests_per_day: int, days: int) -> list[Rollup]:
    rng = random.Random(3)
    first = START + 3 * WEEK  # the measured day is a Monday after three weeks of history
    day_shape = sum(shape(m) for m in range(first, first + DAY))
    scale = requests_per_day / day_shape
    out = []
    for minute in range(first + DAY - days * DAY, first + DAY):
        n = max(0, round(scale * shape(minute) * rng.uniform(0.9, 1.1)))
        if n == 0:
            continue
        for component, share in (("answer", 0.8), ("classify", 0.2)):
            k = max(1, round(n * share))
            for stage, ms in LATENCY.items():
                r = Rollup(REPO, SYSTEM, component, stage, minute, requests=k)
                for _ in range(6):
                    r.latency.add(ms * rng.lognormvariate(0, 0.35), max(1, k // 6))
                if stage == "request":
                    r.errors = {"timeout": sum(rng.random() < 0.004 for _ in range(k))}
                    r.input_tokens, r.output_tokens = 700 * k, 200 * k
                    r.cost, r.feedback = 0.00375 * k, {"negative": k // 200, "positive": k // 10}
                out.append(r)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=100_000, help="requests in the measured day")
    ap.add_argument("--minutes", type=int, default=DAY, help="evaluations: one per minute of the day")
    args = ap.parse_args()
    m = parse_manifest((ROOT / "examples" / "support-bot" / "gating.yml").read_bytes())
    config = parse_monitor(m.monitor, m.name)
    projection = projection_from({"tokens_in_per_request": 700, "tokens_out_per_request": 200,
                                  "cost_per_request_usd": 0.00375}, args.requests)
    t0 = time.perf_counter()
    rows = generate(args.requests, 22)
    source = IndexedRollups(rows)
    built = time.perf_counter() - t0
    day = START + 3 * WEEK + DAY
    day_requests = sum(r.requests for r in rows if r.stage == "request" and day - DAY <= r.minute < day)
    print(f"traffic: {len(rows):,} minute roll-ups over 22 days ({day_requests:,} requests in the measured day), "
          f"built in {built:.1f} s; {len(config.rules)} rules; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    times, fired = [], 0
    t0 = time.perf_counter()
    for minute in range(day - args.minutes, day):
        s = time.perf_counter()
        results = evaluate(config, source, REPO, [SYSTEM], minute, projection)
        times.append((time.perf_counter() - s) * 1000)
        fired += sum(r.firing for r in results)
    total = time.perf_counter() - t0
    times.sort()
    p50, p99 = statistics.median(times), times[int(0.99 * (len(times) - 1))]
    print(f"one evaluation of all rules: p50 {p50:.1f} ms, p99 {p99:.1f} ms (target < {TICK_TARGET_MS:.0f} ms p99: "
          f"{TICK_TARGET_MS / p99:.1f}x headroom)")
    print(f"the day's {len(times):,} evaluations: {total:.1f} s (target < {DAY_TARGET_S:.0f} s: "
          f"{DAY_TARGET_S / total:.1f}x headroom); rules fired {fired} times on normal traffic")
    return 0


if __name__ == "__main__":
    sys.exit(main())
