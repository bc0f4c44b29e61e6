"""The demo's road on a running emulator, the App serving its pages beside it, and signing in to
them through the emulator's OAuth pages: what the pages tests (httpx and the browser) share."""

from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
from app_support import free_port
from werkzeug.serving import make_server

from gating.audit import keys
from gating.git.repository import Git


@dataclass
class Road:
    state: Any  # gating.commands.demo.DemoState
    app_url: str
    clone: Git  # a clone with every gating note
    pub: Path  # the App's audit public key
    reports: list[dict[str, Any]]  # the JSON reports of the check runs, in order

    @property
    def emu(self) -> Any:
        return self.state.emu


@contextlib.contextmanager
def road(work: Path) -> Iterator[Road]:
    """Run `gating demo`'s steps on an emulator that stays up, then the App with pages on top."""
    from gating.commands.demo import check_step, emulated_github, road_step
    from gating.server import create_app

    with emulated_github(work / "github") as state:
        with contextlib.redirect_stdout(io.StringIO()):  # the demo's story; the tests read the state
            check_step(state)
            road_step(state)
        emu = state.emu
        for login in ("mallory", "rita"):
            emu.add_user(login)
        emu.add_collaborator(state.repo, "rita", "read")
        emu.repo_record(state.repo).private = True  # so that GitHub says 404 to those without access
        clone = Git(work / "support-bot")
        clone.run("remote", "set-url", "origin", state.repo.authed_url(state.token))
        clone.run("fetch", "-q", "origin", "+refs/notes/gating/*:refs/notes/gating/*")
        clone.run("remote", "set-url", "origin", state.repo.clone_url)
        pub = work / "audit.pub"
        pub.write_bytes(keys.public_pem(state.audit_key))
        reports = [json.loads(p.read_text()) for p in sorted((work / "github").glob("report-*.json"))]
        port = free_port()
        app = create_app({
            "APP_ID": emu.app.app_id, "PRIVATE_KEY": emu.app.private_key_pem, "WEBHOOK_SECRET": emu.app.webhook_secret,
            "GITHUB_API_URL": emu.api_url, "GITHUB_URL": emu.web_url, "GATING_DB": str(work / "pages-app.sqlite3"),
            "GATING_JOB_THREADS": 0, "GATING_AUDIT_KEY": keys.private_pem(state.audit_key).decode(),
            "GATING_PUBLIC_URL": f"http://127.0.0.1:{port}", "GITHUB_CLIENT_ID": emu.app.client_id,
            "GITHUB_CLIENT_SECRET": emu.app.client_secret, "GATING_PAGES_DIR": str(work / "pages"),
            "GATING_HANDLERS": "gating.server.handlers.approvals", "LOG_LEVEL": "WARNING"})
        server = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield Road(state, f"http://127.0.0.1:{port}", clone, pub, reports)
        finally:
            server.shutdown()
            thread.join(5)
            app.extensions["gating"].worker.stop()


def sign_in(r: Road, login: str, path: str = "/pages/acme/support-bot/") -> tuple[httpx.Client, httpx.Response]:
    """A client that signed in as `login` through the emulator's authorize page; the page at `path`."""
    c = httpx.Client(base_url=r.app_url, timeout=60)
    resp = c.get(path)
    assert resp.status_code == 302, resp.text
    if urlsplit(resp.headers["Location"]).path == "/pages/login":
        resp = c.get(resp.headers["Location"])  # /pages/login -> GitHub's authorize page
        assert resp.status_code == 302
    authorize = urlsplit(resp.headers["Location"])
    assert authorize.path == "/login/oauth/authorize"
    q = {k: v[0] for k, v in parse_qs(authorize.query).items()}
    back = httpx.post(urljoin(r.emu.web_url, "/login/oauth/authorize"), data={**q, "login": login})
    assert back.status_code == 302, back.text
    resp = c.get(back.headers["Location"])  # the callback
    assert resp.status_code == 302, resp.text
    return c, c.get(resp.headers["Location"])
