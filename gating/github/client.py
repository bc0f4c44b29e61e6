"""The HTTP side of GitHub, through PyGithub: App authentication, installation tokens, errors.

PyGithub signs the App JWT (`Auth.AppAuth`), mints installation tokens (`GithubIntegration`),
follows pagination (`PaginatedList`) and speaks the typed API; `GitHubClient` configures it so that
it never sleeps in a job thread and turns its exceptions into the `GitHubError` family:

- no throttling (`seconds_between_requests=None`, `seconds_between_writes=None`) and no
  `GithubRetry`: a rate limit (403/429 with x-ratelimit-remaining 0, Retry-After or a secondary-limit
  message; a 5xx with Retry-After) is raised at once as `RateLimited`, and the App's job queue
  reschedules the job when GitHub said. Only a client given a `wait_budget` (a command's
  `token_client`: no queue to hand a wait back to) waits, in `call`, never inside PyGithub.
- a GET that meets a 5xx or a dropped connection is tried again at once (urllib3, no backoff, no
  Retry-After sleep); a write never is: `create_with` looks for what the first try made first.
- PyGithub's one sleep left is its 2 s wait on a 202 to a GET (statistics endpoints, "still
  computing"); nothing here calls one.

Secrets never reach a log line or a repr: PyGithub's own request log (which prints response bodies,
an installation token among them) is replaced by one line per call without headers or bodies.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from itertools import islice
from typing import Any, TypeVar, cast
from urllib.parse import urlparse

import requests
from github import Auth, Github, GithubException, GithubIntegration
from github.GithubObject import GithubObject, NonCompletableGithubObject
from github.PaginatedList import PaginatedList
from github.Requester import Requester
from urllib3.util.retry import Retry

from gating import limits
from gating.github.basics import (  # noqa: F401 (re-exported: gating.github.client names them too)
    API_VERSION,
    DEFAULT_API_URL,
    EMPTY_MESSAGES,
    EmptyRepository,
    GitHubError,
    MissingPermission,
    NotFound,
    PrivateKeyError,
    RateLimited,
    Token,
    load_private_key,
)

log = logging.getLogger("gating.github")
T = TypeVar("T")

USER_AGENT = "gating-app"
PER_PAGE = 100
TOKEN_REFRESH_MARGIN = 120.0  # seconds before expires_at when a cached token is renewed
JWT_BACKDATE = 60  # iat this far in the past absorbs clock drift between us and GitHub
JWT_LIFETIME = 540  # exp 9 minutes from now: GitHub refuses more than 10
# What GitHub answers (401) to an App JWT when our clock and GitHub's disagree: retried on GitHub's time.
CLOCK_SKEW_MESSAGES = ("'Expiration time' claim ('exp') is too far in the future",
                       "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
                       "'Expiration time' claim ('exp') must be a numeric value representing the future time")


# -- what PyGithub is told ------------------------------------------------------------------------


@dataclass
class RetryPolicy:
    retries: int = 2  # at once, no sleep: GETs after a 5xx or a dropped connection; `create` after an ambiguous write
    secondary_wait: float = 60.0  # GitHub's advice when a secondary limit gives no Retry-After
    # With a budget (the Action: no job queue to hand a wait back to), rate limits are waited out in
    # place, as long as GitHub asks but at most this many seconds per client in all, then one last try.
    wait_budget: float | None = None


class _AtOnce(Retry):
    """urllib3's retry for idempotent requests, without its sleeps: a job thread never waits here."""

    def sleep(self, response: Any = None) -> None:
        return None

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        # a 5xx that names a wait becomes RateLimited (the job queue waits), not a hammering
        return not has_retry_after and super().is_retry(method, status_code, has_retry_after)


def pygithub_options(base_url: str, retry: RetryPolicy, timeout: int = 20) -> dict[str, Any]:
    """Github/GithubIntegration keyword arguments: never throttled, never sleeping."""
    at_once = _AtOnce(total=retry.retries, connect=retry.retries, read=retry.retries, status=retry.retries,
                      other=0, redirect=0, backoff_factor=0, status_forcelist=(500, 502, 503, 504),
                      allowed_methods=frozenset({"GET", "HEAD"}), respect_retry_after_header=False,
                      raise_on_status=False, raise_on_redirect=False)
    return {"base_url": base_url.rstrip("/"), "timeout": timeout, "user_agent": USER_AGENT, "per_page": PER_PAGE,
            "retry": at_once, "seconds_between_requests": None, "seconds_between_writes": None,
            "api_version": API_VERSION}


