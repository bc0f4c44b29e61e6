"""The GitHub emulator's public face: state, helpers that act like a person on GitHub, and lifecycle.

`start_emulator(tmpdir)` runs it on 127.0.0.1 (werkzeug's threaded server, daemon thread); tests get
one per test from the `github` fixture. See gating/testing/README.md for the contract.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gating.testing import webhooks
from gating.testing.emulator_actions import EmulatorActions
from gating.testing.emulator_auth import (
    ACTIONS_APP_ID,
    ACTIONS_APP_SLUG,
    DEFAULT_PERMISSIONS,
    READ_ONLY_PERMISSIONS,
    TOKEN_LIFETIME,
    AppIdentity,
    Token,
    new_app_identity,
    new_token_value,
    user_permissions,
)
from gating.testing.emulator_clicks import EmulatorClicks
from gating.testing.emulator_git import BareRepo, CommitInfo, FileChange, Person, init_bare
from gating.testing.emulator_http import Actor, ApiError
from gating.testing.emulator_limits import Limits
from gating.testing.emulator_repo import RepoHandle
from gating.testing.emulator_state import (
    Ids,
    Issue,
    Repo,
    Team,
    User,
)
from gating.testing.faults import Faults


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    status: int
    json: Any
    headers: dict[str, str]
    operation: str | None
    duration_ms: float = 0.0


@dataclass
class _Usage:
    used: dict[str, int] = field(default_factory=dict)


class Emulator(EmulatorActions, EmulatorClicks):
    """One emulated GitHub: users, repositories (bare git on disk), an App with one installation."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.repos_root = self.root / "repos"
        self.repos_root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.ids = Ids()
        self._offset = 0.0
        self.started_at = time.time()
        self.app: AppIdentity = new_app_identity()
        self.app_owner = "gating-dev"
        self.installation_permissions: dict[str, str] = dict(DEFAULT_PERMISSIONS)
        self.manifest_codes: dict[str, Any] = {}  # code -> PendingApp (emulator_manifest)
        self.oauth_codes: dict[str, Any] = {}  # code -> OAuthCode (emulator_oauth)
        self.users: dict[str, User] = {}
        self.repos: dict[str, Repo] = {}
        self.teams: dict[tuple[str, str], Team] = {}
        self.custom_roles: dict[tuple[str, str], str] = {}  # (org, role name) -> base role, lower case
        self.tokens: dict[str, Token] = {}
        self._bare: dict[str, BareRepo] = {}
        self.requests: list[RecordedRequest] = []
        self.problems: list[str] = []
        self.faults = Faults()
        self.limits = Limits()
        self.webhook_url: str | None = None
        self._dispatcher = webhooks.Dispatcher()
        self._usage = _Usage()
        self.api_url = ""
        self.web_url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.add_user(self.app_owner)
        bot = self.add_user(self.app.bot_login, type="Bot")
        bot.email = f"{self.app.app_id}+{self.app.bot_login}@users.noreply.example.invalid"

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> Emulator:
        from gating.testing.emulator_server import serve

        self._server, self._thread = serve(self)
        port = self._server.server_port
        self.web_url = f"http://127.0.0.1:{port}"
        self.api_url = f"{self.web_url}/api/v3"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._dispatcher.stop()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- clock ------------------------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += seconds

    @staticmethod
    def parse_time(text: str) -> float:
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError as e:
            raise ApiError(422, f"Invalid time: {text}") from e

    # -- users, teams, collaborators --------------------------------------------------------------

    def add_user(self, login: str, type: str = "User", name: str | None = None, email: str | None = None) -> User:
        with self.lock:
            u = self.users.get(login.lower())
            if u is None:
                u = User(login, self.ids(), type, name or login, email or f"{login}@users.noreply.example.invalid")
                self.users[login.lower()] = u
            elif type != "User":
                u.type = type
            return u

    def user_record(self, login: str) -> User:
        return self.users.get(login.lower()) or self.add_user(login)

    def login_for_email(self, email: str) -> str | None:
        for u in self.users.values():
            if u.email == email:
                return u.login
        return None

    def add_custom_role(self, org: str, name: str, base_role: str) -> None:
        """An organization's custom repository role (e.g. "release-manager" on top of maintain)."""
        if base_role not in ("read", "triage", "write", "maintain"):
            raise ValueError(f"a custom role's base role is read, triage, write or maintain, not {base_role!r}")
        with self.lock:
            self.add_user(org, type="Organization")
            self.custom_roles[(org.lower(), name.lower())] = base_role

    def add_collaborator(self, repo: Any, login: str, permission: str = "write") -> None:
        """`permission`: admin, maintain, write, triage, read, or a custom role of the owner (add_custom_role)."""
        owner = self.repo_record(repo).owner.lower()
        if permission not in ("admin", "maintain", "write", "triage", "read") and \
                (owner, permission.lower()) not in self.custom_roles:
            raise ValueError(f"unknown permission {permission!r}")
        with self.lock:
            self.add_user(login)
            self.repo_record(repo).collaborators[login.lower()] = permission

    def add_team_member(self, org: str, team_slug: str, login: str, role: str = "member") -> None:
        with self.lock:
            self.add_user(org, type="Organization")
            self.add_user(login)
            key = (org.lower(), team_slug.lower())
            team = self.teams.get(key) or Team(org, team_slug, self.ids(), team_slug)
            team.members[login.lower()] = role
            self.teams[key] = team

    def permission_of(self, r: Repo, login: str | None) -> str:
        if login is None:
            return "read" if not r.private else "none"
        if login.lower() == r.owner.lower():
            return "admin"
        if login.lower() == self.app.bot_login.lower():
            return "write"
        role = r.collaborators.get(login.lower())
        if role:
            return self.custom_roles.get((r.owner.lower(), role.lower()), role)
        return "none" if r.private else "read"

    def role_name_of(self, r: Repo, login: str) -> str:
        """The role GitHub names in `role_name`: a custom role's own name, else the base permission."""
        return r.collaborators.get(login.lower()) or self.permission_of(r, login)

    def association(self, r: Repo, login: str | None) -> str:
        if login is None:
            return "NONE"
        if login.lower() == r.owner.lower():
            return "OWNER"
        if any(t.org.lower() == r.owner.lower() and login.lower() in t.members for t in self.teams.values()):
            return "MEMBER"
        if login.lower() in r.collaborators:
            return "COLLABORATOR"
        return "NONE"

    # -- tokens -----------------------------------------------------------------------------------

    def mint_installation_token(self, permissions: dict[str, str] | None = None,
                                repositories: list[str] | None = None) -> Token:
        now = self.now()
        tok = Token(new_token_value("ghs_"), "installation", now, now + TOKEN_LIFETIME,
                    dict(permissions or self.installation_permissions) | {"metadata": "read"},
                    list(repositories) if repositories else None, self.app.bot_login)
        with self.lock:
            self.tokens[tok.value] = tok
        return tok

    def installation_token(self, permissions: dict[str, str] | None = None,
                           repositories: list[str] | None = None) -> str:
        return self.mint_installation_token(permissions, repositories).value

    def read_only_token(self, repositories: list[str] | None = None) -> str:
        return self.installation_token(dict(READ_ONLY_PERMISSIONS), repositories)

    def actions_token(self, permissions: dict[str, str] | None = None) -> str:
        """A workflow's GITHUB_TOKEN: an installation token of the GitHub Actions app, so what it posts
        (check runs) belongs to that app and not to the emulated App."""
        now = self.now()
        self.add_user("github", type="Organization")  # the app's owner
        tok = Token(new_token_value("ghs_"), "installation", now, now + TOKEN_LIFETIME,
                    dict(permissions or self.installation_permissions) | {"metadata": "read"}, None,
                    self.add_user(f"{ACTIONS_APP_SLUG}[bot]", type="Bot").login, ACTIONS_APP_ID)
        with self.lock:
            self.tokens[tok.value] = tok
        return tok.value

    def user_token(self, login: str) -> str:
        self.add_user(login)
        tok = Token(new_token_value("ghp_"), "user", self.now(), None, {}, None, self.user_record(login).login)
        with self.lock:
            self.tokens[tok.value] = tok
        return tok.value

    def effective_permissions(self, actor: Actor, r: Repo | None) -> dict[str, str]:
        if actor.token is None:
            return {}
        if actor.token.kind == "installation":
            return actor.token.permissions
        if r is None:
            return {k: "read" for k in DEFAULT_PERMISSIONS}
        perms = user_permissions(self.permission_of(r, actor.login))
        if perms:  # anyone who can read may comment, react, review and open pull requests
            perms |= {"issues": perms["issues"].replace("read", "write"),
                      "pull_requests": perms["pull_requests"].replace("read", "write")}
        return perms

    def identity_person(self, actor: Actor) -> Person:
        login = actor.login or self.app.bot_login
        u = self.user_record(login)
        return Person(u.name or u.login, u.email or "", int(self.now()))

    def rate_limit_snapshot(self, actor: Actor) -> dict[str, int]:
        key = actor.token.value if actor.token else "anonymous"
        limit = 60 if actor.token is None else 5000
        used = self._usage.used.get(key, 0)
        reset = int(self.started_at // 3600 * 3600 + 3600 + self._offset)
        return {"limit": limit, "remaining": max(0, limit - used), "reset": reset, "used": used}

    def count_request(self, actor: Actor) -> dict[str, int]:
        key = actor.token.value if actor.token else "anonymous"
        with self.lock:
            self._usage.used[key] = self._usage.used.get(key, 0) + 1
        return self.rate_limit_snapshot(actor)

    # -- repositories -----------------------------------------------------------------------------

    def create_repo(self, full_name: str, source_dir: str | Path | None = None, default_branch: str = "main",
                    private: bool = False, owner_type: str | None = None) -> RepoHandle:
        owner, name = full_name.split("/", 1)
        with self.lock:
            if full_name.lower() in self.repos:
                raise ValueError(f"repository {full_name} already exists")
            self.add_user(owner, type=owner_type or ("User" if owner == self.app_owner else "Organization"))
            path = self.repos_root / owner / f"{name}.git"
            bare = init_bare(path, default_branch)
            r = Repo(self.ids(), owner, name, private, default_branch, path, self.now())
            self.repos[full_name.lower()] = r
            self._bare[full_name.lower()] = bare
        handle = RepoHandle(self, r)
        if source_dir is not None:
            handle.push_dir(Path(source_dir), default_branch, "Initial commit")
        return handle

    def fork_repo(self, source: Any, owner: str, name: str | None = None) -> RepoHandle:
        """What POST /repos/{owner}/{repo}/forks does: a copy of every branch under another owner,
        marked as a fork of `source` (pull requests from it get `head.repo` = the fork)."""
        src = self.repo_record(source)
        handle = self.create_repo(f"{owner}/{name or src.name}", default_branch=src.default_branch,
                                  owner_type="User")
        handle.record.parent = src.full_name
        handle.git.run("fetch", "--quiet", "--no-tags", str(src.bare_path), "+refs/heads/*:refs/heads/*")
        return handle

    def repo(self, full_name: str) -> RepoHandle:
        return RepoHandle(self, self.repo_record(full_name))

    def repo_record(self, repo: Any) -> Repo:
        if isinstance(repo, Repo):
            return repo
        name = repo.full_name if hasattr(repo, "full_name") else str(repo)
        r = self.repos.get(name.lower())
        if r is None:
            raise KeyError(f"no emulated repository {name}")
        return r

    def bare(self, r: Repo) -> BareRepo:
        return self._bare[r.full_name.lower()]

    # -- pull request facts -----------------------------------------------------------------------

    def pull_shas(self, r: Repo, i: Issue) -> tuple[str, str]:
        """(head, base) SHAs: live branch tips while open, frozen once merged or closed."""
        if i.state == "closed" and i.closed_head_sha:
            return i.closed_head_sha, i.closed_base_sha or ""
        # a fork's head is known to the base repository only as refs/pull/N/head
        head = f"refs/pull/{i.number}/head" if i.head_repo else f"refs/heads/{i.head_ref}"
        base = f"refs/heads/{i.base_ref}"
        tips = self.bare(r).refs_of(head, base)
        return tips.get(head) or i.closed_head_sha or "", tips.get(base, "")

    def _pull_range(self, r: Repo, i: Issue, shas: tuple[str, str] | None = None) -> tuple[str | None, str]:
        head, base = shas or self.pull_shas(r, i)
        if not head or not base:
            return None, head
        return self.bare(r).merge_base(base, head), head

    def pull_files(self, r: Repo, i: Issue, shas: tuple[str, str] | None = None) -> list[FileChange]:
        mb, head = self._pull_range(r, i, shas)
        return self.bare(r).diff(mb, head) if mb else []

    def pull_commits(self, r: Repo, i: Issue, shas: tuple[str, str] | None = None) -> list[CommitInfo]:
        mb, head = self._pull_range(r, i, shas)
        if not mb:
            return []
        return list(reversed(self.bare(r).commits(f"{mb}..{head}", max_count=250)))

    # -- recorded calls, problems, webhooks --------------------------------------------------------

    def record(self, req: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(req)

    def reset_requests(self) -> None:
        with self.lock:
            self.requests.clear()

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)

    def take_problems(self) -> list[str]:
        with self.lock:
            out, self.problems = self.problems, []
            return out

    def webhook(self, event: str, action: str | None = None, repo: Any = None, **fields: Any) -> webhooks.Delivery:
        with self.lock:
            r = self.repo_record(repo) if repo is not None else None
            return webhooks.build(self, event, action, r, **fields)

    def deliver(self, url: str, delivery: webhooks.Delivery) -> Any:
        return webhooks.deliver(url, delivery)

    def wait_for_deliveries(self, timeout: float = 5.0) -> bool:
        return self._dispatcher.wait(timeout)

    @property
    def deliveries(self) -> list[tuple[webhooks.Delivery, int | None]]:
        return list(self._dispatcher.deliveries)


def start_emulator(tmpdir: str | Path) -> Emulator:
    """An emulator serving on 127.0.0.1 (free port) from a daemon thread; use as a context manager
    or call .stop()."""
    return Emulator(tmpdir).start()
