"""The HTTP side of GitHub: App authentication and a client that retries.

App authentication is a short RS256 JWT, installation tokens cached until shortly before they expire
and one refresh on 401; the client retries 5xx, transport errors and rate limits with backoff and
hands a long Retry-After back as `RateLimited` for the job queue. Secrets never reach a log line or
a repr.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gating import limits
from gating.errors import GatingError, ServiceError

log = logging.getLogger("gating.github")

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
TOKEN_REFRESH_MARGIN = 120.0  # seconds before expires_at when a cached token is renewed
JWT_BACKDATE = 60  # iat this far in the past absorbs clock drift between us and GitHub
JWT_LIFETIME = 540  # exp 9 minutes from now: GitHub refuses more than 10
# What GitHub answers (401) to an App JWT when our clock and GitHub's disagree: retried on GitHub's time.
CLOCK_SKEW_MESSAGES = ("'Expiration time' claim ('exp') is too far in the future",
                       "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
                       "'Expiration time' claim ('exp') must be a numeric value representing the future time")


class GitHubError(ServiceError):
    """GitHub answered with an error (or could not be reached: status 0)."""

    def __init__(self, status: int, message: str, method: str = "", path: str = "",
                 headers: Mapping[str, str] | None = None):
        self.status, self.method, self.path = status, method, path
        self.message = message
        self.headers: Mapping[str, str] = headers or {}
        where = f" ({method} {path})" if method else ""
        super().__init__(f"GitHub {status or 'unreachable'}{where}: {message}")


class NotFound(GitHubError):
    pass


class EmptyRepository(GitHubError):
    """The repository has no commit yet: GitHub answers 409 "Git Repository is empty." (404 "This
    repository is empty." for contents) to anything that needs one."""


EMPTY_MESSAGES = ("Git Repository is empty.", "This repository is empty.")


class MissingPermission(GitHubError):
    """403 "Resource not accessible by integration": the installation lacks a permission; `accepted`
    lists what GitHub would take (X-Accepted-GitHub-Permissions), e.g. ["members=read"]."""

    @property
    def accepted(self) -> list[str]:
        value = self.headers.get("x-accepted-github-permissions") or ""
        return [p.strip() for p in value.replace(",", ";").split(";") if p.strip()]


class RateLimited(GitHubError):
    """Still limited after the client's own retries; `retry_after` says when to try again."""

    def __init__(self, status: int, message: str, retry_after: float, method: str = "", path: str = ""):
        super().__init__(status, message, method, path)
        self.retry_after = retry_after


# -- App authentication ---------------------------------------------------------------------------


class PrivateKeyError(GatingError):
    """The App's private key is missing or unusable (the message never contains the key)."""


def load_private_key(path: str | None = None, value: str | None = None) -> str:
    """The PEM text of the App's RSA key, from a file or an environment value; a value may have its
    newlines escaped as `\\n` or be base64-encoded, as Probot accepts."""
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise PrivateKeyError(f"cannot read the private key file {path}: {e.strerror}") from None
        where = f"the private key file {path}"
    elif value:
        text = value.replace("\\n", "\n").strip()
        if "-----BEGIN" not in text:
            try:
                text = base64.b64decode(text, validate=True).decode("utf-8")
            except ValueError:
                raise PrivateKeyError("PRIVATE_KEY is neither PEM text nor base64-encoded PEM") from None
        where = "PRIVATE_KEY"
    else:
        raise PrivateKeyError("no private key: set PRIVATE_KEY_PATH (a .pem file) or PRIVATE_KEY")
    try:
        key = load_pem_private_key(text.encode("utf-8"), password=None)
    except (ValueError, TypeError):
        raise PrivateKeyError(f"{where} does not hold a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PrivateKeyError(f"{where} is not an RSA key; GitHub Apps sign with RS256")
    return text


def app_jwt(app_id: str | int, private_key: str, now: float) -> str:
    """The JWT that authenticates as the App itself (to mint installation tokens)."""
    iat = int(now) - JWT_BACKDATE
    return jwt.encode({"iat": iat, "exp": int(now) + JWT_LIFETIME, "iss": str(app_id)}, private_key, algorithm="RS256")


def _parse_time(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Token:
    token: str = field(repr=False)
    expires_at: float


# -- the HTTP client ------------------------------------------------------------------------------


@dataclass
class RetryPolicy:
    retries: int = 3  # extra attempts after the first, for 5xx, transport errors and rate limits
    backoff: float = 0.5  # seconds; doubles each attempt
    backoff_cap: float = 8.0
    max_wait: float = 30.0  # a longer Retry-After is handed back as RateLimited for the job queue
    secondary_wait: float = 60.0  # GitHub's advice when a secondary limit gives no Retry-After
    # With a budget (the Action: no job queue to hand a wait back to), rate limits are waited out in
    # place, as long as GitHub asks but at most this many seconds per client in all, then one last try.
    wait_budget: float | None = None


class GitHubClient:
    """Authenticated REST calls with retries; `auth(force)` returns the Authorization header value."""

    def __init__(self, base_url: str, auth: Callable[[bool], str] | None, http: httpx.Client,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, refreshable: bool = False,
                 on_401: Callable[[httpx.Response], bool] | None = None):
        self.base_url = base_url.rstrip("/")
        self.on_401 = on_401  # True: the credentials changed, try once more
        self.auth, self.http, self.retry = auth, http, retry or RetryPolicy()
        self.sleep, self.clock, self.refreshable = sleep, clock, refreshable
        self.waited = 0.0  # seconds slept for rate limits under retry.wait_budget

    def __repr__(self) -> str:
        return f"GitHubClient({self.base_url!r})"

    def _wait_for(self, resp: httpx.Response, attempt: int) -> tuple[float, bool] | None:
        """(seconds, is_rate_limit) when the response is worth retrying, else None."""
        code = resp.status_code
        after = resp.headers.get("retry-after")
        backoff = min(self.retry.backoff * 2**attempt, self.retry.backoff_cap)
        if code >= 500:
            return (float(after) if after and after.isdigit() else backoff), False
        if code not in (403, 429):
            return None
        if after and after.isdigit():
            return float(after), True
        if resp.headers.get("x-ratelimit-remaining") == "0" and resp.headers.get("x-ratelimit-reset", "").isdigit():
            return max(0.0, float(resp.headers["x-ratelimit-reset"]) - self.clock()) + 1.0, True
        if code == 429 or "secondary rate limit" in resp.text.lower():
            return self.retry.secondary_wait, True
        return None

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
                accept: str = "application/vnd.github+json", retry_ambiguous: bool = True) -> httpx.Response:
        """One call with retries. `retry_ambiguous=False`: a 5xx or a dropped connection, after which
        GitHub may or may not have done the write, is raised at once (see `create`)."""
        url = path if path.startswith("http") else self.base_url + path
        refreshed = False
        attempt = 0
        while True:
            limits.check_budget(f"{method} {path}")  # a job's wall-clock and memory bound, at each call
            headers = {"Accept": accept, "X-GitHub-Api-Version": API_VERSION, "User-Agent": "gating-app"}
            if self.auth:
                headers["Authorization"] = self.auth(False)
            t0 = time.monotonic()
            try:
                resp = self.http.request(method, url, params=params, json=json, headers=headers)
            except httpx.TransportError as e:
                if attempt >= self.retry.retries or not retry_ambiguous:
                    raise GitHubError(0, f"{type(e).__name__}: {e}", method, path) from None
                self.sleep(min(self.retry.backoff * 2**attempt, self.retry.backoff_cap))
                attempt += 1
                continue
            log.debug("%s %s -> %d in %.0f ms", method, path, resp.status_code, (time.monotonic() - t0) * 1000)
            if resp.status_code == 401 and self.refreshable and not refreshed and self.auth:
                refreshed = True
                self.auth(True)
                continue
            if resp.status_code == 401 and self.on_401 and not refreshed and self.on_401(resp):
                refreshed = True
                continue
            wait = self._wait_for(resp, attempt)
            if wait is not None and not wait[1] and not retry_ambiguous:
                wait = None  # a 5xx: the caller looks for the object before it writes again
            if wait is not None and wait[1] and self.retry.wait_budget is not None:
                left = self.retry.wait_budget - self.waited
                if left > 0:
                    self.sleep(min(wait[0], left))
                    self.waited += min(wait[0], left)
                    continue
                raise RateLimited(resp.status_code, _message(resp), wait[0], method, path)
            if wait is not None:
                seconds, limited = wait
                # a long wait (a 5xx's Retry-After too) goes back to the job queue, not into a job thread's sleep
                if seconds > self.retry.max_wait or (limited and attempt >= self.retry.retries):
                    raise RateLimited(resp.status_code, _message(resp), seconds, method, path)
                if attempt < self.retry.retries:
                    self.sleep(seconds)
                    attempt += 1
                    continue
            if resp.status_code in (404, 409) and _message(resp) in EMPTY_MESSAGES:
                raise EmptyRepository(resp.status_code, _message(resp), method, path)
            if resp.status_code == 404:
                raise NotFound(404, _message(resp), method, path, resp.headers)
            if resp.status_code == 403 and "not accessible by integration" in resp.text:
                raise MissingPermission(403, _message(resp), method, path, resp.headers)
            if resp.status_code >= 400:
                raise GitHubError(resp.status_code, _message(resp), method, path, resp.headers)
            return resp

    def create(self, path: str, body: dict[str, Any], find: Callable[[], Any], method: str = "POST") -> Any:
        """POST (or a PATCH that appends, such as check-run annotations) that is safe to retry. A 5xx or a dropped connection may come after GitHub did the
        write, so before each new attempt `find()` looks for what the first one made (a check run by
        name, head SHA and external_id; a comment by its text; a pull request by its head branch; a
        ref by its name) and returns it instead of making a second one."""
        attempt = 0
        while True:
            try:
                return self.request(method, path, json=body, retry_ambiguous=False).json()
            except RateLimited:
                raise
            except GitHubError as e:
                if not (e.status == 0 or e.status >= 500) or attempt >= self.retry.retries:
                    raise
            self.sleep(min(self.retry.backoff * 2**attempt, self.retry.backoff_cap))
            attempt += 1
            found = find()
            if found is not None:
                log.info("%s %s: the earlier attempt had made it; not made again", method, path)
                return found

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None).json()

    def paginate(self, path: str, key: str | None = None, limit: int = 3000, **params: Any) -> Iterator[Any]:
        """Every item across pages (following Link: rel="next"), up to `limit`."""
        url: str | None = path
        query: dict[str, Any] | None = {"per_page": 100, **params}
        n = 0
        while url:
            resp = self.request("GET", url, params=query)
            body = resp.json()
            for item in body[key] if key else body:
                yield item
                n += 1
                if n >= limit:
                    return
            url, query = resp.links.get("next", {}).get("url"), None


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200] or resp.reason_phrase
    return str(body.get("message", body))[:500] if isinstance(body, dict) else str(body)[:200]


