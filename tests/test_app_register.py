"""`gating app register` (GitHub's App manifest flow, through a real headless browser against the
emulator) and `gating app serve --check` (what the App needs at its first event)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from app_support import ROOT, SECRET
from browser_support import browser

from gating.audit import keys
from gating.commands.cli import main
from gating.testing.emulator_auth import generate_key_pair


def _start_register(github, folder: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_API_URL", "GITHUB_URL")}
    proc = subprocess.Popen([sys.executable, "-m", "gating", "app", "register", "--github-url", github.web_url,
                             "--dir", str(folder), "--no-open", "--timeout", "120", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    first = proc.stdout.readline()
    assert first.startswith("open http://127.0.0.1:"), first + proc.stderr.read()
    return proc, first.split()[1]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("org", [None, "acme"], ids=["user", "organization"])
def test_register_through_the_browser_writes_an_env_that_serve_check_accepts(github, tmp_path, org):
    folder = tmp_path / "app"
    proc, page = _start_register(github, folder, "--name", "gating-acme", "--url", "https://gating.acme.example",
                                 *(["--org", org] if org else []))
    try:
        with browser() as b:
            b.get(page)
            b.click("#register")
            assert b.wait_for("#create") == f"Create GitHub App for {org or 'gating-dev'}"
            assert "checks write" in b.text("#permissions") and "pull_request_review" in b.text("#events")
            b.click("#create")
            assert "Created gating-acme" in b.wait_for("#done")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    app = github.app
    assert app.name == "gating-acme" and app.slug == "gating-acme"
    assert f"registered the GitHub App gating-acme (id {app.app_id})" in out
    assert f"Install the App on your repositories: {github.web_url}/apps/gating-acme/installations/new" in out
    assert f"gating / approval  from gating-acme (app_id {app.app_id})" in out
    assert "gating / eval      from GitHub Actions" in out
    env_lines = (folder / ".env").read_text().splitlines()
    assert f"APP_ID={app.app_id}" in env_lines and f"WEBHOOK_SECRET={app.webhook_secret}" in env_lines
    assert f"GITHUB_API_URL={github.api_url}" in env_lines
    assert "GATING_PUBLIC_URL=https://gating.acme.example" in env_lines  # its pages, behind GitHub sign-in
    assert f"GITHUB_CLIENT_ID={app.client_id}" in env_lines and f"GITHUB_CLIENT_SECRET={app.client_secret}" in env_lines
    for name in (".env", "gating-app.private-key.pem", "gating-audit-key.pem"):
        assert (folder / name).stat().st_mode & 0o777 == 0o600, name
    assert (folder / "gating-app.private-key.pem").read_text() == app.private_key_pem

    env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "PRIVATE_KEY", "GATING_", "WEBHOOK_"))}
    check = subprocess.run([sys.executable, "-m", "gating", "app", "serve", "--check"], cwd=folder, text=True,
                           capture_output=True, env=env | {"GATING_DB": str(folder / "jobs.sqlite3")}, timeout=60)
    assert check.returncode == 0, check.stderr
    assert f"the key signs a JWT that GitHub accepts: App gating-acme (id {app.app_id})" in check.stdout
    assert "  approvals: can post the `gating / approval` check" in check.stdout
    assert "cannot" not in check.stdout  # app.yml asks for every permission the handlers need


def test_register_refuses_an_answer_with_another_state(github, tmp_path):
    proc, page = _start_register(github, tmp_path)
    try:
        r = httpx.get(page + "callback", params={"code": "stolen", "state": "forged"})
        assert r.status_code == 400 and "state does not match" in r.text
        assert proc.poll() is None  # still waiting for the real answer
        assert not (tmp_path / ".env").exists()
    finally:
        proc.kill()
        proc.communicate()


def test_register_never_overwrites_without_force(tmp_path, capsys):
    (tmp_path / ".env").write_text("APP_ID=1\n")
    assert main(["app", "register", "--dir", str(tmp_path), "--no-open"]) == 2
    assert capsys.readouterr().err.strip() == f"gating: error: {tmp_path / '.env'}: already exists (pass --force to replace it)"


def _manifest_code(github) -> str:
    form = {"manifest": '{"name": "x-app", "url": "https://x.example", "redirect_url": "https://x.example/cb", '
                        '"default_permissions": {"checks": "write"}}'}
    r = httpx.post(f"{github.web_url}/settings/apps/new/create?state=s1", data=form)
    assert r.status_code == 302
    location = httpx.URL(r.headers["location"])
    assert location.params["state"] == "s1"
    return location.params["code"]


def test_a_manifest_code_is_single_use_and_expires_after_an_hour(github):
    code = _manifest_code(github)
    url = f"{github.api_url}/app-manifests/{code}/conversions"
    first = httpx.post(url)
    assert first.status_code == 201 and first.json()["permissions"] == {"metadata": "read", "checks": "write"}
    assert httpx.post(url).status_code == 404
    late = _manifest_code(github)
    github.advance(3601)
    assert httpx.post(f"{github.api_url}/app-manifests/{late}/conversions").status_code == 404


@pytest.mark.parametrize("manifest, message", [
    (None, "no manifest was posted"),
    ("{", "the manifest is not JSON"),
    ('{"name": "x"}', "the manifest needs `url`"),
    ('{"name": "x", "url": "https://x", "default_permissions": {"contents": "all"}}',
     "`default_permissions.contents` must be read, write or admin"),
], ids=["missing", "not-json", "no-url", "bad-level"])
def test_the_new_app_page_refuses_a_bad_manifest(github, manifest, message):
    r = httpx.post(f"{github.web_url}/settings/apps/new", data={"manifest": manifest} if manifest else {})
    assert r.status_code == 422 and message in r.text


# -- serve --check ---------------------------------------------------------------------------------

@pytest.fixture
def app_env(github, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    keys.write_keypair(tmp_path / "audit.pem", tmp_path / "audit.pem.pub")
    env = {"APP_ID": str(github.app.app_id), "PRIVATE_KEY": github.app.private_key_pem, "WEBHOOK_SECRET": SECRET,
           "GATING_DB": str(tmp_path / "jobs.db"), "GITHUB_API_URL": github.api_url,
           "GATING_AUDIT_KEY_PATH": str(tmp_path / "audit.pem")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def test_serve_check_names_what_a_handler_cannot_do_without_a_permission(github, app_env, capsys):
    github.installation_permissions.pop("members")
    assert main(["app", "serve", "--check"]) == 0
    out = capsys.readouterr().out
    assert "    cannot check team membership for `requires.teams` (needs members: read)" in out


def test_serve_check_refuses_a_key_github_does_not_accept(app_env, monkeypatch, capsys):
    monkeypatch.setenv("PRIVATE_KEY", generate_key_pair()[0])
    assert main(["app", "serve", "--check"]) == 2
    err = capsys.readouterr().err
    assert "GitHub refused the App's JWT" in err and "401" in err
    assert "APP_ID and the private key do not belong together" in err


def test_serve_check_refuses_a_missing_audit_key(app_env, monkeypatch, capsys):
    monkeypatch.delenv("GATING_AUDIT_KEY_PATH")
    monkeypatch.delenv("GATING_NO_AUDIT", raising=False)
    assert main(["app", "serve", "--check"]) == 2
    err = capsys.readouterr().err
    assert "no audit signing key: set GATING_AUDIT_KEY_PATH or GATING_AUDIT_KEY" in err
    assert "gating.server.handlers.merge_audit" in err


def test_serve_refuses_to_start_without_an_audit_key(app_env, monkeypatch, capsys):
    """Merges must not go unaudited by omission: no key and no explicit opt-out is no App."""
    execs: list[list[str]] = []
    monkeypatch.setattr("os.execv", lambda _exe, argv: execs.append(argv))
    monkeypatch.delenv("GATING_AUDIT_KEY_PATH")
    monkeypatch.delenv("GATING_NO_AUDIT", raising=False)
    assert main(["app", "serve"]) == 2
    err = capsys.readouterr().err
    assert "gating: error: the App cannot start: no audit signing key: set GATING_AUDIT_KEY_PATH or " \
           "GATING_AUDIT_KEY (`gating keygen`); gating.server.handlers.merge_audit, " in err
    assert "To run without an audit trail, set GATING_NO_AUDIT=1 (`gating app serve --no-audit`)" in err
    assert execs == []


def test_create_app_refuses_to_start_without_an_audit_key(app_env, monkeypatch):
    from gating.server import create_app
    from gating.server.settings import SettingsError

    monkeypatch.delenv("GATING_AUDIT_KEY_PATH")
    monkeypatch.delenv("GATING_NO_AUDIT", raising=False)
    with pytest.raises(SettingsError, match="no audit signing key: set GATING_AUDIT_KEY_PATH or GATING_AUDIT_KEY"):
        create_app()
    with pytest.raises(SettingsError, match="GATING_NO_AUDIT: expected bool, got 'perhaps'"):
        create_app({"GATING_NO_AUDIT": "perhaps"})


def test_serve_starts_without_an_audit_key_when_told_to(app_env, monkeypatch, capsys):
    monkeypatch.delenv("GATING_AUDIT_KEY_PATH")
    monkeypatch.delenv("GATING_NO_AUDIT", raising=False)
    assert main(["app", "serve", "--no-audit", "--check"]) == 0
    assert "GATING_NO_AUDIT=True" in capsys.readouterr().out.splitlines()


def test_serve_check_passes_without_an_audit_key_when_no_handler_signs(app_env, monkeypatch, capsys):
    monkeypatch.delenv("GATING_AUDIT_KEY_PATH")
    monkeypatch.delenv("GATING_NO_AUDIT", raising=False)
    monkeypatch.setenv("GATING_HANDLERS", "gating.server.handlers.approvals")
    assert main(["app", "serve", "--check"]) == 0


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: p.write_text("not a database, " * 100)],
                         ids=["folder-in-the-way", "not-sqlite"])
def test_serve_check_refuses_a_job_queue_it_cannot_write(app_env, tmp_path, monkeypatch, capsys, make):
    db = tmp_path / "queue.db"
    make(db)
    monkeypatch.setenv("GATING_DB", str(db))
    assert main(["app", "serve", "--check"]) == 2
    assert f"GATING_DB: the job queue {db} is not writable" in capsys.readouterr().err