class _RequestLog(logging.Logger):
    """Stands in for PyGithub's request log (`Requester.injectLogger`), outside the logging tree: keeps
    the last request of this thread (for error messages) and logs it as one line on gating.github,
    without the headers and bodies PyGithub would print (an installation token among them)."""

    def __init__(self) -> None:
        super().__init__("gating.github.pygithub", logging.DEBUG)
        self.local = threading.local()

    def handle(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) >= 7:  # Requester.__log: verb, scheme, host, url, headers, body, status, headers, body
            verb, url, status = str(args[0]), str(args[3]).split("?", 1)[0], args[6]
            self.local.last = (verb, url)
            log.debug("%s %s -> %s", verb, url, status)
        elif record.levelno >= logging.INFO:  # e.g. a redirect followed
            log.log(record.levelno, "PyGithub: %s", record.getMessage())

    def last(self) -> tuple[str, str]:
        return getattr(self.local, "last", ("", ""))

    def forget(self) -> None:
        self.local.last = ("", "")


_REQUESTS = _RequestLog()
Requester.injectLogger(_REQUESTS)


class _Raw(NonCompletableGithubObject):
    """A listed item of an endpoint PyGithub has no class for, kept as GitHub sent it."""

    def _initAttributes(self) -> None:
        pass

    def _useAttributes(self, attributes: dict[str, Any]) -> None:
        pass


def raw(obj: GithubObject) -> dict[str, Any]:
    """The JSON GitHub sent for a PyGithub object. Not `raw_data`: on a listed item that would
    "complete" it with one more GET per item."""
    return cast(dict[str, Any], obj._rawData)  # noqa: SLF001


def _page(listing: PaginatedList[Any], start: int, stop: int) -> list[Any]:
    """Items start..stop of a PaginatedList: those it holds, then as many pages as it takes."""
    return list(islice(listing, start, stop))


def _message(data: Any) -> str:
    if isinstance(data, dict):
        return str(data.get("message") or data.get("data") or data)[:500]
    return str(data)[:200] if data else "(no message)"


# -- the client -----------------------------------------------------------------------------------


