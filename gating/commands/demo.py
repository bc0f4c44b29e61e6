"""`gating demo`: the road on the bundled example, offline, in throwaway repositories.

Everything runs against a local GitHub emulator (real git over smart HTTP, the REST API checked
against GitHub's OpenAPI description) with the models replayed from the cassettes committed beside
the example's dataset:

1. a pull request whose first commit drops the grounding rules fails the `gating / eval` check, run
   exactly as the Action runs it (the pull request event payload, a clone over HTTP); the flipped
   cases are named. A fix pushed to the same pull request passes. Each check run is read back from
   the API and printed as GitHub shows it.
2. the App (approval, audit and rollback handlers) receives the emulator's webhooks: the fixed pull
   request is approved, merged (a signed `merged` entry), deployed and marked known good; a later
   bad merge is deployed and rolled back with a `/rollback` comment on an issue; `gating audit
   verify` passes on a fresh clone.

Later steps of the road continue from `DemoState` (the emulator, the repository and its pulls).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gating.check.context import CHECK_NAME, Settings, build_context
from gating.check.run import CheckRun, run_check
from gating.commands.extras import require
from gating.git.repository import Git
from gating.github import Repo, token_client
from gating.testing.example import apply_demo_change, apply_regressing_change, example_dir

if TYPE_CHECKING:
    from gating.testing import Emulator, RepoHandle

REPO_NAME = "acme/support-bot"
CONCLUSION_ICON = {"success": "✅", "failure": "❌", "neutral": "⚪", "cancelled": "⏹️"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run gating on the bundled example repository, offline")
    p.add_argument("--keep", metavar="DIR", help="build the demo repositories under this directory and keep them")
    p.set_defaults(func=run)


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    require("test", "gating demo (the App and a local GitHub emulator)")
    if args.keep:
        return _run(Path(args.keep).resolve())
    with tempfile.TemporaryDirectory(prefix="gating-demo-") as tmp:
        return _run(Path(tmp))


def _run(where: Path) -> int:
    t0 = time.monotonic()
    with emulated_github(where / "github") as state:
        for step in STEPS:
            step(state)
        api_calls = [r for r in state.emu.requests if r.operation != "git/smart-http"]
        problems = state.emu.take_problems()
    if problems:
        print("gating demo: the emulated GitHub saw invalid requests:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    say(f"done in {time.monotonic() - t0:.1f} s; {len(api_calls)} GitHub API requests, every one valid against "
        "GitHub's OpenAPI description")
    return 0


# -- 1. the check on a pull request, against the emulated GitHub -----------------------------------


@dataclass
class DemoState:
    """What the steps share: the emulator, the repository on it, an installation token, the pulls."""

    work: Path
    emu: Emulator
    repo: RepoHandle
    token: str
    pulls: dict[str, dict[str, Any]] = field(default_factory=dict)  # branch -> pull request
    checks: dict[str, CheckRun] = field(default_factory=dict)  # branch -> its latest check's outcome
    runs: list[CheckRun] = field(default_factory=list)  # every check run, in order
    audit_key: Any = None  # the App's audit signing key (Ed25519), once the App runs

    @property
    def api(self) -> Repo:
        return Repo(token_client(self.emu.api_url, self.token), self.repo.full_name)


@contextmanager
def emulated_github(work: Path) -> Iterator[DemoState]:
    from gating.testing import start_emulator

    work.mkdir(parents=True, exist_ok=True)
    emu = start_emulator(work / "server")
    try:
        repo = emu.create_repo(REPO_NAME, source_dir=example_dir())
        yield DemoState(work, emu, repo, emu.installation_token())
    finally:
        emu.stop()


def example_tree(state: DemoState, name: str, change: Callable[[Path], None]) -> Path:
    """The example with `change` applied, in a directory of its own."""
    tree = state.work / f"tree-{name}"
    shutil.copytree(example_dir(), tree)
    change(tree)
    return tree


def open_pull(state: DemoState, branch: str, title: str, change: Callable[[Path], None], user: str,
              message: str | None = None) -> dict[str, Any]:
    """Commit `change` to the example on a new branch and open a pull request for it."""
    state.repo.push_dir(example_tree(state, branch, change), branch, message or title, author=user)
    pr = state.emu.create_pull(state.repo, branch, state.repo.default_branch, title, user)
    state.pulls[branch] = pr
    return pr


def push_change(state: DemoState, branch: str, before: Callable[[Path], None], after: Callable[[Path], None],
                message: str, user: str) -> dict[str, Any]:
    """Push one commit to the pull request's branch that turns the example with `before` applied into the
    example with `after` applied; returns the pull request as it is now."""
    old, new = example_tree(state, f"{branch}-before", before), example_tree(state, f"{branch}-after", after)
    files: dict[str, Any] = {}
    for path in sorted(p for p in new.rglob("*") if p.is_file()):
        rel = path.relative_to(new).as_posix()
        if not (old / rel).is_file() or (old / rel).read_bytes() != path.read_bytes():
            files[rel] = path.read_bytes()
    files.update({p.relative_to(old).as_posix(): None for p in old.rglob("*")
                  if p.is_file() and not (new / p.relative_to(old)).exists()})
    state.emu.push(state.repo, branch, files, message, user=user)
    pr = state.emu.get_pull(state.repo, state.pulls[branch]["number"])
    state.pulls[branch] = pr
    return pr


def check_pull(state: DemoState, branch: str, action: str = "opened") -> CheckRun:
    """Run `gating check` as the Action would on the pull request's `opened` (or `synchronize`) event."""
    pr = state.pulls[branch]
    n = len(state.runs) + 1
    event = state.emu.webhook("pull_request", action, repo=state.repo, number=pr["number"]).payload
    ci = state.work / f"ci-{n}"
    event_path = state.work / f"event-{n}.json"
    event_path.write_text(json.dumps(event), encoding="utf-8")
    clone: Git = state.repo.clone(ci, state.token)
    actions = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": str(event_path),
               "GITHUB_API_URL": state.emu.api_url, "GITHUB_SERVER_URL": state.emu.web_url,
               "GITHUB_REPOSITORY": state.repo.full_name, "GITHUB_SHA": pr["head"]["sha"],
               "GITHUB_TOKEN": state.token, "GITHUB_RUN_ID": str(1000 + n)}
    ctx = build_context(actions, event)
    env = {**os.environ, **actions, "GATING_PROVIDER": "replay"}
    from gating.commands.check_github import GitHub

    done = run_check(ctx, Settings(json_path=str(state.work / f"report-{n}.json")), clone, env, github=GitHub())
    clone.run("remote", "set-url", "origin", state.repo.clone_url)  # the job's token leaves with the job
    state.checks[branch] = done
    state.runs.append(done)
    return done


