"""The App's pages behind GitHub sign-in: /pages/<owner>/<repo>/... serves gating.pages.Site for a
repository the signed-in user can read, and nothing else.

Sign-in is GitHub's OAuth web flow with the App's client id and secret (a user-to-server token).
Access is GitHub's own answer: `GET /repos/{owner}/{repo}` with the user's token, which is 404 for a
repository they cannot see; a repository they cannot read, or where the App is not installed, is the
same 404, so a page never tells whether a private repository exists. The token stays on the server
(encrypted in the sessions table; the cookie holds a random session id), and no page renders a
token, key or secret: the pages show what the notes say.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import httpx
from cryptography.fernet import Fernet, InvalidToken

from gating.audit import log as audit_log
from gating.audit.keys import KeyError_, keyid
from gating.audit.verify import verify_log
from gating.audit.witness import WITNESS_CHECK, AppPin, cross_check, parse_run
from gating.git.notes import EVALS_REF
from gating.github import ApiRevision, GitDatabaseNotes, GitHubError, Repo, token_client
from gating.pages.index import WITNESS_DEPTH, Index
from gating.pages.render import render
from gating.pages.site import Page, Site
from gating.pages.source import Source
from gating.pages.wsgi import SECURITY_HEADERS
from gating.server.links import PREFIX, report_url  # noqa: F401  (report_url: the check runs' link)

if TYPE_CHECKING:
    from flask import Blueprint, Flask

    from gating.server import AppState
    from gating.server.settings import Settings

log = logging.getLogger("gating.app.pages")
SESSION_SECONDS = 8 * 3600  # a user-to-server token's lifetime
ACCESS_SECONDS = 60  # how long GitHub's answer about a user's access to a repository is reused
MAX_REMEMBERED = 10_000  # access answers kept in memory before they are all forgotten
_OWNER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def _derive(settings: Settings, label: bytes) -> bytes:
    return hmac.new(settings.webhook_secret.encode(), b"gating pages " + label, hashlib.sha256).digest()


class Sessions:
    """Signed-in users, server-side: sha256(session id) -> login, encrypted token, expiry."""

    def __init__(self, path: Path, key: bytes):
        self.path, self.fernet = path, Fernet(base64.urlsafe_b64encode(key))
        self._local = threading.local()
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, login TEXT, token BLOB, expires REAL)")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, timeout=30)
        return db

    @staticmethod
    def _id(sid: str) -> str:
        return hashlib.sha256(sid.encode()).hexdigest()

    def create(self, login: str, token: str, seconds: float) -> str:
        sid = secrets.token_urlsafe(32)
        with self._db() as db:
            db.execute("DELETE FROM sessions WHERE expires < ?", (time.time(),))
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)",
                       (self._id(sid), login, self.fernet.encrypt(token.encode()), time.time() + seconds))
        return sid

    def get(self, sid: str | None) -> tuple[str, str] | None:
        if not sid:
            return None
        row = self._db().execute("SELECT login, token, expires FROM sessions WHERE id = ?", (self._id(sid),)).fetchone()
        if row is None or row[2] < time.time():
            return None
        try:
            return row[0], self.fernet.decrypt(row[1]).decode()
        except InvalidToken:
            return None

    def drop(self, sid: str | None) -> None:
        if sid:
            with self._db() as db:
                db.execute("DELETE FROM sessions WHERE id = ?", (self._id(sid),))


class Pages:
    def __init__(self, state: AppState):
        self.state, self.settings = state, state.settings
        self.dir = Path(self.settings.pages_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sessions = Sessions(self.dir / "sessions.sqlite3", _derive(self.settings, b"tokens"))
        self._indexes: dict[str, Index] = {}
        self._access: dict[tuple[str, str], tuple[float, bool]] = {}
        self._lock = threading.Lock()
        self.public = self.settings.public_url.rstrip("/")

    # -- GitHub --------------------------------------------------------------------------------------

    def can_read(self, token: str, full_name: str) -> bool:
        """GitHub's own answer, as the user: 404 (or no `pull`) means no."""
        key = (hashlib.sha256(token.encode()).hexdigest(), full_name.lower())
        hit = self._access.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        try:
            data = token_client(self.settings.github_api_url, token).get(f"/repos/{full_name}")
            ok = bool((data.get("permissions") or {}).get("pull"))
        except GitHubError as e:
            if e.status == 401:
                raise
            ok = False
        if len(self._access) >= MAX_REMEMBERED:
            self._access.clear()
        self._access[key] = (time.monotonic() + ACCESS_SECONDS, ok)
        return ok

    def repo(self, full_name: str) -> Repo | None:
        try:
            inst = self.state.github.app_client().get(f"/repos/{full_name}/installation")["id"]
        except GitHubError:
            return None
        return Repo(self.state.github.installation(int(inst)), full_name)

    def source(self, repo: Repo) -> Source:
        s = self.settings
        audit, evals = GitDatabaseNotes(repo), GitDatabaseNotes(repo, EVALS_REF)
        keys, where = {}, "no trusted key (GATING_AUDIT_KEY is not set)"
        try:
            pub = s.audit_key().public_key()
            keys, where = {keyid(pub): pub}, f"the App's audit key {keyid(pub)[:16]}"
        except KeyError_:
            pass

        def verify(k: dict[str, Any]) -> Any:
            tip = audit.tip()
            return verify_log(audit.all_notes(tip) if tip else {}, k, keep=True)

        def witnesses(entries: Any) -> Any:
            runs = []
            for commit in dict.fromkeys(e.commit for e in list(entries)[-WITNESS_DEPTH:]):
                runs += [parse_run(r) for r in repo.check_runs(commit, WITNESS_CHECK)]
            return cross_check(runs, entries, AppPin(str(s.app_id), "this App"))

        def resolve(rev: str) -> str | None:
            try:
                return str(repo.client.get(f"{repo.path}/commits/{rev}")["sha"])
            except GitHubError:
                return None

        return Source(name=repo.full_name, audit=audit, evals=evals, verify=verify,
                      revision=lambda c: ApiRevision(repo, c, self.state.blobs),
                      note=lambda c: audit_log.read_note(evals, c), keys=keys, key_source=where,
                      witnesses=witnesses, web_url=f"{s.github_url.rstrip('/')}/{repo.full_name}", resolve=resolve)

    def index(self, full_name: str) -> Index:
        with self._lock:
            if full_name not in self._indexes:
                safe = full_name.lower().replace("/", "__")
                self._indexes[full_name] = Index(str(self.dir / f"{safe}.sqlite3"))
            return self._indexes[full_name]


