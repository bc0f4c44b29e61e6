"""Eval runner throughput against the local test LLM server (100 ms per answer).

Starts the server in its own process, then runs 2,000 cases through `run_evals` (each run in a fresh
process, so CPU time and peak RSS belong to that run alone) at concurrency 16 and 64, and prints
wall time / ideal (ideal = cases x latency / concurrency), requests per second, CPU seconds per case
and peak RSS per process (worker processes included; plus the server's CPU per request and the machine's load average, since the wall
time of a run on a shared machine depends on both). A second run on the warm cache must send zero
requests. `--compare-httpx` adds the
same load through httpx.AsyncClient shards (the path a proxy takes) to show what the engine's own
HTTP/1.1 pool (gating/evals/http1.py) saves.

    python bench/eval_throughput.py [--cases 2000] [--latency 0.1] [--compare-httpx]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TARGETS = {16: 1.2, 64: 1.5}
RSS_LIMIT_MB = 150


def make_repo(root: Path, cases: int, base_url: str) -> None:
    (root / "prompts").mkdir(parents=True)
    (root / "evals").mkdir()
    (root / "gating.yml").write_text(
        "version: 1\nname: bench\ncomponents:\n  models:\n"
        f"    m: {{provider: openai, model: gpt-4o-mini-2024-07-18, base_url: '{base_url}', params: {{temperature: 0}}}}\n"
        "  prompts:\n    p: {file: prompts/p.md, model: m}\n"
        "evals:\n  datasets: [evals/cases.jsonl]\n  target: {type: prompt}\n"
        "  thresholds: {pass_rate: '>= 0.99'}\n",
        encoding="utf-8",
    )
    (root / "prompts/p.md").write_text("Answer the customer.\n\nQuestion {{ n }}: {{ q }}\n", encoding="utf-8")
    with open(root / "evals/cases.jsonl", "w", encoding="utf-8") as f:
        for i in range(cases):
            case = {"id": f"c{i:05d}", "prompt": "p", "vars": {"n": i, "q": f"where is order {i}?"},
                    "assert": [{"type": "icontains", "value": f"order {i}"}, {"type": "max-tokens", "value": 200}]}
            f.write(json.dumps(case) + "\n")


def child(args: argparse.Namespace) -> int:
    """One measured run in this process; prints a JSON line."""
    from gating.evals import providers
    from gating.evals.runner import run_evals
    from gating.git.revision import WorkTree
    from gating.system.snapshot import build_snapshot

    if args.httpx:
        providers._proxied = lambda: True  # the httpx clients, as behind a proxy (the environment names none)
    if args.shard:
        providers.SHARD_CONNECTIONS = args.shard
    reader = WorkTree(args.repo)
    snap = build_snapshot(reader)
    env = {"OPENAI_API_KEY": "bench", "GATING_PROVIDER": "live"}
    cpu0, t0 = time.process_time(), time.perf_counter()
    run = run_evals(snap, reader, concurrency=args.concurrency, cache_dir=args.cache or None, env=env)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # worker processes (gating/evals/fanout.py), reaped
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0 + kids.ru_utime + kids.ru_stime
    rss_mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, kids.ru_maxrss) / 1024  # per process
    print(json.dumps({"wall": wall, "cpu": cpu, "rss_mb": rss_mb, "cases": len(run.cases),
                      "passed": run.metrics["passed"], "errors": run.metrics["errors"], "stats": run.stats}))
    return 0


def server_stats(url: str) -> dict:
    with urllib.request.urlopen(url + "/stats", timeout=5) as r:
        return json.loads(r.read())


def measure(repo: Path, url: str, conc: int, cache: str, use_httpx: bool = False) -> dict:
    before = server_stats(url)
    load0 = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "--child", "--repo", str(repo), "--concurrency", str(conc), "--cache", cache]
    out = subprocess.run(cmd + (["--httpx"] if use_httpx else []), capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    after = server_stats(url)
    res["server_requests"] = after["requests"] - before["requests"]
    res["server_cpu"] = after["cpu_s"] - before["cpu_s"]
    res["load"] = max(load0, os.getloadavg()[0])
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="eval runner throughput benchmark")
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--compare-httpx", action="store_true", help="also run through httpx clients (as behind a proxy)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--repo", help=argparse.SUPPRESS)
    ap.add_argument("--concurrency", type=int, default=16, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default="", help=argparse.SUPPRESS)
    ap.add_argument("--httpx", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--shard", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)

    server = subprocess.Popen([sys.executable, "-m", "gating.testing.llm_server", "--latency", str(args.latency),
                               "--no-log"], stdout=subprocess.PIPE, text=True)
    ok = True
    try:
        line = server.stdout.readline() if server.stdout else ""
        url = line.strip().rsplit(" ", 1)[-1]
        with tempfile.TemporaryDirectory(prefix="gating-bench-") as tmp:
            repo = Path(tmp) / "repo"
            make_repo(repo, args.cases, url + "/v1")
            print(f"{args.cases} cases, server latency {args.latency * 1000:.0f} ms, {url}")
            print(f"{'run':<28}{'wall s':>8}{'ideal s':>9}{'ratio':>7}{'req/s':>8}{'cpu ms/case':>13}"
                  f"{'peak RSS MB':>13}{'requests':>10}{'server cpu ms/req':>19}{'load avg':>10}")
            runs = [(f"concurrency {c}", c, str(Path(tmp) / f"cache{c}"), False) for c in TARGETS]
            runs.append(("concurrency 64, warm cache", 64, str(Path(tmp) / "cache64"), False))
            if args.compare_httpx:
                runs.append(("concurrency 64, httpx", 64, "", True))
            for label, conc, cache, use_httpx in runs:
                r = measure(repo, url, conc, cache, use_httpx)
                ideal = args.cases * args.latency / conc
                ratio = r["wall"] / ideal
                rps = r["server_requests"] / r["wall"] if r["wall"] else 0.0
                print(f"{label:<28}{r['wall']:>8.2f}{ideal:>9.2f}{ratio:>7.2f}{rps:>8.0f}"
                      f"{1000 * r['cpu'] / r['cases']:>13.2f}{r['rss_mb']:>13.1f}{r['server_requests']:>10}"
                      + (f"{1000 * r['server_cpu'] / r['server_requests']:>19.2f}" if r["server_requests"]
                         else f"{'-':>19}") + f"{r['load']:>10.1f}")
                if r["passed"] != args.cases:
                    print(f"  !! {args.cases - r['passed']} cases failed ({r['errors']} errors): {r['stats']}")
                    ok = False
                if "warm" in label:
                    good = r["server_requests"] == 0 and r["stats"]["cache_hits"] == args.cases
                    print(f"  warm cache: {r['server_requests']} requests reached the server, "
                          f"{r['stats']['cache_hits']} cache hits -> {'ok' if good else 'FAILED'}")
                    ok &= good
                elif not use_httpx:
                    target = TARGETS[conc]
                    verdict = "ok" if ratio <= target and r["rss_mb"] < RSS_LIMIT_MB else "MISSED"
                    print(f"  target: ratio <= {target}, peak RSS < {RSS_LIMIT_MB} MB -> {verdict}")
                    ok &= verdict == "ok"
    finally:
        server.terminate()
        server.wait(10)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
