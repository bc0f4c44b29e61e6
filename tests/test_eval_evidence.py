"""Evidence in the snapshot and the diff, through the CLI: cassettes and pipeline code are system files,
replay is chosen by the judging revision, and the response cache is never read from the work tree."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from eval_support import a, llm, write_repo  # noqa: F401

from gating.commands.cli import main
from gating.evals.cache import parse_cassette, render_cassette
from gating.git.repository import Git, commit_all, init_repo
from gating.testing.llm_server import LLMServer

CASES = [{"id": "one", "prompt": "p", "vars": {"q": a("yes")}, "assert": [{"type": "equals", "value": "yes"}]},
         {"id": "two", "prompt": "p", "vars": {"q": a("no")}, "assert": [{"type": "equals", "value": "yes"}]}]
TAPE = "evals/cassettes/cases.jsonl"


@pytest.fixture
def repo(tmp_path: Path) -> Git:
    g = init_repo(tmp_path / "repo")
    write_repo(g.root, CASES, evals={"thresholds": {"pass_rate": ">= 0.5"}})
    commit_all(g, "evals")
    return g


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, llm: LLMServer) -> LLMServer:  # noqa: F811
    for k, v in llm.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("GATING_PROVIDER", raising=False)
    monkeypatch.delenv("GATING_CACHE_DIR", raising=False)
    return llm


def _branch(g: Git, name: str, files: dict[str, str | None]) -> str:
    g.run("checkout", "--quiet", "-B", name, "main")
    for path, text in files.items():
        if text is None:
            (g.root / path).unlink()
        else:
            (g.root / path).parent.mkdir(parents=True, exist_ok=True)
            (g.root / path).write_text(text, encoding="utf-8")
    return commit_all(g, name)


def _record(g: Git, server: LLMServer, capsys: pytest.CaptureFixture) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GATING_PROVIDER", "live")
        assert main(["-C", str(g.root), "eval", "--record", "--no-cache"]) == 0
    capsys.readouterr()
    return (g.root / TAPE).read_text()


def test_a_changed_cassette_is_in_the_diff_and_the_digest(repo: Git, server: LLMServer,
                                                          capsys: pytest.CaptureFixture) -> None:
    tape = _record(repo, server, capsys)
    commit_all(repo, "record")
    assert main(["-C", str(repo.root), "snapshot", "--digest"]) == 0
    before = capsys.readouterr().out
    entries = parse_cassette(TAPE, tape.encode())
    for e in entries.values():
        e["response"]["text"] = "yes"  # case `two` now passes on replay
    _branch(repo, "forged", {TAPE: render_cassette(entries.values()).decode()})
    assert main(["-C", str(repo.root), "snapshot", "--digest"]) == 0
    assert capsys.readouterr().out != before
    assert main(["-C", str(repo.root), "diff", "main", "forged"]) == 0
    out = capsys.readouterr().out
    assert "### LLM system: 1 change (highest risk: high)" in out
    assert f"| cassette | cassette {TAPE} changed (1 recording rewritten): the recorded answers replay scores | " \
           f"`cassettes.{TAPE}` | **high** |" in out
    assert "Re-evaluate: every eval case (full re-evaluation)." in out


def test_a_head_that_adds_cassettes_and_asks_for_replay_is_run_live(repo: Git, server: LLMServer,
                                                                    capsys: pytest.CaptureFixture) -> None:
    _record(repo, server, capsys)
    commit_all(repo, "record")  # main holds the true answers, and replays nothing: its setting is live
    entries = parse_cassette(TAPE, (repo.root / TAPE).read_bytes())
    for e in entries.values():
        e["response"]["text"] = "yes"
    manifest = (repo.root / "gating.yml").read_text().replace("  target:", "  mode: replay\n  target:")
    _branch(repo, "offline", {TAPE: render_cassette(entries.values()).decode(), "gating.yml": manifest})
    code = main(["-C", str(repo.root), "eval", "--base", "main", "--no-cache"])
    out, err = capsys.readouterr()
    assert code == 0  # base and head both live: `two` fails on both, as it really does
    assert "(live): 2 requests, 0 cache hits, 0 replayed" in err
    assert "gating: warning: the head's gating.yml sets evals.mode: replay, but the --base revision's setting decides " \
           "how a change is judged: answers were called live (evals.mode: live in the --base revision's gating.yml); " \
           "the head's setting takes effect after merge" in err
    assert f"gating: warning: cassettes the head adds or changes ({TAPE}) were not used" in err
    assert "| `two` | p | equals: expected 'yes', got 'no' |" in out
    # on its own, the revision's own setting decides; --replay asks for it explicitly
    assert main(["-C", str(repo.root), "eval", "--no-cache"]) == 0
    assert "(replay): 0 requests, 0 cache hits, 2 replayed" in capsys.readouterr().err
    assert main(["-C", str(repo.root), "eval", "--base", "main", "--replay", "--no-cache"]) == 0
    out, err = capsys.readouterr()
    assert "(replay): 0 requests, 0 cache hits, 2 replayed" in err
    assert "gating: warning: 1 recorded answer that the head's cassettes rewrite was not used: the base's " \
           "recordings were served" in err
    assert "| `two` | p | equals: expected 'yes', got 'no' |" in out


def test_the_response_cache_lives_in_the_git_directory(repo: Git, server: LLMServer,
                                                       capsys: pytest.CaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["-C", str(repo.root), "eval"]) == 0
    assert list((repo.common_dir / "gating" / "responses").glob("seg-*.jsonl"))
    assert not (repo.root / ".gating").exists()
    capsys.readouterr()
    assert main(["-C", str(repo.root), "eval"]) == 0
    assert "(live): 0 requests, 2 cache hits, 0 replayed" in capsys.readouterr().err
    # a cache directory inside the work tree is refused by name, and nothing is read from or written to it
    monkeypatch.setenv("GATING_CACHE_DIR", str(repo.root / "cache"))
    assert main(["-C", str(repo.root), "eval"]) == 0
    err = capsys.readouterr().err
    assert f"gating: warning: the response cache {repo.root / 'cache'} is inside the checkout, where a pull " \
           "request could commit answers: it was not used" in err
    assert "(live): 2 requests, 0 cache hits, 0 replayed" in err and not (repo.root / "cache").exists()


PIPELINE = """import json, sys
case = json.load(sys.stdin)
print(json.dumps({"output": "answer: " + ANSWER}))
"""


def _command_repo(tmp_path: Path) -> Git:
    g = init_repo(tmp_path / "cmd")
    cases = [{"id": f"c{i}", "vars": {"q": str(i)}, "assert": [{"type": "icontains", "value": "yes"}]}
             for i in range(3)]
    target = {"type": "command", "run": f"{sys.executable} app/pipeline.py", "code": ["app/*.py"]}
    write_repo(g.root, cases, evals={"target": target, "thresholds": {"pass_rate": ">= 0.9"}},
               files={"app/pipeline.py": PIPELINE.replace("ANSWER", "'yes'"), "app/README.md": "# app\n"})
    commit_all(g, "pipeline")
    return g


def test_pipeline_code_named_by_the_target_is_part_of_the_system(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    g = _command_repo(tmp_path)
    _branch(g, "terse", {"app/pipeline.py": PIPELINE.replace("ANSWER", "'no'")})
    g.run("checkout", "--quiet", "main")  # the checkout holds base's code: each side must run its own
    monkeypatch.chdir(tmp_path)
    assert main(["-C", str(g.root), "diff", "main", "terse"]) == 0
    out = capsys.readouterr().out
    assert "| code | pipeline code app/pipeline.py changed: +1 −1 lines; every case re-runs | " \
           "`code.app/pipeline.py` | medium |" in out
    code = main(["-C", str(g.root), "check", "--base", "main", "--head", "terse", "--no-post", "--notes", "off"])
    out = capsys.readouterr().out
    assert code == 1 and "gating / eval: Fail: pass_rate is 0, threshold >= 0.9; failing cases: c0, c1, c2" in out  # base's code vs head's
    assert "| `pass_rate` | 1.000 | 0.000 | −1.000 |" in out and "pass_rate is 0, threshold >= 0.9" in out
    _branch(g, "docs", {"app/README.md": "# app\n\nMore.\n"})  # not named by `code:`: not the system
    assert main(["-C", str(g.root), "diff", "main", "docs"]) == 0
    assert "### LLM system: no changes" in capsys.readouterr().out


def test_a_command_target_must_name_its_code(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_repo(init_repo(tmp_path / "r").root, CASES[:1],
                      evals={"target": {"type": "command", "run": "python app.py"}})
    assert main(["-C", str(root), "snapshot"]) == 2
    err = capsys.readouterr().err
    assert "gating.yml:" in err and "a command target must name the files its pipeline runs in `code:` (globs such " \
        "as [\"app/**/*.py\"], or [] when none are in this repository)" in err
    text = (root / "gating.yml").read_text().replace("run: python app.py", "run: python app.py\n    code: [app/*.py]")
    (root / "gating.yml").write_text(text)
    assert main(["-C", str(root), "snapshot"]) == 2
    assert "evals.target.code[0]: glob 'app/*.py' matches no file" in capsys.readouterr().err
    (root / "app.py").write_text("print('hi')\n")
    (root / "gating.yml").write_text(text.replace("[app/*.py]", "['*.py']"))
    assert main(["-C", str(root), "snapshot"]) == 0
    assert json.loads(capsys.readouterr().out)["code"] == {"app.py": json.loads(
        json.dumps(__import__("hashlib").sha256(b"print('hi')\n").hexdigest()))}
