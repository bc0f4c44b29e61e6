"""Cassettes: record against the local server, replay offline with identical results; the bundled
example runs on its committed cassettes, for the demo's passing PR and for a regressing one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from eval_support import a, live_env, load, write_repo

from gating.commands.cli import main
from gating.errors import GatingError
from gating.evals.runner import run_evals
from gating.git.repository import Git, commit_all
from gating.git.revision import GitRevision
from gating.system.snapshot import build_snapshot
from gating.testing.example import EXAMPLE_DIR, apply_demo_change, apply_regressing_change
from gating.testing.llm_server import LLMServer


def judge(api: str, body: dict) -> str | None:
    return json.dumps({"score": 4, "reason": "fine"}) if api == "anthropic" else None


CASES = [
    {"id": "one", "prompt": "p", "vars": {"q": a("Paris")}, "assert": [{"type": "equals", "value": "Paris"}]},
    {"id": "two", "prompt": "p", "vars": {"q": a("Lyon")},
     "assert": [{"type": "rubric", "value": "Names a French city."}, {"type": "max-tokens", "value": 5}]},
    {"id": "three", "prompt": "p", "vars": {"q": a("Nice")}, "assert": [{"type": "contains", "value": "x"}]},
]


def test_record_then_replay_offline_gives_identical_results(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "r", CASES, evals={"mode": "replay"})
    snap, reader = load(root)
    with LLMServer(answer=judge) as server:
        recorded = run_evals(snap, reader, env=live_env(server), record=True)
        assert server.requests == 4  # three answers and one judge call
    assert recorded.config["mode"] == "record"
    assert recorded.stats["cassettes_written"] == {"evals/cassettes/cases.jsonl": 4}
    lines = (root / "evals/cassettes/cases.jsonl").read_text().splitlines()
    assert len(lines) == 4 and lines == sorted(lines)
    # the server is gone: nothing can be fetched live any more
    snap, reader = load(root)
    replayed = run_evals(snap, reader, env={})
    assert replayed.config["mode"] == "replay" and replayed.stats["replayed"] == 4
    strip = ("cached",)
    assert [{k: v for k, v in c.to_dict().items() if k not in strip} for c in replayed.cases] == \
        [{k: v for k, v in c.to_dict().items() if k not in strip} for c in recorded.cases]
    assert replayed.metrics | {"cached": 0} == recorded.metrics | {"cached": 0}


def test_replay_miss_names_the_fix(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "r", CASES[:1])
    snap, reader = load(root)
    with LLMServer() as server:
        run_evals(snap, reader, env=live_env(server), record=True)
    (root / "prompts/p.md").write_text("Be brief. {{ q }}\n")
    snap, reader = load(root)
    run = run_evals(snap, reader, env={"GATING_PROVIDER": "replay"})
    case = run.cases[0]
    assert (case.passed, case.error) == (False, "provider")
    assert case.error_message.startswith("no recorded response for this request to openai/gpt-4o-mini-2024-07-18")
    assert "gating eval --record" in case.error_message


def test_unknown_provider_mode_is_a_clear_error(tmp_path: Path) -> None:
    snap, reader = load(write_repo(tmp_path / "r", CASES[:1]))
    with pytest.raises(GatingError, match="GATING_PROVIDER='cassette' is not one of: auto, live, replay, record"):
        run_evals(snap, reader, env={"GATING_PROVIDER": "cassette"})


def test_example_runs_offline_on_cassettes(example_repo: Git, capsys: pytest.CaptureFixture) -> None:
    code = main(["-C", str(example_repo.root), "eval", "--no-cache"])
    out, err = capsys.readouterr()
    assert code == 0
    assert out.startswith("### gating / eval: ✅ pass\n\n- all 3 thresholds met; no baseline\n")
    assert "| `pass_rate` |  | 1.000 |  |  | >= 0.80 | ok |" in out
    assert "gating: 14 cases in " in err and "(replay): 0 requests, 0 cache hits, 17 replayed" in err


def _pr(g: Git, branch: str, *changes) -> str:
    g.run("checkout", "--quiet", "-B", branch, "main")
    for change in changes:
        change(g.root)
    return commit_all(g, branch)


def _eval_pr(g: Git, capsys: pytest.CaptureFixture, branch: str, *changes) -> tuple[int, str]:
    """`gating eval` of a branch off main with `changes`, against main: (exit code, stdout)."""
    _pr(g, branch, *changes)
    code = main(["-C", str(g.root), "eval", "--rev", "HEAD", "--base", "main", "--no-cache"])
    return code, capsys.readouterr().out


def test_demo_pull_request_passes(example_repo: Git, capsys: pytest.CaptureFixture) -> None:
    code, out = _eval_pr(example_repo, capsys, "tune-answers", apply_demo_change)
    assert code == 0
    assert out.startswith("### gating / eval: ✅ pass\n\n- all 3 thresholds met; 14 paired cases, "
                          "no significant regression\n")
    assert "| cost / day at 100,000 requests | $37.98 | $41.36 | +$3.38 |" in out


def test_regressing_pull_request_fails_with_the_cases(example_repo: Git, capsys: pytest.CaptureFixture) -> None:
    code, out = _eval_pr(example_repo, capsys, "simplify-prompts", apply_regressing_change)
    assert code == 1
    assert out.startswith("### gating / eval: ❌ fail\n\n- pass_rate is 0.643, threshold >= 0.80; failing cases: "
                          "refund-cites-article, shipping-cites-article, unknown-answer, no-password-leak, "
                          "polite-tone\n")
    assert "#### Regressions (5)" in out
    assert "| `no-password-leak` | answer | pass | fail | not-contains: found 'hunter2' (should not: contains) |" in out


def test_both_changes_together_are_recorded_too(example_repo: Git) -> None:
    _pr(example_repo, "both", apply_demo_change, apply_regressing_change)
    reader = GitRevision(example_repo, "both")
    run = run_evals(build_snapshot(reader), reader, env={})
    assert run.metrics["errors"] == 0 and run.metrics["passed"] == 9


def test_a_base_revision_is_evaluated_without_checkout(example_repo: Git) -> None:
    apply_regressing_change(example_repo.root)  # uncommitted edits in the working tree
    reader = GitRevision(example_repo, "main")
    run = run_evals(build_snapshot(reader), reader, env={})
    assert run.metrics["pass_rate"] == 1.0 and run.rev == example_repo.rev_parse("main")


def test_committed_cassettes_are_reproducible() -> None:
    script = EXAMPLE_DIR.parent.parent / "scripts" / "record_example_cassettes.py"
    proc = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_replay_serves_the_cassettes_even_when_the_cache_has_other_answers(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "r", CASES)
    snap, reader = load(root)
    with LLMServer(answer=judge) as server:
        recorded = run_evals(snap, reader, env=live_env(server), record=True)
    # a live run against another server that answers differently fills the local cache
    def other(api: str, body: dict) -> str:
        return json.dumps({"score": 1, "reason": "bad"}) if api == "anthropic" else "Berlin"

    with LLMServer(answer=other) as server:
        live = run_evals(snap, reader, env=live_env(server), cache_dir=tmp_path / "cache")
    assert [c.output for c in live.cases] == ["Berlin"] * 3
    replayed = run_evals(snap, reader, env={"GATING_PROVIDER": "replay"}, cache_dir=tmp_path / "cache")
    assert (replayed.stats["requests"], replayed.stats["cache_hits"], replayed.stats["replayed"]) == (0, 0, 4)
    assert [c.output for c in replayed.cases] == [c.output for c in recorded.cases] == ["Paris", "Lyon", "Nice"]


def test_example_replays_its_cassettes_after_a_live_run_filled_the_cache(
        example_repo: Git, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATING_CACHE_DIR", str(example_repo.root.parent / "cache"))
    with LLMServer() as server:
        for k, v in live_env(server).items():
            monkeypatch.setenv(k, v)
        assert main(["-C", str(example_repo.root), "eval"]) == 1  # the echo server is not the support bot
        assert "(live): 17 requests, 0 cache hits, 0 replayed" in capsys.readouterr().err
    for k in server.env():
        monkeypatch.delenv(k)
    monkeypatch.setenv("GATING_PROVIDER", "replay")
    assert main(["-C", str(example_repo.root), "eval"]) == 0
    assert "(replay): 0 requests, 0 cache hits, 17 replayed" in capsys.readouterr().err
