"""The REST calls on one repository that the App's handlers use, and `ApiRevision`: a
`RevisionReader` over the git trees and blobs API, so a snapshot can be built at any SHA without a
clone. Git objects are immutable, so `BlobCache` shares them across jobs in one process.
"""

from __future__ import annotations

import base64
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from gating.github.client import GitHubClient, GitHubError, NotFound


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
        """admin, maintain, write, triage, read or none: the base permission, also for a custom role."""
        try:
            body = self.client.get(f"{self.path}/collaborators/{_q(login)}/permission")
        except NotFound:
            return "none"
        return base_permission(body)

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
        """Create a check run once: it carries an `external_id` (a fresh one unless the caller gave
        one), so a retry after a failure that came after the write finds it by name, head SHA and
        external_id instead of making a second run."""
        body = {**body, "external_id": body.get("external_id") or f"gating-{uuid.uuid4().hex[:16]}"}

        def find() -> dict[str, Any] | None:
            return next((r for r in self.check_runs(body["head_sha"], body["name"])
                         if r.get("name") == body["name"] and r.get("external_id") == body["external_id"]), None)
        return self.client.create(f"{self.path}/check-runs", body, find)

    def create_comment(self, number: int, text: str) -> dict[str, Any]:
        """Comment once: a retry after a failure that came after the write finds the App's comment
        with this very text (replies carry an invisible marker that makes it unique)."""
        def find() -> dict[str, Any] | None:
            return next((c for c in reversed(self.issue_comments(number)) if c.get("body") == text
                         and (c.get("user") or {}).get("type") == "Bot"), None)
        return self.client.create(f"{self.path}/issues/{number}/comments", {"body": text}, find)

    def update_check_run(self, check_run_id: int, body: dict[str, Any]) -> dict[str, Any]:
        return self.client.request("PATCH", f"{self.path}/check-runs/{check_run_id}", json=body).json()

    def tree(self, sha: str) -> dict[str, Any]:
        return self.client.get(f"{self.path}/git/trees/{sha}", recursive=1)

    def blob(self, sha: str) -> bytes:
        body = self.client.get(f"{self.path}/git/blobs/{sha}")
        if body.get("encoding") == "base64":
            return base64.b64decode(body["content"])
        return str(body.get("content", "")).encode("utf-8")


_BASE_ROLES = ("read", "triage", "write", "maintain", "admin")
_LEGACY = {"admin": ("admin",), "write": ("write", "maintain"), "read": ("read", "triage")}


def base_permission(body: dict[str, Any]) -> str:
    """The base permission in a collaborator-permission answer. `role_name` names the role exactly,
    but for a custom role ("release-manager") it is the role's own name; then the user's permission
    flags tell its base (maintain or write, triage or read), as long as they agree with the legacy
    `permission` (admin, write, read, none); when they do not, the legacy value counts."""
    role, legacy = body.get("role_name"), body.get("permission")
    if role in _BASE_ROLES:
        return str(role)
    if legacy not in _LEGACY:
        return "none"
    flags = ((body.get("user") or {}).get("permissions") or {})
    named = {"admin": "admin", "maintain": "maintain", "push": "write", "triage": "triage", "pull": "read"}
    granted = [named[k] for k in named if flags.get(k) is True]
    highest = max(granted, key=_BASE_ROLES.index, default=None)
    return highest if highest in _LEGACY[legacy] else str(legacy)


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


@dataclass(frozen=True)
class _Listing:
    """What one tree call tells: blob ids by path, which of them are symbolic links, the submodules."""

    blobs: dict[str, str]
    links: frozenset[str]
    submodules: tuple[str, ...]


class ApiRevision:
    """A `RevisionReader` at one commit, read through the git trees and blobs API (no clone)."""

    def __init__(self, repo: Repo, sha: str, blobs: BlobCache | None = None):
        self.repo, self.sha = repo, sha
        self.label = sha[:12]
        self.blobs = blobs or BlobCache()
        self._listing: _Listing | None = None

    def _read_tree(self) -> _Listing:
        if self._listing is None:
            if _SHA.match(self.sha):
                self._listing = self.blobs.memo(("tree", self.repo.full_name, self.sha), self._fetch_tree)
            else:  # a branch or tag name moves: never cached
                self._listing = self._fetch_tree()
        return self._listing

    def _tree(self) -> dict[str, str]:
        return self._read_tree().blobs

    def _fetch_tree(self) -> _Listing:
        body = self.repo.tree(self.sha)
        if body.get("truncated"):
            raise GitHubError(200, f"the tree of {self.sha[:12]} is too large for one API call (truncated)")
        entries = body.get("tree", [])
        return _Listing({e["path"]: e["sha"] for e in entries if e.get("type") == "blob"},
                        frozenset(e["path"] for e in entries if e.get("type") == "blob" and e.get("mode") == "120000"),
                        tuple(sorted(e["path"] for e in entries if e.get("type") == "commit")))

    def submodules(self) -> list[str]:
        """Paths of the submodules (gitlinks) in the tree, as `GitRevision.submodules` gives them."""
        return list(self._read_tree().submodules)

    def links(self, paths: Iterable[str]) -> dict[str, str]:
        """path -> link text of those paths the tree stores as symbolic links."""
        found = [p for p in paths if p in self._read_tree().links]
        return {p: (b or b"").decode("utf-8", "surrogateescape") for p, b in self.read_many(found).items()}

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
