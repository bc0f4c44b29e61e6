"""Shared fixtures: real git repositories in temporary folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gating.example import make_example_repo
from gating.git import Git, init_repo

pytest_plugins = ["gating.testing.pytest_plugin"]

os.environ.setdefault("GIT_CONFIG_GLOBAL", os.devnull)
os.environ.setdefault("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def git_repo(tmp_path: Path) -> Git:
    """An empty repository on branch main with a fixed identity."""
    return init_repo(tmp_path / "repo")


@pytest.fixture
def example_repo(tmp_path: Path) -> Git:
    """The bundled support-bot example, committed once on main."""
    return make_example_repo(tmp_path / "support-bot")
