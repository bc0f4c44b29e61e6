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

from gating.testing import emulator_render as render
from gating.testing import webhooks
from gating.testing.emulator_auth import (
    DEFAULT_PERMISSIONS,
    READ_ONLY_PERMISSIONS,
    TOKEN_LIFETIME,
    AppIdentity,
    Token,
    new_app_identity,
    new_token_value,
    user_permissions,
)
from gating.testing.emulator_git import BareRepo, CommitInfo, FileChange, Person, RefConflict, init_bare
from gating.testing.emulator_http import Actor, ApiError
from gating.testing.emulator_repo import RepoHandle
from gating.testing.emulator_state import (
    CheckRun,
    CheckSuite,
    Comment,
    Deployment,
    DeploymentStatus,
    Ids,
    Issue,
    Reaction,
    Repo,
    Review,
    Team,
    User,
)
from gating.testing.faults import Faults

ZERO = "0" * 40


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


class Emulator:
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
        self.users: dict[str, User] = {}
        self.repos: dict[str, Repo] = {}
        self.teams: dict[tuple[str, str], Team] = {}
        self.tokens: dict[str, Token] = {}
        self._bare: dict[str, BareRepo] = {}
        self.requests: list[RecordedRequest] = []
        self.problems: list[str] = []
        self.faults = Faults()
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

    def add_collaborator(self, repo: Any, login: str, permission: str = "write") -> None:
        if permission not in ("admin", "maintain", "write", "triage", "read"):
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
            return role
        return "none" if r.private else "read"

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
        head, base = f"refs/heads/{i.head_ref}", f"refs/heads/{i.base_ref}"
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

    # -- acting on GitHub (API handlers and tests both come through here) --------------------------

    def _emit(self, event: str, action: str | None, r: Repo | None, **kw: Any) -> None:
        if self.webhook_url:
            self._dispatcher.submit(self.webhook_url, webhooks.build(self, event, action, r, **kw))

    def after_push(self, r: Repo, ref: str, old: str | None, new: str | None, login: str | None) -> None:
        """A ref moved (API, merge or git push): push webhook, and synchronize for open PRs on it."""
        if not ref.startswith(("refs/heads/", "refs/tags/")):
            return
        self._emit("push", None, r, ref=ref, before=old or ZERO, after=new or ZERO, sender=login)
        branch = ref[len("refs/heads/"):]
        for i in r.issues.values():
            if i.is_pull and i.state == "open" and i.head_ref == branch and new:
                i.updated_at = self.now()
                self._emit("pull_request", "synchronize", r, number=i.number, before=old or ZERO, sender=login)

    def push(self, repo: Any, branch: str, files: dict[str, Any], message: str, user: str | None = None) -> str:
        r = self.repo_record(repo)
        handle = RepoHandle(self, r)
        with self.lock:
            old = handle.head(branch) if self.bare(r).ref(f"refs/heads/{branch}") else None
            sha = handle.commit_files(branch, files, message, author=user)
            self.after_push(r, f"refs/heads/{branch}", old, sha, user)
        return sha

    def create_pull(self, repo: Any, head: str, base: str, title: str, user: str, body: str = "",
                    draft: bool = False) -> dict[str, Any]:
        r = self.repo_record(repo)
        with self.lock:
            bare = self.bare(r)
            head_sha, base_sha = bare.ref(f"refs/heads/{head}"), bare.ref(f"refs/heads/{base}")
            if base_sha is None:
                raise ApiError(422, "Validation Failed",
                               errors=[{"resource": "PullRequest", "field": "base", "code": "invalid"}])
            if head_sha is None:
                raise ApiError(422, "Validation Failed",
                               errors=[{"resource": "PullRequest", "field": "head", "code": "invalid"}])
            if bare.is_ancestor(head_sha, base_sha):
                raise ApiError(422, "Validation Failed", errors=[{"resource": "PullRequest", "code": "custom",
                                                                  "message": f"No commits between {base} and {head}"}])
            for other in r.issues.values():
                if other.is_pull and other.state == "open" and other.head_ref == head and other.base_ref == base:
                    raise ApiError(422, "Validation Failed", errors=[{
                        "resource": "PullRequest", "code": "custom",
                        "message": f"A pull request already exists for {r.owner}:{head}."}])
            self.add_user(user)
            now = self.now()
            i = Issue(r.take_number(), self.ids(), title, body, self.user_record(user).login, now, now,
                      is_pull=True, head_ref=head, base_ref=base, draft=draft)
            r.issues[i.number] = i
            self._emit("pull_request", "opened", r, number=i.number)
            return render.pull(self, r, i)

    def create_issue(self, repo: Any, title: str, user: str, body: str = "") -> dict[str, Any]:
        r = self.repo_record(repo)
        with self.lock:
            now = self.now()
            i = Issue(r.take_number(), self.ids(), title, body, self.user_record(user).login, now, now)
            r.issues[i.number] = i
            return render.issue(self, r, i)

    def update_pull(self, repo: Any, number: int, actor: str, **changes: Any) -> dict[str, Any]:
        r = self.repo_record(repo)
        with self.lock:
            i = r.issues[number]
            now = self.now()
            edits = {k: {"from": getattr(i, k)} for k in ("title", "body") if k in changes and changes[k] != getattr(i, k)}
            for k in ("title", "body"):
                if k in changes:
                    setattr(i, k, changes[k])
            if "base" in changes:
                i.base_ref = changes["base"]
            i.updated_at = now
            state = changes.get("state")
            if state == "closed" and i.state == "open":
                i.closed_head_sha, i.closed_base_sha = self.pull_shas(r, i)
                i.state, i.closed_at = "closed", now
                self._emit("pull_request", "closed", r, number=number, sender=actor)
            elif state == "open" and i.state == "closed" and not i.merged:
                i.state, i.closed_at, i.closed_head_sha, i.closed_base_sha = "open", None, None, None
                self._emit("pull_request", "reopened", r, number=number, sender=actor)
            if edits:
                self._emit("pull_request", "edited", r, number=number, sender=actor, changes=edits)
            return render.pull(self, r, i)

    def merge_pull(self, repo: Any, number: int, merger: str, method: str = "merge", title: str | None = None,
                   message: str | None = None) -> str:
        """A real merge commit (or squash) on the base branch; the PR becomes merged and closed."""
        r = self.repo_record(repo)
        with self.lock:
            i = r.issues[number]
            if i.state != "open":
                raise ApiError(405, "Pull Request is not mergeable")
            bare = self.bare(r)
            head, base = self.pull_shas(r, i)
            tree = bare.merge_tree(base, head)
            if tree is None:
                raise ApiError(405, "Pull Request is not mergeable")
            who = self.identity_person(Actor("user", self.user_record(merger).login))
            if method == "merge":
                msg = f"{title or f'Merge pull request #{number} from {r.owner}/{i.head_ref}'}\n\n{message or i.title}\n"
                parents = [base, head]
            elif method == "squash":
                msg = f"{title or f'{i.title} (#{number})'}\n\n{message or ''}".rstrip() + "\n"
                parents = [base]
            else:
                raise ApiError(405, "Rebase merges are not allowed on this repository.")
            sha = bare.write_commit(tree, parents, msg, who, who)
            try:
                bare.update_ref(f"refs/heads/{i.base_ref}", sha, base)
            except RefConflict as e:
                raise ApiError(409, "Base branch was modified. Review and try the merge again.") from e
            now = self.now()
            i.closed_head_sha, i.closed_base_sha = head, base
            i.merged, i.merged_at, i.merged_by, i.merge_commit_sha = True, now, who_login(self, merger), sha
            i.state, i.closed_at, i.updated_at = "closed", now, now
            self._emit("pull_request", "closed", r, number=number, sender=i.merged_by)
            self.after_push(r, f"refs/heads/{i.base_ref}", base, sha, i.merged_by)
            return sha

    def add_review(self, repo: Any, number: int, user: str, state: str, commit_id: str | None = None,
                   body: str = "") -> dict[str, Any]:
        r = self.repo_record(repo)
        state = state.upper()
        if state not in ("APPROVED", "CHANGES_REQUESTED", "COMMENTED", "PENDING"):
            raise ValueError(f"unknown review state {state!r}")
        with self.lock:
            i = r.issues[number]
            v = Review(self.ids(), number, self.user_record(user).login, state, body,
                       commit_id or self.pull_shas(r, i)[0], self.now())
            r.reviews[v.id] = v
            if state != "PENDING":
                self._emit("pull_request_review", "submitted", r, review_id=v.id)
            return render.review(self, r, v)

    def dismiss_review(self, repo: Any, number: int, review_id: int, message: str = "",
                       actor: str | None = None) -> dict[str, Any]:
        r = self.repo_record(repo)
        with self.lock:
            v = r.reviews[review_id]
            v.state = "DISMISSED"
            self._emit("pull_request_review", "dismissed", r, review_id=v.id, sender=actor)
            return render.review(self, r, v)

    def add_label(self, repo: Any, number: int, label: str, actor: str | None = None) -> None:
        r = self.repo_record(repo)
        with self.lock:
            i = r.issues[number]
            if label not in i.labels:
                i.labels.append(label)
                if i.is_pull:
                    self._emit("pull_request", "labeled", r, number=number, sender=actor)

    def add_comment(self, repo: Any, number: int, user: str, body: str) -> dict[str, Any]:
        r = self.repo_record(repo)
        with self.lock:
            if number not in r.issues:
                raise ApiError(404, "Not Found")
            now = self.now()
            c = Comment(self.ids(), number, self.user_record(user).login, body, now, now)
            r.comments[c.id] = c
            self._emit("issue_comment", "created", r, comment_id=c.id)
            return render.comment(self, r, c)

    def edit_comment(self, repo: Any, comment_id: int, body: str) -> dict[str, Any]:
        r = self.repo_record(repo)
        with self.lock:
            c = r.comments[comment_id]
            old, c.body, c.updated_at = c.body, body, self.now()
            self._emit("issue_comment", "edited", r, comment_id=c.id, changes={"body": {"from": old}})
            return render.comment(self, r, c)

    def add_reaction(self, repo: Any, user: str, content: str, comment_id: int | None = None,
                     number: int | None = None) -> dict[str, Any]:
        r = self.repo_record(repo)
        with self.lock:
            x = Reaction(self.ids(), self.user_record(user).login, content, self.now(), comment_id, number)
            r.reactions.append(x)
            return render.reaction(self, x)

    def new_check_run(self, r: Repo, head_sha: str, name: str) -> CheckRun:
        suite = next((s for s in r.check_suites.values() if s.head_sha == head_sha and s.app_id == self.app.app_id), None)
        if suite is None:
            branch = next((x[0][len("refs/heads/"):] for x in self.bare(r).refs("refs/heads/") if x[1] == head_sha), None)
            suite = CheckSuite(self.ids(), head_sha, branch, self.app.app_id, self.now())
            r.check_suites[suite.id] = suite
        run = CheckRun(self.ids(), head_sha, name, self.app.app_id, suite.id, started_at=self.now())
        r.check_runs[run.id] = run
        return run

    def check_run_changed(self, r: Repo, run: CheckRun, created: bool, was: str | None = None) -> None:
        if created:
            self._emit("check_run", "created", r, check_run_id=run.id)
        if run.status == "completed" and (created or was != "completed"):
            self._emit("check_run", "completed", r, check_run_id=run.id)

    def create_deployment(self, repo: Any, ref: str, environment: str = "production", user: str | None = None,
                          task: str = "deploy", payload: Any = None, description: str | None = None,
                          production_environment: bool | None = None,
                          transient_environment: bool = False) -> dict[str, Any]:
        r = self.repo_record(repo)
        with self.lock:
            sha = self.bare(r).resolve_commit(ref)
            if sha is None:
                raise ApiError(422, f"No ref found for: {ref}")
            prod = environment == "production" if production_environment is None else production_environment
            d = Deployment(self.ids(), sha, ref, task, environment, payload if payload is not None else {},
                           description, self.user_record(user or self.app.bot_login).login, self.now(), prod,
                           transient_environment)
            r.deployments[d.id] = d
            return render.deployment(self, r, d)

    def add_deployment_status(self, repo: Any, deployment_id: int, state: str, user: str | None = None,
                              description: str = "", environment_url: str = "", log_url: str = "",
                              environment: str | None = None) -> dict[str, Any]:
        r = self.repo_record(repo)
        with self.lock:
            d = r.deployments[deployment_id]
            s = DeploymentStatus(self.ids(), state, self.user_record(user or self.app.bot_login).login,
                                 description or "", environment or d.environment, environment_url or "",
                                 log_url or "", self.now())
            d.statuses.append(s)
            self._emit("deployment_status", "created", r, deployment_id=d.id)
            return render.deployment_status(self, r, d, s)

    # -- inspection -------------------------------------------------------------------------------

    def get_pull(self, repo: Any, number: int) -> dict[str, Any]:
        r = self.repo_record(repo)
        with self.lock:
            return render.pull(self, r, r.issues[number])

    def list_reviews(self, repo: Any, number: int) -> list[dict[str, Any]]:
        r = self.repo_record(repo)
        return [render.review(self, r, v) for v in sorted(r.reviews.values(), key=lambda v: v.id) if v.number == number]

    def list_comments(self, repo: Any, number: int) -> list[dict[str, Any]]:
        r = self.repo_record(repo)
        return [render.comment(self, r, c) for c in sorted(r.comments.values(), key=lambda c: c.id) if c.number == number]

    def list_reactions(self, repo: Any, comment_id: int | None = None, issue_number: int | None = None) -> list[dict]:
        r = self.repo_record(repo)
        return [render.reaction(self, x) for x in r.reactions
                if (comment_id is None or x.comment_id == comment_id) and (issue_number is None or x.number == issue_number)]

    def list_check_runs(self, repo: Any, head_sha: str | None = None) -> list[dict[str, Any]]:
        r = self.repo_record(repo)
        return [render.check_run(self, r, c) for c in sorted(r.check_runs.values(), key=lambda c: c.id)
                if head_sha is None or c.head_sha == head_sha]

    def list_deployments(self, repo: Any) -> list[dict[str, Any]]:
        r = self.repo_record(repo)
        return [render.deployment(self, r, d) for d in sorted(r.deployments.values(), key=lambda d: d.id)]

    def list_deployment_statuses(self, repo: Any, deployment_id: int) -> list[dict[str, Any]]:
        r = self.repo_record(repo)
        d = r.deployments[deployment_id]
        return [render.deployment_status(self, r, d, s) for s in d.statuses]

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


def who_login(emu: Emulator, login: str) -> str:
    return emu.user_record(login).login


def start_emulator(tmpdir: str | Path) -> Emulator:
    """An emulator serving on 127.0.0.1 (free port) from a daemon thread; use as a context manager
    or call .stop()."""
    return Emulator(tmpdir).start()
