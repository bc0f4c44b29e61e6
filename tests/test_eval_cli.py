"""`gating eval`: exit codes, report files, clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from eval_support import PROMPTS, a, llm, run_on_pty, write_repo  # noqa: F401

from gating.commands.cli import main
from gating.evals.records import Comparison, RunResult
from gating.git.repository import Git, commit_all, init_repo
from gating.testing.llm_server import LLMServer

CASES = [{"id": "one", "prompt": "p", "vars": {"q": a("yes")}, "assert": [{"type": "equals", "value": "yes"}]},
         {"id": "two", "prompt": "p", "vars": {"q": a("no")}, "assert": [{"type": "equals", "value": "yes"}]}]


@pytest.fixture
def repo(tmp_path: Path) -> Git:
    g = init_repo(tmp_path / "repo")
    write_repo(g.root, CASES, evals={"thresholds": {"pass_rate": ">= 0.5"}})
    commit_all(g, "evals")
    return g


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch, llm: LLMServer, tmp_path: Path) -> LLMServer:  # noqa: F811
    for k, v in llm.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("GATING_PROVIDER", "live")
    monkeypatch.setenv("GATING_CACHE_DIR", str(tmp_path / "cache"))
    return llm


def test_eval_writes_json_junit_and_markdown(repo: Git, live: LLMServer, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    args = ["-C", str(repo.root), "eval", "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml"),
            "--markdown", str(tmp_path / "r.md"), "--concurrency", "4"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out.startswith("### gating / eval: ✅ pass\n")
    assert "| `two` | p | equals: expected 'yes', got 'no' |" in out
    assert err.startswith("gating: head working tree: 2 cases to run\n")  # progress, without a terminal: plain lines
    last = err.splitlines()[-1]
    assert last.startswith("gating: 2 cases in ") and last.endswith("(live): 2 requests, 0 cache hits, 0 replayed")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["schema"] == "gating.eval.report/1" and doc["base"] is None
    head = RunResult.from_dict(doc["head"])
    assert [c.id for c in head.cases] == ["one", "two"] and head.config["concurrency"] == 4
    assert Comparison.from_dict(doc["comparison"]).verdict == "pass"
    assert ET.fromstring((tmp_path / "r.xml").read_text()).find("testsuite").get("failures") == "1"
    assert (tmp_path / "r.md").read_text() == out
    # again: every answer comes from the cache
    assert main(args) == 0
    assert capsys.readouterr().err.endswith("(live): 0 requests, 2 cache hits, 0 replayed\n")
    assert live.requests == 2


def test_failing_verdict_exits_1(repo: Git, live: LLMServer, capsys: pytest.CaptureFixture) -> None:
    manifest = repo.root / "gating.yml"
    manifest.write_text(manifest.read_text().replace(">= 0.5", ">= 0.9"))
    assert main(["-C", str(repo.root), "eval", "--no-cache"]) == 1
    assert capsys.readouterr().out.startswith("### gating / eval: ❌ fail\n\n- pass_rate is 0.5, threshold >= 0.9; "
                                              "failing cases: two\n")


def test_compare_with_a_base_revision(repo: Git, live: LLMServer, capsys: pytest.CaptureFixture) -> None:
    (repo.root / "prompts/p.md").write_text("[[answer: yes]] {{ q }}\n")
    commit_all(repo, "make every answer yes")
    assert main(["-C", str(repo.root), "eval", "--rev", "HEAD", "--base", "HEAD~1", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "#### Fixed (1)" in out and "| `two` | p | fail | pass | equals: expected 'yes', got 'no' |" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--concurrency", "0"], "gating: error: --concurrency must be at least 1, got 0\n"),
    (["--record", "--rev", "HEAD"], "gating: error: --record writes cassettes into the working tree; "
                                    "it cannot be combined with --rev\n"),
    (["--timeout", "0"], "gating: error: --timeout must be a positive, finite number of seconds, got 0\n"),
    (["--timeout", "nan"], "gating: error: --timeout must be a positive, finite number of seconds, got nan\n"),
    (["--timeout", "inf"], "gating: error: --timeout must be a positive, finite number of seconds, got inf\n"),
])
def test_bad_options_exit_2(repo: Git, args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["-C", str(repo.root), "eval", *args]) == 2
    assert capsys.readouterr().err == message


def test_bad_dataset_exits_2_with_file_and_line(repo: Git, capsys: pytest.CaptureFixture) -> None:
    with open(repo.root / "evals/cases.jsonl", "a") as f:
        f.write('{"id": "one", "prompt": "p"}\n')
    assert main(["-C", str(repo.root), "eval"]) == 2
    assert capsys.readouterr().err == ("gating: error: invalid eval dataset:\n"
                                       "evals/cases.jsonl:3: duplicate id 'one' (first defined at "
                                       "evals/cases.jsonl:1)\n")


def test_console_script_without_a_terminal_prints_plain_progress_lines_not_a_bar(repo: Git, live: LLMServer) -> None:
    proc = subprocess.run([sys.executable, "-m", "gating", "-C", str(repo.root), "eval", "--no-cache"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr  # no bar, no colour
    start, end, _summary = proc.stderr.splitlines()
    assert start == "gating: head working tree: 2 cases to run"
    assert end.startswith("gating: head working tree: 2/2 cases (pass 1, fail 1, error 0), ")



@pytest.mark.parametrize("ci", [False, True], ids=["terminal", "ci"])
def test_progress_bar_on_a_terminal_only(repo: Git, live: LLMServer, ci: bool) -> None:
    import os

    live.latency = 0.3
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": "true"} if ci else {})
    code, screen = run_on_pty([sys.executable, "-m", "gating", "-C", str(repo.root), "eval", "--no-cache",
                                "--concurrency", "1"], env)
    assert code == 0
    assert ("━" in screen) is not ci  # rich's bar
    assert "gating: 2 cases in " in screen


def test_only_runs_the_cases_of_the_named_prompts(live: LLMServer, tmp_path: Path) -> None:
    g = init_repo(tmp_path / "two")
    other = {"id": "three", "prompt": "other", "vars": {"q": a("yes")}, "assert": [{"type": "equals", "value": "yes"}]}
    write_repo(g.root, [*CASES, other], prompts={**PROMPTS, "other": {"file": "prompts/p.md", "model": "m"}})
    commit_all(g, "evals")
    assert main(["-C", str(g.root), "eval", "--no-cache", "--only", "other", "--json", str(tmp_path / "r.json")]) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [c["id"] for c in doc["head"]["cases"]] == ["three"] and doc["head"]["config"]["only_prompts"] == ["other"]
    assert doc["comparison"]["verdict"] == "pass" and live.requests == 1


@pytest.mark.parametrize(("only", "message"), [
    (["nosuch"], "gating: error: --only nosuch: unknown prompt 'nosuch'; known prompts: p\n"),
    (["p", "pp"], "gating: error: --only pp: unknown prompt 'pp' (did you mean 'p'?); known prompts: p\n"),
], ids=["unknown", "did-you-mean"])
def test_only_an_unknown_prompt_exits_2_before_anything_runs(repo: Git, live: LLMServer, only: list[str],
                                                              message: str, capsys: pytest.CaptureFixture) -> None:
    args = [a for name in only for a in ("--only", name)]
    assert main(["-C", str(repo.root), "eval", "--no-cache", *args]) == 2
    assert capsys.readouterr() == ("", message)
    assert live.requests == 0


def test_only_accepts_a_prompt_that_exists_only_at_the_base(repo: Git, live: LLMServer) -> None:
    manifest = repo.root / "gating.yml"
    manifest.write_text(manifest.read_text().replace("    p:\n", "    q:\n").replace("prompt: p", "prompt: q"))
    cases = repo.root / "evals/cases.jsonl"
    cases.write_text(cases.read_text().replace('"prompt": "p"', '"prompt": "q"'))
    commit_all(repo, "rename the prompt")
    # accepted, and run: the base's two cases; the head has none of prompt p, so there is no evidence (exit 1)
    assert main(["-C", str(repo.root), "eval", "--rev", "HEAD", "--base", "HEAD~1", "--no-cache", "--only", "p"]) == 1
    assert live.requests == 2


@pytest.mark.parametrize("flag", ["--json", "--junit", "--markdown"])
def test_unwritable_report_paths_exit_2_before_the_eval_runs(repo: Git, live: LLMServer, tmp_path: Path, flag: str,
                                                            capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nonexistent" / "dir" / "r.out"
    assert main(["-C", str(repo.root), "eval", "--no-cache", flag, str(missing)]) == 2
    assert capsys.readouterr() == ("", f"gating: error: {flag} {missing}: directory {missing.parent} "
                                       "does not exist\n")
    assert main(["-C", str(repo.root), "eval", "--no-cache", flag, str(tmp_path)]) == 2
    assert capsys.readouterr() == ("", f"gating: error: {flag} {tmp_path}: is a directory, not a file\n")
    (tmp_path / "plain").write_text("")
    assert main(["-C", str(repo.root), "eval", "--no-cache", flag, str(tmp_path / "plain" / "r.out")]) == 2
    assert capsys.readouterr() == ("", f"gating: error: {flag} {tmp_path / 'plain' / 'r.out'}: "
                                       f"{tmp_path / 'plain'} is not a directory\n")
    assert live.requests == 0


def test_calibrate_json_to_a_directory_exits_2(repo: Git, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["-C", str(repo.root), "calibrate", "--json", str(tmp_path)]) == 2
    assert capsys.readouterr() == ("", f"gating: error: --json {tmp_path}: is a directory, not a file\n")


def test_price_table_from_the_repository(repo: Git, live: LLMServer, tmp_path: Path) -> None:
    (repo.root / "prices.json").write_text(json.dumps({"openai": {"gpt-4o-mini-2024-07-18":
                                                                   {"input": 1000000, "output": 0}}}))
    manifest = repo.root / "gating.yml"
    manifest.write_text(manifest.read_text().replace("evals:\n", "evals:\n  prices: prices.json\n"))
    assert main(["-C", str(repo.root), "eval", "--no-cache", "--json", str(tmp_path / "r.json")]) == 0
    head = json.loads((tmp_path / "r.json").read_text())["head"]
    assert [c["cost_usd"] for c in head["cases"]] == [c["tokens_in"] for c in head["cases"]]  # $1 per input token


@pytest.fixture
def dropped(tmp_path: Path) -> Git:
    """Four cases that pass at HEAD~1 and fail at HEAD: a real drop four cases cannot confirm."""
    g = init_repo(tmp_path / "dropped")
    cases = [{"id": f"c{i}", "prompt": "p", "vars": {"q": a("yes")}, "assert": [{"type": "equals", "value": "yes"}]}
             for i in range(4)]
    write_repo(g.root, cases)
    commit_all(g, "evals")
    (g.root / "prompts/p.md").write_text("[[answer: no]] {{ q }}\n")
    commit_all(g, "every answer no")
    return g


@pytest.mark.parametrize(("fail_on", "code"), [(None, 1), ("regression", 1), ("threshold", 0), ("never", 0)])
def test_an_inconclusive_drop_exits_1_under_the_default_fail_on(dropped: Git, live: LLMServer, fail_on: str | None,
                                                               code: int) -> None:
    import os

    argv = [sys.executable, "-m", "gating", "-C", str(dropped.root), "eval", "--rev", "HEAD", "--base", "HEAD~1",
            "--no-cache", *(["--fail-on", fail_on] if fail_on else [])]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == code, proc.stderr
    assert proc.stdout.startswith("### gating / eval: ⚠️ inconclusive\n")
    if code:
        assert ("gating: error: the verdict is inconclusive (blocking under fail-on regression: a drop the suite "
                "could not confirm needs a person or more cases): pass rate fell by 1 on 4 paired cases") in proc.stderr
    else:
        assert f"gating: warning: the verdict is inconclusive (not blocking: fail-on {fail_on}): pass rate fell by 1" \
            in proc.stderr
    assert ("with 4 paired cases the smallest drop this suite can confirm at alpha 0.05 is 1.25"
            not in proc.stderr)  # four cases cannot confirm any drop: it says so instead
    assert "4 paired cases cannot confirm any drop at alpha 0.05: that takes at least 6 cases getting worse" \
        in proc.stderr
