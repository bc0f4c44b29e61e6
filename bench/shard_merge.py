"""`gating check` sharded against unsharded, on one pull request that affects every case.

A git repository with `--cases` cases; the head commit edits the prompt, so base and head both run
every case, live against the local test LLM server (`--latency` per answer), each process at
`--concurrency`. Runs `gating check` once unsharded, then `--shard I/N` for each I (one after the
other: on GitHub they are parallel matrix jobs), then `--merge`. Prints each wall time, the
matrix's critical path (slowest shard + merge) against the unsharded wall, the merge's wall against
the slowest shard's, the partial reports' size, and whether the merged verdict and every case outcome
equal the unsharded ones (the answers are the same; live latencies are not, so the bytes are compared
by the tests, on cassettes). Prints the machine's load average beside the figures.

    python bench/shard_merge.py [--cases 1000] [--shards 4] [--latency 0.1] [--concurrency 16]
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
from pathlib import Path

GATING = [sys.executable, "-m", "gating"]


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.com", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@example.com", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def make_repo(root: Path, cases: int, base_url: str) -> tuple[str, str]:
    (root / "prompts").mkdir(parents=True)
    (root / "evals").mkdir()
    (root / "gating.yml").write_text(
        "version: 1\nname: bench\ncomponents:\n  models:\n"
        f"    m: {{provider: openai, model: gpt-4o-mini-2024-07-18, base_url: '{base_url}', params: {{temperature: 0}}}}\n"
        "  prompts:\n    p: {file: prompts/p.md, model: m}\n"
        "evals:\n  datasets: [evals/cases.jsonl]\n  target: {type: prompt}\n"
        "  thresholds: {pass_rate: '>= 0.99'}\n  regression: {max_drop: 0.02, alpha: 0.05}\n",
        encoding="utf-8")
    (root / "prompts/p.md").write_text("Answer the customer.\n\nQuestion {{ n }}: {{ q }}\n", encoding="utf-8")
    with open(root / "evals/cases.jsonl", "w", encoding="utf-8") as f:
        for i in range(cases):
            case = {"id": f"c{i:05d}", "prompt": "p", "vars": {"n": i, "q": f"where is order {i}?" + " please" * (i % 7)},
                    "assert": [{"type": "icontains", "value": f"order {i}"}, {"type": "max-tokens", "value": 400}]}
            f.write(json.dumps(case) + "\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    base = git(root, "rev-parse", "HEAD")
    (root / "prompts/p.md").write_text("Answer the customer politely.\n\nQuestion {{ n }}: {{ q }}\n", encoding="utf-8")
    git(root, "commit", "-q", "-am", "head")
    return base, git(root, "rev-parse", "HEAD")


def load() -> str:
    """The 1, 5 and 15 minute load averages: the machine is shared, so every figure is printed beside them."""
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


CPU = [0.0]  # CPU seconds of the last timed run: a loaded machine stretches wall time, not the work done


def timed(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    # bytecode is cached as for an installed package (a runner's pip install compiles it)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GATING_", "PYTHONDONTWRITEBYTECODE"))}
    env |= {"OPENAI_API_KEY": "bench", "GATING_PROVIDER": "live", "GIT_CONFIG_GLOBAL": os.devnull}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([*GATING, "-C", str(cwd), *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[0] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, proc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="sharded vs unsharded gating check")
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args(argv)
    server = subprocess.Popen([sys.executable, "-m", "gating.testing.llm_server", "--latency", str(args.latency),
                               "--no-log"], stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline() if server.stdout else ""
        url = line.strip().rsplit(" ", 1)[-1]
        with tempfile.TemporaryDirectory(prefix="gating-shard-bench-") as tmp:
            repo = Path(tmp) / "repo"
            base, head = make_repo(repo, args.cases, url + "/v1")
            common = ["check", "--base", base, "--head", head, "--no-cache", "--baseline", "rerun",
                      "--concurrency", str(args.concurrency)]
            print(f"{args.cases} cases on base and on head, {args.shards} shards, server latency "
                  f"{args.latency * 1000:.0f} ms, concurrency {args.concurrency} per process")
            whole_s, whole = timed([*common, "--no-post", "--notes", "off", "--json", f"{tmp}/whole.json"], repo)
            print(f"{'unsharded':<22}{whole_s:>8.2f} s  cpu {CPU[0]:.2f} s  rc {whole.returncode}  load {os.getloadavg()[0]:.1f}")
            walls, cpus = [], []
            for i in range(1, args.shards + 1):
                out = f"{tmp}/shards/shard-{i}-of-{args.shards}.json"
                s, proc = timed([*common, "--shard", f"{i}/{args.shards}", "--shard-out", out], repo)
                if proc.returncode:
                    print(proc.stderr)
                    return 1
                walls.append(s)
                cpus.append(CPU[0])
                size = Path(out).stat().st_size / 1024
                print(f"{f'shard {i}/{args.shards}':<22}{s:>8.2f} s  cpu {CPU[0]:.2f} s  {size:,.0f} KiB  "
                      f"load {os.getloadavg()[0]:.1f}")
            merge_s, merged = timed([*common, "--merge", f"{tmp}/shards", "--no-post", "--notes", "off",
                                     "--json", f"{tmp}/merged.json"], repo)
            merge_cpu = CPU[0]
            print(f"{'merge':<22}{merge_s:>8.2f} s  cpu {merge_cpu:.2f} s  rc {merged.returncode}  "
                  f"load {os.getloadavg()[0]:.1f}")
            path = max(walls) + merge_s
            print(f"matrix critical path (slowest shard + merge) {path:.2f} s = {path / whole_s:.2f} x the "
                  f"unsharded {whole_s:.2f} s; shards sum {sum(walls):.2f} s; load {load()}")
            print(f"merge {merge_s:.2f} s = {merge_s / max(walls):.0%} of the slowest shard's {max(walls):.2f} s "
                  f"(target <= 25%); its CPU {merge_cpu:.2f} s = {merge_cpu / max(cpus):.0%} of the busiest shard's; "
                  f"load {load()}")
            a, b = (json.loads(Path(f"{tmp}/{n}.json").read_text()) for n in ("whole", "merged"))

            def outcome(doc: dict) -> list:
                return [(c["id"], c["passed"], c["score"]) for c in doc["head_run"]["cases"]]

            same = a["verdict"] == b["verdict"] and outcome(a) == outcome(b) and \
                a["comparison"]["mcnemar"] == b["comparison"]["mcnemar"]
            print(f"merged verdict {b['verdict']} vs unsharded {a['verdict']}; every case outcome and McNemar "
                  f"equal: {'yes' if same else 'NO'}")
            return 0 if same else 1
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    sys.exit(main())