def show_check_run(state: DemoState, check_run_id: int) -> str:
    """The check run read back from the API, laid out as its page on GitHub: name, conclusion, title, summary."""
    api = state.api
    run = api.client.get(f"{api.path}/check-runs/{check_run_id}")
    out = run["output"]
    icon = CONCLUSION_ICON.get(run["conclusion"] or "", "")
    notes = run["output"].get("annotations_count") or 0
    lines = [f"┌─ {run['name']} · {run['status']} · {icon} {run['conclusion']} · {run['head_sha'][:7]}"
             + (f" · {notes} annotation{'s' if notes != 1 else ''}" if notes else ""),
             f"│  {out['title']}", "└─", "", out["summary"]]
    return "\n".join(lines)


PULL = ("friendlier-answers", "Friendlier answers")
FIX = "Keep the grounding, secrecy and citation rules; friendlier wording, newer model, more context"


def report_check(state: DemoState, branch: str, action: str) -> CheckRun:
    t0 = time.monotonic()
    done = check_pull(state, branch, action)
    r = done.result
    stored = "eval note pushed to refs/notes/gating/evals" if done.notes.get("pushed") else "no eval note pushed"
    print(f"check finished in {time.monotonic() - t0:.1f} s: {r.llm_requests} LLM requests, {r.replayed} "
          f"replayed, {r.cache_hits} from cache; {stored}\n")
    if done.check_run_id is not None:
        print(show_check_run(state, done.check_run_id))
    return done