class GitHubClient:
    """One PyGithub `Github` (its connection is not shared across threads: one client per job) and
    `call`, through which every PyGithub call goes: errors become `GitHubError`s, a 401 may refresh the
    credentials once (`on_401`), and only with `retry.wait_budget` is a rate limit waited out."""

    def __init__(self, base_url: str, auth: Auth.Auth | None, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                 on_401: Callable[[GitHubError], bool] | None = None, timeout: int = 20):
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.sleep, self.clock, self.on_401 = sleep, clock, on_401
        self.gh = Github(auth=auth, lazy=True, **pygithub_options(self.base_url, self.retry, timeout))
        self.requester: Requester = self.gh.requester
        self._prefix = urlparse(self.base_url).path.rstrip("/")
        self.waited = 0.0  # seconds slept for rate limits under retry.wait_budget

    def __repr__(self) -> str:
        return f"GitHubClient({self.base_url!r})"

    def _where(self, fallback: str) -> tuple[str, str]:
        verb, url = _REQUESTS.last()
        if not verb:
            method, _, path = fallback.partition(" ")
            return (method, path) if path.startswith("/") else ("", "")
        path = urlparse(url).path if url.startswith("http") else url
        return verb, path.removeprefix(self._prefix) if self._prefix and path.startswith(self._prefix + "/") else path

    def _wait_for(self, status: int, headers: Mapping[str, str], message: str) -> float | None:
        """Seconds GitHub asks us to wait before trying again, or None when it is not a rate limit."""
        after = headers.get("retry-after") or ""
        if status >= 500:
            return float(after) if after.isdigit() else None
        if status not in (403, 429):
            return None
        if after.isdigit():
            return float(after)
        if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset", "").isdigit():
            return max(0.0, float(headers["x-ratelimit-reset"]) - self.clock()) + 1.0
        if status == 429 or "secondary rate limit" in message.lower():
            return self.retry.secondary_wait
        return None

    def error(self, e: GithubException | requests.RequestException, what: str = "") -> GitHubError:
        """PyGithub's exception (UnknownObjectException, BadCredentialsException, RateLimitExceededException,
        GithubException with a status) or a transport error as one of ours."""
        method, path = self._where(what)
        if isinstance(e, requests.RequestException):
            req = e.request
            if req is not None and req.method:
                verb = req.method.decode() if isinstance(req.method, bytes) else str(req.method)
                url = req.url.decode() if isinstance(req.url, bytes) else str(req.url or "")
                method, path = verb, self._where(f"{verb} {urlparse(url).path}")[1]
            return GitHubError(0, f"{type(e).__name__}: {e}", method, path)
        status = e.status
        headers = {str(k).lower(): str(v) for k, v in (e.headers or {}).items()}
        message = _message(e.data)
        wait = self._wait_for(status, headers, message)
        if wait is not None:
            return RateLimited(status, message, wait, method, path, headers)
        if status in (404, 409) and message in EMPTY_MESSAGES:
            return EmptyRepository(status, message, method, path, headers)
        if status == 404:
            return NotFound(404, message, method, path, headers)
        if status == 403 and "not accessible by integration" in message:
            return MissingPermission(403, message, method, path, headers)
        return GitHubError(status, message, method, path, headers)

    def call(self, fn: Callable[[], T], what: str = "a GitHub API call") -> T:
        """`fn()` (PyGithub calls), its failures as `GitHubError`s; `what` names it to the job's budget."""
        refreshed = False
        while True:
            limits.check_budget(what)  # a job's wall-clock and memory bound, at each call
            _REQUESTS.forget()
            try:
                return fn()
            except GitHubError:
                raise
            except (GithubException, requests.RequestException) as e:
                err = self.error(e, what)
            if err.status == 401 and self.on_401 and not refreshed and self.on_401(err):
                refreshed = True
                continue
            if isinstance(err, RateLimited) and self.retry.wait_budget is not None:
                left = self.retry.wait_budget - self.waited
                if left > 0:
                    self.sleep(min(err.retry_after, left))
                    self.waited += min(err.retry_after, left)
                    continue
            raise err

    # -- endpoints by path (PyGithub's requester) ---------------------------------------------

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None) -> Any:
        """One call by path through PyGithub's requester (for endpoints it has no method for); the JSON answer."""
        data = self.call(lambda: self.requester.requestJsonAndCheck(method, path, parameters=params, input=json)[1],
                         f"{method} {path}")
        if method == "GET" and isinstance(data, dict) and data.get("url") == path:
            del data["url"]  # PyGithub adds the request's own path to an answer without a url
        return data

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def paginate(self, path: str, key: str | None = None, limit: int = 3000, **params: Any) -> Iterator[Any]:
        """Every item across pages (PaginatedList: Link rel="next"), up to `limit`; `key` names the list
        in a wrapped answer ({"total_count": n, "repositories": [...]})."""
        listing: PaginatedList[Any] = PaginatedList(_Raw, self.requester, path, params or None,
                                                    list_item=key or "items")
        return self.items(listing, limit, f"GET {path}")

    def items(self, listing: PaginatedList[Any], limit: int = 3000, what: str = "a GitHub listing") -> Iterator[Any]:
        """The items of a PyGithub PaginatedList as JSON, up to `limit`, each page fetched through `call`
        (a page that failed is fetched again on the next try: the list keeps what it already has)."""
        n = 0
        while n < limit:
            batch = self.call(functools.partial(_page, listing, n, min(limit, n + PER_PAGE)), what)
            if not batch:
                return
            for item in batch:
                yield raw(item)
            n += len(batch)

    def create(self, path: str, body: dict[str, Any], find: Callable[[], Any], method: str = "POST") -> Any:
        """POST (or a PATCH that appends, such as check-run annotations) that is safe to retry; see `create_with`."""
        return self.create_with(lambda: self.requester.requestJsonAndCheck(method, path, input=body)[1], find,
                                f"{method} {path}")

    def create_with(self, write: Callable[[], T], find: Callable[[], T | None], what: str) -> T:
        """A write that is safe to retry. A 5xx or a dropped connection may come after GitHub did the
        write, so before each new attempt (at once: no sleep) `find()` looks for what the first one made
        (a check run by name, head SHA and external_id; a comment by its text; a pull request by its head
        branch; a ref by its name) and returns it instead of making a second one."""
        attempt = 0
        while True:
            try:
                return self.call(write, what)
            except RateLimited:
                raise
            except GitHubError as e:
                if not (e.status == 0 or e.status >= 500) or attempt >= self.retry.retries:
                    raise
            attempt += 1
            found = find()
            if found is not None:
                log.info("%s: the earlier attempt had made it; not made again", what)
                return found


# -- the App --------------------------------------------------------------------------------------


class _AppAuth(Auth.AppAuth):
    """PyGithub's App JWT (RS256, signed by its JwtSigner) on the App's clock, corrected by what a
    refused JWT's Date header taught it about GitHub's."""

    def __init__(self, app: GitHubApp, private_key: str):
        super().__init__(app.app_id, private_key, jwt_expiry=JWT_LIFETIME, jwt_issued_at=-JWT_BACKDATE)
        self._app = app

    def create_jwt(self, expiration: int | None = None) -> str:
        now = int(self._app.clock() + self._app.skew)
        assert self._sign_func is not None
        signed = self._sign_func({"iat": now - JWT_BACKDATE, "exp": now + (expiration or JWT_LIFETIME),
                                  "iss": self._app_id})
        return signed.decode("utf-8") if isinstance(signed, bytes) else signed