def not_found(signed_in: str | None = None) -> Page:
    """The one answer for a repository that does not exist, cannot be read, or lacks the App."""
    return Page(404, _plain_page("Not found", "There is no page here, or you cannot see it.", signed_in))


def _plain_page(title: str, message: str, signed_in: str | None) -> str:
    class _Bare:
        prefix = PREFIX

        def url(self, path: str = "", **q: Any) -> str:
            return f"{PREFIX}/"

        def __init__(self) -> None:
            self.signed_in, self.sign_out = signed_in, f"{PREFIX}/logout" if signed_in else None

    return render("message.html", site=_Bare(), repo="gating", title=title, message=message)


def blueprint(state: AppState) -> Blueprint:
    from flask import Blueprint, Response, redirect, request, session

    pages = Pages(state)
    s = state.settings
    bp = Blueprint("pages", __name__)
    callback = f"{pages.public}{PREFIX}/callback"

    def reply(page: Page) -> Response:
        return Response(page.html, status=page.status, headers={"Content-Type": "text/html; charset=utf-8",
                                                                **SECURITY_HEADERS, **page.headers})

    @bp.get(f"{PREFIX}/login")
    def login() -> Any:
        nxt = request.args.get("next", "")
        session["next"] = nxt if nxt.startswith(f"{PREFIX}/") and "//" not in nxt else f"{PREFIX}/"
        session["oauth_state"] = secrets.token_urlsafe(24)
        q = urlencode({"client_id": s.oauth_client_id, "redirect_uri": callback, "state": session["oauth_state"]})
        return redirect(f"{s.github_url.rstrip('/')}/login/oauth/authorize?{q}")

    @bp.get(f"{PREFIX}/callback")
    def oauth_callback() -> Any:
        expected = session.pop("oauth_state", None)
        got = request.args.get("state", "")
        if not expected or not hmac.compare_digest(expected, got) or not request.args.get("code"):
            return reply(Page(400, _plain_page("Sign-in failed", "The sign-in did not come back from the page that "
                                               "started it (state mismatch); start again.", None)))
        try:
            r = httpx.post(f"{s.github_url.rstrip('/')}/login/oauth/access_token", timeout=30,
                           headers={"Accept": "application/json"},
                           data={"client_id": s.oauth_client_id, "client_secret": s.oauth_client_secret,
                                 "code": request.args["code"], "redirect_uri": callback})
            data = r.json()
        except (httpx.HTTPError, json.JSONDecodeError):
            data = {"error": "GitHub did not answer the token request"}
        token = data.get("access_token") if isinstance(data, dict) else None
        if not token:
            why = str(data.get("error_description") or data.get("error") or "no token") if isinstance(data, dict) else ""
            return reply(Page(403, _plain_page("Sign-in failed", f"GitHub refused the sign-in: {why}", None)))
        try:
            user = token_client(s.github_api_url, token).get("/user")
        except GitHubError as e:
            return reply(Page(403, _plain_page("Sign-in failed", f"GitHub did not say who signed in ({e.status})", None)))
        seconds = min(float(data.get("expires_in") or SESSION_SECONDS), SESSION_SECONDS)
        pages.sessions.drop(session.get("sid"))
        session["sid"] = pages.sessions.create(str(user["login"]), token, seconds)
        return redirect(session.pop("next", f"{PREFIX}/"))

    @bp.get(f"{PREFIX}/logout")
    def logout() -> Any:
        pages.sessions.drop(session.pop("sid", None))
        session.clear()
        return reply(Page(200, _plain_page("Signed out", "You are signed out.", None)))

    @bp.get(f"{PREFIX}/")
    def home() -> Any:
        who = pages.sessions.get(session.get("sid"))
        if who is None:
            return redirect(f"{PREFIX}/login?next={quote(PREFIX + '/')}")
        return reply(Page(200, _plain_page("gating", "Open a repository's pages at /pages/OWNER/NAME/, or follow "
                                           "the Details link of a gating check run.", who[0])))

    @bp.get(f"{PREFIX}/<owner>/<name>/")
    @bp.get(f"{PREFIX}/<owner>/<name>/<path:rest>")
    def repository(owner: str, name: str, rest: str = "") -> Any:
        full = f"{owner}/{name}"
        if not _OWNER.match(owner) or not _NAME.match(name) or name in (".", ".."):
            return reply(not_found())
        who = pages.sessions.get(session.get("sid"))
        here = request.full_path.rstrip("?")
        if who is None:
            return redirect(f"{PREFIX}/login?{urlencode({'next': here})}")
        login, token = who
        try:
            allowed = pages.can_read(token, full)
        except GitHubError:  # the token expired or was revoked: sign in again
            pages.sessions.drop(session.pop("sid", None))
            return redirect(f"{PREFIX}/login?{urlencode({'next': here})}")
        repo = pages.repo(full) if allowed else None
        if repo is None:
            return reply(not_found(login))
        site = Site(pages.source(repo), pages.index(repo.full_name), f"{PREFIX}/{repo.full_name}", signed_in=login,
                    sign_out=f"{PREFIX}/logout")
        try:
            return reply(site.handle(rest, {k: v for k, v in request.args.items()}))
        except GitHubError as e:  # GitHub failed the App's reads: say so, as a page
            log.warning("pages of %s: %s", full, e)
            return reply(Page(502, _plain_page("GitHub did not answer", f"Reading {full} from GitHub failed "
                                               f"(HTTP {e.status}); try again in a moment.", login)))

    return bp


def install(app: Flask, state: AppState) -> None:
    """Register the pages when the App knows its public URL (GATING_PUBLIC_URL)."""
    if not state.settings.public_url:
        return
    app.secret_key = _derive(state.settings, b"session")
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=state.settings.public_url.startswith("https://"),
                      PERMANENT_SESSION_LIFETIME=SESSION_SECONDS)
    app.register_blueprint(blueprint(state))
