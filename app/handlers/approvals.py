"""Re-evaluate a pull request's approval rules and post the `gating / approval` check on its head SHA.

The facts come from the GitHub API: the rules from gating.yml at the tip of the base branch (a pull
request cannot loosen its own rules), the semantic diff from snapshots built at the merge base and at
the head through the trees/blobs API, and reviews, eval check, comments, team memberships and
permissions. Posting is idempotent: an unchanged verdict writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.handlers import JobContext, Payload, Registry, pull_key
from gating.audit_record import eval_check_run
from gating.commands.common import empty_snapshot
from gating.diff import ChangeSet, diff_snapshots
from gating.github import ApiRevision, BlobCache, MissingPermission, Repo
from gating.manifest import ManifestError, parse_manifest
from gating.policy import (
    APPROVAL_CHECK,
    EVAL_CHECK,
    OVERRIDE_COMMAND,
    Actor,
    CheckOutput,
    CheckState,
    Comment,
    Facts,
    Policy,
    PolicyError,
    Result,
    Review,
    Status,
    evaluate,
    parse_policy,
    render_check,
)
from gating.policy.missing import missing_permission_check
from gating.snapshot import Snapshot, build_snapshot

PULL_ACTIONS = ("opened", "reopened", "synchronize", "ready_for_review", "edited", "labeled", "unlabeled")
REVIEW_ACTIONS = ("submitted", "edited", "dismissed")


def register(registry: Registry) -> None:
    # Every handler here re-reads the pull request's current state, so one run covers all the
    # deliveries for the same pull request that were queued before it started (coalesce).
    registry.on("pull_request", *PULL_ACTIONS, key=pull_key, coalesce=True)(on_pull_event)
    registry.on("pull_request_review", *REVIEW_ACTIONS, key=pull_key, coalesce=True)(on_pull_event)
    registry.on("check_run", "completed", key=_check_key, when=_is_check(EVAL_CHECK), coalesce=True)(on_check_run)
    registry.on("check_run", "rerequested", key=_check_key, when=_is_check(APPROVAL_CHECK),
                name="approvals.on_rerequest", coalesce=True)(on_check_run)
    registry.on("issue_comment", "created", "edited", "deleted", key=pull_key, when=_is_override,
                coalesce=True)(on_pull_event)


def _is_check(name: str):
    return lambda p: (p.get("check_run") or {}).get("name") == name


def _check_key(p: Payload) -> str | None:
    prs = (p.get("check_run") or {}).get("pull_requests") or []
    repo = (p.get("repository") or {}).get("full_name")
    return f"{repo}#{prs[0]['number']}" if len(prs) == 1 else None


def _is_override(p: Payload) -> bool:
    """Only comments on pull requests that carry (or carried) `/gating override` re-evaluate."""
    issue, comment = p.get("issue") or {}, p.get("comment") or {}
    before = ((p.get("changes") or {}).get("body") or {}).get("from") or ""
    return bool(issue.get("pull_request")) and any(
        OVERRIDE_COMMAND.search(b or "") for b in (comment.get("body"), before))


def on_pull_event(ctx: JobContext) -> None:
    number = (ctx.payload.get("pull_request") or ctx.payload.get("issue") or {})["number"]
    outcome = evaluate_and_publish(ctx, ctx.repo(), int(number))
    ctx.log.info("%s#%s: %s", ctx.payload["repository"]["full_name"], number, outcome)


def on_check_run(ctx: JobContext) -> None:
    run = ctx.payload["check_run"]
    repo = ctx.repo()
    numbers = [p["number"] for p in run.get("pull_requests") or []]
    if not numbers:  # forks: GitHub leaves pull_requests empty, so look the head SHA up
        numbers = [p["number"] for p in repo.open_pulls() if p["head"]["sha"] == run["head_sha"]]
    for n in numbers:
        ctx.log.info("%s#%s: %s", repo.full_name, n, evaluate_and_publish(ctx, repo, int(n)))


# -- gathering the facts --------------------------------------------------------------------------


@dataclass
class ApiFacts(Facts):
    """`PullFacts` over the API; team and permission lookups are made once per login."""

    repo: Repo | None = None
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict)

    def is_team_member(self, team: str, login: str) -> bool:
        k = (team.lower(), login.lower())
        if k not in self._cache:
            self._cache[k] = self.repo.is_team_member(team, login) if self.repo else False
        return self._cache[k]

    def permission(self, login: str) -> str:
        k = ("", login.lower())
        if k not in self._cache:
            self._cache[k] = self.repo.permission(login) if self.repo else "none"
        return self._cache[k]


@dataclass
class Evaluation:
    """One evaluation: what the check run shows, and what an audit entry records."""

    pull: dict[str, Any]
    head_sha: str
    rules_source: str
    result: Result
    facts: ApiFacts | None = None
    changes: ChangeSet | None = None


def _actor(user: dict[str, Any] | None) -> Actor:
    user = user or {}
    return Actor(user.get("login") or "ghost", user.get("type") or "User")


def _snapshot(reader: ApiRevision, path: str) -> Snapshot:
    """The system at a revision; no manifest there counts as an empty system (everything is added)."""
    if reader.read_many([path])[path] is None:
        return empty_snapshot()
    return build_snapshot(reader, path)


def _load_policy(reader: ApiRevision, path: str) -> tuple[Policy, bool]:
    """(the rules, whether the manifest is there at all)."""
    data = reader.read_many([path])[path]
    return (parse_policy(parse_manifest(data, path).approvals), True) if data is not None else (Policy(), False)


def _failed(name: str, sentence: str) -> Result:
    return Result("policy", Status.BLOCKED, sentence, (Result(name, Status.BLOCKED, sentence),), kind="policy")


def gather(repo: Repo, pr: dict[str, Any], manifest_path: str = "gating.yml",
           blobs: BlobCache | None = None) -> Evaluation:
    """Read everything the rules may look at for pull request `pr` (as the API returns it) and
    evaluate them; writes nothing."""
    number, head, base_ref = pr["number"], pr["head"]["sha"], pr["base"]["ref"]
    blobs = blobs or BlobCache()
    rules_sha = repo.branch_sha(base_ref)
    source = f"`{manifest_path}` on `{base_ref}` at `{rules_sha[:7]}`"
    name = repo.full_name  # what depends only on SHAs is computed once per process (BlobCache.memo)
    try:
        policy, found = blobs.memo(("rules", name, rules_sha, manifest_path),
                                   lambda: _load_policy(ApiRevision(repo, rules_sha, blobs), manifest_path))
    except (ManifestError, PolicyError) as e:
        problems = "; ".join(str(p) for p in getattr(e, "problems", [e]))
        return Evaluation(pr, head, source, _failed("rules", f"the rules on {base_ref} cannot be read: {problems}"))
    if not found:
        source += " (there is no such file there, so no rules)"
    merge_base = blobs.memo(("merge-base", name, rules_sha, head), lambda: repo.merge_base(rules_sha, head))
    try:
        changes = blobs.memo(("diff", name, merge_base, head, manifest_path), lambda: diff_snapshots(
            _snapshot(ApiRevision(repo, merge_base, blobs), manifest_path),
            _snapshot(ApiRevision(repo, head, blobs), manifest_path), merge_base, head))
    except ManifestError as e:
        problems = "; ".join(str(p) for p in e.problems)
        return Evaluation(pr, head, source, _failed("semantic-diff", f"cannot compute the semantic diff: {problems}"))
    files: list[str] = blobs.memo(("files", name, number, merge_base, head), lambda: [
        path for f in repo.pull_files(number) for path in (f["filename"], f.get("previous_filename")) if path])
    checks = {}
    r = eval_check_run(repo.check_runs(head, EVAL_CHECK))  # the Action's run before another app's
    if r is not None:
        checks[EVAL_CHECK] = CheckState(EVAL_CHECK, r["status"], r.get("conclusion"), r["head_sha"],
                                        r.get("html_url") or "")
    facts = ApiFacts(
        number=number, author=_actor(pr.get("user")), base_branch=base_ref, head_sha=head,
        labels=[lb["name"] for lb in pr.get("labels") or []], changed_files=files,
        manifest_paths=changes.paths(), categories=changes.categories,
        reviews=[Review(_actor(r.get("user")), r["state"], r.get("commit_id") or "", r.get("submitted_at") or "")
                 for r in repo.reviews(number) if r.get("user")],
        checks=checks,
        comments=[Comment(_actor(c.get("user")), c.get("body") or "", c.get("created_at") or "", c.get("html_url") or "")
                  for c in repo.issue_comments(number)],
        repo=repo,
    )
    return Evaluation(pr, head, source, evaluate(policy, facts), facts, changes)


# -- publishing -----------------------------------------------------------------------------------


def _same(run: dict[str, Any], out: CheckOutput) -> bool:
    o = run.get("output") or {}
    return (run.get("status"), run.get("conclusion"), o.get("title"), o.get("summary"), o.get("text")) == (
        out.status, out.conclusion, out.title, out.summary, out.text)


def publish(repo: Repo, head_sha: str, out: CheckOutput, app_id: str) -> str:
    """Create or update our check run on `head_sha`; a pending verdict after a completed one gets a
    new run (GitHub shows the newest), and an unchanged verdict writes nothing."""
    ours = [r for r in repo.check_runs(head_sha, APPROVAL_CHECK)
            if r.get("name") == APPROVAL_CHECK and str((r.get("app") or {}).get("id", app_id)) == str(app_id)]
    latest = max(ours, key=lambda r: r["id"]) if ours else None
    if latest and _same(latest, out):
        return f"unchanged ({out.title})"
    if latest is None or (latest.get("status") == "completed" and out.status != "completed"):
        repo.create_check_run({"name": APPROVAL_CHECK, "head_sha": head_sha, **out.as_fields()})
        return f"created check run: {out.title}"
    repo.update_check_run(latest["id"], out.as_fields())
    return f"updated check run: {out.title}"


def evaluate_and_publish(ctx: JobContext, repo: Repo, number: int) -> str:
    pr = repo.pull(number)
    if pr.get("state") != "open":
        return "closed; nothing to do"
    try:
        ev = gather(repo, pr, ctx.settings.manifest_path, ctx.blobs)
    except MissingPermission as e:  # say what to grant, on the check itself, instead of failing the job
        out = missing_permission_check(e.accepted, e.method, e.path, f"{e.status}: {e.message}")
        return publish(repo, pr["head"]["sha"], out, ctx.settings.app_id)
    out = render_check(ev.result, ev.head_sha, ev.rules_source)
    return publish(repo, ev.head_sha, out, ctx.settings.app_id)