class _InstallationAuth(Auth.Auth):
    """An installation's token, from the App's cache (shared by every job's client)."""

    def __init__(self, app: GitHubApp, installation_id: int):
        self._app, self.installation_id = app, installation_id

    @property
    def token_type(self) -> str:
        return "token"

    @property
    def token(self) -> str:
        return self._app.token(self.installation_id).token

    @property
    def _masked_token(self) -> str:
        return "token (removed)"


class GitHubApp:
    """The App's identity: installation tokens minted by PyGithub's `GithubIntegration` and cached here,
    one per installation for every job thread (PyGithub's `AppInstallationAuth` keeps one per client, on
    the wall clock, 20 s before expiry, without a lock), renewed TOKEN_REFRESH_MARGIN before they expire
    on the App's clock, or at once after a 401."""

    def __init__(self, app_id: str | int, private_key: str, base_url: str = DEFAULT_API_URL,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 retry: RetryPolicy | None = None):
        self.app_id = str(app_id)
        self.base_url = base_url.rstrip("/")
        self.clock, self.sleep, self.retry = clock, sleep, retry or RetryPolicy()
        self.skew = 0.0  # GitHub's clock minus ours, learnt from a refused JWT's Date header
        self.auth = _AppAuth(self, private_key)
        self._integration = GithubIntegration(auth=self.auth, **pygithub_options(self.base_url, self.retry))
        self._tokens: dict[int, Token] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GitHubApp(app_id={self.app_id!r}, base_url={self.base_url!r})"

    def jwt(self) -> str:
        return self.auth.create_jwt()

    def _learn_skew(self, e: GitHubError) -> bool:
        """After a 401 that says our clock is off (a JWT "too far in the future", or "issued" later
        than GitHub's now): take GitHub's time from the Date header. True when the next JWT will
        differ, so the call is worth one more try."""
        if not any(m in e.message for m in CLOCK_SKEW_MESSAGES):
            return False
        try:
            server = parsedate_to_datetime(e.headers.get("date", "")).timestamp()
        except (TypeError, ValueError):
            return False
        skew = server - self.clock()
        if abs(skew - self.skew) < 1:
            return False
        log.warning("the App JWT was refused (%s); this clock is %.0f s off GitHub's: using GitHub's time",
                    e.message, -skew)
        self.skew = skew
        return True

    def app_client(self) -> GitHubClient:
        """A client authenticated as the App itself (its JWT): installations, a repository's installation."""
        return GitHubClient(self.base_url, self.auth, self.retry, self.sleep, self.clock, on_401=self._learn_skew)

    def token(self, installation_id: int, force: bool = False) -> Token:
        """A cached installation token, renewed shortly before expires_at (or when forced after a 401)."""
        with self._lock:  # one mint at a time: the integration's connection is not shared across threads
            cached = self._tokens.get(installation_id)
            if cached and not force and cached.expires_at - TOKEN_REFRESH_MARGIN > self.clock():
                return cached
            made = self.app_client().call(lambda: self._integration.get_access_token(installation_id),
                                          f"POST /app/installations/{installation_id}/access_tokens")
            expires = made.expires_at if made.expires_at.tzinfo else made.expires_at.replace(tzinfo=UTC)
            tok = Token(made.token, expires.timestamp())
            self._tokens[installation_id] = tok
            log.info("installation %s: new token, expires %s", installation_id,
                     datetime.fromtimestamp(tok.expires_at, UTC).isoformat(timespec="seconds"))
            return tok

    def forget(self, installation_id: int) -> None:
        """Drop the cached token: one minted before the installation accepted new permissions keeps
        the old ones until it expires."""
        with self._lock:
            self._tokens.pop(installation_id, None)

    def installation(self, installation_id: int) -> GitHubClient:
        def refresh(_e: GitHubError) -> bool:
            self.token(installation_id, force=True)
            return True
        return GitHubClient(self.base_url, _InstallationAuth(self, installation_id), self.retry, self.sleep,
                            self.clock, on_401=refresh)


CLI_WAIT_BUDGET = 30.0  # seconds a command may wait out rate limits in all: it has no job queue to hand them to


def token_client(api_url: str, token: str, retry: RetryPolicy | None = None) -> GitHubClient:
    """A client authenticated by a token (the workflow's GITHUB_TOKEN, a user's token) for a command
    run in its own process (never the App's jobs): by default it waits rate limits out, up to
    CLI_WAIT_BUDGET seconds in all."""
    return GitHubClient(api_url, Auth.Token(token), retry or RetryPolicy(wait_budget=CLI_WAIT_BUDGET), timeout=30)
