"""`gating demo`: the road on the bundled example, offline, in throwaway repositories.

1. the semantic diff of the demo's pull request, in a local repository;
2. the `gating / eval` check on that pull request, and on a regressing one, run exactly as the Action
   runs it: a local GitHub emulator (real git over smart HTTP, the REST API checked against GitHub's
   OpenAPI description), the pull request event payload, the models replayed from the cassettes
   committed beside the dataset. Each check run is read back from the API and printed as GitHub
   shows it.

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
from typing import Any

from gating.check import CheckRun, run_check
from gating.check_context import CHECK_NAME, Settings, build_context
from gating.commands.diff import compute
from gating.example import apply_demo_change, apply_regressing_change, example_dir, make_example_repo
from gating.git import Git, commit_all
from gating.github import Repo, token_client
from gating.report import render_diff_markdown

REPO_NAME = "acme/support-bot"
CONCLUSION_ICON = {"success": "✅", "failure": "❌", "neutral": "⚪", "cancelled": "⏹️"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run gating on the bundled example repository, offline")
    p.add_argument("--keep", metavar="DIR", help="build the demo repositories under this directory and keep them")
    p.set_defaults(func=run)


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    if args.keep:
        return _run(Path(args.keep).resolve() / "support-bot")
    with tempfile.TemporaryDirectory(prefix="gating-demo-") as tmp:
        return _run(Path(tmp) / "support-bot")


def _run(root: Path) -> int:
    t0 = time.monotonic()
    diff_step(root)
    with emulated_github(root.parent / "github") as state:
        for step in STEPS:
            step(state)
    say(f"done in {time.monotonic() - t0:.1f} s")
    return 0


# -- 1. the semantic diff --------------------------------------------------------------------------


def diff_step(root: Path) -> None:
    say(f"building the example repository in {root}")
    g = make_example_repo(root)
    base = g.rev_parse("HEAD")
    g.run("checkout", "--quiet", "-b", "tune-answers")
    apply_demo_change(root)
    head = commit_all(g, "Tune answers: friendlier prompt, newer model, more context")
    say(f"pull request tune-answers: {base[:7]}..{head[:7]}")
    cs = compute(g, base, head)
    sys.stdout.write(render_diff_markdown(cs))


# -- 2. the check on pull requests, against the emulated GitHub ------------------------------------


@dataclass
class DemoState:
    """What the steps share: the emulator, the repository on it, an installation token, the pulls."""

    work: Path
    emu: Any  # gating.testing.Emulator
    repo: Any  # gating.testing.RepoHandle
    token: str
    pulls: dict[str, dict[str, Any]] = field(default_factory=dict)  # branch -> pull request
    checks: dict[str, CheckRun] = field(default_factory=dict)  # branch -> the check's outcome

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


def open_pull(state: DemoState, branch: str, title: str, change: Callable[[Path], None], user: str) -> dict[str, Any]:
    """Commit `change` to the example on a new branch and open a pull request for it."""
    tree = state.work / f"tree-{branch}"
    shutil.copytree(example_dir(), tree)
    change(tree)
    state.repo.push_dir(tree, branch, title)
    pr = state.emu.create_pull(state.repo, branch, state.repo.default_branch, title, user)
    state.pulls[branch] = pr
    return pr


def check_pull(state: DemoState, branch: str) -> CheckRun:
    """Run `gating check` as the Action would on the pull request's `opened` event."""
    pr = state.pulls[branch]
    event = state.emu.webhook("pull_request", "opened", repo=state.repo, number=pr["number"]).payload
    ci = state.work / f"ci-{branch}"
    event_path = state.work / f"event-{branch}.json"
    event_path.write_text(json.dumps(event), encoding="utf-8")
    clone: Git = state.repo.clone(ci, state.token)
    actions = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": str(event_path),
               "GITHUB_API_URL": state.emu.api_url, "GITHUB_SERVER_URL": state.emu.web_url,
               "GITHUB_REPOSITORY": state.repo.full_name, "GITHUB_SHA": pr["head"]["sha"],
               "GITHUB_TOKEN": state.token, "GITHUB_RUN_ID": str(pr["number"])}
    ctx = build_context(actions, event)
    env = {**os.environ, **actions, "GATING_PROVIDER": "replay"}
    done = run_check(ctx, Settings(json_path=str(state.work / f"report-{branch}.json")), clone, env)
    state.checks[branch] = done
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


def check_step(state: DemoState) -> None:
    """The demo's pull request passes; a pull request that drops the grounding rules fails."""
    pulls = [("tune-answers", "Tune answers: friendlier prompt, newer model, more context", apply_demo_change, "alice"),
             ("simplify-prompts", "Simplify the prompts", apply_regressing_change, "mallory")]
    for branch, title, change, user in pulls:
        pr = open_pull(state, branch, title, change, user)
        say(f"pull request #{pr['number']} {branch} on {state.repo.full_name} (GitHub emulated at "
            f"{state.emu.api_url}; models replayed from the example's cassettes): {CHECK_NAME}")
        t0 = time.monotonic()
        done = check_pull(state, branch)
        r = done.result
        stored = "eval note pushed to refs/notes/gating/evals" if done.notes.get("pushed") else "no eval note pushed"
        print(f"check finished in {time.monotonic() - t0:.1f} s: {r.llm_requests} LLM requests, {r.replayed} "
              f"replayed, {r.cache_hits} from cache; {stored}\n")
        if done.check_run_id is not None:
            print(show_check_run(state, done.check_run_id))


STEPS: list[Callable[[DemoState], None]] = [check_step]
