"""gating against promptfoo 0.121 on the same workload, side by side on this machine.

2,000 cases (an `icontains` and a `max-tokens`-like check each), concurrency 64, the local test LLM
server (OpenAI-compatible, 100 ms per answer) on loopback, no response cache for either tool. Each
tool runs in a fresh process; the bench prints wall time, CPU seconds (the tool's processes and
their children, not the server), peak RSS per process, the ratio to the ideal (cases x latency /
concurrency), gating's speed-up over promptfoo, the server's CPU, and the load average beside every
figure (the machine is shared; a loaded run says so). "wall" is the eval itself (gating's run_evals;
for promptfoo, which reports no such figure, its whole process); "process" is from process start to
exit for both, and the speed-up is taken on it, so neither tool's start-up is left out.

promptfoo is installed with npm into a cache directory outside the project at bench time
(GATING_BENCH_CACHE, default ~/.cache/gating-bench) and reused afterwards; without npm (or with
--skip-peer) the peer is skipped with a message and gating is measured alone.

    python bench/eval_vs_peer.py [--cases 2000] [--concurrency 64] [--latency 0.1] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_throughput import make_repo, server_stats  # noqa: E402

PEER_VERSION = "0.121"
TARGET_IDEAL_RATIO = 1.2
TARGET_SPEEDUP = 5.0
TARGET_RSS_MB = 100.0


def run_measured(cmd: list[str], env: dict[str, str], cwd: str | None = None) -> tuple[float, float, float, str, int]:
    """(wall s, CPU s of the process and its waited-for descendants, peak RSS MB, stdout, exit code)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    # communicate() reaped the child with waitpid; its usage is in RUSAGE_CHILDREN only as a total, so
    # the peer and gating each run from a fresh bench child (see `measure`) to keep them apart.
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.stderr.write(err[-4000:])
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, out, proc.returncode


def measure(kind: str, args: argparse.Namespace, **extra: str) -> dict:
    """Run one tool from a fresh bench process, so the CPU and peak RSS it reports are that tool's alone."""
    cmd = [sys.executable, __file__, "--child", kind, "--cases", str(args.cases), "--concurrency",
           str(args.concurrency), "--latency", str(args.latency)]
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", v]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    load0 = os.getloadavg()[0]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{out.stderr[-4000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["load"] = max(load0, os.getloadavg()[0])
    return res


def child_gating(args: argparse.Namespace) -> dict:
    # bytecode is cached, as in an installed package (a shell may set PYTHONDONTWRITEBYTECODE)
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
           "OPENAI_API_KEY": "bench", "GATING_PROVIDER": "live",
           **({"GATING_EVAL_WORKERS": str(args.workers)} if args.workers else {})}
    cmd = [sys.executable, "-c", _GATING_RUN, args.repo, str(args.concurrency)]
    wall, cpu, rss, out, code = run_measured(cmd, env)
    got = json.loads(out.strip().splitlines()[-1]) if code == 0 else {}
    return {"wall": got.get("wall", wall), "process_wall": wall, "cpu": cpu, "rss_mb": rss,
            "passed": got.get("passed"), "errors": got.get("errors"), "ok": code == 0}


# The measured gating process: build the snapshot, run the evals, print the run's own wall time (its
# interpreter start is in the process wall time beside it).
_GATING_RUN = """
import json, sys, time
from gating.evals.runner import run_evals
from gating.git.revision import WorkTree
from gating.system.snapshot import build_snapshot
reader = WorkTree(sys.argv[1])
t0 = time.perf_counter()
run = run_evals(build_snapshot(reader), reader, concurrency=int(sys.argv[2]), cache_dir=None)
print(json.dumps({"wall": time.perf_counter() - t0, "passed": run.metrics["passed"], "errors": run.metrics["errors"]}))
"""


def peer_config(root: Path, cases: int, base_url: str) -> Path:
    """The same workload in promptfoo's own configuration: one prompt, one model, the same checks."""
    tests = [{"vars": {"n": i, "q": f"where is order {i}?"},
              "assert": [{"type": "icontains", "value": f"order {i}"},
                         {"type": "javascript", "value": "output.split(/\\s+/).length <= 200"}]}
             for i in range(cases)]
    cfg = {"description": "bench", "prompts": ["Answer the customer.\n\nQuestion {{ n }}: {{ q }}\n"],
           "providers": [{"id": "openai:chat:gpt-4o-mini-2024-07-18",
                          "config": {"apiBaseUrl": base_url, "apiKey": "bench", "temperature": 0}}],
           "tests": tests}
    path = root / "promptfooconfig.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


def peer_bin() -> Path | None:
    """promptfoo's CLI from the bench cache, installed with npm on first use; None without npm."""
    cache = Path(os.environ.get("GATING_BENCH_CACHE") or Path.home() / ".cache" / "gating-bench") / f"promptfoo-{PEER_VERSION}"
    exe = cache / "node_modules" / ".bin" / "promptfoo"
    if exe.exists():
        return exe
    npm = shutil.which("npm")
    if npm is None:
        return None
    cache.mkdir(parents=True, exist_ok=True)
    print(f"installing promptfoo@{PEER_VERSION} with npm into {cache} ...", flush=True)
    got = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent", f"promptfoo@{PEER_VERSION}"],
                         cwd=cache, capture_output=True, text=True)
    if got.returncode != 0 or not exe.exists():
        print(f"npm install failed:\n{got.stderr[-2000:]}")
        return None
    return exe


