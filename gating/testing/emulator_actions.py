"""What people and Apps do on GitHub, as state changes plus the webhooks GitHub sends for them.

API handlers and tests both come through here, so a review created over REST and one created by a
test helper are the same record and emit the same `pull_request_review.submitted`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gating.testing import emulator_render as render
from gating.testing import emulator_routes_protection as protection
from gating.testing import webhooks
from gating.testing.emulator_git import RefConflict
from gating.testing.emulator_http import Actor, ApiError
from gating.testing.emulator_repo import RepoHandle
from gating.testing.emulator_state import (
    CheckRun,
    CheckSuite,
    Comment,
    Deployment,
    DeploymentStatus,
    GateRun,
    Issue,
    Reaction,
    Repo,
    Review,
)

if TYPE_CHECKING:
    from gating.testing.github_emulator import Emulator

ZERO = "0" * 40


class EmulatorActions:
    """Mixed into Emulator; every method takes the emulator lock and mutates its records."""

    def _emit(self: Emulator, event: str, action: str | None, r: Repo | None, **kw: Any) -> None:
        if self.webhook_url:
            self._dispatcher.submit(self.webhook_url, webhooks.build(self, event, action, r, **kw))

    def after_push(self: Emulator, r: Repo, ref: str, old: str | None, new: str | None, login: str | None) -> None:
        """A ref moved (API, merge or git push): push webhook, synchronize for open PRs from that
        branch, and, as GitHub does, an open PR into that branch whose head is now contained in it
        becomes merged (a merge made outside the PR's merge button)."""
        if not ref.startswith(("refs/heads/", "refs/tags/")):
            return
        if r.parent is None:  # the App is installed on the base repository, not on contributors' forks
            self._emit("push", None, r, ref=ref, before=old or ZERO, after=new or ZERO, sender=login)
        if not ref.startswith("refs/heads/") or not new:
            return
        branch = ref[len("refs/heads/"):]
        bare = self.bare(r)
        for base_repo, i in self._pulls_from(r, branch):  # pull requests from this branch, forks' included
            self._sync_pull_ref(base_repo, i)
            i.updated_at = self.now()
            self._emit("pull_request", "synchronize", base_repo, number=i.number, before=old or ZERO, sender=login)
        for i in r.issues.values():
            if not i.is_pull or i.state != "open":
                continue
            if i.base_ref == branch and not (i.head_repo is None and i.head_ref == branch):
                head = self.pull_shas(r, i)[0]
                if head and old and not bare.is_ancestor(head, old) and bare.is_ancestor(head, new):
                    now = self.now()
                    i.closed_head_sha, i.closed_base_sha = head, old
                    i.merged, i.merged_at, i.merge_commit_sha = True, now, new
                    i.merged_by = self.user_record(login or self.app.bot_login).login
                    i.state, i.closed_at, i.updated_at = "closed", now, now
                    self._emit("pull_request", "closed", r, number=i.number, sender=i.merged_by)

    def push(self: Emulator, repo: Any, branch: str, files: dict[str, Any], message: str, user: str | None = None) -> str:
        r = self.repo_record(repo)
        handle = RepoHandle(self, r)
        with self.lock:
            old = handle.head(branch) if self.bare(r).ref(f"refs/heads/{branch}") else None
            sha = handle.commit_files(branch, files, message, author=user)
            self.after_push(r, f"refs/heads/{branch}", old, sha, user)
        return sha

    def create_pull(self: Emulator, repo: Any, head: str, base: str, title: str, user: str, body: str = "",
                    draft: bool = False) -> dict[str, Any]:
        r = self.repo_record(repo)
        with self.lock:
            bare = self.bare(r)
            head_owner, _, head = head.rpartition(":")
            fork = self._fork_of(r, head_owner) if head_owner and head_owner.lower() != r.owner.lower() else None
            if fork is not None:  # the fork's commits become reachable in the base repository (refs/pull/N/head)
                head_sha = self.bare(fork).ref(f"refs/heads/{head}")
                if head_sha is not None:
                    bare.git.run("fetch", "--quiet", "--no-tags", str(fork.bare_path), f"refs/heads/{head}")
            else:
                head_sha = bare.ref(f"refs/heads/{head}")
            base_sha = bare.ref(f"refs/heads/{base}")
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
                if (other.is_pull and other.state == "open" and other.head_ref == head and other.base_ref == base
                        and other.head_repo == (fork.full_name if fork else None)):
                    raise ApiError(422, "Validation Failed", errors=[{
                        "resource": "PullRequest", "code": "custom",
                        "message": f"A pull request already exists for {(fork or r).owner}:{head}."}])
            self.add_user(user)
            now = self.now()
            i = Issue(r.take_number(), self.ids(), title, body, self.user_record(user).login, now, now,
                      is_pull=True, head_ref=head, base_ref=base, draft=draft,
                      head_repo=fork.full_name if fork else None)
            r.issues[i.number] = i
            self._sync_pull_ref(r, i)
            self._emit("pull_request", "opened", r, number=i.number)
            return render.pull(self, r, i)

    def _fork_of(self: Emulator, r: Repo, owner: str) -> Repo:
        """`owner`'s fork of r, as GitHub resolves `head: "owner:branch"`."""
        for other in self.repos.values():
            if other.owner.lower() == owner.lower() and other.parent == r.full_name:
                return other
        raise ApiError(422, "Validation Failed", errors=[{"resource": "PullRequest", "field": "head", "code": "invalid"}])

    def _pulls_from(self: Emulator, r: Repo, branch: str) -> list[tuple[Repo, Issue]]:
        """Open pull requests whose head is `branch` of r: in r itself, and in the repository r forks."""
        found = [(r, i) for i in r.issues.values() if i.is_pull and i.state == "open" and i.head_repo is None
                 and i.head_ref == branch]
        parent = self.repos.get(r.parent.lower()) if r.parent else None
        if parent is not None:
            found += [(parent, i) for i in parent.issues.values() if i.is_pull and i.state == "open"
                      and i.head_repo == r.full_name and i.head_ref == branch]
        return found

    def _sync_pull_ref(self: Emulator, r: Repo, i: Issue) -> None:
        """refs/pull/N/head in the base repository follows the head branch, wherever it lives (GitHub
        keeps it for every pull request; a fork's commits are fetchable from the base only through it)."""
        ref = f"refs/pull/{i.number}/head"
        if i.head_repo is None:
            sha = self.bare(r).ref(f"refs/heads/{i.head_ref}")
            if sha:
                self.bare(r).git.run("update-ref", ref, sha)
            return
        fork = self.repo_record(i.head_repo)
        self.bare(r).git.run("fetch", "--quiet", "--no-tags", str(fork.bare_path), f"+refs/heads/{i.head_ref}:{ref}")

    def create_issue(self: Emulator, repo: Any, title: str, user: str, body: str = "") -> dict[str, Any]:
        r = self.repo_record(repo)
        with self.lock:
            now = self.now()
            i = Issue(r.take_number(), self.ids(), title, body, self.user_record(user).login, now, now)
            r.issues[i.number] = i
            return render.issue(self, r, i)

    def update_pull(self: Emulator, repo: Any, number: int, actor: str, **changes: Any) -> dict[str, Any]:
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

    def merge_pull(self: Emulator, repo: Any, number: int, merger: str, method: str = "merge", title: str | None = None,
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
                head_owner = self.repo_record(i.head_repo).owner if i.head_repo else r.owner
                msg = f"{title or f'Merge pull request #{number} from {head_owner}/{i.head_ref}'}\n\n{message or i.title}\n"
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
            i.merged, i.merged_at, i.merged_by, i.merge_commit_sha = True, now, self.user_record(merger).login, sha
            i.state, i.closed_at, i.updated_at = "closed", now, now
            self._emit("pull_request", "closed", r, number=number, sender=i.merged_by)
            self.after_push(r, f"refs/heads/{i.base_ref}", base, sha, i.merged_by)
            return sha

    def add_review(self: Emulator, repo: Any, number: int, user: str, state: str, commit_id: str | None = None,
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

    def dismiss_review(self: Emulator, repo: Any, number: int, review_id: int, message: str = "",
                       actor: str | None = None) -> dict[str, Any]:
        r = self.repo_record(repo)
        with self.lock:
            v = r.reviews[review_id]
            v.state = "DISMISSED"
            self._emit("pull_request_review", "dismissed", r, review_id=v.id, sender=actor)
            return render.review(self, r, v)

    def add_label(self: Emulator, repo: Any, number: int, label: str, actor: str | None = None) -> None:
        r = self.repo_record(repo)
        with self.lock:
            i = r.issues[number]
            if label not in i.labels:
                i.labels.append(label)
                if i.is_pull:
                    self._emit("pull_request", "labeled", r, number=number, sender=actor)

    def add_comment(self: Emulator, repo: Any, number: int, user: str, body: str) -> dict[str, Any]:
        r = self.repo_record(repo)
        with self.lock:
            if number not in r.issues:
                raise ApiError(404, "Not Found")
            now = self.now()
            c = Comment(self.ids(), number, self.user_record(user).login, body, now, now)
            r.comments[c.id] = c
            self._emit("issue_comment", "created", r, comment_id=c.id)
            return render.comment(self, r, c)

    def edit_comment(self: Emulator, repo: Any, comment_id: int, body: str, editor: str | None = None) -> dict[str, Any]:
        """As the author, or as `editor` (anyone with write access may edit anyone's comment): the
        `edited` webhook's sender is whoever edited it, its comment.user stays the author."""
        r = self.repo_record(repo)
        with self.lock:
            c = r.comments[comment_id]
            old, c.body, c.updated_at = c.body, body, self.now()
            sender = self.user_record(editor).login if editor else c.user
            self._emit("issue_comment", "edited", r, comment_id=c.id, sender=sender, changes={"body": {"from": old}})
            return render.comment(self, r, c)

    def add_reaction(self: Emulator, repo: Any, user: str, content: str, comment_id: int | None = None,
                     number: int | None = None) -> dict[str, Any]:
        r = self.repo_record(repo)
        with self.lock:
            x = Reaction(self.ids(), self.user_record(user).login, content, self.now(), comment_id, number)
            r.reactions.append(x)
            return render.reaction(self, x)

    def new_check_run(self: Emulator, r: Repo, head_sha: str, name: str, app_id: int | None = None) -> CheckRun:
        app_id = app_id or self.app.app_id
        suite = next((s for s in r.check_suites.values() if s.head_sha == head_sha and s.app_id == app_id), None)
        if suite is None:
            branch = next((x[0][len("refs/heads/"):] for x in self.bare(r).refs("refs/heads/") if x[1] == head_sha), None)
            suite = CheckSuite(self.ids(), head_sha, branch, app_id, self.now())
            r.check_suites[suite.id] = suite
        run = CheckRun(self.ids(), head_sha, name, app_id, suite.id, started_at=self.now())
        r.check_runs[run.id] = run
        return run

    def check_run_changed(self: Emulator, r: Repo, run: CheckRun, created: bool, was: str | None = None) -> None:
        if created:
            self._emit("check_run", "created", r, check_run_id=run.id)
        if run.status == "completed" and (created or was != "completed"):
            self._emit("check_run", "completed", r, check_run_id=run.id)

    def protect_branch(self: Emulator, repo: Any, branch: str, required_reviews: int | None = None,
                       contexts: list[str] | None = None, enforce_admins: bool = False,
                       allow_force_pushes: bool = False, allow_deletions: bool = False) -> dict[str, Any]:
        """What PUT .../branches/{branch}/protection does, without HTTP; returns the rule as GET shows it."""
        body = {"required_pull_request_reviews": None if required_reviews is None else
                {"required_approving_review_count": required_reviews},
                "required_status_checks": None if contexts is None else {"strict": False, "contexts": contexts},
                "enforce_admins": enforce_admins, "restrictions": None,
                "allow_force_pushes": allow_force_pushes, "allow_deletions": allow_deletions}
        r = self.repo_record(repo)
        with self.lock:
            if self.bare(r).ref(f"refs/heads/{branch}") is None:
                raise KeyError(f"{r.full_name} has no branch {branch}")
            rule = r.protections[branch] = protection.from_body(body)
            return protection.protection_json(self, r, branch, rule)

    def unprotect_branch(self: Emulator, repo: Any, branch: str) -> None:
        with self.lock:
            self.repo_record(repo).protections.pop(branch, None)

    def create_deployment(self: Emulator, repo: Any, ref: str, environment: str = "production", user: str | None = None,
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

    def add_deployment_status(self: Emulator, repo: Any, deployment_id: int, state: str, user: str | None = None,
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

    def enable_protection_rule(self: Emulator, repo: Any, environment: str, app_id: int | None = None) -> None:
        """What an admin does in Settings > Environments: enable a GitHub App's custom deployment
        protection rule on `environment` (the emulated App's, unless `app_id` names another)."""
        r = self.repo_record(repo)
        with self.lock:
            r.environment_rules.setdefault(environment, set()).add(app_id or self.app.app_id)

    def request_deployment(self: Emulator, repo: Any, ref: str, environment: str, user: str | None = None,
                           event: str = "push") -> dict[str, Any]:
        """A workflow job with `environment:` starts: GitHub creates the deployment (status `waiting`)
        and, where the environment has custom protection rules, holds the run and sends each rule's
        App a `deployment_protection_rule` event with the run's callback URL. Returns the run id, the
        deployment and the callback URL."""
        r = self.repo_record(repo)
        d = self.create_deployment(r, ref, environment, user=user or "github-actions[bot]")
        with self.lock:
            dep = r.deployments[d["id"]]
            apps = set(r.environment_rules.get(environment) or ())
            full_ref = ref if ref.startswith("refs/") else (
                f"refs/heads/{ref}" if self.bare(r).ref(f"refs/heads/{ref}") else dep.sha)
            run = GateRun(self.ids(), dep.sha, full_ref, environment, event, dep.id, apps)
            r.gate_runs[run.id] = run
            callback = f"{self.api_url}/repos/{r.full_name}/actions/runs/{run.id}/deployment_protection_rule"
            if self.app.app_id in apps:
                self._emit("deployment_protection_rule", "requested", r, deployment_id=dep.id, gate_run_id=run.id,
                           sender=dep.creator)
        return {"run_id": run.id, "deployment": d, "deployment_callback_url": callback}

    def gate_run(self: Emulator, repo: Any, run_id: int) -> GateRun:
        return self.repo_record(repo).gate_runs[run_id]

    # -- inspection -------------------------------------------------------------------------------

    def get_pull(self: Emulator, repo: Any, number: int) -> dict[str, Any]:
        r = self.repo_record(repo)
        with self.lock:
            return render.pull(self, r, r.issues[number])

    def list_reviews(self: Emulator, repo: Any, number: int) -> list[dict[str, Any]]:
        r = self.repo_record(repo)
        return [render.review(self, r, v) for v in sorted(r.reviews.values(), key=lambda v: v.id) if v.number == number]

    def list_comments(self: Emulator, repo: Any, number: int) -> list[dict[str, Any]]:
        r = self.repo_record(repo)
        return [render.comment(self, r, c) for c in sorted(r.comments.values(), key=lambda c: c.id) if c.number == number]

    def list_reactions(self: Emulator, repo: Any, comment_id: int | None = None, issue_number: int | None = None) -> list[dict]:
        r = self.repo_record(repo)
        return [render.reaction(self, x) for x in r.reactions
                if (comment_id is None or x.comment_id == comment_id) and (issue_number is None or x.number == issue_number)]

    def list_check_runs(self: Emulator, repo: Any, head_sha: str | None = None) -> list[dict[str, Any]]:
        r = self.repo_record(repo)
        return [render.check_run(self, r, c) for c in sorted(r.check_runs.values(), key=lambda c: c.id)
                if head_sha is None or c.head_sha == head_sha]

    def list_deployments(self: Emulator, repo: Any) -> list[dict[str, Any]]:
        r = self.repo_record(repo)
        return [render.deployment(self, r, d) for d in sorted(r.deployments.values(), key=lambda d: d.id)]

    def list_deployment_statuses(self: Emulator, repo: Any, deployment_id: int) -> list[dict[str, Any]]:
        r = self.repo_record(repo)
        d = r.deployments[deployment_id]
        return [render.deployment_status(self, r, d, s) for s in d.statuses]
