"""Scheduled rollback drills (GATING_DRILL_SECONDS, weekly by default; 0: never).

Each period, for every repository the App is installed on whose audit log has a known-good state,
the drill builds the restore of the last known-good snapshot as a `/rollback` would (the same plan,
the same tree written through the Git Database API) on a scratch branch, checks that the scratch
commit's system is the recorded snapshot byte for byte and that its evals pass replayed from the
cassettes (gating.rollback.drill), deletes the branch and records a signed `drill` entry with the
result and the time it took. A failed drill opens an issue saying why, so the team learns that the
rollback path is broken before it needs it.

Files are read without the App's blob cache: a drill checks what the repository holds now, not
what the App once read.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from datetime import UTC, datetime

from gating.audit import log as audit_log
from gating.github import ApiRevision, BlobCache, GitHubError, RateLimited, Repo
from gating.github import rollback as gh
from gating.github.gitdb import create_commit, create_ref, delete_ref
from gating.rollback import drill as drills
from gating.rollback.plan import (
    LAST_GOOD,
    Request,
    RestorePlan,
    commit_message,
    environments_of,
    resolve_target,
)
from gating.server.handlers import JobContext, Registry, installed_repos
from gating.server.jobs import PermanentError
from gating.server.rollbacks import Audit, _write_tree, app_audit, load_config
from gating.server.trail import witness

ACTOR = "gating (rollback drill)"
MAX_REPOSITORIES = 1000
clock = time.time  # the drill's now (tests pin it)


def register(registry: Registry) -> None:
    registry.every("drill", lambda settings: settings.drill_seconds)(on_tick)


def on_tick(ctx: JobContext) -> None:
    if ctx.queue is None:
        raise PermanentError("rollback drills need the App's database")
    period = ctx.payload.get("period")
    failed = []
    for repo in installed_repos(ctx, MAX_REPOSITORIES):
        if not ctx.queue.first_run(f"drill:{repo.full_name}:{period}", ctx.job):
            continue  # drilled this period already (an earlier run of this job, or another replica)
        try:
            run_drill(ctx, repo)
        except GitHubError as e:
            if isinstance(e, RateLimited) or not 400 <= e.status < 500:
                raise
            ctx.log.warning("%s: rollback drill skipped: %s", repo.full_name, e)
            failed.append(f"{repo.full_name}: {e}")
    if failed:
        ctx.log.warning("rollback drills: %d repositories not drilled: %s", len(failed), "; ".join(failed))


def run_drill(ctx: JobContext, repo: Repo) -> drills.DrillResult | None:
    """One repository's drill; None when it has no known-good state to return to yet."""
    now = datetime.fromtimestamp(clock(), UTC)
    cfg = load_config(repo, ctx.blobs, ctx.settings.manifest_path)
    audit = app_audit(replace(ctx, payload={}), repo)
    entries = audit.entries()
    envs = environments_of(cfg.rollback)
    if not any(e.event == "known_good" for e in entries):
        ctx.log.info("%s: no known-good state yet: nothing to drill", repo.full_name)
        return None
    blobs = BlobCache()  # fresh: the drill reads what the repository holds now
    started = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    req = Request(ACTOR, "rollback drill", "scheduled rollback drill", "cli")

    def write(plan: RestorePlan) -> tuple[str, str]:
        name = drills.scratch_branch(plan.resolution.commit, started)
        commit = create_commit(repo, commit_message(plan, req), _write_tree(repo, plan, blobs), [plan.tip])
        create_ref(repo, f"heads/{name}", commit)
        return commit, name

    result = drills.rehearse(entries, LAST_GOOD, cfg.tip, cfg.branch, lambda sha: ApiRevision(repo, sha, blobs),
                             lambda prefix: gh.commit_sha(repo, prefix), write,
                             lambda name, _commit: delete_ref(repo, f"heads/{name}"), started,
                             ctx.settings.manifest_path, envs,
                             reraise=lambda e: isinstance(e, GitHubError) and e.status != 404)
    if isinstance(result.error, GitHubError):  # a 404: name the file gone from history
        result.problems = _gone(repo, entries, cfg.tip, envs, result.error, result)
    record(ctx, repo, audit, result, cfg.tip, now)
    return result


def _gone(repo: Repo, entries: list, tip: str, envs: tuple[str, ...], e: GitHubError,
          result: drills.DrillResult) -> list[str]:
    """A 404 for a blob of the target: which of its files is gone, as the drill's problem."""
    r = resolve_target(entries, LAST_GOOD, tip, None, envs)
    result.commit = r.commit
    m = re.search(r"/git/blobs/([0-9a-f]{40})", str(e))
    paths: list[str] = []
    if m:
        tree = repo.client.get(f"{repo.path}/git/trees/{r.commit}", recursive=1)
        paths = sorted(t["path"] for t in tree.get("tree", []) if t.get("sha") == m.group(1))
    what = ", ".join(paths) if paths else "a file of its system"
    return [f"the LLM system at {r.short} cannot be restored: {what} is missing from the repository's history "
            f"({e})"]


def record(ctx: JobContext, repo: Repo, audit: Audit, result: drills.DrillResult, tip: str, now: datetime) -> None:
    period = ctx.payload.get("period")
    facts = drills.drill_facts(result, repo.full_name, ACTOR, tip, f"period {period}" if period is not None else "")
    res = audit_log.append_entry(audit.store, facts, audit.key, now)
    witness(repo, res.entry, audit.key, audit.app_id, ctx.log)
    ctx.log.info("%s: %s (audit seq %d)", repo.full_name, result.summary, res.entry.seq)
    if not result.ok:
        # a drill that keeps failing (weekly, say) is one issue the team follows, not one a week
        issue, new = gh.report_issue(repo, drills.ISSUE_MARK, drills.issue_title(result),
                                     drills.issue_body(result, res.entry.seq),
                                     f"The rollback drill failed again ({result.started}).")
        ctx.log.warning("%s: rollback drill failed; %s #%s", repo.full_name, "opened" if new else "commented on",
                        issue.get("number"))