def check_step(state: DemoState) -> None:
    """A pull request that drops the grounding rules fails; the fix pushed to it passes."""
    branch, title = PULL
    say(f"{state.repo.full_name} on a GitHub emulated at {state.emu.api_url}; the models are replayed from "
        "the example's cassettes: nothing leaves this machine")
    pr = open_pull(state, branch, title, apply_regressing_change, "alice",
                   "Simplify the prompts: drop the stiff rules")
    say(f"alice opens pull request #{pr['number']} “{title}”; its first commit drops the grounding, secrecy "
        f"and citation rules from the prompts. {CHECK_NAME}:")
    report_check(state, branch, "opened")
    pr = push_change(state, branch, apply_regressing_change, apply_demo_change, FIX, "alice")
    say(f"alice pushes a fix to #{pr['number']} ({pr['head']['sha'][:7]}): {FIX[0].lower() + FIX[1:]}. "
        f"{CHECK_NAME} runs again:")
    report_check(state, branch, "synchronize")


# -- 2. review, merge, deploy, roll back: the App on the emulated GitHub ------------------------------

APP_HANDLERS = "gating.server.handlers.approvals,gating.server.handlers.merge_audit,gating.server.handlers.deployments,gating.server.handlers.rollback_command"
REFUND_TOOL = (
    '{"name": "issue_refund", "description": "Refund an order in full, at once.",\n'
    ' "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}\n')