class GitHubApp:
    """The App's identity: mints and caches installation tokens, hands out clients per installation."""

    def __init__(self, app_id: str | int, private_key: str, base_url: str = DEFAULT_API_URL,
                 http: httpx.Client | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, retry: RetryPolicy | None = None):
        self.app_id = str(app_id)
        self._key = private_key
        self.base_url = base_url.rstrip("/")
        self.http = http or httpx.Client(timeout=httpx.Timeout(20.0, connect=5.0))
        self.clock, self.sleep, self.retry = clock, sleep, retry
        self.skew = 0.0  # GitHub's clock minus ours, learnt from a refused JWT's Date header
        self._tokens: dict[int, Token] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GitHubApp(app_id={self.app_id!r}, base_url={self.base_url!r})"

    def jwt(self) -> str:
        return app_jwt(self.app_id, self._key, self.clock() + self.skew)

    def _learn_skew(self, resp: httpx.Response) -> bool:
        """After a 401 that says our clock is off (a JWT "too far in the future", or "issued" later
        than GitHub's now): take GitHub's time from the Date header. True when the next JWT will
        differ, so the call is worth one more try."""
        message = _message(resp)
        if not any(m in message for m in CLOCK_SKEW_MESSAGES):
            return False
        try:
            server = parsedate_to_datetime(resp.headers.get("date", "")).timestamp()
        except (TypeError, ValueError):
            return False
        skew = server - self.clock()
        if abs(skew - self.skew) < 1:
            return False
        log.warning("the App JWT was refused (%s); this clock is %.0f s off GitHub's: using GitHub's time",
                    message, -skew)
        self.skew = skew
        return True

    def app_client(self) -> GitHubClient:
        return GitHubClient(self.base_url, lambda _force: f"Bearer {self.jwt()}", self.http, self.retry,
                            self.sleep, self.clock, on_401=self._learn_skew)

    def token(self, installation_id: int, force: bool = False) -> Token:
        """A cached installation token, renewed shortly before expires_at (or when forced after a 401)."""
        with self._lock:
            cached = self._tokens.get(installation_id)
            if cached and not force and cached.expires_at - TOKEN_REFRESH_MARGIN > self.clock():
                return cached
            body = self.app_client().request("POST", f"/app/installations/{installation_id}/access_tokens").json()
            tok = Token(body["token"], _parse_time(body["expires_at"]))
            self._tokens[installation_id] = tok
            log.info("installation %s: new token, expires %s", installation_id, body["expires_at"])
            return tok

    def forget(self, installation_id: int) -> None:
        """Drop the cached token: one minted before the installation accepted new permissions keeps
        the old ones until it expires."""
        with self._lock:
            self._tokens.pop(installation_id, None)

    def installation(self, installation_id: int) -> GitHubClient:
        def auth(force: bool) -> str:
            return f"token {self.token(installation_id, force).token}"
        return GitHubClient(self.base_url, auth, self.http, self.retry, self.sleep, self.clock, refreshable=True)


def token_client(api_url: str, token: str, http: httpx.Client | None = None,
                 retry: RetryPolicy | None = None) -> GitHubClient:
    """A client authenticated by a token (the workflow's GITHUB_TOKEN), with the usual retries."""
    return GitHubClient(api_url, lambda _force: f"token {token}",
                        http or httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0)), retry)
