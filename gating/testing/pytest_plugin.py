"""pytest fixtures: a fresh emulator per test, a seeded repository, the App identity.

A test fails at teardown when the emulator recorded problems (a call outside the vendored API
subset, a response that breaks the OpenAPI description); `github.take_problems()` clears them for
tests that provoke such problems on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gating.testing.emulator_auth import AppIdentity
from gating.testing.emulator_repo import RepoHandle
from gating.testing.github_emulator import Emulator, start_emulator

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "support-bot"


@pytest.fixture
def github(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emu = start_emulator(tmp_path_factory.mktemp("github"))
    try:
        yield emu
    finally:
        emu.stop()
    problems = emu.take_problems()
    if problems:
        pytest.fail("the GitHub emulator recorded problems:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture
def github_repo(github: Emulator) -> RepoHandle:
    """acme/support-bot seeded from examples/support-bot: one commit on main."""
    return github.create_repo("acme/support-bot", source_dir=EXAMPLE)


@pytest.fixture
def github_app(github: Emulator) -> AppIdentity:
    return github.app
