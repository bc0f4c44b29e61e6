"""Benchmark: `gating audit verify` over a log of 10,000 entries (target: 2 s or less).

Builds a local repository with 5,000 merge commits, each with a signed `merged` entry (carrying the
full snapshot of the bundled example) and a `known_good` entry, one notes commit per entry as the App
writes them; the history is loaded with one `git fast-import` so the build takes seconds. Then it runs
the real CLI (`python -m gating audit verify`) in a fresh process and reports the best of a few runs,
each with the load average (1 minute) when it started: the machine may be shared, and a figure means
little without it.

    .venv/bin/python bench/audit_verify.py [--entries 10000] [--runs 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gating.audit import entry as audit
from gating.audit import keys
from gating.audit.entry import Approval, EntryFacts
from gating.git.notes import AUDIT_REF
from gating.git.repository import init_repo
from gating.git.revision import WorkTree
from gating.system.snapshot import build_snapshot
from gating.testing.example import example_dir

TARGET_S = 2.0


def build(root: Path, n_entries: int) -> tuple[Path, float]:
    g = init_repo(root / "repo")
    n_commits = (n_entries + 1) // 2
    stream = []
    for i in range(n_commits):
        msg = f"Merge pull request #{i + 1}".encode()
        stream += [b"commit refs/heads/main", b"committer dev <dev@example.invalid> %d +0000" % (1700000000 + i),
                   b"data %d" % len(msg), msg, b""]
    g.fast_import(b"\n".join(stream) + b"\n")
    shas = g.run("rev-list", "--reverse", "main").split()

    key = keys.generate()
    (root / "audit.pub").write_bytes(keys.public_pem(key))
    snapshot = build_snapshot(WorkTree(example_dir())).data
    now = datetime(2024, 1, 1, tzinfo=UTC)
    notes: dict[str, bytes] = {}
    stream, prev = [], None
    for seq in range(1, n_entries + 1):
        c = shas[(seq - 1) // 2]
        if seq % 2:
            facts = EntryFacts("merged", c, "acme/support-bot", "alice", pull_request=(seq + 1) // 2,
                               snapshot=snapshot,
                               evals={"verdict": "pass", "dataset_digest": "sha256:" + "d" * 64,
                                      "metrics": {"pass_rate": 0.97, "latency_p95_ms": 1800}, "source": "eval note"},
                               approvals=[Approval("bob", "APPROVED", "2024-01-01T00:00:00Z", c)])
        else:
            facts = EntryFacts("known_good", c, "acme/support-bot", "deploy-bot",
                               deployment={"environment": "production", "id": seq}, discriminator=f"deployment {seq}")
        line = audit.make_line(facts, now + timedelta(minutes=seq), seq, prev, key)
        prev = audit.sha256_line(line)
        notes[c] = notes.get(c, b"") + line + b"\n"
        msg = f"audit: {facts.event} seq {seq} on {c}\n".encode()
        stream += [f"commit {AUDIT_REF}".encode(), b"committer gating <gating@example.invalid> %d +0000" % seq,
                   b"data %d" % len(msg), msg, b"N inline " + c.encode(), b"data %d" % len(notes[c]), notes[c], b""]
    t0 = time.perf_counter()
    g.fast_import(b"\n".join(stream) + b"\n")
    return g.root, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", help="build the repository here and keep it")
    args = ap.parse_args()
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gating-bench-"))
    t0 = time.perf_counter()
    repo, _ = build(tmp, args.entries)
    print(f"built {args.entries} entries in {repo} in {time.perf_counter() - t0:.1f} s")
    cmd = [sys.executable, "-m", "gating", "-C", str(repo), "audit", "verify", "--no-fetch",
           "--key", str(tmp / "audit.pub")]
    # bytecode is cached, as in an installed package (a shell may set PYTHONDONTWRITEBYTECODE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times, cpus, loads = [], [], []
    for _ in range(args.runs):
        loads.append(os.getloadavg()[0])
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
            return 1
    best = min(times)
    load = os.getloadavg()
    print(proc.stdout.strip())
    print(f"gating audit verify, {args.entries} entries: best {best:.2f} s of {args.runs} "
          f"(runs: {', '.join(f'{t:.2f} s at load {avg:.2f}' for t, avg in zip(times, loads, strict=True))}; "
          f"CPU incl. git {min(cpus):.2f} s); load average now {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
          f"{os.cpu_count()} cores; target {TARGET_S:.1f} s: "
          f"{best / TARGET_S:.2f}x of budget -> {'PASS' if best <= TARGET_S else 'FAIL'}")
    return 0 if best <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
