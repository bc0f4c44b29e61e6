"""Every read of a revision stays inside the repository: `..`, absolute paths and symbolic links
that lead out of it are refused by name, in the working tree and in a commit alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_support import a, llm, write_repo  # noqa: F401

from gating.commands.cli import main
from gating.git.repository import Git, commit_all, init_repo
from gating.git.revision import GitRevision, OutsideTree, WorkTree
from gating.testing.llm_server import LLMServer

SECRET = b'{"openai": {"gpt-4o-mini-2024-07-18": {"input": 1, "output": 1}}}\n'


@pytest.fixture
def repo(tmp_path: Path) -> Git:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_bytes(SECRET)
    g = init_repo(tmp_path / "repo")
    (g.root / "prompts").mkdir()
    (g.root / "prompts/p.md").write_text("hello\n")
    (g.root / "out").symlink_to(outside)  # a directory link leading out of the repository
    (g.root / "inner").symlink_to("prompts")  # one that stays inside, but git stores it as a link
    (g.root / "passwd").symlink_to(outside / "secret.json")  # a file link: read as git does, as its target path
    commit_all(g, "links")
    return g


@pytest.mark.parametrize(("path", "reason"), [
    ("../outside/secret.json", "'..'"),
    ("prompts/../../outside/secret.json", "'..'"),
    ("/etc/passwd", "absolute path"),
    ("out/secret.json", "symbolic link 'out'"),
    ("inner/p.md", "symbolic link 'inner'"),
])
def test_the_working_tree_refuses_a_path_that_leads_out_of_it(repo: Git, path: str, reason: str) -> None:
    with pytest.raises(OutsideTree) as e:
        WorkTree(repo.root, repo).read_many(["prompts/p.md", path])
    assert f"{path!r}" in str(e.value) and reason in str(e.value)
    assert "working tree" in str(e.value)
    assert e.value.path == path


def test_the_working_tree_still_reads_its_own_files_and_links_as_git_does(repo: Git, tmp_path: Path) -> None:
    got = WorkTree(repo.root, repo).read_many(["prompts/p.md", "passwd", "missing.md"])
    assert got == {"prompts/p.md": b"hello\n", "passwd": str(tmp_path / "outside/secret.json").encode(),
                   "missing.md": None}


def test_the_working_tree_refuses_links_out_of_it_when_asked_for_link_texts(repo: Git) -> None:
    with pytest.raises(OutsideTree):
        WorkTree(repo.root, repo).links(["out/secret.json"])


@pytest.mark.parametrize(("path", "reason"), [("../outside/secret.json", "'..'"), ("/etc/passwd", "absolute path")])
def test_a_commit_refuses_the_same_paths(repo: Git, path: str, reason: str) -> None:
    with pytest.raises(OutsideTree) as e:
        GitRevision(repo, "HEAD").read_many([path])
    assert f"{path!r}" in str(e.value) and reason in str(e.value) and "HEAD" in str(e.value)


def test_a_commit_never_reads_through_a_symlink_blob(repo: Git) -> None:
    rev = GitRevision(repo, "HEAD")
    assert rev.read_many(["out/secret.json", "inner/p.md"]) == {"out/secret.json": None, "inner/p.md": None}
    assert rev.read_many(["passwd"])["passwd"] != SECRET  # the link's text, never the file it points at


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch, llm: LLMServer, tmp_path: Path) -> LLMServer:  # noqa: F811
    for k, v in llm.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("GATING_PROVIDER", "live")
    monkeypatch.setenv("GATING_CACHE_DIR", str(tmp_path / "cache"))
    return llm


@pytest.mark.parametrize("prices", ["../outside/secret.json", "out/secret.json"])
def test_a_price_table_outside_the_repository_is_refused_naming_the_setting(
        tmp_path: Path, live: LLMServer, capsys: pytest.CaptureFixture, prices: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_bytes(SECRET)
    g = init_repo(tmp_path / "repo")
    write_repo(g.root, [{"id": "one", "prompt": "p", "vars": {"q": a("yes")}, "assert": [{"type": "equals", "value": "yes"}]}],
               evals={"prices": prices})
    (g.root / "out").symlink_to(outside)
    commit_all(g, "evals")
    assert main(["-C", str(g.root), "eval", "--no-cache", "--json", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert f"gating.yml: evals.prices: {prices!r}" in err and "working tree" in err, err
    assert not (tmp_path / "r.json").exists()
    assert json.dumps(SECRET.decode()) not in err
