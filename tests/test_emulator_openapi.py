"""The emulator holds itself and its clients to the vendored OpenAPI description."""

from __future__ import annotations

import gzip
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

from gating.testing import Emulator, RepoHandle
from gating.testing.emulator_http import HANDLERS
from gating.testing.emulator_openapi import SPEC_FILE, api_description, load_spec
from gating.testing.webhooks import EXAMPLES_FILE

ROOT = Path(__file__).resolve().parent.parent


def client(emu: Emulator, token: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=emu.api_url, headers={"Authorization": f"token {token or emu.installation_token()}"})


def test_request_body_that_violates_the_schema_gets_422(github: Emulator, github_repo: RepoHandle) -> None:
    with client(github) as c:
        r = c.post("/repos/acme/support-bot/check-runs", json={"name": "x", "head_sha": 5})
        assert r.status_code == 422
        assert r.json()["message"] == "Invalid request.\n\nFor 'head_sha', 5 is not of type 'string'"
        assert r.json()["documentation_url"].startswith("https://docs.github.com/")
        r = c.post("/repos/acme/support-bot/check-runs", json={"head_sha": github_repo.head()})
        assert r.status_code == 422 and "'name' is a required property" in r.json()["message"]
        r = c.patch("/repos/acme/support-bot/git/refs/heads/main", json={"sha": github_repo.head(), "force": "yes"})
        assert r.status_code == 422 and "'yes' is not of type 'boolean'" in r.json()["message"]
        r = c.get("/repos/acme/support-bot/pulls", params={"state": "merged"})
        assert r.status_code == 422
        r = c.post("/repos/acme/support-bot/git/blobs", content=b"{not json", headers={"Content-Type": "application/json"})
        assert (r.status_code, r.json()["message"]) == (400, "Problems parsing JSON")
    assert github_repo.git.run("for-each-ref", "refs/heads") .count("\n") == 0  # nothing was written


def test_every_subset_operation_is_emulated_and_nothing_else() -> None:
    ops = {op for _m, _t, op in api_description().operations()}
    assert ops == set(HANDLERS)


def test_vendored_subset_is_a_valid_openapi_document() -> None:
    validate(load_spec())
    assert SPEC_FILE.stat().st_size < 64_000 and EXAMPLES_FILE.stat().st_size < 64_000


def test_vendor_script_is_idempotent_on_its_own_output(tmp_path: Path) -> None:
    """Regenerating from the vendored files reproduces them byte for byte (no network, no shared data)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "api.github.com.json").write_text(json.dumps(load_spec()))
    with gzip.open(EXAMPLES_FILE, "rt") as f:
        vendored = json.load(f)
    as_published = [{"name": event, "examples": list(by_action.values())} for event, by_action in vendored.items()]
    (src / "webhook-examples.json").write_text(json.dumps(as_published))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/vendor_github_reference.py"), "--from", str(src),
                           "--out", str(out)], capture_output=True, text=True, check=True)
    assert f"{len(list(api_description().operations()))} operations" in proc.stdout
    assert (out / "openapi-subset.json.gz").read_bytes() == SPEC_FILE.read_bytes()
    assert (out / "webhook-examples.json.gz").read_bytes() == EXAMPLES_FILE.read_bytes()


INNER = textwrap.dedent('''
    import httpx
    from gating.testing.emulator_http import HANDLERS, Reply

    def test_outside_the_subset(github):
        r = httpx.get(github.api_url + "/repos/acme/nothing/hooks")
        assert r.status_code == 404

    def test_bad_response(github, monkeypatch):
        monkeypatch.setitem(HANDLERS, "rate-limit/get", lambda ctx: Reply(200, {"resources": {}, "rate": "many"}))
        assert httpx.get(github.api_url + "/rate_limit").status_code == 200

    def test_clean(github):
        assert httpx.get(github.api_url + "/rate_limit").json()["rate"]["limit"] == 60
''')


def test_outside_the_subset_or_a_bad_response_fails_the_test_at_teardown(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "gating.testing.pytest_plugin",
                           "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    out = proc.stdout
    assert proc.returncode == 1, out
    assert "3 passed, 2 errors" in out
    assert "GET /repos/acme/nothing/hooks: endpoint outside the vendored OpenAPI subset" in out
    assert "GET /rate_limit -> 200: response violates the OpenAPI description" in out
    assert "ERROR test_inner.py::test_clean" not in out


def test_problems_can_be_taken_by_a_test_that_provokes_them(github: Emulator) -> None:
    assert httpx.get(f"{github.api_url}/repos/acme/support-bot/hooks").status_code == 404
    assert httpx.get(f"{github.web_url}/repos/acme/support-bot").status_code == 404
    problems = github.take_problems()
    assert len(problems) == 2
    assert problems[1].startswith("GET /repos/acme/support-bot: not an API path")
    assert github.problems == []


def test_a_typical_request_takes_a_few_milliseconds(github: Emulator, github_repo: RepoHandle) -> None:
    with client(github) as c:
        for _ in range(25):
            assert c.get("/repos/acme/support-bot/git/ref/heads/main").status_code == 200
    times = [q.duration_ms for q in github.requests if q.operation == "git/get-ref"]
    assert statistics.median(times) < 40, times


@pytest.mark.parametrize("status", [200, 404])
def test_error_and_success_bodies_have_githubs_shape(github: Emulator, github_repo: RepoHandle, status: int) -> None:
    with client(github) as c:
        r = c.get(f"/repos/acme/{'support-bot' if status == 200 else 'missing'}")
    assert r.status_code == status
    assert r.headers["Content-Type"].startswith("application/json")
    if status == 404:
        assert r.json() == {"message": "Not Found", "documentation_url": "https://docs.github.com/rest", "status": "404"}
    else:
        assert r.json()["owner"]["login"] == "acme" and r.json()["owner"]["type"] == "Organization"
