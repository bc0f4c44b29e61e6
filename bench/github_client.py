"""Benchmark: what the REST client costs, in requests and wall time, on the GitHub emulator.

Four things the App and the Action do often: list 250 comments of a pull request (pagination), build
a snapshot over the trees and blobs API (`ApiRevision`, cold cache), complete a check run with 120
annotations (three requests' worth), and append three audit entries over the Git Database API.

    .venv/bin/python bench/github_client.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gating.audit import keys
from gating.audit import log as audit_log
from gating.audit.entry import EntryFacts
from gating.github import ApiRevision, GitDatabaseNotes, Repo, finish_check_run, token_client
from gating.system.snapshot import build_snapshot
from gating.testing import start_emulator
from gating.testing.example import example_dir


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        emu = start_emulator(Path(tmp) / "github")
        try:
            repo = emu.create_repo("acme/support-bot", source_dir=example_dir())
            emu.push(repo, "x", {"a.txt": "a"}, "a", user="alice")
            number = emu.create_pull(repo, "x", "main", "t", "alice")["number"]
            for i in range(250):
                emu.add_comment(repo, number, "bob", f"comment {i}")
            sha = repo.head("main")
            key = keys.generate()
            notes = [{"path": "prompts/system.md", "start_line": 1, "end_line": 1, "annotation_level": "notice",
                      "message": f"n{i}"} for i in range(120)]
            seq = [0]

            def api() -> Repo:
                return Repo(token_client(emu.api_url, emu.installation_token()), repo.full_name)

            def append() -> None:
                store = GitDatabaseNotes(api())
                for _ in range(3):
                    seq[0] += 1
                    facts = EntryFacts("merged", sha, repo.full_name, "bench", discriminator=str(seq[0]))
                    audit_log.append_entry(store, facts, key, datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seq[0]))

            cases: list[tuple[str, Callable[[], object]]] = [
                ("list 250 comments", lambda: api().issue_comments(number)),
                ("snapshot over the API", lambda: build_snapshot(ApiRevision(api(), sha)).digest),
                ("check run, 120 annotations", lambda: finish_check_run(
                    api(), None, name="bench", head_sha=sha, conclusion="neutral", completed_at="2026-01-01T00:00:00Z",
                    title="T", summary="S", annotations=notes)),
                ("3 audit entries", append),
            ]
            for label, fn in cases:
                times, calls = [], []
                for _ in range(args.runs):
                    emu.reset_requests()
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                    calls.append(len(emu.requests))
                print(f"{label}: median {statistics.median(times) * 1000:.0f} ms, best {min(times) * 1000:.0f} ms "
                      f"over {args.runs} runs; {statistics.median(calls):.0f} requests")
        finally:
            emu.stop()


if __name__ == "__main__":
    main()
