"""The one place that talks to the GitHub REST API.

App authentication (a short RS256 JWT, installation tokens cached until shortly before they expire,
one refresh on 401), a client that retries 5xx and rate limits with backoff, the repository calls the
App needs, and `ApiRevision`: a `RevisionReader` over the git trees and blobs API, so a snapshot can
be built at any SHA without a clone. Secrets never reach a log line or a repr.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

log = logging.getLogger("gating.github")

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
TOKEN_REFRESH_MARGIN = 120.0  # seconds before expires_at when a cached token is renewed
JWT_BACKDATE = 60  # iat this far in the past absorbs clock drift between us and GitHub
JWT_LIFETIME = 540  # exp 9 minutes from now: GitHub refuses more than 10


class GitHubError(RuntimeError):
    """GitHub answered with an error (or could not be reached: status 0)."""

    def __init__(self, status: int, message: str, method: str = "", path: str = ""):
        self.status, self.method, self.path = status, method, path
        where = f" ({method} {path})" if method else ""
        super().__init__(f"GitHub {status or 'unreachable'}{where}: {message}")


class NotFound(GitHubError):
    pass


class RateLimited(GitHubError):
    """Still limited after the client's own retries; `retry_after` says when to try again."""

    def __init__(self, status: int, message: str, retry_after: float, method: str = "", path: str = ""):
        super().__init__(status, message, method, path)
        self.retry_after = retry_after


# -- App authentication ---------------------------------------------------------------------------


class PrivateKeyError(ValueError):
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


class GitHubClient:
    """Authenticated REST calls with retries; `auth(force)` returns the Authorization header value."""

    def __init__(self, base_url: str, auth: Callable[[bool], str] | None, http: httpx.Client,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, refreshable: bool = False):
        self.base_url = base_url.rstrip("/")
        self.auth, self.http, self.retry = auth, http, retry or RetryPolicy()
        self.sleep, self.clock, self.refreshable = sleep, clock, refreshable

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
                accept: str = "application/vnd.github+json") -> httpx.Response:
        url = path if path.startswith("http") else self.base_url + path
        refreshed = False
        attempt = 0
        while True:
            headers = {"Accept": accept, "X-GitHub-Api-Version": API_VERSION, "User-Agent": "gating-app"}
            if self.auth:
                headers["Authorization"] = self.auth(False)
            t0 = time.monotonic()
            try:
                resp = self.http.request(method, url, params=params, json=json, headers=headers)
            except httpx.TransportError as e:
                if attempt >= self.retry.retries:
                    raise GitHubError(0, f"{type(e).__name__}: {e}", method, path) from None
                self.sleep(min(self.retry.backoff * 2**attempt, self.retry.backoff_cap))
                attempt += 1
                continue
            log.debug("%s %s -> %d in %.0f ms", method, path, resp.status_code, (time.monotonic() - t0) * 1000)
            if resp.status_code == 401 and self.refreshable and not refreshed and self.auth:
                refreshed = True
                self.auth(True)
                continue
            wait = self._wait_for(resp, attempt)
            if wait is not None:
                seconds, limited = wait
                if limited and (seconds > self.retry.max_wait or attempt >= self.retry.retries):
                    raise RateLimited(resp.status_code, _message(resp), seconds, method, path)
                if attempt < self.retry.retries:
                    self.sleep(seconds)
                    attempt += 1
                    continue
            if resp.status_code == 404:
                raise NotFound(404, _message(resp), method, path)
            if resp.status_code >= 400:
                raise GitHubError(resp.status_code, _message(resp), method, path)
            return resp

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
        self._tokens: dict[int, Token] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GitHubApp(app_id={self.app_id!r}, base_url={self.base_url!r})"

    def jwt(self) -> str:
        return app_jwt(self.app_id, self._key, self.clock())

    def app_client(self) -> GitHubClient:
        return GitHubClient(self.base_url, lambda _force: f"Bearer {self.jwt()}", self.http, self.retry,
                            self.sleep, self.clock)

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

    def installation(self, installation_id: int) -> GitHubClient:
        def auth(force: bool) -> str:
            return f"token {self.token(installation_id, force).token}"
        return GitHubClient(self.base_url, auth, self.http, self.retry, self.sleep, self.clock, refreshable=True)


