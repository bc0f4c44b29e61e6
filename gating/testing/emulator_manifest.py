"""Registering a GitHub App from a manifest, as GitHub does it: the new-app page a form posts the
manifest to (it shows what the App asks for and a "Create" button), the redirect back with a
one-hour, single-use `code`, and `POST /app-manifests/{code}/conversions`, which hands out the App's
id, private key and webhook secret. The created App becomes the emulator's App (same installation,
with the permissions the manifest asks for), so its id and key pass the emulator's JWT checks."""

from __future__ import annotations

import html
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from werkzeug.wrappers import Request, Response

from gating.testing import emulator_render as render
from gating.testing.emulator_auth import AppIdentity, generate_key_pair
from gating.testing.emulator_http import ApiError, Ctx, Reply, handles

if TYPE_CHECKING:
    from gating.testing.github_emulator import Emulator

CODE_LIFETIME = 3600  # GitHub: "you must exchange the code within one hour"
NEW_APP_PATH = re.compile(r"^(?:/organizations/(?P<org>[A-Za-z0-9][A-Za-z0-9-]{0,38}))?/settings/apps/new"
                          r"(?P<create>/create)?$")
PERMISSIONS = {"actions", "administration", "checks", "contents", "deployments", "environments", "issues",
               "members", "metadata", "packages", "pages", "pull_requests", "repository_hooks",
               "repository_projects", "secret_scanning_alerts", "secrets", "security_events", "statuses",
               "vulnerability_alerts", "workflows", "organization_administration", "organization_hooks",
               "organization_projects", "emails"}
LEVELS = {"read", "write", "admin"}


@dataclass
class PendingApp:
    """An App created on the page whose credentials wait for the conversion call."""

    identity: AppIdentity
    manifest: dict[str, Any]
    owner: str
    created_at: float
    client_secret: str = field(default_factory=lambda: secrets.token_hex(20))


class ManifestProblem(ValueError):
    pass


def check_manifest(raw: str | None) -> dict[str, Any]:
    """GitHub's checks on a posted manifest; each failure names the field."""
    if not raw:
        raise ManifestProblem("no manifest was posted (a form field named `manifest` holding JSON)")
    try:
        m = json.loads(raw)
    except ValueError as e:
        raise ManifestProblem(f"the manifest is not JSON: {e}") from None
    if not isinstance(m, dict):
        raise ManifestProblem("the manifest must be a JSON object")
    for key in ("name", "url"):
        if not isinstance(m.get(key), str) or not m[key].strip():
            raise ManifestProblem(f"the manifest needs `{key}` (a string)")
    for key in ("url", "redirect_url"):
        if key in m and urlsplit(str(m[key])).scheme not in ("http", "https"):
            raise ManifestProblem(f"`{key}` must be an http(s) URL, got {m[key]!r}")
    hook = m.get("hook_attributes")
    if hook is not None and (not isinstance(hook, dict)
                             or urlsplit(str(hook.get("url", ""))).scheme not in ("http", "https")):
        raise ManifestProblem("`hook_attributes.url` must be an http(s) URL")
    perms = m.get("default_permissions", {})
    if not isinstance(perms, dict):
        raise ManifestProblem("`default_permissions` must be an object")
    for name, level in perms.items():
        if name not in PERMISSIONS:
            raise ManifestProblem(f"`default_permissions.{name}` is not a permission GitHub knows")
        if level not in LEVELS:
            raise ManifestProblem(f"`default_permissions.{name}` must be read, write or admin, got {level!r}")
    events = m.get("default_events", [])
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise ManifestProblem("`default_events` must be a list of event names")
    return m


def _page(title: str, body: str, status: int = 200) -> Response:
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
           f"<body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return Response(doc, status=status, content_type="text/html; charset=utf-8")


