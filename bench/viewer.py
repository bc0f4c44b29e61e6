"""Benchmark: the audit timeline of a 10,000-entry log, rendered from the pages' index (target: under
200 ms).

Builds the same log as bench/audit_verify.py (5,000 merges, each with a signed `merged` entry carrying
the full snapshot and a `known_good` entry), builds the index once (the rebuild the App does when the
notes move: every signature, the chain and the notes history), then times requests to the timeline as
`gating view` and the App answer them (`Site.handle`: is the index current? one query; Jinja2): the
first page (100 entries, the default) and all 10,000 entries on one page (`?per=10000`).

    .venv/bin/python bench/viewer.py [--entries 10000] [--runs 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from audit_verify import build  # noqa: E402  (the same log as the verify benchmark)

from gating.commands.view import local_source  # noqa: E402
from gating.git.repository import Git  # noqa: E402
from gating.pages.index import Index  # noqa: E402
from gating.pages.site import Site  # noqa: E402

TARGET_MS = 200.0


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", help="build the repository here and keep it")
    args = ap.parse_args()
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gating-bench-"))
    t0 = time.perf_counter()
    repo, _ = build(tmp, args.entries)
    print(f"built {args.entries} entries in {repo} in {time.perf_counter() - t0:.1f} s")
    source = local_source(Git(repo), [str(tmp / "audit.pub")])
    index = Index(str(tmp / "index.sqlite3"))
    t = time.perf_counter()
    index.rebuild(source)
    print(f"index built from the notes in {time.perf_counter() - t:.2f} s ({index.count()} entries)")
    site = Site(source, index)
    first = site.handle("", {})
    assert first.status == 200 and first.html.count("<tr class=\"entry") == 100, first.html[:500]
    page1 = timed(lambda: site.handle("", {}), args.runs)
    whole = timed(lambda: site.handle("", {"per": str(args.entries)}), args.runs)
    size = len(site.handle("", {"per": str(args.entries)}).html) / 1e6
    load = os.getloadavg()[0]
    best1, best_all = min(page1), min(whole)
    print(f"timeline, first page (100 of {args.entries}): best {best1:.1f} ms, median {statistics.median(page1):.1f} ms")
    print(f"timeline, all {args.entries} entries on one page ({size:.1f} MB of HTML): best {best_all:.1f} ms, "
          f"median {statistics.median(whole):.1f} ms")
    print(f"load average {load:.1f} on {os.cpu_count()} cores; target {TARGET_MS:.0f} ms: first page "
          f"{best1 / TARGET_MS:.2f}x, whole log {best_all / TARGET_MS:.2f}x of budget -> "
          f"{'PASS' if best_all < TARGET_MS else 'FAIL (whole log)' if best1 < TARGET_MS else 'FAIL'}")
    return 0 if best_all < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
