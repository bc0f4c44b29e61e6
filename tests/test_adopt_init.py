"""`gating init`: a fresh repository gets a manifest, a starter dataset and the workflow that the other
commands accept as they are; re-running changes nothing; `--force` rewrites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_support import llm  # noqa: F401

from gating.adopt.pins import pin, table
from gating.adopt.workflow import WORKFLOW_PATH, template_path
from gating.commands.cli import main
from gating.diff.semantic import is_pinned
from gating.git.repository import Git, commit_all, init_repo
from gating.testing.llm_server import LLMServer

APP = {
    "prompts/answer.md": "You are a support agent.\nQuestion: {{ question }}\nContext: {{ context }}\n",
    "prompts/classify.yml": "- role: system\n  content: Classify the message.\n- role: user\n  content: \"{{ message }}\"\n",
    "prompts/notes.txt": "Plain notes, no variables.\n",
    "src/templates/summary.j2": "Summarize: {{ text }}\n",
    "app/main.py": 'MODEL = "gpt-4o"\nFALLBACK = "gpt-4o"\nJUDGE = "claude-3-5-sonnet-latest"\n',
    "web/client.ts": "const model = 'gpt-4o-mini-2024-07-18';\n",
    "config/app.yml": "llm:\n  model: o3-mini\n",
    "tools/lookup_order.json": json.dumps({"type": "function", "function": {
        "name": "lookup_order", "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}}),
    "data/orders.json": json.dumps({"name": "not a tool"}),
    "README.md": "# App\nUses {{ jinja }} somewhere.\n",
}


TOOL = json.dumps({"name": "find", "input_schema": {"type": "object"}})


def make_app(root: Path, files: dict[str, str] = APP) -> Git:
    g = init_repo(root)
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    commit_all(g, "the app, before gating")
    return g


@pytest.fixture
def app(tmp_path: Path) -> Git:
    return make_app(tmp_path / "app")


def run(g: Git, *args: str, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    rc = main(["-C", str(g.root), *args])
    out, err = capsys.readouterr()
    return rc, out, err


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(root).parts[:1]}


def test_init_then_diff_eval_and_check_pass_on_what_it_wrote(app: Git, llm: LLMServer,  # noqa: F811
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    app.run("checkout", "-q", "-b", "adopt-gating")
    rc, out, _ = run(app, "init", capsys=capsys)
    assert rc == 0
    assert "Found 4 prompt files, 4 model ids, 1 tool schema." in out
    for path in ("gating.yml", "evals/starter.jsonl", WORKFLOW_PATH):
        assert f"\n  {path}\n" in out and (app.root / path).is_file()
    assert "| `gpt-4o` | openai | `gpt-4o-2024-08-06` |" in out
    assert "| `claude-3-5-sonnet-latest` | anthropic | `claude-3-5-sonnet-20241022` |" in out
    assert "| `o3-mini` | openai | `o3-mini-2025-01-31` |" in out
    assert "gpt-4o-mini-2024-07-18 (found in web/client.ts:1)" in out  # pinned already: not in the table
    assert "| `gpt-4o-mini-2024-07-18`" not in out
    assert "left out prompts/notes.txt" not in out and "prompt prompts/notes.txt" in out
    assert "README.md" not in out and "data/orders.json" not in out
    assert "ANTHROPIC_API_KEY=... OPENAI_API_KEY=... gating eval" in out
    assert "make `gating / eval` a required check" in out
    manifest = (app.root / "gating.yml").read_text()
    assert "    gpt-4o:\n      provider: openai\n      model: gpt-4o-2024-08-06\n" in manifest
    assert "tools/lookup_order.json" in manifest
    # the most used model id calls the prompts
    assert "    answer:\n      file: prompts/answer.md\n      model: gpt-4o\n" in manifest
    cases = [json.loads(line) for line in (app.root / "evals/starter.jsonl").read_text().splitlines()]
    assert [c["id"] for c in cases] == ["answer-starter", "classify-starter", "notes-starter", "summary-starter"]
    assert cases[0]["vars"] == {"context": "example context", "question": "example question"}
    assert (app.root / WORKFLOW_PATH).read_text() == template_path().read_text()
    commit_all(app, "gate the LLM system")

    rc, out, _ = run(app, "diff", "main", "HEAD", capsys=capsys)
    assert rc == 0, out
    assert "model `gpt-4o` added: gpt-4o-2024-08-06" in out and "prompt `summary` added" in out

    for k, v in {**llm.env(), "GATING_PROVIDER": "live", "GATING_CACHE_DIR": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(k, v)
    for k in ("GITHUB_ACTIONS", "GITHUB_EVENT_PATH", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(k, raising=False)
    rc, out, err = run(app, "eval", capsys=capsys)
    assert rc == 0, out + err
    assert out.startswith("### gating / eval: ✅ pass\n") and "| `pass_rate` |  | 1.000 |" in out
    rc, out, err = run(app, "check", "--no-post", "--base", "main", "--quiet", capsys=capsys)
    assert rc == 0, out + err
    assert out.startswith("gating / eval: Pass")


def test_second_run_says_what_exists_and_changes_nothing(app: Git, capsys: pytest.CaptureFixture) -> None:
    assert run(app, "init", capsys=capsys)[0] == 0
    (app.root / "evals/starter.jsonl").write_text('{"id": "mine", "prompt": "answer"}\n')
    before = tree(app.root)
    rc, out, _ = run(app, "init", capsys=capsys)
    assert rc == 0
    assert "Exists, left unchanged (`gating init --force` rewrites it):\n  gating.yml\n  evals/starter.jsonl\n" \
           f"  {WORKFLOW_PATH}\n\nNothing changed.\n" in out
    assert "Wrote:" not in out
    assert tree(app.root) == before


def test_an_existing_file_keeps_its_group_and_force_rewrites(app: Git, capsys: pytest.CaptureFixture) -> None:
    mine = "name: my own workflow\n"
    (app.root / WORKFLOW_PATH).parent.mkdir(parents=True)
    (app.root / WORKFLOW_PATH).write_text(mine)
    rc, out, _ = run(app, "init", capsys=capsys)
    assert rc == 0 and "Wrote:\n  gating.yml\n  evals/starter.jsonl\n\n" in out
    assert f"left unchanged (`gating init --force` rewrites it):\n  {WORKFLOW_PATH}\n" in out
    assert (app.root / WORKFLOW_PATH).read_text() == mine
    (app.root / "gating.yml").write_text("version: 1\nname: edited\ncomponents: {}\n")
    rc, out, _ = run(app, "init", "--force", capsys=capsys)
    assert rc == 0 and f"Wrote:\n  gating.yml\n  evals/starter.jsonl\n  {WORKFLOW_PATH}\n" in out
    assert (app.root / WORKFLOW_PATH).read_text() == template_path().read_text()
    assert "name: app\n" in (app.root / "gating.yml").read_text()


def test_a_bare_repository_gets_a_starter_prompt_and_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    g = make_app(tmp_path / "empty", {"main.py": "print('no LLM yet')\n"})
    g.run("branch", "-m", "trunk")
    rc, out, _ = run(g, "init", capsys=capsys)
    assert rc == 0 and "Found 0 prompt files, 0 model ids, 0 tool schemas." in out
    assert "no prompt file found: wrote prompts/starter.md as an example" in out
    assert "no model id found in code or config: gating.yml names gpt-4o-mini-2024-07-18; set yours" in out
    assert (g.root / "prompts/starter.md").is_file()
    assert "branches: [trunk]" in (g.root / WORKFLOW_PATH).read_text()  # the repository's default branch
    assert run(g, "snapshot", capsys=capsys)[0] == 0


def test_unknown_aliases_and_promptfoo_configs_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    g = make_app(tmp_path / "a", {"app.py": 'M = "claude-4-experimental-latest"\n',
                                  "promptfooconfig.yaml": "prompts: ['Hi {{name}}']\n",
                                  "prompts/broken.md": "{% if %}\n", "prompts/list.yml": "a: 1\n",
                                  "tools/a.json": TOOL, "tools/b.json": TOOL})
    rc, out, _ = run(g, "init", capsys=capsys)
    assert rc == 0
    assert "| `claude-4-experimental-latest` | anthropic | no known pinned id: pick a dated snapshot" in out
    assert "promptfoo config promptfooconfig.yaml: `gating import promptfoo promptfooconfig.yaml` converts" in out
    assert "left out prompts/broken.md: not a Jinja2 template (line 1:" in out
    assert "left out prompts/list.yml: not a prompt: a YAML prompt is a list of messages" in out
    assert "  - tool tools/a.json\n" in out and "left out tools/b.json: tool 'find' is also defined in tools/a.json" in out
    # the alias goes in as found, so the diff's policy error names it until it is pinned
    commit_all(g, "gating")
    g.run("checkout", "-q", "-b", "x")
    assert main(["-C", str(g.root), "diff", "HEAD~1", "HEAD"]) == 1
    assert "unpinned alias" in capsys.readouterr().out


def test_outside_a_repository_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["-C", str(tmp_path), "init"]) == 2
    assert "is not a git repository" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_every_alias_in_the_pin_table_is_unpinned_and_maps_to_a_pinned_id() -> None:
    assert len(table()) >= 15
    for alias, row in table().items():
        assert not is_pinned({"model": alias}), alias
        assert is_pinned({"model": row["pinned"]}), row["pinned"]
        assert row["provider"] in ("openai", "anthropic", "google")
        p = pin(alias)
        assert (p.provider, p.use, p.pinned) == (row["provider"], row["pinned"], False)
    assert pin("gpt-4o-2024-11-20").pinned and pin("gpt-4o-2024-11-20").use is None