# -- repository calls -----------------------------------------------------------------------------


def _q(s: str) -> str:
    return quote(s, safe="")


class Repo:
    """The REST calls on one repository that the App's handlers use."""

    def __init__(self, client: GitHubClient, full_name: str):
        self.client = client
        self.full_name = full_name
        self.path = "/repos/" + "/".join(_q(p) for p in full_name.split("/", 1))

    def pull(self, number: int) -> dict[str, Any]:
        return self.client.get(f"{self.path}/pulls/{number}")

    def pull_files(self, number: int) -> list[dict[str, Any]]:
        return list(self.client.paginate(f"{self.path}/pulls/{number}/files"))

    def reviews(self, number: int) -> list[dict[str, Any]]:
        return list(self.client.paginate(f"{self.path}/pulls/{number}/reviews"))

    def issue_comments(self, number: int) -> list[dict[str, Any]]:
        return list(self.client.paginate(f"{self.path}/issues/{number}/comments"))

    def open_pulls(self) -> list[dict[str, Any]]:
        return list(self.client.paginate(f"{self.path}/pulls", state="open"))

    def branch_sha(self, branch: str) -> str:
        return self.client.get(f"{self.path}/branches/{_q(branch)}")["commit"]["sha"]

    def merge_base(self, base: str, head: str) -> str:
        return self.client.get(f"{self.path}/compare/{_q(base)}...{_q(head)}")["merge_base_commit"]["sha"]

    def permission(self, login: str) -> str:
        """admin, maintain, write, triage, read or none (role_name carries the finer roles)."""
        try:
            body = self.client.get(f"{self.path}/collaborators/{_q(login)}/permission")
        except NotFound:
            return "none"
        return body.get("role_name") or body.get("permission") or "none"

    def is_team_member(self, team: str, login: str) -> bool:
        org, slug = team.split("/", 1)
        try:
            body = self.client.get(f"/orgs/{_q(org)}/teams/{_q(slug)}/memberships/{_q(login)}")
        except NotFound:
            return False
        return body.get("state") == "active"

    def check_runs(self, sha: str, name: str) -> list[dict[str, Any]]:
        return list(self.client.paginate(f"{self.path}/commits/{sha}/check-runs", key="check_runs",
                                         check_name=name, filter="all"))

    def create_check_run(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.client.request("POST", f"{self.path}/check-runs", json=body).json()

    def update_check_run(self, check_run_id: int, body: dict[str, Any]) -> dict[str, Any]:
        return self.client.request("PATCH", f"{self.path}/check-runs/{check_run_id}", json=body).json()

    def tree(self, sha: str) -> dict[str, Any]:
        return self.client.get(f"{self.path}/git/trees/{sha}", recursive=1)

    def blob(self, sha: str) -> bytes:
        body = self.client.get(f"{self.path}/git/blobs/{sha}")
        if body.get("encoding") == "base64":
            return base64.b64decode(body["content"])
        return str(body.get("content", "")).encode("utf-8")


class BlobCache:
    """Git objects are immutable, so one process shares them across jobs: blobs (bounded by total
    bytes), and trees and values derived from them, keyed by SHAs (`memo`, bounded by entries)."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, max_entries: int = 512):
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._memo: OrderedDict[Any, Any] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, sha: str) -> bytes | None:
        with self._lock:
            data = self._items.get(sha)
            if data is not None:
                self._items.move_to_end(sha)
            return data

    def put(self, sha: str, data: bytes) -> None:
        with self._lock:
            if sha in self._items or len(data) > self.max_bytes:
                return
            self._items[sha] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._size -= len(old)

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """`compute()` once per key; the key must name immutable inputs (SHAs, not branch names)."""
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        value = compute()
        with self._lock:
            self._memo[key] = value
            while len(self._memo) > self.max_entries:
                self._memo.popitem(last=False)
        return value


_SHA = re.compile(r"^[0-9a-f]{40}$")


class ApiRevision:
    """A `RevisionReader` at one commit, read through the git trees and blobs API (no clone)."""

    def __init__(self, repo: Repo, sha: str, blobs: BlobCache | None = None):
        self.repo, self.sha = repo, sha
        self.label = sha[:12]
        self.blobs = blobs or BlobCache()
        self._shas: dict[str, str] | None = None

    def _tree(self) -> dict[str, str]:
        if self._shas is None:
            if _SHA.match(self.sha):
                self._shas = self.blobs.memo(("tree", self.repo.full_name, self.sha), self._fetch_tree)
            else:  # a branch or tag name moves: never cached
                self._shas = self._fetch_tree()
        return self._shas

    def _fetch_tree(self) -> dict[str, str]:
        body = self.repo.tree(self.sha)
        if body.get("truncated"):
            raise GitHubError(200, f"the tree of {self.sha[:12]} is too large for one API call (truncated)")
        return {e["path"]: e["sha"] for e in body.get("tree", []) if e.get("type") == "blob"}

    def list_files(self) -> list[str]:
        return sorted(self._tree())

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes | None]:
        shas = self._tree()
        out: dict[str, bytes | None] = {}
        for p in paths:
            sha = shas.get(p)
            if sha is None:
                out[p] = None
                continue
            data = self.blobs.get(sha)
            if data is None:
                data = self.repo.blob(sha)
                self.blobs.put(sha, data)
            out[p] = data
        return out


# == gating check (the Action): check runs and the pull request comment ===========================
# The Action's GITHUB_TOKEN is an installation token of GitHub Actions' own App: a plain token
# client, the check run it creates (in_progress at once, completed at the end) and, when asked, one
# sticky comment on the pull request. Annotations go 50 per request, GitHub's limit.

ANNOTATIONS_PER_REQUEST = 50
COMMENT_MARKER = "<!-- gating:eval -->"


def token_client(api_url: str, token: str, http: httpx.Client | None = None,
                 retry: RetryPolicy | None = None) -> GitHubClient:
    """A client authenticated by a token (the workflow's GITHUB_TOKEN), with the usual retries."""
    return GitHubClient(api_url, lambda _force: f"token {token}",
                        http or httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0)), retry)


