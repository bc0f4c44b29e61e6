"""`gating app register`: register the GitHub App through GitHub's manifest flow in one command.

A local page posts the manifest (permissions and events from app/app.yml) to GitHub; GitHub sends the
browser back to this page with a code (and the `state` this run made up, so a stray or forged
redirect is refused); the code is exchanged for the App's id, private key and webhook secret, which
are written with the audit signing key and a `.env` that `gating app serve` reads.
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import json
import os
import secrets
import threading
import webbrowser
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from gating import limits
from gating.audit import keys as keymod
from gating.commands.cli import UsageError
from gating.github.app_manifest import (
    ACTIONS_APP_ID,
    GITHUB_URL,
    AppCredentials,
    api_url_for,
    build_manifest,
    convert_code,
    new_app_url,
)
from gating.github.basics import GitHubError

CALLBACK = "/callback"
AUDIT_KEY_FILE = "gating-audit-key.pem"


def add_parser(app_sub: argparse._SubParsersAction) -> None:
    p = app_sub.add_parser("register", help="register the GitHub App from its manifest and write .env")
    p.add_argument("--org", help="register the App for this organization (default: your user account)")
    p.add_argument("--url", dest="public_url", help="where the App will be reachable (webhooks go to URL/webhooks); "
                   "without it the webhook is registered inactive")
    p.add_argument("--name", help="the App's name on GitHub (unique on the host; default: app.yml's name)")
    p.add_argument("--github-url", default=os.environ.get("GITHUB_URL", GITHUB_URL),
                   help="GitHub or GitHub Enterprise Server web URL (default: $GITHUB_URL or https://github.com)")
    p.add_argument("--dir", default=".", help="where to write .env and the keys (default: here)")
    p.add_argument("--port", type=int, default=0, help="local port of the registration page (default: any free)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for GitHub (default 900)")
    p.add_argument("--no-open", action="store_true", help="print the page's address; do not open a browser")
    p.add_argument("--force", action="store_true", help="replace an existing .env and keys")
    p.set_defaults(func=run)


def app_yml() -> dict[str, Any]:
    """The App's manifest as shipped with the package (app/app.yml)."""
    spec = importlib.util.find_spec("app")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("cannot find the App's package (app/app.yml); install gating with the App")
    path = Path(next(iter(spec.submodule_search_locations))) / "app.yml"
    return cast(dict[str, Any], limits.load_yaml(path.read_text(encoding="utf-8"), str(path)))


@dataclass
class Outcome:
    credentials: AppCredentials | None = None
    error: str | None = None


class _Flow:
    """The local page and the callback; `done` is set once the code was exchanged (or failed)."""

    def __init__(self, form_action: str, manifest: dict[str, Any], state: str, api_url: str):
        self.form_action, self.manifest, self.state, self.api_url = form_action, manifest, state, api_url
        self.done = threading.Event()
        self.outcome = Outcome()
        self.lock = threading.Lock()

    def page(self) -> str:
        perms = ", ".join(f"{k}: {v}" for k, v in self.manifest["default_permissions"].items())
        return _html("Register the gating GitHub App", (
            f"<p>This creates the GitHub App <strong>{html.escape(self.manifest['name'])}</strong> with "
            f"these permissions: {html.escape(perms)}; events: "
            f"{html.escape(', '.join(self.manifest['default_events']))}.</p>"
            f"<form method='post' action='{html.escape(self.form_action)}'>"
            f"<input type='hidden' name='manifest' value='{html.escape(json.dumps(self.manifest))}'>"
            "<button id='register' type='submit'>Register the GitHub App</button></form>"))

    def callback(self, query: dict[str, list[str]]) -> tuple[int, str]:
        state, code = (query.get("state") or [""])[0], (query.get("code") or [""])[0]
        if not secrets.compare_digest(state, self.state):
            return 400, _html("Wrong state", "<p>This answer does not belong to the registration started by "
                                             "`gating app register` (its state does not match); nothing was done.</p>")
        if not code:
            return 400, _html("No code", "<p>GitHub sent no code; nothing was done.</p>")
        with self.lock:
            if self.done.is_set():
                return 409, _html("Already registered", "<p>This registration is finished.</p>")
            try:
                self.outcome.credentials = convert_code(self.api_url, code)
            except GitHubError as e:
                self.outcome.error = f"exchanging GitHub's code for the App's credentials failed: {e}"
            self.done.set()
        if self.outcome.error:
            return 502, _html("Registration failed", f"<p id='error'>{html.escape(self.outcome.error)}</p>")
        c = self.outcome.credentials
        assert c is not None
        return 200, _html("The App is registered", (
            f"<p id='done'>Created <strong>{html.escape(c.name)}</strong> (App id {c.app_id}). "
            "Back in the terminal: what was written and what to do next.</p>"
            f"<p><a id='install' href='{html.escape(c.html_url)}/installations/new'>Install it on your "
            "repositories</a></p>"))


