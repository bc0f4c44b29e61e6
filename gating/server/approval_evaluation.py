"""Evaluate a pull request's approval rules and post the `gating / approval` check on its head SHA.

The facts come from the GitHub API: the rules from gating.yml at the tip of the base branch (a pull
request cannot loosen its own rules), the semantic diff from snapshots built at the merge base and at
the head through the trees/blobs API, and reviews, eval check, comments, team memberships and
permissions. Posting is idempotent: an unchanged verdict writes nothing.

Every handler that re-evaluates a pull request calls `evaluate_and_publish`: the approvals handler on
the events that change a pull request's facts, the re-evaluation handler on those that change nothing
in it (re-run buttons, accepted permissions). It lives here so the handlers need not import each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gating import limits
from gating.audit.record import eval_check_run
from gating.diff.changes import ChangeSet
from gating.diff.semantic import diff_snapshots
from gating.github import ApiRevision, BlobCache, MissingPermission, Repo
from gating.policy import (
    APPROVAL_CHECK,
    EVAL_CHECK,
    Actor,
    CheckOutput,
    CheckState,
    Facts,
    OverrideAct,
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
from gating.server import overrides
from gating.server.handlers import JobContext
from gating.server.links import report_url
from gating.system.manifest import ManifestError, parse_manifest
from gating.system.snapshot import Snapshot, build_snapshot, empty_snapshot

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
        return bool(self._cache[k])

    def permission(self, login: str) -> str:
        k = ("", login.lower())
        if k not in self._cache:
            self._cache[k] = self.repo.permission(login) if self.repo else "none"
        return str(self._cache[k])


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


def _paths(entries: list[dict[str, Any]]) -> tuple[list[str], int]:
    """(every path a listed file has, old names included; how many files were listed)."""
    return [p for f in entries for p in (f["filename"], f.get("previous_filename")) if p], len(entries)


def _failed(name: str, sentence: str) -> Result:
    return Result("policy", Status.BLOCKED, sentence, (Result(name, Status.BLOCKED, sentence),), kind="policy")


def gather(repo: Repo, pr: dict[str, Any], manifest_path: str = "gating.yml",
           blobs: BlobCache | None = None, overrides_on: Sequence[OverrideAct] = ()) -> Evaluation:
    """Read everything the rules may look at for pull request `pr` (as the API returns it) and
    evaluate them, with the overrides the App recorded on it; writes nothing."""
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
    files, listed = blobs.memo(("files", name, number, merge_base, head), lambda: _paths(repo.pull_files(number)))
    unlisted = max(0, int(pr.get("changed_files") or 0) - listed)  # GitHub lists at most 3,000 files
    checks = {}
    r = eval_check_run(repo.check_runs(head, EVAL_CHECK))  # the Action's run before another app's
    if r is not None:
        checks[EVAL_CHECK] = CheckState(EVAL_CHECK, r["status"], r.get("conclusion"), r["head_sha"],
                                        r.get("html_url") or "")
    facts = ApiFacts(
        number=number, author=_actor(pr.get("user")), base_branch=base_ref, head_sha=head,
        labels=[lb["name"] for lb in pr.get("labels") or []], changed_files=files, unlisted_files=unlisted,
        manifest_paths=changes.paths(), categories=changes.categories,
        reviews=[Review(_actor(r.get("user")), r["state"], r.get("commit_id") or "", r.get("submitted_at") or "")
                 for r in repo.reviews(number) if r.get("user")],
        checks=checks,
        overrides=list(overrides_on),
        repo=repo,
    )
    return Evaluation(pr, head, source, evaluate(policy, facts), facts, changes)


# -- publishing -----------------------------------------------------------------------------------


def _same(run: dict[str, Any], out: CheckOutput) -> bool:
    o = run.get("output") or {}
    return (run.get("status"), run.get("conclusion"), o.get("title"), o.get("summary"), o.get("text")) == (
        out.status, out.conclusion, out.title, out.summary, out.text)


def publish(repo: Repo, head_sha: str, out: CheckOutput, app_id: str, details_url: str | None = None) -> str:
    """Create or update our check run on `head_sha`; a pending verdict after a completed one gets a
    new run (GitHub shows the newest), and an unchanged verdict writes nothing. `details_url`: the
    eval report page, when the App serves pages."""
    fields = out.as_fields() | ({"details_url": details_url} if details_url else {})
    ours = [r for r in repo.check_runs(head_sha, APPROVAL_CHECK)
            if r.get("name") == APPROVAL_CHECK and str((r.get("app") or {}).get("id", app_id)) == str(app_id)]
    latest = max(ours, key=lambda r: r["id"]) if ours else None
    if latest and _same(latest, out):
        return f"unchanged ({out.title})"
    if latest is None or (latest.get("status") == "completed" and out.status != "completed"):
        repo.create_check_run({"name": APPROVAL_CHECK, "head_sha": head_sha, **fields})
        return f"created check run: {out.title}"
    repo.update_check_run(latest["id"], fields)
    return f"updated check run: {out.title}"


def evaluate_and_publish(ctx: JobContext, repo: Repo, number: int) -> str:
    try:
        pr = repo.pull(number)
        if pr.get("state") != "open":
            return "closed; nothing to do"
        acts = overrides.store(ctx).acts(repo.full_name, number)
        ev = gather(repo, pr, ctx.settings.manifest_path, ctx.blobs, acts)
    except MissingPermission as e:  # say what to grant, on the check itself, instead of failing the job
        with limits.unbounded():
            pr = repo.pull(number)
            out = missing_permission_check(e.accepted, e.method, e.path, f"{e.status}: {e.message}")
            return publish(repo, pr["head"]["sha"], out, ctx.settings.app_id,
                           report_url(ctx.settings, repo.full_name, pr["head"]["sha"]))
    except (limits.BudgetExceeded, MemoryError) as e:  # the job's bound: say so on the pull request
        with limits.unbounded():
            pr = repo.pull(number)
            why = str(e) if isinstance(e, limits.BudgetExceeded) else "refused: the job ran out of memory"
            ev = Evaluation(pr, pr["head"]["sha"], f"`{ctx.settings.manifest_path}`", _failed("limits", why))
    with limits.unbounded():
        out = render_check(ev.result, ev.head_sha, ev.rules_source)
        return publish(repo, ev.head_sha, out, ctx.settings.app_id, report_url(ctx.settings, repo.full_name, ev.head_sha))