@contextmanager
def running_app(state: DemoState) -> Iterator[Callable[[], None]]:
    """The App (its approval, audit and rollback handlers) on loopback, receiving the emulator's webhooks;
    yields `settle`, which waits until every webhook is delivered and every job is done."""
    import logging
    import threading

    from werkzeug.serving import make_server

    from gating.audit import keys
    from gating.server import create_app

    state.audit_key = keys.generate()
    app = create_app({"APP_ID": state.emu.app.app_id, "PRIVATE_KEY": state.emu.app.private_key_pem,
                      "WEBHOOK_SECRET": state.emu.app.webhook_secret, "GITHUB_API_URL": state.emu.api_url,
                      "GATING_DB": str(state.work / "app-jobs.sqlite3"), "GATING_POLL_SECONDS": 0.05,
                      "GATING_AUDIT_KEY": keys.private_pem(state.audit_key).decode(),
                      "GATING_HANDLERS": APP_HANDLERS, "LOG_LEVEL": "WARNING"})
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.emu.webhook_url = f"http://127.0.0.1:{server.server_port}/webhooks"
    queue = app.extensions["gating"].queue

    def settle(timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state.emu.wait_for_deliveries(timeout=max(0.1, deadline - time.monotonic()))
            queue.wait_idle(max(0.1, deadline - time.monotonic()))
            if state.emu.wait_for_deliveries(timeout=0.05) and queue.counts()["queued"] == 0:
                failed = queue.list("failed")
                if failed:
                    raise RuntimeError("the App failed a job: " + "; ".join(str(j.last_error) for j in failed))
                return
        raise RuntimeError("the App did not finish its work in time")

    try:
        yield settle
    finally:
        state.emu.webhook_url = None
        server.shutdown()
        thread.join(5)
        app.extensions["gating"].worker.stop()


def approval_line(state: DemoState, sha: str) -> str:
    runs = [r for r in state.emu.list_check_runs(state.repo, sha) if r["name"] == "gating / approval"]
    run = max(runs, key=lambda r: r["id"])
    return f"{run['name']}: {CONCLUSION_ICON.get(run['conclusion'] or '', '')} {run['conclusion']}: " \
           f"{run['output']['title']}"


def merge_and_deploy(state: DemoState, settle: Callable[[], None], number: int, reviewer: str) -> str:
    """Approve, merge (the App writes the `merged` entry), deploy (the App writes `known_good`)."""
    emu, repo = state.emu, state.repo
    head = emu.get_pull(repo, number)["head"]["sha"]
    emu.add_review(repo, number, reviewer, "APPROVED")
    settle()
    print(f"{reviewer} approved #{number}; {approval_line(state, head)}")
    sha = emu.merge_pull(repo, number, "maya")
    settle()
    d = emu.create_deployment(repo, sha, "production", user="deployer")
    emu.add_deployment_status(repo, d["id"], "success", user="deployer")
    settle()
    print(f"merged #{number} as {sha[:7]} and deployed it to production: the App recorded it in the audit log")
    return sha


def audit_log_lines(state: DemoState) -> list[str]:
    from gating.audit import log as audit_log
    from gating.audit.keys import keyid
    from gating.commands.audit import log_line
    from gating.github import GitDatabaseNotes

    pub = state.audit_key.public_key()
    return [log_line(e) for e in audit_log.read_log(GitDatabaseNotes(state.api), {keyid(pub): pub})]


def road_step(state: DemoState) -> None:
    """The fixed pull request is approved, merged, deployed and known good; a later bad merge is
    rolled back with `/rollback` on an issue; the audit trail verifies on a fresh clone."""
    from gating.audit import keys
    from gating.commands.cli import main as gating_main

    emu, repo = state.emu, state.repo
    emu.add_team_member("acme", "ml-platform", "carol")
    for login, permission in [("alice", "write"), ("carol", "write"), ("dave", "write"), ("maya", "admin")]:
        emu.add_collaborator(repo, login, permission)
    with running_app(state) as settle:
        good = state.pulls[PULL[0]]["number"]
        say(f"review and merge #{good} “{PULL[1]}” (its evals pass now; the model re-pin needs acme/ml-platform)")
        m1 = merge_and_deploy(state, settle, good, "carol")

        emu.push(repo, "refund-tool", {"tools/issue_refund.json": REFUND_TOOL}, "Let the bot issue refunds",
                 user="alice")
        bad = emu.create_pull(repo, "refund-tool", repo.default_branch, "Let the bot issue refunds", "alice")
        state.pulls["refund-tool"] = bad
        say(f"a later pull request #{bad['number']} “{bad['title']}” adds a refund tool; its evals pass, it is "
            "approved, merged and deployed")
        done = check_pull(state, "refund-tool")
        if done.check_run_id is not None:
            print("\n".join(show_check_run(state, done.check_run_id).splitlines()[:3]))
        merge_and_deploy(state, settle, bad["number"], "carol")

        complaint = "The bot refunds orders nobody asked for"
        command = f"/rollback last-good {complaint[0].lower() + complaint[1:]}"
        issue = emu.create_issue(repo, complaint, "dave")
        say(f"in production the bot refunds orders nobody asked for: dave opens issue #{issue['number']} "
            f"“{complaint}” and comments `{command}` on it")
        comment = emu.add_comment(repo, issue["number"], "dave", command)
        settle()
        reactions = " ".join({"eyes": "👀", "rocket": "🚀", "confused": "😕"}.get(r["content"], r["content"])
                             for r in emu.list_reactions(repo, comment_id=comment["id"]))
        reply = [c for c in emu.list_comments(repo, issue["number"]) if c["user"]["login"] == emu.app.bot_login][-1]
        print(f"reactions on the comment: {reactions}\nthe App replied:\n\n{reply['body']}")
        rollback = [p for p in state.api.client.get(f"{state.api.path}/pulls")
                    if p["head"]["ref"].startswith("gating/rollback-")][0]
        print(f"pull request #{rollback['number']}: {rollback['title']}")
        files = repo.git.run("ls-tree", "-r", "--name-only", rollback["head"]["sha"], "tools/").splitlines()
        print(f"tools/ on the rollback branch: {', '.join(files)} (the snapshot of {m1[:7]})")

        say("the audit log, and `gating audit verify` on a fresh clone")
        print("\n".join(audit_log_lines(state)))
    clone = repo.clone(state.work.parent / "support-bot", state.token)  # what --keep leaves to look at
    pub = state.work / "audit.pub"
    pub.write_bytes(keys.public_pem(state.audit_key))
    code = gating_main(["-C", str(clone.root), "audit", "verify", "--key", str(pub)])
    clone.run("remote", "set-url", "origin", repo.clone_url)  # the clone --keep leaves holds no token
    if code != 0:
        raise RuntimeError("gating audit verify failed")


STEPS: list[Callable[[DemoState], None]] = [check_step, road_step]