def start_check_run(repo: Repo, name: str, head_sha: str, *, started_at: str, title: str, summary: str,
                    details_url: str | None = None, external_id: str | None = None) -> int:
    """Create the check run in_progress; returns its id."""
    body: dict[str, Any] = {"name": name, "head_sha": head_sha, "status": "in_progress", "started_at": started_at,
                            "output": {"title": title, "summary": summary}}
    if details_url:
        body["details_url"] = details_url
    if external_id:
        body["external_id"] = external_id
    return int(repo.create_check_run(body)["id"])


def _batches(items: list[dict[str, Any]], size: int = ANNOTATIONS_PER_REQUEST) -> list[list[dict[str, Any]]]:
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


def finish_check_run(repo: Repo, check_run_id: int | None, *, name: str, head_sha: str, conclusion: str,
                     completed_at: str, title: str, summary: str, text: str = "",
                     annotations: list[dict[str, Any]] | None = None, details_url: str | None = None) -> int:
    """Complete the check run (creating it when `check_run_id` is None); returns its id.

    Annotations beyond the first 50 are added by further updates (GitHub appends them), so n
    annotations cost ceil(n / 50) requests; the last request carries the conclusion.
    """
    batches = _batches(list(annotations or []))

    def output(batch: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"title": title, "summary": summary}
        if text:
            out["text"] = text
        if batch:
            out["annotations"] = batch
        return out

    final = {"status": "completed", "conclusion": conclusion, "completed_at": completed_at}
    if check_run_id is None:
        body: dict[str, Any] = {"name": name, "head_sha": head_sha, **final, "output": output(batches[0])}
        if details_url:
            body["details_url"] = details_url
        check_run_id = int(repo.create_check_run(body)["id"])
        for batch in batches[1:]:
            repo.update_check_run(check_run_id, {"output": output(batch)})
        return check_run_id
    for batch in batches[:-1]:
        repo.update_check_run(check_run_id, {"output": output(batch)})
    repo.update_check_run(check_run_id, {**final, "output": output(batches[-1])})
    return check_run_id


