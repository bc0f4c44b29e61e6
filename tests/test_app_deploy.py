"""What deploying the App relies on: the App manifest asks for every event and permission the
handlers need, and the Dockerfile's user, healthcheck and command work as written."""

from __future__ import annotations

import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
from app_support import ROOT, SECRET, Gunicorn, free_port, private_key_pem
from ruamel.yaml import YAML

import gating.server.handlers
from gating.server.handlers import load_registry
from gating.server.settings import documented
from gating.testing.webhooks import examples

MANIFEST = YAML(typ="safe").load((ROOT / "app" / "app.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
NEEDS = {"check_run": "checks", "pull_request": "pull_requests", "pull_request_review": "pull_requests",
         "issue_comment": "issues", "deployment_status": "deployments",
         "deployment_protection_rule": "deployments"}


def github_events_handled() -> set[str]:
    modules = [f"gating.server.handlers.{m.name}" for m in pkgutil.iter_modules(gating.server.handlers.__path__)]
    return {e for e in load_registry(modules).events() if e in examples()}  # not e.g. Alertmanager's


def test_manifest_subscribes_to_every_event_a_handler_handles():
    handled = github_events_handled()
    assert {"pull_request", "pull_request_review", "check_run", "issue_comment"} <= handled
    assert handled - {"installation"} <= set(MANIFEST["default_events"])  # GitHub sends `installation` to every App


@pytest.mark.parametrize("event", sorted(NEEDS))
def test_manifest_has_the_permission_each_event_needs(event):
    assert MANIFEST["default_permissions"].get(NEEDS[event]) in ("read", "write")
    assert MANIFEST["default_permissions"]["checks"] == "write"  # it posts `gating / approval`


def test_manifest_webhook_path_is_the_default_one():
    default_path = next(d for env, _, d in documented() if env == "WEBHOOK_PATH")
    assert MANIFEST["hook_attributes"]["url"].endswith(default_path)


def test_image_runs_as_a_non_root_user():
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")


def _exec_form(instruction: str) -> list[str]:
    """The JSON array of a HEALTHCHECK CMD or CMD line (continuation lines joined)."""
    text = DOCKERFILE.replace("\\\n", " ")
    line = next(x for x in text.splitlines() if x.startswith(instruction))
    return json.loads(line[line.index("CMD") + 3:].strip())


def test_healthcheck_passes_on_a_healthy_app_and_fails_without_one(tmp_path: Path):
    check = _exec_form("HEALTHCHECK")
    assert check[0] == "python" and "/healthz" in check[-1]
    env = {"APP_ID": "1", "PRIVATE_KEY": private_key_pem(), "WEBHOOK_SECRET": SECRET,
           "GATING_DB": tmp_path / "jobs.db", "LOG_LEVEL": "WARNING"}
    server = Gunicorn(env, workers=1).start()
    try:
        ok = subprocess.run([sys.executable, *check[1:]], env={**os.environ, "PORT": str(server.port)}, timeout=10)
    finally:
        server.stop()
    assert ok.returncode == 0
    down = subprocess.run([sys.executable, *check[1:]], env={**os.environ, "PORT": str(free_port())},
                          capture_output=True, timeout=10)
    assert down.returncode != 0


def test_image_command_is_a_valid_serve_command(github, tmp_path: Path):
    from gating.audit.keys import write_keypair

    cmd = _exec_form("CMD")
    assert cmd[:3] == ["gating", "app", "serve"]
    write_keypair(tmp_path / "audit.pem", tmp_path / "audit.pem.pub")
    env = {**os.environ, "APP_ID": str(github.app.app_id), "PRIVATE_KEY": github.app.private_key_pem,
           "WEBHOOK_SECRET": SECRET, "GATING_DB": str(tmp_path / "jobs.db"), "GITHUB_API_URL": github.api_url,
           "GATING_AUDIT_KEY_PATH": str(tmp_path / "audit.pem")}
    out = subprocess.run([sys.executable, "-m", "gating", *cmd[1:], "--check"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "WEBHOOK_SECRET=(set)" in out.stdout.splitlines()


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [env for env, _, _ in documented() if f"`{env}`" not in readme]
    assert not missing, f"add these settings to the settings table in README.md: {', '.join(missing)}"