def child_peer(args: argparse.Namespace) -> dict:
    home = tempfile.mkdtemp(prefix="gating-bench-peer-home-")
    env = {**os.environ, "HOME": home, "PROMPTFOO_CONFIG_DIR": home, "PROMPTFOO_DISABLE_TELEMETRY": "1",
           "PROMPTFOO_DISABLE_UPDATE": "1", "PROMPTFOO_DISABLE_SHARING": "1", "OPENAI_API_KEY": "bench",
           "NO_COLOR": "1", "CI": "1"}
    out_json = Path(home) / "out.json"
    cmd = [args.peer, "eval", "-c", args.config, "-j", str(args.concurrency), "--no-cache", "--no-table",
           "--no-write", "--no-progress-bar", "-o", str(out_json)]
    wall, cpu, rss, _out, code = run_measured(cmd, env, cwd=home)
    passed = errors = None
    if out_json.exists():
        stats = json.loads(out_json.read_text()).get("results", {}).get("stats", {})
        passed, errors = stats.get("successes"), stats.get("errors")
    shutil.rmtree(home, ignore_errors=True)
    return {"wall": wall, "process_wall": wall, "cpu": cpu, "rss_mb": rss, "passed": passed, "errors": errors,
            "ok": code in (0, 100)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="gating vs promptfoo on the same eval workload")
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=0, help="force gating's worker processes (default: chosen)")
    ap.add_argument("--skip-peer", action="store_true", help="measure gating alone")
    ap.add_argument("--child", choices=("gating", "peer"), help=argparse.SUPPRESS)
    ap.add_argument("--repo", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child_gating(args) if args.child == "gating" else child_peer(args)))
        return 0

    peer = None if args.skip_peer else peer_bin()
    if peer is None and not args.skip_peer:
        print("promptfoo skipped: npm is not available (install Node.js and npm to compare)")
    server = subprocess.Popen([sys.executable, "-m", "gating.testing.llm_server", "--latency", str(args.latency),
                               "--no-log"], stdout=subprocess.PIPE, text=True)
    ok = True
    try:
        url = (server.stdout.readline() if server.stdout else "").strip().rsplit(" ", 1)[-1]
        ideal = args.cases * args.latency / args.concurrency
        with tempfile.TemporaryDirectory(prefix="gating-bench-") as tmp:
            repo = Path(tmp) / "repo"
            make_repo(repo, args.cases, url + "/v1")
            print(f"{args.cases} cases, concurrency {args.concurrency}, server latency {args.latency * 1000:.0f} ms, "
                  f"{os.cpu_count()} cores; ideal {ideal:.2f} s")
            print(f"{'tool':<22}{'wall s':>8}{'x ideal':>9}{'process s':>11}{'cpu s':>8}{'peak RSS MB':>13}{'passed':>8}"
                  f"{'server cpu s':>14}{'load avg':>10}")
            rows: dict[str, dict] = {}
            runs = [("gating", {"repo": str(repo)})]
            if peer is not None:
                runs.append(("peer", {"config": str(peer_config(Path(tmp), args.cases, url + "/v1")), "peer": str(peer)}))
            for kind, extra in runs:
                before = server_stats(url)
                r = measure(kind, args, **extra)
                r["server_cpu"] = server_stats(url)["cpu_s"] - before["cpu_s"]
                rows[kind] = r
                name = "gating" if kind == "gating" else f"promptfoo {PEER_VERSION}"
                print(f"{name:<22}{r['wall']:>8.2f}{r['wall'] / ideal:>9.2f}{r['process_wall']:>11.2f}{r['cpu']:>8.2f}{r['rss_mb']:>13.1f}"
                      f"{str(r['passed']):>8}{r['server_cpu']:>14.2f}{r['load']:>10.1f}")
                if not r["ok"] or r["passed"] != args.cases:
                    print(f"  !! {name}: {args.cases - (r['passed'] or 0)} cases did not pass ({r['errors']} errors)")
                    ok = False
    finally:
        server.terminate()
        server.wait(10)
    g = rows.get("gating")
    if g:
        verdict = "ok" if g["wall"] <= TARGET_IDEAL_RATIO * ideal else "MISSED"
        print(f"gating wall / ideal: {g['wall'] / ideal:.2f} (target <= {TARGET_IDEAL_RATIO}) -> {verdict}")
        rss_ok = "ok" if g["rss_mb"] <= TARGET_RSS_MB else "MISSED"
        print(f"gating peak RSS per process: {g['rss_mb']:.1f} MB (target <= {TARGET_RSS_MB:g}) -> {rss_ok}")
    p = rows.get("peer")
    if g and p:
        speed = p["process_wall"] / g["process_wall"]  # both from process start: interpreters and set-up included
        print(f"gating vs promptfoo: {speed:.1f}x faster (process wall), {p['wall'] / g['wall']:.1f}x (eval wall), {p['cpu'] / max(g['cpu'], 1e-9):.1f}x less CPU, "
              f"{p['rss_mb'] / max(g['rss_mb'], 1e-9):.1f}x less peak memory (target >= {TARGET_SPEEDUP:g}x faster) "
              f"-> {'ok' if speed >= TARGET_SPEEDUP else 'MISSED'}")
        # no tool keeping `concurrency` requests in flight finishes before the ideal: the most any could
        # be faster than the peer here is the peer's time over the ideal
        bound = p["process_wall"] / ideal
        print(f"  the most any tool at concurrency {args.concurrency} could be: {bound:.1f}x (promptfoo's "
              f"{p['process_wall']:.2f} s / the ideal {ideal:.2f} s); gating reached {speed / bound:.0%} of it"
              + (f"; {TARGET_SPEEDUP:g}x would need promptfoo at >= {TARGET_SPEEDUP * ideal:.2f} s"
                 if bound < TARGET_SPEEDUP else ""))
    print(f"load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