def upsert_comment(repo: Repo, number: int, body: str, marker: str = COMMENT_MARKER) -> int:
    """Keep one comment per pull request: update the bot's comment carrying `marker`, else create it."""
    text = f"{marker}\n{body}"
    for c in repo.issue_comments(number):
        if marker in (c.get("body") or "") and (c.get("user") or {}).get("type") == "Bot":
            repo.client.request("PATCH", f"{repo.path}/issues/comments/{c['id']}", json={"body": text})
            return int(c["id"])
    made = repo.client.request("POST", f"{repo.path}/issues/{number}/comments", json={"body": text}).json()
    return int(made["id"])


# -- rollback: a restore as a branch and commit (Git Database API), its pull request, replies -------
# The rollback handlers write through these; each call is safe to repeat, so a redelivered or
# concurrent request meets the branch and pull request the first one made.


def repository(repo: Repo) -> dict[str, Any]:
    return repo.client.get(repo.path)


def commit_sha(repo: Repo, ref: str) -> str | None:
    """The full SHA a commit prefix (or ref) names in the repository, or None when there is none."""
    try:
        return repo.client.get(f"{repo.path}/commits/{_q(ref)}")["sha"]
    except GitHubError as e:
        if e.status in (404, 422):  # unknown, or an ambiguous prefix
            return None
        raise


def ref_sha(repo: Repo, ref: str) -> str | None:
    """The commit `refs/<ref>` points at (ref like "heads/main"), or None when the ref does not exist."""
    try:
        return repo.client.get(f"{repo.path}/git/ref/{quote(ref, safe='/')}")["object"]["sha"]
    except NotFound:
        return None


def commit_tree(repo: Repo, sha: str) -> str:
    return repo.client.get(f"{repo.path}/git/commits/{sha}")["tree"]["sha"]


def create_tree(repo: Repo, base_tree: str, entries: list[dict[str, Any]]) -> str:
    """A tree on top of `base_tree`; an entry with "sha": None removes that path."""
    body = {"base_tree": base_tree, "tree": entries}
    return repo.client.request("POST", f"{repo.path}/git/trees", json=body).json()["sha"]


def create_commit(repo: Repo, message: str, tree: str, parents: list[str]) -> str:
    body = {"message": message, "tree": tree, "parents": parents}
    return repo.client.request("POST", f"{repo.path}/git/commits", json=body).json()["sha"]


def create_ref(repo: Repo, ref: str, sha: str) -> bool:
    """Create `refs/<ref>`; False when it exists already (someone else made it first)."""
    try:
        repo.client.request("POST", f"{repo.path}/git/refs", json={"ref": f"refs/{ref}", "sha": sha})
    except GitHubError as e:
        if e.status == 422 and "already exists" in str(e):
            return False
        raise
    return True


def update_ref(repo: Repo, ref: str, sha: str, force: bool = False) -> None:
    """Move `refs/<ref>`; without force GitHub refuses anything but a fast-forward (422)."""
    repo.client.request("PATCH", f"{repo.path}/git/refs/{quote(ref, safe='/')}", json={"sha": sha, "force": force})


def open_pull_for(repo: Repo, branch: str) -> dict[str, Any] | None:
    owner = repo.full_name.split("/", 1)[0]
    pulls = repo.client.get(f"{repo.path}/pulls", head=f"{owner}:{branch}", state="open")
    return pulls[0] if pulls else None


def create_pull(repo: Repo, title: str, head: str, base: str, body: str) -> tuple[dict[str, Any], bool]:
    """(pull request, created); an open pull request from `head` already there is returned as it is."""
    try:
        made = repo.client.request("POST", f"{repo.path}/pulls",
                                   json={"title": title, "head": head, "base": base, "body": body}).json()
        return made, True
    except GitHubError as e:
        if e.status != 422:
            raise
        existing = open_pull_for(repo, head)
        if existing is None:
            raise
        return existing, False


def comment(repo: Repo, number: int, body: str) -> dict[str, Any]:
    return repo.client.request("POST", f"{repo.path}/issues/{number}/comments", json={"body": body}).json()