def web_page(emu: Emulator, request: Request) -> Response | None:
    """The new-app pages, or None for any other path."""
    if request.path == "/favicon.ico":  # every browser asks; GitHub's pages have one, the emulator none
        return Response(status=404)
    m = NEW_APP_PATH.match(request.path)
    if m is None:
        return None
    if request.method != "POST":
        return _page("Register new GitHub App", "<p>Post a manifest to this page to register an App.</p>")
    owner = m.group("org") or emu.app_owner
    state = request.args.get("state") or request.form.get("state") or ""
    try:
        manifest = check_manifest(request.form.get("manifest"))
    except ManifestProblem as e:
        return _page("Invalid GitHub App manifest", f"<p id='error'>{html.escape(str(e))}</p>", 422)
    if m.group("create"):
        return _create(emu, manifest, owner, state)
    return _new_app_form(request.path, manifest, owner, state)


def _new_app_form(path: str, manifest: dict[str, Any], owner: str, state: str) -> Response:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in sorted(manifest.get("default_permissions", {}).items()))
    events = ", ".join(html.escape(e) for e in manifest.get("default_events", []))
    hook = manifest.get("hook_attributes") or {}
    body = (f"<p>Name: <strong id='name'>{html.escape(manifest['name'])}</strong></p>"
            f"<p>Homepage: {html.escape(manifest['url'])}</p>"
            f"<p>Webhook: {html.escape(str(hook.get('url', '(none)')))} "
            f"({'active' if hook.get('active', True) and hook else 'inactive'})</p>"
            f"<table id='permissions'><tr><th>Permission</th><th>Access</th></tr>{rows}</table>"
            f"<p>Events: <span id='events'>{events}</span></p>"
            f"<form method='post' action='{html.escape(path)}/create'>"
            f"<input type='hidden' name='manifest' value='{html.escape(json.dumps(manifest))}'>"
            f"<input type='hidden' name='state' value='{html.escape(state)}'>"
            f"<button id='create' type='submit'>Create GitHub App for {html.escape(owner)}</button></form>")
    return _page(f"Create GitHub App for {owner}", body)


def _create(emu: Emulator, manifest: dict[str, Any], owner: str, state: str) -> Response:
    with emu.lock:
        private, public = generate_key_pair()
        app_id = emu.app.app_id + emu.ids()  # a new, larger id than any App before
        slug = re.sub(r"[^a-z0-9]+", "-", manifest["name"].lower()).strip("-") or f"app-{app_id}"
        identity = AppIdentity(app_id=app_id, slug=slug, private_key_pem=private, public_key_pem=public,
                               installation_id=emu.app.installation_id, webhook_secret=secrets.token_hex(20),
                               client_id=f"Iv1.{secrets.token_hex(8)}", name=manifest["name"])
        emu.app = identity
        emu.installation_permissions = {"metadata": "read", **manifest.get("default_permissions", {})}
        bot = emu.add_user(identity.bot_login, type="Bot")
        bot.email = f"{app_id}+{identity.bot_login}@users.noreply.example.invalid"
        code = secrets.token_hex(10)
        emu.manifest_codes[code] = PendingApp(identity, manifest, owner, emu.now(), identity.client_secret)
    target = manifest.get("redirect_url")
    if not target:
        return _page(f"{manifest['name']} was created", f"<p>App id {app_id}.</p>", 201)
    query = {"code": code} | ({"state": state} if state else {})
    sep = "&" if urlsplit(target).query else "?"
    return Response(status=302, headers={"Location": f"{target}{sep}{urlencode(query)}"})


@handles("apps/create-from-manifest")
def create_from_manifest(ctx: Ctx) -> Reply:
    emu = ctx.emu
    pending = emu.manifest_codes.pop(ctx.params["code"], None)
    if pending is None or pending.created_at + CODE_LIFETIME <= emu.now():
        raise ApiError(404, "Not Found")
    a = pending.identity
    data = render.app(emu)
    data |= {"id": a.app_id, "slug": a.slug, "name": a.name, "client_id": a.client_id,
             "owner": render.user(emu, pending.owner), "html_url": f"{emu.web_url}/apps/{a.slug}",
             "external_url": pending.manifest["url"], "description": pending.manifest.get("description") or "",
             "permissions": {"metadata": "read", **pending.manifest.get("default_permissions", {})},
             "events": list(pending.manifest.get("default_events", [])),
             "client_secret": pending.client_secret, "webhook_secret": a.webhook_secret, "pem": a.private_key_pem}
    return Reply(201, data)
