"""GitHub's OAuth web flow for a GitHub App's user-to-server tokens, as github.com serves it:
`GET /login/oauth/authorize` (the sign-in and authorize page), its redirect back with a ten-minute,
single-use `code`, and `POST /login/oauth/access_token`, which trades the code (with the App's client
id and secret) for a `ghu_` token that expires in eight hours. Errors at the token endpoint are
HTTP 200 with an `error` field, as on GitHub. The token then works on the REST API as the user:
`GET /user`, and `GET /repos/{owner}/{repo}` (404 without access; `permissions` with it)."""

from __future__ import annotations

import html
import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from werkzeug.wrappers import Request, Response

from gating.testing.emulator_auth import Token, new_token_value

if TYPE_CHECKING:
    from gating.testing.github_emulator import Emulator

CODE_LIFETIME = 600  # GitHub: "codes expire after 10 minutes"
USER_TOKEN_LIFETIME = 28800  # eight hours
REFRESH_LIFETIME = 15811200  # six months
DOCS = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors"


@dataclass
class OAuthCode:
    login: str
    client_id: str
    redirect_uri: str
    created_at: float


def _page(title: str, body: str, status: int = 200) -> Response:
    doc = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
           f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>")
    return Response(doc, status=status, content_type="text/html; charset=utf-8")


def web_page(emu: Emulator, request: Request) -> Response | None:
    if request.path == "/login/oauth/authorize":
        return _authorize(emu, request)
    if request.path == "/login/oauth/access_token":
        return _access_token(emu, request)
    return None


def _authorize(emu: Emulator, request: Request) -> Response:
    values = request.values
    client_id, redirect_uri, state = values.get("client_id", ""), values.get("redirect_uri", ""), values.get("state", "")
    if client_id != emu.app.client_id:
        return _page("Not Found", "<p>No application with this client id.</p>", 404)
    if urlsplit(redirect_uri).scheme not in ("http", "https"):
        return _page("Redirect URI mismatch", "<p id='error'>The redirect_uri MUST match the registered callback "
                     "URL for this application.</p>", 400)
    if request.method != "POST":
        hidden = "".join(f"<input type='hidden' name='{k}' value='{html.escape(v)}'>"
                         for k, v in (("client_id", client_id), ("redirect_uri", redirect_uri), ("state", state)))
        body = (f"<p><strong id='app-name'>{html.escape(emu.app.name)}</strong> by {html.escape(emu.app_owner)} "
                "would like to verify your GitHub identity and act on your behalf.</p>"
                f"<form method='post' action='/login/oauth/authorize'>{hidden}"
                f"<label for='login'>Username</label> <input id='login' name='login' "
                f"value='{html.escape(values.get('login', ''))}' autocomplete='username'> "
                f"<button id='authorize' type='submit'>Authorize {html.escape(emu.app.name)}</button></form>")
        return _page(f"Authorize {emu.app.name}", body)
    login = values.get("login", "").strip()
    if not login or login.lower() not in emu.users:
        return _page("Incorrect username", "<p id='error'>Incorrect username or password.</p>", 401)
    code = secrets.token_hex(10)
    with emu.lock:
        emu.oauth_codes[code] = OAuthCode(emu.user_record(login).login, client_id, redirect_uri, emu.now())
    query = urlencode({"code": code, **({"state": state} if state else {})})
    sep = "&" if urlsplit(redirect_uri).query else "?"
    return Response(status=302, headers={"Location": f"{redirect_uri}{sep}{query}"})


def _access_token(emu: Emulator, request: Request) -> Response:
    if request.method != "POST":
        return Response("Not Found", status=404)
    values = dict(request.values)
    if request.is_json:
        values |= {k: str(v) for k, v in (request.get_json(silent=True) or {}).items()}
    if values.get("client_id") != emu.app.client_id or values.get("client_secret") != emu.app.client_secret:
        return _token_reply(request, {"error": "incorrect_client_credentials", "error_description":
                                      "The client_id and/or client_secret passed are incorrect.",
                                      "error_uri": f"{DOCS}#incorrect-client-credentials"})
    with emu.lock:
        grant = emu.oauth_codes.pop(values.get("code", ""), None)
    if grant is None or grant.created_at + CODE_LIFETIME <= emu.now() or grant.client_id != values["client_id"]:
        return _token_reply(request, {"error": "bad_verification_code", "error_description":
                                      "The code passed is incorrect or expired.",
                                      "error_uri": f"{DOCS}#bad-verification-code"})
    if values.get("redirect_uri") and values["redirect_uri"] != grant.redirect_uri:
        return _token_reply(request, {"error": "redirect_uri_mismatch", "error_description":
                                      "The redirect_uri MUST match the registered callback URL for this application.",
                                      "error_uri": f"{DOCS}#redirect-uri-mismatch"})
    now = emu.now()
    tok = Token(new_token_value("ghu_"), "user", now, now + USER_TOKEN_LIFETIME, {}, None, grant.login,
                emu.app.app_id)
    with emu.lock:
        emu.tokens[tok.value] = tok
    return _token_reply(request, {"access_token": tok.value, "expires_in": USER_TOKEN_LIFETIME,
                                  "refresh_token": new_token_value("ghr_"), "refresh_token_expires_in": REFRESH_LIFETIME,
                                  "scope": "", "token_type": "bearer"})


def _token_reply(request: Request, data: dict[str, object]) -> Response:
    """JSON when the client accepts it, else form-encoded (GitHub's default)."""
    if "application/json" in request.headers.get("Accept", ""):
        return Response(json.dumps(data), status=200, content_type="application/json; charset=utf-8")
    return Response(urlencode({k: str(v) for k, v in data.items()}), status=200,
                    content_type="application/x-www-form-urlencoded; charset=utf-8")