def react(repo: Repo, comment_id: int, content: str) -> None:
    """A reaction (eyes, rocket, confused, ...) on an issue comment; reacting twice is harmless."""
    repo.client.request("POST", f"{repo.path}/issues/comments/{comment_id}/reactions", json={"content": content})


# -- audit notes over the Git Database API (the GitHub backend of gating/notes.py) ----------------


class GitDatabaseNotes:
    """A notes ref written through the Git Database API, for the App (no clone needed).

    An append is a blob, a tree on the tip's tree as `base_tree` (so the note lands where the tree
    already keeps notes: same fanout, same path), a commit whose only parent is the observed tip, and a
    ref update with force: false: a 422 means another writer won, and notes.append_entry re-reads.
    Git objects are immutable, so trees and commits are cached by sha.
    """

    def __init__(self, repo: Repo, ref: str = "refs/notes/gating/audit",
                 identity: tuple[str, str] = ("gating", "gating@users.noreply.github.com")):
        self.repo, self.ref, self.identity = repo, ref, identity
        self._trees: dict[str, list[Any]] = {}
        self._commits: dict[str, tuple[str, list[str]]] = {}

    def __repr__(self) -> str:
        return f"GitDatabaseNotes({self.repo.full_name!r}, {self.ref!r})"

    def _call(self, fn: Callable[[], Any]) -> Any:
        from gating.notes import TransientError

        try:
            return fn()
        except GitHubError as e:
            if e.status == 0 or e.status >= 500:
                raise TransientError(str(e)) from e
            raise

    def tip(self) -> str | None:
        return self._call(lambda: ref_sha(self.repo, self.ref.removeprefix("refs/")))

    def commit(self, sha: str) -> tuple[str, list[str]]:
        if sha not in self._commits:
            body = self._call(lambda: self.repo.client.get(f"{self.repo.path}/git/commits/{sha}"))
            self._commits[sha] = (body["tree"]["sha"], [p["sha"] for p in body.get("parents") or []])
        return self._commits[sha]

    def tree(self, sha: str) -> list[Any]:
        from gating.notes import Item

        if sha not in self._trees:
            body = self._call(lambda: self.repo.client.get(f"{self.repo.path}/git/trees/{sha}"))
            self._trees[sha] = [Item(e["mode"], e["type"], e["sha"], e["path"]) for e in body["tree"]]
        return self._trees[sha]

    def blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        return {s: self._call(lambda s=s: self.repo.blob(s)) for s in set(shas)}

    def all_notes(self, tip: str) -> dict[str, bytes]:
        body = self._call(lambda: self.repo.tree(self.commit(tip)[0]))  # one recursive listing
        paths = {e["path"].replace("/", ""): e["sha"] for e in body["tree"] if e["type"] == "blob"}
        data = self.blobs(paths.values())
        return {obj: data[sha] for obj, sha in paths.items()}

    def write(self, tip: str | None, path: str, data: bytes, message: str, now: datetime) -> str:
        from gating.notes import RefConflict

        client, base = self.repo.client, self.repo.path
        blob = self._call(lambda: client.request("POST", f"{base}/git/blobs", json={
            "content": base64.b64encode(data).decode(), "encoding": "base64"}).json()["sha"])
        tree_body: dict[str, Any] = {"tree": [{"path": path, "mode": "100644", "type": "blob", "sha": blob}]}
        if tip:
            tree_body["base_tree"] = self.commit(tip)[0]
        tree = self._call(lambda: client.request("POST", f"{base}/git/trees", json=tree_body).json()["sha"])
        from gating.audit import timestamp

        who = {"name": self.identity[0], "email": self.identity[1], "date": timestamp(now)}
        new = self._call(lambda: client.request("POST", f"{base}/git/commits", json={
            "message": message, "tree": tree, "parents": [tip] if tip else [], "author": who,
            "committer": who}).json()["sha"])
        ref = self.ref.removeprefix("refs/")
        try:
            if tip:
                self._call(lambda: update_ref(self.repo, ref, new, force=False))
            elif not self._call(lambda: create_ref(self.repo, ref, new)):
                raise RefConflict(f"{self.ref} was created by another writer")
        except GitHubError as e:
            if e.status == 422:
                raise RefConflict(f"{self.ref} moved: {e}") from e
            raise
        return new
