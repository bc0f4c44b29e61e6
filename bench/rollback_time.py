"""Benchmark: how fast does gating get back to a known good state?

1. The App: from a `/rollback` comment to the reply with the pull request's link, end to end on the
   GitHub emulator (the App in this process behind a real WSGI server, webhooks delivered over
   HTTP), and the REST requests one rollback costs. Each run closes the previous rollback pull
   request and deletes its branch, so every run does the whole work.
2. The CLI: `gating rollback --dry-run` and a real run (branch + commit) in a fresh process, on a
   local repository whose LLM system has `--tools` tool files, half of them added after the target.

    .venv/bin/python bench/rollback_time.py [--runs 5] [--tools 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from werkzeug.serving import make_server

from gating.audit import keys
from gating.audit import log as audit_log
from gating.audit.entry import EntryFacts
from gating.git import notes as git_notes
from gating.git.repository import commit_all, init_repo
from gating.github import Repo, token_client
from gating.server import create_app
from gating.testing import start_emulator
from gating.testing.example import example_dir

ROOT = Path(__file__).resolve().parent.parent


def app_runs(work: Path, runs: int) -> None:
    emu = start_emulator(work / "github")
    try:
        repo = emu.create_repo("acme/support-bot", source_dir=example_dir())
        emu.add_collaborator(repo, "alice", "write")
        key = keys.generate()
        app = create_app({"APP_ID": emu.app.app_id, "PRIVATE_KEY": emu.app.private_key_pem,
                          "WEBHOOK_SECRET": emu.app.webhook_secret, "GITHUB_API_URL": emu.api_url,
                          "GATING_DB": str(work / "jobs.db"), "GATING_POLL_SECONDS": 0.05, "LOG_LEVEL": "WARNING",
                          "GATING_AUDIT_KEY": keys.private_pem(key).decode(),
                          "GATING_HANDLERS": "gating.server.handlers.merge_audit,gating.server.handlers.deployments,"
                                             "gating.server.handlers.rollback_command"})
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        emu.webhook_url = f"http://127.0.0.1:{server.server_port}/webhooks"
        queue = app.extensions["gating"].queue

        def settle() -> None:
            for _ in range(400):
                emu.wait_for_deliveries(timeout=5)
                queue.wait_idle(5)
                if emu.wait_for_deliveries(timeout=0.02) and queue.counts()["queued"] == 0:
                    return
            raise RuntimeError("did not settle")

        def merge(branch: str, files: dict[str, str]) -> str:
            emu.push(repo, branch, files, branch, user="alice")
            pr = emu.create_pull(repo, branch, "main", branch, "alice")
            sha = emu.merge_pull(repo, pr["number"], "alice")
            d = emu.create_deployment(repo, sha, "production", user="deployer")
            emu.add_deployment_status(repo, d["id"], "success", user="deployer")
            settle()
            return sha

        merge("good", {"prompts/system.md": "Be careful.\n"})
        merge("bad", {"tools/refund.json": '{"name": "refund", "parameters": {"type": "object"}}\n'})
        issue = emu.create_issue(repo, "incident", "alice")["number"]
        api = Repo(token_client(emu.api_url, emu.installation_token()), repo.full_name)
        times, calls = [], []
        for _ in range(runs):
            emu.reset_requests()
            t0 = time.perf_counter()
            emu.add_comment(repo, issue, "alice", "/rollback last-good bench")
            while True:
                replies = [c for c in emu.list_comments(repo, issue) if c["user"]["login"] == emu.app.bot_login]
                if len(replies) > len(times):
                    break
                time.sleep(0.002)
            times.append(time.perf_counter() - t0)
            settle()
            calls.append(sum(1 for r in emu.requests if r.operation != "git/smart-http"))
            pr = [p for p in api.client.get(f"{api.path}/pulls") if p["head"]["ref"].startswith("gating/rollback-")][0]
            api.client.request("PATCH", f"{api.path}/pulls/{pr['number']}", json={"state": "closed"})
            api.client.request("DELETE", f"{api.path}/git/refs/heads/{pr['head']['ref']}")
            settle()
        server.shutdown()
        print(f"App: /rollback comment -> reply with the pull request link: median {statistics.median(times)*1000:.0f} ms, "
              f"best {min(times)*1000:.0f} ms, worst {max(times)*1000:.0f} ms over {runs} runs; "
              f"{statistics.median(calls):.0f} REST requests per rollback (reactions, plan, tree, commit, ref, "
              "pull request, reply, audit entry)")
    finally:
        emu.stop()


def cli_runs(work: Path, tools: int, runs: int) -> None:
    root = work / "repo"
    shutil.copytree(example_dir(), root)
    g = init_repo(root)
    half = tools // 2
    for i in range(half):
        (root / "tools" / f"t{i:05d}.json").write_text(json.dumps({"name": f"t{i}", "parameters": {}}) + "\n")
    target = commit_all(g, "target")
    for i in range(half, tools):
        (root / "tools" / f"t{i:05d}.json").write_text(json.dumps({"name": f"t{i}", "parameters": {}}) + "\n")
    tip = commit_all(g, "more tools")
    key = keys.generate()
    store = git_notes.LocalNotes(g)
    now = datetime.now(UTC)
    for n, (event, sha) in enumerate([("merged", target), ("known_good", target), ("merged", tip),
                                      ("deployed", tip)]):
        audit_log.append_entry(store, EntryFacts(event, sha, "acme/support-bot", "bench", discriminator=str(n)), key, now)
    pub = work / "audit.pub"
    pub.write_bytes(keys.public_pem(key))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "gating", "-C", str(root), "rollback", "--key", str(pub), "--no-fetch"]
    for label, extra in (("--dry-run", ["--dry-run"]), ("branch + commit", [])):
        best = float("inf")
        for i in range(runs):
            args = base + extra + ([] if extra else ["--branch", f"bench-{i}"])
            t0 = time.perf_counter()
            subprocess.run(args, env=env, check=True, capture_output=True)
            best = min(best, time.perf_counter() - t0)
        print(f"CLI: gating rollback {label}: best {best:.2f} s of {runs} (system of {tools + 8} files, "
              f"{tools - half} to remove)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tools", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="gating-bench-rollback-") as tmp:
        app_runs(Path(tmp) / "app", args.runs)
        cli_runs(Path(tmp) / "cli", args.tools, min(args.runs, 3))


if __name__ == "__main__":
    main()
