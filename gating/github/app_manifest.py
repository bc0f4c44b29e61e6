"""GitHub's App manifest flow ("Registering a GitHub App from a manifest"): the manifest, where to post
it, and the exchange of the returned code for the App's credentials. Works for GitHub Enterprise
Server (GITHUB_URL https://HOST, API at https://HOST/api/v3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from gating.github.basics import GitHubError

GITHUB_URL = "https://github.com"
ACTIONS_APP_ID = 15368  # GitHub Actions' App id on github.com (the source of `gating / eval`)


def api_url_for(github_url: str) -> str:
    """github.com's API lives on api.github.com; GitHub Enterprise Server's under /api/v3."""
    base = github_url.rstrip("/")
    return "https://api.github.com" if base in (GITHUB_URL, "https://www.github.com") else base + "/api/v3"


def new_app_url(github_url: str, state: str, org: str | None = None) -> str:
    """Where the form posts the manifest: the user's or the organization's new-app page."""
    base = github_url.rstrip("/")
    where = f"/organizations/{quote(org, safe='')}" if org else ""
    return f"{base}{where}/settings/apps/new?{urlencode({'state': state})}"


def build_manifest(app_yml: dict[str, Any], redirect_url: str, public_url: str | None = None,
                   name: str | None = None, webhook_path: str = "/webhooks") -> dict[str, Any]:
    """The manifest from app/app.yml: its permissions and events, the App's public URL (webhooks go to
    PUBLIC_URL + webhook_path) and the local page GitHub sends the browser back to. Without a public
    URL the webhook is registered inactive: set it in the App's settings once the App is reachable."""
    m: dict[str, Any] = {
        "name": name or app_yml.get("name", "gating"),
        "description": str(app_yml.get("description", "")).strip(),
        "public": bool(app_yml.get("public", False)),
        "default_permissions": dict(app_yml.get("default_permissions") or {}),
        "default_events": list(app_yml.get("default_events") or []),
        "redirect_url": redirect_url,
    }
    if public_url:
        base = public_url.rstrip("/")
        m["url"] = base
        m["hook_attributes"] = {"url": base + webhook_path, "active": True}
        m["callback_urls"] = [base + "/pages/callback"]  # sign-in to the App's pages (gating.server.pages)
    else:
        m["url"] = redirect_url.rsplit("/", 1)[0] or redirect_url
        m["hook_attributes"] = {"url": m["url"] + webhook_path, "active": False}
    return m


@dataclass(frozen=True)
class AppCredentials:
    """What the conversion returns once: the App's id, slug, key and webhook secret."""

    app_id: int
    slug: str
    name: str
    html_url: str
    pem: str = field(repr=False)
    webhook_secret: str = field(repr=False)
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    permissions: dict[str, str] = field(default_factory=dict)


def convert_code(api_url: str, code: str) -> AppCredentials:
    """POST /app-manifests/{code}/conversions (no authentication: the code is the credential). By path:
    PyGithub has no method for it. Single use: never tried twice (a second try would only get 404)."""
    from gating.github.client import GitHubClient, RetryPolicy  # PyGithub, only when a code is converted

    client = GitHubClient(api_url, None, RetryPolicy(retries=0), timeout=30)
    body = client.request("POST", f"/app-manifests/{quote(code, safe='')}/conversions")
    try:
        return AppCredentials(app_id=int(body["id"]), slug=body["slug"], name=body.get("name") or body["slug"],
                              html_url=body["html_url"], pem=body["pem"], webhook_secret=body.get("webhook_secret")
                              or "", client_id=body.get("client_id", ""), client_secret=body.get("client_secret", ""),
                              permissions=dict(body.get("permissions") or {}))
    except (KeyError, TypeError, ValueError) as e:
        raise GitHubError(0, f"the manifest conversion answered without {e}", "POST",
                          "/app-manifests/{code}/conversions") from None
