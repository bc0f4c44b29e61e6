"""Parsers with limits in the App: a pull request whose base or head carries an alias-bomb gating.yml
gets a `gating / approval` check run that says what was refused, promptly; a job past its wall-clock
or memory bound says so on the check run instead of leaving the pull request with nothing posted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from app_support import serve_in_thread, wait_settled
from test_limits import BOMB

from gating.policy import APPROVAL_CHECK
from gating.server import create_app
from gating.testing.pytest_plugin import EXAMPLE

MANIFEST = (EXAMPLE / "gating.yml").read_text()
BOMBED = MANIFEST + "x-anchors:\n" + "".join(f"  {line}\n" for line in BOMB.splitlines())
BOMB_AT = f"gating.yml:{MANIFEST.count(chr(10)) + 7}:11"  # the line of the alias that goes past the limit


def start(emu: Any, tmp_path: Path, **settings: Any):
    app = create_app({"APP_ID": emu.app.app_id, "PRIVATE_KEY": emu.app.private_key_pem,
                      "WEBHOOK_SECRET": emu.app.webhook_secret, "GITHUB_API_URL": emu.api_url,
                      "GATING_DB": str(tmp_path / "jobs.db"), "GATING_POLL_SECONDS": 0.05, **settings})
    return app


@pytest.fixture
def serve(github, github_repo, tmp_path: Path):
    started = []

    def run(**settings: Any):
        app = start(github, tmp_path, **settings)
        cm = serve_in_thread(app)
        github.webhook_url = cm.__enter__() + "/webhooks"
        started.append((app, cm))
        return app
    yield run
    github.webhook_url = None
    for app, cm in started:
        cm.__exit__(None, None, None)
        app.extensions["gating"].worker.stop()


def approval(emu: Any, repo: Any, number: int) -> dict[str, Any]:
    head = emu.get_pull(repo, number)["head"]["sha"]
    runs = [r for r in emu.list_check_runs(repo, head) if r["name"] == APPROVAL_CHECK]
    assert runs, "no gating / approval check run on the head SHA"
    return max(runs, key=lambda r: r["id"])


def open_pull(emu: Any, repo: Any, files: dict[str, str]) -> int:
    emu.push(repo, "change", files, "Change the LLM system", user="alice")
    return emu.create_pull(repo, "change", "main", "Change the LLM system", "alice")["number"]


def _status_kb(field: str) -> int:
    return int(next(ln for ln in open("/proc/self/status") if ln.startswith(field + ":")).split()[1])


def test_head_alias_bomb_is_refused_on_the_check_run(github, github_repo, serve) -> None:
    app = serve()
    with open("/proc/self/clear_refs", "w") as f:  # the peak (VmHWM) starts again from what is resident now
        f.write("5")
    before = _status_kb("VmRSS")
    t = time.monotonic()
    n = open_pull(github, github_repo, {"gating.yml": BOMBED})
    wait_settled(github, app.extensions["gating"].queue, 15)
    took = time.monotonic() - t
    run = approval(github, github_repo, n)
    assert (run["status"], run["conclusion"]) == ("completed", "failure")
    text = run["output"]["title"] + run["output"]["summary"]
    assert f"{BOMB_AT}: refused: expands through aliases to more than 100,000 nodes (limit max_nodes=100,000)" \
        in text, text
    assert took < 5.0  # the whole road: push, webhook, job, check run
    assert (_status_kb("VmHWM") - before) / 1024 < 100  # the test process holds the emulator and the App


def test_base_alias_bomb_is_refused_on_the_check_run(github, github_repo, serve) -> None:
    github.push(github_repo, "main", {"gating.yml": BOMBED}, "Anchors", user="root")
    app = serve()
    n = open_pull(github, github_repo, {"prompts/answer.md": "Be brief.\n"})
    wait_settled(github, app.extensions["gating"].queue, 15)
    run = approval(github, github_repo, n)
    assert (run["status"], run["conclusion"]) == ("completed", "failure")
    assert f"the rules on main cannot be read: {BOMB_AT}: refused: expands through aliases" \
        in run["output"]["title"] + run["output"]["summary"]


@pytest.mark.parametrize(("settings", "message"), [
    pytest.param({"GATING_JOB_SECONDS": 0.000001}, "refused: the job ran longer than 1e-06 s "
                 "(setting GATING_JOB_SECONDS)", id="wall-clock"),
    pytest.param({"GATING_JOB_MAX_MEMORY_MB": 1}, "MB, more than 1 MB (setting GATING_JOB_MAX_MEMORY_MB)",
                 id="memory"),
])
def test_a_job_past_its_bound_says_so_on_the_check_run(github, github_repo, serve, settings, message) -> None:
    app = serve(**settings)
    n = open_pull(github, github_repo, {"prompts/answer.md": "Be brief.\n"})
    wait_settled(github, app.extensions["gating"].queue, 15)
    run = approval(github, github_repo, n)
    assert (run["status"], run["conclusion"]) == ("completed", "failure")
    assert message in run["output"]["title"] + run["output"]["summary"], run["output"]
