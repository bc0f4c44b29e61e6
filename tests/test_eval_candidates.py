"""`gating eval --compare`: other models and prompt variants on the same cases, against the current system."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eval_support import MODELS, a, write_repo

from gating.commands.cli import main
from gating.evals.candidates import CandidateError, parse_candidate
from gating.git.repository import Git, commit_all, init_repo
from gating.testing.llm_server import LLMServer

CASES = [{"id": f"c{i:02d}", "prompt": "p", "vars": {"q": a("yes")},
          "assert": [{"type": "equals", "value": "yes"}, {"type": "levenshtein", "value": "yes", "threshold": 5}]}
         for i in range(12)]
SMALL = {"small": {"provider": "openai", "model": "gpt-4.1-nano-2025-04-14"}}


def answer(api: str, body: dict[str, Any]) -> str | None:
    """The small model answers every question wrongly; the others say what the case asks for."""
    return "no" if body.get("model") == "gpt-4.1-nano-2025-04-14" else None


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    with LLMServer(answer=answer) as server:
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("GATING_PROVIDER", "live")
        monkeypatch.setenv("GATING_CACHE_DIR", str(tmp_path / "cache"))
        yield server


def make_repo(tmp_path: Path, evals: dict[str, Any] | None = None) -> Git:
    g = init_repo(tmp_path / "repo")
    write_repo(g.root, CASES, models={**MODELS, **SMALL},
               files={"prompts/terse.md": "[[answer: maybe]] {{ q }}\n"},
               evals={"traffic": {"requests_per_day": 10000}, **(evals or {})})
    commit_all(g, "evals")
    return g


def test_compare_models_and_a_prompt_variant_in_one_table(tmp_path: Path, live: LLMServer,
                                                           capsys: pytest.CaptureFixture) -> None:
    g = make_repo(tmp_path)
    args = ["-C", str(g.root), "eval", "--compare", "small", "openai:gpt-4o-2024-08-06", "p=prompts/terse.md",
            "--json", str(tmp_path / "c.json"), "--markdown", str(tmp_path / "c.md")]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out.startswith("### gating / eval --compare: 3 candidates against the current system\n")
    rows: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("| `"):
            rows.setdefault(line.split(" | ")[0], line)  # the first table: the metrics
    assert rows["| `current`"].startswith("| `current` | 1.000 |  | — | 1.000 | $")
    assert "| `small` | 0.000 | -1.000 | worse (p = 0.000488) | 0.000 |" in rows["| `small`"]
    assert "no significant difference (p = 1)" in rows["| `openai:gpt-4o-2024-08-06`"]
    assert "| `p=prompts/terse.md` | 0.000 | -1.000 | worse (p = 0.000488) |" in rows["| `p=prompts/terse.md`"]
    assert "cost/day at 10,000 req" in out and "score:levenshtein" in out
    assert err.splitlines()[-1].startswith("gating: 4 runs of 12 cases in ")
    assert (tmp_path / "c.md").read_text() == out
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["schema"] == "gating.eval.compare/1" and doc["requests_per_day"] == 10000
    table = {r["name"]: r for r in doc["table"]}
    assert table["small"]["mcnemar"] == {"b": 12, "c": 0, "p_value": 0.00048828125, "n": 12}
    assert table["small"]["overrides"] == {"name": "small", "model": "small", "prompts": {}}
    assert table["current"]["cost_per_day_usd"] == pytest.approx(table["current"]["cost_per_request_usd"] * 10000)
    assert table["openai:gpt-4o-2024-08-06"]["cost_per_request_usd"] > table["current"]["cost_per_request_usd"]
    assert doc["runs"]["small"]["cases"][0]["model"] == "gpt-4.1-nano-2025-04-14"
    assert doc["runs"]["p=prompts/terse.md"]["cases"][0]["output"] == "maybe"
    assert doc["errors"] == []


def test_manifest_candidates_and_replay_from_recorded_cassettes(tmp_path: Path, live: LLMServer,
                                                                capsys: pytest.CaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    g = make_repo(tmp_path, {"candidates": [{"name": "cheap", "model": "small"},
                                            {"prompts": {"p": "prompts/terse.md"}, "model": "m"}]})
    assert main(["-C", str(g.root), "eval", "--compare", "--record"]) == 0
    recorded = capsys.readouterr().out
    assert (g.root / "evals/cassettes/cases.jsonl").is_file()
    live.stop()  # nothing answers now: the table must come from the cassettes
    monkeypatch.setenv("GATING_PROVIDER", "replay")
    assert main(["-C", str(g.root), "eval", "--compare", "--json", "-", "--no-cache"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert [r["name"] for r in doc["table"]] == ["current", "cheap", "m+p=prompts/terse.md"]
    assert [r["pass_rate"] for r in doc["table"]] == [1.0, 0.0, 0.0]
    assert "(replay)" in err.splitlines()[-1]
    assert "| `cheap` | 0.000 | -1.000 | worse" in recorded


def test_a_candidate_without_recordings_is_an_error_in_replay(tmp_path: Path, live: LLMServer,
                                                            capsys: pytest.CaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    g = make_repo(tmp_path)
    assert main(["-C", str(g.root), "eval", "--record"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("GATING_PROVIDER", "replay")
    assert main(["-C", str(g.root), "eval", "--compare", "small", "--no-cache"]) == 1
    out, err = capsys.readouterr()
    assert "Not evidence (cases that could not be evaluated):" in out
    assert "gating: error: small: 12 of 12 cases could not be evaluated" in err


@pytest.mark.parametrize("cand, message", [
    ("smal", "candidate 'smal': unknown model 'smal' (did you mean 'small'?); known models: j, m, small, "
             "or PROVIDER:MODEL with a provider among openai"),
    ("q=prompts/terse.md", "candidate 'q=prompts/terse.md': unknown prompt 'q'; known prompts: p"),
    ("p=prompts/nope.md", "candidate 'p=prompts/nope.md': 'prompts/nope.md' is neither a prompt component nor a "
                          "file at"),
    ("small+m", "candidate 'small+m': names two models ('small' and 'm')"),
    ("p=", "candidate 'p=': 'p=' is not PROMPT=FILE"),
])
def test_bad_candidates_name_what_is_unknown_and_what_is_known(tmp_path: Path, live: LLMServer, cand: str,
                                                               message: str, capsys: pytest.CaptureFixture) -> None:
    g = make_repo(tmp_path)
    assert main(["-C", str(g.root), "eval", "--compare", cand]) == 2
    out, err = capsys.readouterr()
    assert message in err and out == ""
    assert live.requests == 0  # a bad name costs no calls


def test_no_candidates_anywhere_is_a_usage_error(tmp_path: Path, live: LLMServer, capsys: pytest.CaptureFixture) -> None:
    g = make_repo(tmp_path)
    assert main(["-C", str(g.root), "eval", "--compare"]) == 2
    assert "--compare needs candidates: name them (MODEL, PROMPT=FILE) or list evals.candidates in gating.yml; " \
           "known models: j, m, small" in capsys.readouterr().err


def test_parse_candidate() -> None:
    c = parse_candidate("small+p=prompts/terse.md")
    assert (c.model, c.prompts) == ("small", (("p", "prompts/terse.md"),))
    with pytest.raises(CandidateError, match="empty part"):
        parse_candidate("small+")


@pytest.mark.parametrize("variant", ["../outside.md", "/etc/passwd", "prompts/../../x.md", "prompts\\\\p.md"])
def test_a_prompt_file_outside_the_repository_is_refused(tmp_path: Path, live: LLMServer, variant: str,
                                                         capsys: pytest.CaptureFixture) -> None:
    g = make_repo(tmp_path)
    (tmp_path / "outside.md").write_text("secret {{ q }}\n")
    assert main(["-C", str(g.root), "eval", "--compare", f"p={variant}"]) == 2
    assert f"'{variant}' is not a path inside the repository" in capsys.readouterr().err.replace("\\\\", "\\")
    assert live.requests == 0


def test_a_prompt_file_behind_a_directory_link_out_of_the_repository_is_refused(
        tmp_path: Path, live: LLMServer, capsys: pytest.CaptureFixture) -> None:
    g = make_repo(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "p.md").write_text("secret {{ q }}\n")
    (g.root / "linked").symlink_to(tmp_path / "elsewhere")
    assert main(["-C", str(g.root), "eval", "--compare", "p=linked/p.md"]) == 2
    err = capsys.readouterr().err
    assert "candidate 'p=linked/p.md': 'linked/p.md' goes through the symbolic link 'linked': gating reads only " \
           "files inside the working tree" in err, err
    assert live.requests == 0


def test_a_model_candidate_needs_a_prompt_target(tmp_path: Path, live: LLMServer, capsys: pytest.CaptureFixture) -> None:
    g = make_repo(tmp_path, {"target": {"type": "command", "run": "python3 app.py", "code": []}})
    assert main(["-C", str(g.root), "eval", "--compare", "small"]) == 2
    assert "candidate 'small': a model candidate needs evals.target type prompt (this system's evals call a command " \
           "target, which chooses its own model)" in capsys.readouterr().err


def test_compare_a_committed_revision(tmp_path: Path, live: LLMServer, capsys: pytest.CaptureFixture) -> None:
    g = make_repo(tmp_path)
    (g.root / "prompts/terse.md").unlink()  # only in the commit now
    assert main(["-C", str(g.root), "eval", "--rev", "HEAD", "--compare", "p=prompts/terse.md", "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["pass_rate"] for r in doc["table"]] == [1.0, 0.0]
