"""Benchmark: how long a command takes to start. Targets: `gating --help` under 0.25 s, `gating diff`
on a small repository under 0.5 s.

Each is timed as the user meets it, a fresh process of the `gating` script beside this Python (or
`--gating PATH`), start-up and imports included. The small repository is the bundled example with one
commit on top that edits a prompt and a model pin; its first `gating diff` builds and stores the two
snapshots (reported as "first"), the runs after it read them back, as every later diff of those
revisions does. The median of the runs is held to the target (one slow or one lucky run must not
move it); the load average is printed with it, since a loaded machine slows every figure.

    .venv/bin/python bench/startup.py [--runs 9] [--gating PATH]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gating.git.repository import commit_all, init_repo  # noqa: E402
from gating.testing.example import example_dir  # noqa: E402

TARGETS_S = {"help": 0.25, "diff": 0.5}


def small_repo(root: Path) -> Path:
    """The bundled example, committed, then a prompt and a model pin changed in a second commit."""
    g = init_repo(root / "repo")
    shutil.copytree(example_dir(), g.root, dirs_exist_ok=True)
    commit_all(g, "the example")
    prompt = next(p for p in sorted((g.root / "prompts").iterdir()) if p.is_file())
    prompt.write_text(prompt.read_text(encoding="utf-8") + "\nAnswer in one short paragraph.\n", encoding="utf-8")
    manifest = g.root / "gating.yml"
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace("temperature: 0.2", "temperature: 0.3", 1), encoding="utf-8")
    commit_all(g, "a shorter answer, a warmer model")
    return g.root


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of `cmd`, which must succeed."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--gating", help="the `gating` to time (default: the script beside this Python)")
    args = ap.parse_args()
    script = Path(args.gating or Path(sys.executable).parent / "gating")
    gating = [str(script)] if script.exists() else [sys.executable, "-m", "gating"]
    tmp = Path(tempfile.mkdtemp(prefix="gating-bench-"))
    try:
        repo = small_repo(tmp)
        commands = {"help": [*gating, "--help"], "diff": [*gating, "-C", str(repo), "diff", "HEAD~1", "HEAD"]}
        first = timed(commands["diff"])[0]
        print(f"gating: {' '.join(gating)}; first `gating diff` (builds and stores both snapshots): {first:.3f} s")
        ok = True
        for name, cmd in commands.items():
            timed(cmd)  # warm-up: the page cache, the compiled bytecode
            runs = [timed(cmd) for _ in range(args.runs)]
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            target = TARGETS_S[name]
            ok &= wall < target
            print(f"gating {' '.join(cmd[len(gating):]).replace(str(repo), 'REPO')}: median {wall:.3f} s of {args.runs} "
                  f"(min {min(w for w, _ in runs):.3f}, max {max(w for w, _ in runs):.3f}; CPU {cpu:.3f} s); "
                  f"target {target:.2f} s: {wall / target:.2f}x of budget -> {'PASS' if wall < target else 'FAIL'}")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
