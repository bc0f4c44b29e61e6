"""Shared fixtures: real git repositories in temporary folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from check_support import Harness, write_system

from gating.git.repository import Git, init_repo
from gating.testing.example import make_example_repo
from gating.testing.llm_server import LLMServer

pytest_plugins = ["gating.testing.pytest_plugin"]

os.environ.setdefault("GIT_CONFIG_GLOBAL", os.devnull)
os.environ.setdefault("GIT_CONFIG_NOSYSTEM", "1")
# The App refuses to start without an audit signing key; fixtures that do not sign pass none, and the
# tests of that refusal unset this (tests/test_app_register.py).
os.environ.setdefault("GATING_NO_AUDIT", "1")


@pytest.fixture
def git_repo(tmp_path: Path) -> Git:
    """An empty repository on branch main with a fixed identity."""
    return init_repo(tmp_path / "repo")


@pytest.fixture
def example_repo(tmp_path: Path) -> Git:
    """The bundled support-bot example, committed once on main."""
    return make_example_repo(tmp_path / "support-bot")


@pytest.fixture
def spawned(monkeypatch) -> list[list[str]]:
    """The argument lists of every process started from now on, in order."""
    import subprocess

    calls: list[list[str]] = []
    real_popen = subprocess.Popen

    class SpyPopen(real_popen):
        def __init__(self, args, *a, **kw):
            calls.append(list(args))
            super().__init__(args, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", SpyPopen)
    return calls


@pytest.fixture(scope="module")
def llm():
    """The local OpenAI/Anthropic-compatible test server, one per test module (a module that changes
    how it answers overrides this with its own)."""
    with LLMServer() as server:
        yield server


@pytest.fixture
def h(github, llm, tmp_path: Path, monkeypatch) -> Harness:
    """acme/tiny-bot on the emulator and a runner for `gating check` against it."""
    repo = github.create_repo("acme/tiny-bot", source_dir=write_system(tmp_path / "src"))
    return Harness(github, repo, llm, tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the whole run (tests/postgres_support.py): GATING_TEST_POSTGRES_URL, or a
    throw-away cluster of the local PostgreSQL."""
    import postgres_support

    if os.environ.get("GATING_TEST_POSTGRES_URL"):
        yield os.environ["GATING_TEST_POSTGRES_URL"]
        return
    found = postgres_support.bindir()
    if found is None:
        postgres_support.missing()
    cluster = postgres_support.Cluster(found).start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """The URL of a new, empty database of its own for one test."""
    import postgres_support

    return postgres_support.fresh_database(postgres_server)


@pytest.fixture(params=["sqlite", "postgres"])
def queue_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a job queue lives, once per engine: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "jobs.db")
    return str(request.getfixturevalue("postgres_url"))
