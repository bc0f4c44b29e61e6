"""The emulator outside pytest fixtures, and under concurrent clients."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from gating.testing import Emulator, RepoHandle, start_emulator


def test_start_and_stop_outside_pytest_fixtures(tmp_path: Path) -> None:
    with start_emulator(tmp_path / "emu") as emu:
        repo = emu.create_repo("gating-dev/demo", source_dir=Path(__file__).parent.parent / "examples/support-bot",
                               owner_type="User")
        r = httpx.get(f"{emu.api_url}/repos/gating-dev/demo")
        assert r.status_code == 200 and r.json()["owner"]["type"] == "User"
        assert repo.bare_path == tmp_path / "emu" / "repos" / "gating-dev" / "demo.git"
        assert (repo.bare_path / "HEAD").is_file()
        with pytest.raises(ValueError, match="repository gating-dev/demo already exists"):
            emu.create_repo("gating-dev/demo")
        url = emu.api_url
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/rate_limit", timeout=2)


def test_each_fixture_emulator_is_fresh(github: Emulator) -> None:
    assert github.repos == {} and github.requests == [] and len(github.faults) == 0
    assert github.api_url.startswith("http://127.0.0.1:") and github.api_url.endswith("/api/v3")


def test_concurrent_clients_see_consistent_state(github: Emulator, github_repo: RepoHandle) -> None:
    """Eight threads create check runs and read refs at once: every call answers correctly, every
    response passes the description (else the fixture fails), ids are unique."""
    head = github_repo.head()
    errors: list[str] = []
    ids: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        with httpx.Client(base_url=github.api_url, timeout=30,
                          headers={"Authorization": f"token {github.installation_token()}"}) as c:
            for k in range(10):
                r = c.post("/repos/acme/support-bot/check-runs", json={"name": f"w{n}-{k}", "head_sha": head})
                g = c.get("/repos/acme/support-bot/git/ref/heads/main")
                with lock:
                    if r.status_code != 201 or g.json()["object"]["sha"] != head:
                        errors.append(f"{r.status_code} {g.status_code}")
                    ids.append(r.json()["id"])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(set(ids)) == 80
    assert len(github.list_check_runs(github_repo, head)) == 80
