"""The REST calls on one repository that the App's handlers use, and `ApiRevision`: a
`RevisionReader` over the git trees and blobs API, so a snapshot can be built at any SHA without a
clone, reading only the directories the manifest names. Git objects are immutable, so `BlobCache`
shares them across jobs in one process.
"""

from __future__ import annotations

import base64
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from urllib.parse import quote

from github.IssueComment import IssueComment

from gating.github.client import GitHubClient, GitHubError, NotFound, raw
from gating.github.limits import fit, fit_output


def _q(s: str) -> str:
    return quote(s, safe="")


def _when(value: Any) -> Any:
    """An ISO 8601 time as the datetime PyGithub's check-run methods take (they write it back in UTC)."""
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return value


class Repo:
    """The REST calls on one repository that the App's handlers use, through PyGithub's `Repository`
    (lazy: no request until one is needed) and, where PyGithub has no method or would need an extra
    request, its requester by path (`client.request`); JSON in, JSON out."""

    def __init__(self, client: GitHubClient, full_name: str):
        self.client = client
        self.full_name = full_name
        self.path = "/repos/" + "/".join(_q(p) for p in full_name.split("/", 1))
        self.gh = client.gh.get_repo(full_name)

    def pull(self, number: int) -> dict[str, Any]:
        return self.client.call(lambda: self.gh.get_pull(number).raw_data, f"GET {self.path}/pulls/{number}")

    def pull_files(self, number: int) -> list[dict[str, Any]]:
        return list(self.client.items(self.gh.get_pull(number).get_files(), what=f"GET {self.path}/pulls/{number}/files"))

    def reviews(self, number: int) -> list[dict[str, Any]]:
        return list(self.client.items(self.gh.get_pull(number).get_reviews(),
                                      what=f"GET {self.path}/pulls/{number}/reviews"))

    def issue_comments(self, number: int) -> list[dict[str, Any]]:
        return list(self.client.items(self.gh.get_issue(number).get_comments(),
                                      what=f"GET {self.path}/issues/{number}/comments"))

    def open_pulls(self) -> list[dict[str, Any]]:
        return list(self.client.items(self.gh.get_pulls(state="open"), what=f"GET {self.path}/pulls"))

    def branch_sha(self, branch: str) -> str:
        return self.client.call(lambda: str(raw(self.gh.get_branch(branch))["commit"]["sha"]),  # PyGithub quotes it
                                f"GET {self.path}/branches/{_q(branch)}")

    def compare(self, base: str, head: str) -> dict[str, Any]:
        """GitHub's comparison of two commits or branches (status ahead/behind/identical/diverged, merge base)."""
        return self.client.call(lambda: self.gh.compare(base, head).raw_data,  # PyGithub quotes both
                                f"GET {self.path}/compare/{_q(base)}...{_q(head)}")

    def merge_base(self, base: str, head: str) -> str:
        return str(self.compare(base, head)["merge_base_commit"]["sha"])

    def permission(self, login: str) -> str:
        """admin, maintain, write, triage, read or none: the base permission, also for a custom role."""
        try:  # by path: PyGithub's get_collaborator_permission keeps only `permission`; base_permission needs it all
            body = self.client.get(f"{self.path}/collaborators/{_q(login)}/permission")
        except NotFound:
            return "none"
        return base_permission(body)

    def is_team_member(self, team: str, login: str) -> bool:
        org, slug = team.split("/", 1)
        try:  # by path: PyGithub reaches a membership only through a Team it has fetched first
            body = self.client.get(f"/orgs/{_q(org)}/teams/{_q(slug)}/memberships/{_q(login)}")
        except NotFound:
            return False
        return bool(body.get("state") == "active")

    def check_runs(self, sha: str, name: str) -> list[dict[str, Any]]:
        return list(self.client.items(self.gh.get_commit(sha).get_check_runs(check_name=name, filter="all"),
                                      what=f"GET {self.path}/commits/{sha}/check-runs"))

    def check_run(self, check_run_id: int) -> dict[str, Any]:
        return self.client.call(lambda: self.gh.get_check_run(check_run_id).raw_data,
                                f"GET {self.path}/check-runs/{check_run_id}")

    def create_check_run(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a check run once: it carries an `external_id` (a fresh one unless the caller gave
        one), so a retry after a failure that came after the write finds it by name, head SHA and
        external_id instead of making a second run."""
        body = {**fit_output(body), "external_id": body.get("external_id") or f"gating-{uuid.uuid4().hex[:16]}"}
        args = {k: _when(v) if k in ("started_at", "completed_at") else v for k, v in body.items()}

        def find() -> dict[str, Any] | None:
            return next((r for r in self.check_runs(body["head_sha"], body["name"])
                         if r.get("name") == body["name"] and r.get("external_id") == body["external_id"]), None)
        return self.client.create_with(lambda: raw(self.gh.create_check_run(**args)), find,
                                       f"POST {self.path}/check-runs")

    def create_comment(self, number: int, text: str) -> dict[str, Any]:
        """Comment once: a retry after a failure that came after the write finds the App's comment
        with this very text (replies carry an invisible marker that makes it unique)."""
        text = fit(text)

        def find() -> dict[str, Any] | None:
            return next((c for c in reversed(self.issue_comments(number)) if c.get("body") == text
                         and (c.get("user") or {}).get("type") == "Bot"), None)
        return self.client.create_with(lambda: raw(self.gh.get_issue(number).create_comment(text)), find,
                                       f"POST {self.path}/issues/{number}/comments")

    def issue_comment(self, comment_id: int) -> IssueComment:
        """A lazy IssueComment (no request until used): PyGithub reaches one only through its issue."""
        return IssueComment(self.gh.requester, url=f"{self.gh.url}/issues/comments/{comment_id}")

    def update_comment(self, comment_id: int, text: str) -> None:
        self.client.call(lambda: self.issue_comment(comment_id).edit(fit(text)),
                         f"PATCH {self.path}/issues/comments/{comment_id}")

    def update_check_run(self, check_run_id: int, body: dict[str, Any],
                         annotations_before: int | None = None) -> dict[str, Any]:
        """Update a check run. GitHub appends the annotations an update carries, so one retried after a
        failure that came after the write would add them twice: given how many the run held before
        (`annotations_before`), a retry first asks whether this batch is already there. By path:
        PyGithub's CheckRun.edit keeps GitHub's answer only as typed attributes, and callers read JSON."""
        body = fit_output(body)
        path = f"{self.path}/check-runs/{check_run_id}"
        added = len((body.get("output") or {}).get("annotations") or [])
        if not added or annotations_before is None:
            return cast(dict[str, Any], self.client.request("PATCH", path, json=body))

        def find() -> dict[str, Any] | None:
            run = self.check_run(check_run_id)
            held = int((run.get("output") or {}).get("annotations_count") or 0)
            return run if held >= annotations_before + added else None
        return cast(dict[str, Any], self.client.create(path, body, find, method="PATCH"))

    def tree(self, sha: str, recursive: bool = True) -> dict[str, Any]:
        return self.client.call(lambda: raw(self.gh.get_git_tree(sha, recursive=recursive)),
                                f"GET {self.path}/git/trees/{sha}")

    def blob(self, sha: str) -> bytes:
        body = self.client.call(lambda: raw(self.gh.get_git_blob(sha)), f"GET {self.path}/git/blobs/{sha}")
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

    def memo(self, key: Any, compute: Callable[[], T]) -> T:
        """`compute()` once per key; the key must name immutable inputs (SHAs, not branch names)."""
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return cast(T, self._memo[key])
        value = compute()
        with self._lock:
            self._memo[key] = value
            while len(self._memo) > self.max_entries:
                self._memo.popitem(last=False)
        return value


T = TypeVar("T")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_GLOB = re.compile(r"[*?\[]")
MAX_TREE_CALLS = 2000  # directory listings one revision may need when a recursive tree comes back truncated


@dataclass(frozen=True)
class Entry:
    """One tree entry: mode, type (blob, tree, commit) and object id."""

    mode: str
    type: str
    sha: str


def _entries(body: dict[str, Any], prefix: str = "") -> dict[str, Entry]:
    return {prefix + e["path"]: Entry(e["mode"], e["type"], e["sha"]) for e in body.get("tree", [])}


def walk_tree(repo: Repo, tree: str, budget: list[int] | None = None) -> dict[str, Entry]:
    """Every entry below `tree`, by path: one recursive call, or, when GitHub truncates it (over
    100,000 entries or 7 MB), one call per directory, as GitHub advises."""
    body = repo.tree(tree)
    if not body.get("truncated"):
        return _entries(body)
    budget = budget if budget is not None else [MAX_TREE_CALLS]
    out: dict[str, Entry] = {}
    pending = [("", tree)]
    while pending:
        prefix, sha = pending.pop()
        budget[0] -= 1
        if budget[0] < 0:
            raise GitHubError(200, f"the tree {tree[:12]} needs more than {MAX_TREE_CALLS} directory listings")
        for path, e in _entries(repo.tree(sha, recursive=False), prefix).items():
            out[path] = e
            if e.type == "tree":
                pending.append((path + "/", e.sha))
    return out


def _needed(pattern: str) -> tuple[str, bool] | None:
    """(directory to list, whether its whole subtree is needed) for one path or glob of the manifest."""
    if pattern.startswith("/") or ".." in pattern.split("/"):
        return None  # refused by name when the manifest is resolved
    parts = pattern.strip("/").split("/")
    first = next((i for i, p in enumerate(parts) if _GLOB.search(p)), len(parts))
    if first == len(parts):  # a plain path: its directory (and, should it be a directory, itself)
        return "/".join(parts[:-1]), False
    whole = "**" in pattern or first < len(parts) - 1
    return "/".join(parts[:first]), whole


class ApiRevision:
    """A `RevisionReader` at one commit, read through the git trees and blobs API (no clone).

    It reads only the directories it needs: the manifest's directory, the directories the manifest's
    paths and globs name (`list_matching`), and those of the files read, each one tree call, shared
    across revisions by tree id. A recursive tree of the whole repository is asked for only by
    `list_files`, and even then a truncated one is walked directory by directory."""

    def __init__(self, repo: Repo, sha: str, blobs: BlobCache | None = None):
        self.repo, self.sha = repo, sha
        self.label = sha[:12]
        self.blobs = blobs or BlobCache()
        self._dirs: dict[str, dict[str, Entry] | None] = {}
        self._subs: set[str] = set()
        self._budget = [MAX_TREE_CALLS]

    def _tree(self, sha: str) -> dict[str, Entry]:
        key = ("dir", self.repo.full_name, sha)
        if _SHA.match(sha):
            return self.blobs.memo(key, lambda: _entries(self.repo.tree(sha, recursive=False)))
        return _entries(self.repo.tree(sha, recursive=False))  # a branch name moves

    def _dir(self, path: str) -> dict[str, Entry] | None:
        """The entries of directory `path` ("" is the root), or None when there is no such directory."""
        if path not in self._dirs:
            if not path:
                self._dirs[path] = self._tree(self.sha)
            else:
                parent, _, name = path.rpartition("/")
                e = (self._dir(parent) or {}).get(name)
                if e is not None and e.type == "commit":
                    self._subs.add(path)
                self._dirs[path] = self._tree(e.sha) if e is not None and e.type == "tree" else None
        return self._dirs[path]

    def entry(self, path: str) -> Entry | None:
        parent, _, name = path.rpartition("/")
        return (self._dir(parent) or {}).get(name)

    def _subtree(self, path: str) -> dict[str, Entry]:
        """Every entry below directory `path`, by full path."""
        if not path:
            tree = self.sha
        else:
            e = self.entry(path)
            if e is None or e.type != "tree":
                if e is not None and e.type == "commit":
                    self._subs.add(path)
                return {}
            tree = e.sha
        prefix = f"{path}/" if path else ""
        key = ("walk", self.repo.full_name, tree)
        walk = (self.blobs.memo(key, lambda: walk_tree(self.repo, tree, self._budget)) if _SHA.match(tree)
                else walk_tree(self.repo, tree, self._budget))
        found = {prefix + p: e for p, e in walk.items()}
        self._subs.update(p for p, e in found.items() if e.type == "commit")
        return found

    def _files(self, found: dict[str, Entry]) -> list[str]:
        return sorted(p for p, e in found.items() if e.type == "blob")

    def list_files(self) -> list[str]:
        """Every file of the revision (a whole-tree listing: only for callers that need them all)."""
        return self._files(self._subtree(""))

    def list_matching(self, patterns: Iterable[str]) -> list[str]:
        """The files a manifest's paths and globs can match, from the directories they name."""
        found: dict[str, Entry] = {}
        for pattern in patterns:
            need = _needed(pattern)
            if need is None:
                continue
            path, whole = need
            if whole:
                found.update(self._subtree(path))
                continue
            listing = self._dir(path) or {}
            prefix = f"{path}/" if path else ""
            found.update({prefix + n: e for n, e in listing.items()})
            e = listing.get(pattern.strip("/").rsplit("/", 1)[-1])
            if e is not None and e.type == "tree":  # named a directory: say so, as with a full listing
                inner = pattern.strip("/")
                found.update({f"{inner}/{n}": x for n, x in (self._dir(inner) or {}).items()})
        return self._files(found)

    def submodules(self) -> list[str]:
        """Paths of the submodules (gitlinks) met in the directories read so far."""
        for d, listing in list(self._dirs.items()):
            prefix = f"{d}/" if d else ""
            self._subs.update(prefix + n for n, e in (listing or {}).items() if e.type == "commit")
        return sorted(self._subs)

    def links(self, paths: Iterable[str]) -> dict[str, str]:
        """path -> link text of those paths the tree stores as symbolic links."""
        found = [p for p in paths if (e := self.entry(p)) is not None and e.mode == "120000"]
        return {p: (b or b"").decode("utf-8", "surrogateescape") for p, b in self.read_many(found).items()}

    def entries(self, paths: Iterable[str]) -> dict[str, Entry]:
        """The tree entries of those `paths` that are files (mode and blob id)."""
        return {p: e for p in paths if (e := self.entry(p)) is not None and e.type == "blob"}

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        for p in paths:
            e = self.entry(p)
            if e is None or e.type != "blob":
                out[p] = None
                continue
            data = self.blobs.get(e.sha)
            if data is None:
                data = self.repo.blob(e.sha)
                self.blobs.put(e.sha, data)
            out[p] = data
        return out