def _html(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1>{body}</body></html>")


def _server(flow: _Flow, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # the terminal shows what matters, not an access log
            pass

        def _send(self, status: int, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlsplit(self.path)
            if url.path == "/":
                self._send(200, flow.page())
            elif url.path == CALLBACK:
                self._send(*flow.callback(parse_qs(url.query)))
            else:
                self._send(404, _html("Not found", ""))

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def _targets(folder: Path) -> tuple[Path, Path, Path]:
    return folder / ".env", folder / "gating-app.private-key.pem", folder / AUDIT_KEY_FILE


def write_files(folder: Path, c: AppCredentials, api_url: str, force: bool,
                pages: tuple[str, str] | None = None) -> tuple[Path, Path, Path]:
    """The App's key (0600), the audit signing key (0600, with its .pub) and .env (0600: it holds the
    webhook secret)."""
    env_path, key_path, audit_path = _targets(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_secret(key_path, c.pem.encode(), force)
    keymod.write_keypair(audit_path, audit_path.with_name(audit_path.name + ".pub"), force=force)
    lines = [f"# written by `gating app register` for the GitHub App {c.name} ({c.html_url})",
             f"APP_ID={c.app_id}", f"WEBHOOK_SECRET={c.webhook_secret}", f"PRIVATE_KEY_PATH={key_path.resolve()}",
             f"GATING_AUDIT_KEY_PATH={audit_path.resolve()}", f"GITHUB_API_URL={api_url}"]
    if pages and c.client_id and c.client_secret:  # sign-in to the pages (README: Pages)
        lines += [f"GATING_PUBLIC_URL={pages[0]}", f"GITHUB_URL={pages[1]}", f"GITHUB_CLIENT_ID={c.client_id}",
                  f"GITHUB_CLIENT_SECRET={c.client_secret}"]
    _write_secret(env_path, ("\n".join(lines) + "\n").encode(), force)
    return env_path, key_path, audit_path


def _write_secret(path: Path, data: bytes, force: bool) -> None:
    if path.exists():
        if not force:
            raise UsageError(f"{path}: already exists (pass --force to replace it)")
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def next_steps(c: AppCredentials, github_url: str) -> list[str]:
    """The installation URL and the branch protection that makes both checks required, each pinned to
    the App that posts it, so no other App or workflow can satisfy it."""
    on_dotcom = api_url_for(github_url) == "https://api.github.com"
    actions = f"GitHub Actions (app_id {ACTIONS_APP_ID})" if on_dotcom else "GitHub Actions"
    return [
        f"1. Install the App on your repositories: {c.html_url}/installations/new",
        "2. Start it: gating app serve (it reads .env; `gating app serve --check` first)",
        "3. Protect the default branch (Settings > Rules > Rulesets, or Branches > Branch protection rules):",
        "   require a pull request before merging, and require these status checks, each from its source:",
        f"     gating / eval      from {actions}",
        f"     gating / approval  from {c.name} (app_id {c.app_id})",
        "   (REST: required_status_checks.checks = "
        f"[{{\"context\": \"gating / eval\", \"app_id\": {ACTIONS_APP_ID if on_dotcom else 'ACTIONS_APP_ID'}}}, "
        f"{{\"context\": \"gating / approval\", \"app_id\": {c.app_id}}}])",
    ]


def run(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if not args.force:
        for p in (*_targets(folder), _targets(folder)[2].with_name(AUDIT_KEY_FILE + ".pub")):
            if p.exists():
                raise UsageError(f"{p}: already exists (pass --force to replace it)")
    if args.public_url and urlsplit(args.public_url).scheme not in ("http", "https"):
        raise UsageError(f"--url must be an http(s) URL, got {args.public_url!r}")
    github_url = args.github_url.rstrip("/")
    if urlsplit(github_url).scheme not in ("http", "https"):
        raise UsageError(f"GITHUB_URL must be an http(s) URL, got {github_url!r}")
    api_url = os.environ.get("GITHUB_API_URL") or api_url_for(github_url)
    state = secrets.token_urlsafe(24)
    flow = _Flow(new_app_url(github_url, state, args.org), {}, state, api_url)
    try:
        server = _server(flow, args.port)
    except OSError as e:
        raise UsageError(f"cannot listen on 127.0.0.1:{args.port}: {e.strerror}") from None
    local = f"http://127.0.0.1:{server.server_address[1]}"
    flow.manifest = build_manifest(app_yml(), local + CALLBACK, args.public_url, args.name,
                                   os.environ.get("WEBHOOK_PATH", "/webhooks"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        print(f"open {local}/ and press \"Register the GitHub App\" (waiting for GitHub at {github_url})",
              flush=True)
        if not args.no_open:
            webbrowser.open(local + "/")
        if not flow.done.wait(args.timeout):
            raise UsageError(f"no answer from GitHub within {args.timeout:.0f} s; nothing was registered")
    finally:
        server.shutdown()
        server.server_close()
    if flow.outcome.error or flow.outcome.credentials is None:
        raise UsageError(flow.outcome.error or "no credentials")
    c = flow.outcome.credentials
    env_path, key_path, audit_path = write_files(folder, c, api_url, args.force,
                                                 (args.public_url.rstrip("/"), github_url) if args.public_url else None)
    print(f"registered the GitHub App {c.name} (id {c.app_id}): {c.html_url}")
    pages = ", GATING_PUBLIC_URL, GITHUB_URL, GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET" if args.public_url else ""
    print(f"wrote {env_path} (APP_ID, WEBHOOK_SECRET, PRIVATE_KEY_PATH, GATING_AUDIT_KEY_PATH, GITHUB_API_URL{pages}), "
          f"{key_path} (the App's private key) and {audit_path} (the audit signing key; commit its .pub "
          "to your repository as .gating/audit.pub); all mode 0600")
    if not args.public_url:
        print("the webhook is inactive: set its URL in the App's settings once the App is reachable "
              "(or register with --url)")
    print("next:")
    for line in next_steps(c, github_url):
        print(line)
    return 0
