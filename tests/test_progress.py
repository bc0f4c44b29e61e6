"""Live progress of `gating eval` and `gating check`: a labelled bar on a terminal, plain lines every
GATING_PROGRESS_SECONDS without one, always on stderr, so `--json -` leaves stdout to the report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from eval_support import a, llm, run_on_pty, write_repo  # noqa: F401

from gating.evals.progress import Tally
from gating.evals.records import CaseResult
from gating.git.repository import Git, commit_all, init_repo
from gating.testing.llm_server import LLMServer

N = 6
CASES = [{"id": f"c{i}", "prompt": "p", "vars": {"q": f"case {i} " + a("yes" if i % 3 else "no")},
          "assert": [{"type": "equals", "value": "yes"}]} for i in range(N)]
LINE = re.compile(r"^gating: (base|head) (\S+( tree)?): (\d+)/(\d+) cases \(pass (\d+), fail (\d+), error (\d+)\), "
                  r"\d+ s(, about \d+ s left|, ETA unknown)?$", re.M)


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Git, str, str]:
    """Two commits: base, then head with the prompt edited (so `gating check` runs both)."""
    g = init_repo(tmp_path / "repo")
    write_repo(g.root, CASES, evals={"thresholds": {"pass_rate": ">= 0.5"}})
    commit_all(g, "evals")
    base = g.run("rev-parse", "HEAD").strip()
    (g.root / "prompts" / "p.md").write_text("Q: {{ q }}\n", encoding="utf-8")
    commit_all(g, "edit the prompt")
    return g, base, g.run("rev-parse", "HEAD").strip()


def _env(server: LLMServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_", "GATING_")) and k != "CI"}
    return {**env, **server.env(), "GATING_PROVIDER": "live", "GATING_CACHE_DIR": str(tmp_path / "cache"), **extra}


def _gating(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gating", *args], capture_output=True, text=True, env=env,
                          timeout=90)


def test_eval_without_a_terminal_prints_a_plain_line_every_interval(repo, llm: LLMServer,  # noqa: F811
                                                                    tmp_path: Path) -> None:
    g, _base, _head = repo
    llm.latency = 0.25
    proc = _gating("-C", str(g.root), "eval", "--concurrency", "1", "--json", "-",
                   env=_env(llm, tmp_path, GATING_PROGRESS_SECONDS="0.3"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # stdout is the report and nothing else
    assert len(report["head"]["cases"]) == N
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr
    assert "gating: head working tree: 6 cases to run\n" in proc.stderr
    lines = LINE.findall(proc.stderr)
    assert len(lines) >= 3, proc.stderr  # the run takes ~1.5 s: several interval lines and the last one
    done = [int(m[3]) for m in lines]
    assert done == sorted(done) and done[-1] == N
    last = lines[-1]
    assert (last[5], last[6], last[7]) == ("4", "2", "0")  # pass, fail, error of the whole run


def test_check_json_to_stdout_with_base_and_head_labelled_progress_on_stderr(repo, llm: LLMServer,  # noqa: F811
                                                                             tmp_path: Path) -> None:
    g, base, head = repo
    llm.latency = 0.1
    proc = _gating("-C", str(g.root), "check", "--no-post", "--notes", "off", "--base", base, "--head", head,
                   "--json", "-", env=_env(llm, tmp_path, GATING_PROGRESS_SECONDS="0.2"))
    report = json.loads(proc.stdout)
    assert report["verdict"] in ("pass", "fail"), proc.stderr
    assert proc.stdout.strip().endswith("}")
    labels = {(m[0], m[1]) for m in LINE.findall(proc.stderr)}
    assert labels == {("base", base[:7]), ("head", head[:7])}, proc.stderr
    assert f"gating: base {base[:7]}: 6 cases to run" in proc.stderr
    assert "gating / eval: " in proc.stderr  # the title moved to stderr


def test_progress_off_and_a_bad_interval(repo, llm: LLMServer, tmp_path: Path) -> None:  # noqa: F811
    g, _base, _head = repo
    quiet = _gating("-C", str(g.root), "eval", env=_env(llm, tmp_path, GATING_PROGRESS_SECONDS="0"))
    assert quiet.returncode == 0 and "cases to run" not in quiet.stderr and not LINE.search(quiet.stderr)
    before = llm.requests
    bad = _gating("-C", str(g.root), "eval", "--no-cache", env=_env(llm, tmp_path, GATING_PROGRESS_SECONDS="soon"))
    assert bad.returncode == 2
    assert "GATING_PROGRESS_SECONDS must be a number of seconds (0 turns progress off), got 'soon'" in bad.stderr
    assert llm.requests == before  # the bad setting stopped the second run before any call



def test_check_on_a_terminal_shows_labelled_bars_with_tally_and_eta(repo, llm: LLMServer,  # noqa: F811
                                                                    tmp_path: Path) -> None:
    g, base, head = repo
    llm.latency = 0.2
    code, screen = run_on_pty([sys.executable, "-m", "gating", "-C", str(g.root), "check", "--no-post",
                                "--notes", "off", "--concurrency", "1", "--base", base, "--head", head],
                               _env(llm, tmp_path, TERM="xterm", COLUMNS="160"))
    assert code in (0, 1), screen
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert "━" in plain  # rich's bar
    assert f"base {base[:7]}" in plain and f"head {head[:7]}" in plain
    assert re.search(r"6/6 pass 4 · fail 2 · error 0", plain), plain
    assert "ETA" in plain
    assert not LINE.search(plain)  # no log lines on a terminal


def test_tally_line_and_eta() -> None:
    t = Tally("head 1a2b3c4", total=4, started=100.0)
    assert t.line(now=101.0) == "head 1a2b3c4: 0/4 cases (pass 0, fail 0, error 0), 1 s, ETA unknown"
    t.add(CaseResult(id="a", prompt="p", passed=True, score=1.0))
    t.add(CaseResult(id="b", prompt="p", passed=False, score=0.0, error="timeout"))
    assert t.eta_s(now=110.0) == 10.0
    assert t.line(now=110.0) == "head 1a2b3c4: 2/4 cases (pass 1, fail 0, error 1), 10 s, about 10 s left"
    t.add(CaseResult(id="c", prompt="p", passed=False, score=0.0))
    t.add(CaseResult(id="d", prompt="p", passed=True, score=1.0))
    assert t.line(now=225.0) == "head 1a2b3c4: 4/4 cases (pass 2, fail 1, error 1), 2 min 05 s"
