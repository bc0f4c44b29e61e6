"""Audit entries from a repository's facts: a merged pull request, a deployment status, and the
reconciliation that backfills merges with no entry. Shared by the App's handlers and `gating audit backfill`.

Reads go through a `Source` (on GitHub: gating.github.facts.RepoFacts, which the door builds); writes
through a notes backend (audit_log.append_entry), so the same code records a merge whether a webhook
or a backfill run found it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gating import limits
from gating.audit import log as audit_log
from gating.audit.entry import (
    DEFAULT_ENVIRONMENTS,
    Approval,
    EntryError,
    EntryFacts,
    Override,
    eval_summary,
    is_deployment,
    parse_line,
    split_lines,
)
from gating.audit.keys import keyid
from gating.git.notes import EVALS_REF
from gating.policy import APPROVAL_CHECK, EVAL_CHECK, OverrideAct
from gating.system.manifest import MANIFEST_PATH, ManifestError
from gating.system.revision import RevisionReader
from gating.system.snapshot import build_snapshot


class Source(Protocol):
    """A repository as the audit trail reads it: pull requests, reviews, check runs, files and audit_log."""

    full_name: str

    def pull(self, number: int) -> dict[str, Any]: ...
    def reviews(self, number: int) -> list[dict[str, Any]]: ...
    def check_runs(self, sha: str, name: str) -> list[dict[str, Any]]: ...
    def merged_pulls(self, limit: int) -> Iterator[dict[str, Any]]: ...  # newest first
    def revision(self, sha: str) -> RevisionReader: ...
    def notes(self, ref: str) -> audit_log.NotesBackend: ...


REVIEW_STATES = ("APPROVED", "CHANGES_REQUESTED", "DISMISSED")


def snapshot_at(repo: Source, sha: str, manifest_path: str = MANIFEST_PATH) -> dict | None:
    """The system at a commit, or None when it has no (valid) manifest: the merge is recorded anyway."""
    reader = repo.revision(sha)
    if reader.read_many([manifest_path])[manifest_path] is None:
        return None
    try:
        return build_snapshot(reader, manifest_path).data
    except ManifestError:
        return None


# The app whose token the Action posts `gating / eval` with by default: a workflow's GITHUB_TOKEN.
EVAL_CHECK_APP = "github-actions"


def eval_check_run(runs: list[dict[str, Any]], app: str = EVAL_CHECK_APP) -> dict[str, Any] | None:
    """The `gating / eval` run that counts: the newest posted by `app`; when that app posted none, the
    newest of any app (any app with checks: write can post a run under that name)."""
    runs = [r for r in runs if r.get("name") == EVAL_CHECK]
    expected = [r for r in runs if (r.get("app") or {}).get("slug") == app]
    return max(expected or runs, key=lambda r: r["id"], default=None)


def eval_evidence(repo: Source, head: str, runs: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The eval note on the head commit, else the `gating / eval` check run's conclusion (`runs`: that
    name's check runs on the head, when the caller read them already). A note saying pass where the
    check run did not succeed is not taken: anyone who may push the notes ref can write one after the
    run (and the deployment gate reads this verdict), while a note more severe than its check gains a
    forger nothing and keeps its figures."""
    run = eval_check_run(repo.check_runs(head, EVAL_CHECK) if runs is None else runs)
    data = audit_log.read_note(repo.notes(EVALS_REF), head)
    doubted = False
    if data:
        try:
            doc = limits.load_json(data, f"eval note on {head}", limits.NOTE)
        except (ValueError, limits.LimitError):
            doc = None
        if isinstance(doc, dict) and "verdict" in doc:
            doubted = doc["verdict"] == "pass" and run is not None and run.get("conclusion") != "success"
            if not doubted:
                return eval_summary(doc, "eval note")
    if run is None:
        return None
    verdict = {"success": "pass", "failure": "fail", "neutral": "neutral"}.get(run.get("conclusion") or "",
                                                                              run.get("conclusion"))
    slug = (run.get("app") or {}).get("slug")
    return eval_summary({"verdict": verdict, "dataset_digest": None,
                         "metrics": {"check_title": (run.get("output") or {}).get("title")}},
                        f"{EVAL_CHECK} check run" + (f" by {slug}" if slug else "")
                        + (" (the eval note on the head said pass: not taken)" if doubted else ""))


def approval_check_run(runs: list[dict[str, Any]], app_id: int | str | None) -> dict[str, Any] | None:
    """The `gating / approval` run that counts: the newest the App (`app_id`: its id, or its slug)
    posted; without one (a backfill from the CLI), the newest of any app, whose id the entry keeps so
    the deployment rule can tell whether it was its own."""
    runs = [r for r in runs if r.get("name") == APPROVAL_CHECK]
    if app_id is not None:
        runs = [r for r in runs if str(app_id) in (str((r.get("app") or {}).get("id")), (r.get("app") or {}).get("slug"))]
    return max(runs, key=lambda r: r["id"], default=None)


def check_record(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a merged entry keeps of a check run: its conclusion, whose it is, and where it was."""
    if run is None:
        return None
    app = run.get("app") or {}
    return {"conclusion": run.get("conclusion"), "status": run.get("status"), "check_run_id": run.get("id"),
            "head_sha": run.get("head_sha"), "app_id": app.get("id"), "app": app.get("slug"),
            "title": (run.get("output") or {}).get("title")}


def merge_checks(repo: Source, head: str, app_id: int | str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The check runs that gated a merge, on its head: the App's `gating / approval` and the counting
    `gating / eval` (gating.deploy.gate reads them). Also the eval runs read, for eval_evidence."""
    eval_runs = repo.check_runs(head, EVAL_CHECK)
    return {APPROVAL_CHECK: check_record(approval_check_run(repo.check_runs(head, APPROVAL_CHECK), app_id)),
            EVAL_CHECK: check_record(eval_check_run(eval_runs))}, eval_runs


def approvals(repo: Source, number: int) -> list[Approval]:
    return [Approval(r["user"]["login"], r["state"], r.get("submitted_at") or "", r.get("commit_id") or "")
            for r in repo.reviews(number) if r.get("user") and r.get("state") in REVIEW_STATES]


def recorded_overrides(acts: Sequence[OverrideAct], head_sha: str) -> list[Override]:
    """The overrides a merged entry records, from what the App recorded when it saw them created (never
    from comment bodies, which any writer may edit): each one an admin gave with a reason and that no
    edit or deletion voided, with the SHA it was given on and whether a push came after it."""
    out = []
    for a in acts:
        if a.void or not a.reason or a.permission != "admin":
            continue
        stale = a.head_sha != head_sha or a.pushed_after
        scope = f"approvals and evals on {a.head_sha[:12]}" + (" (before the last push)" if stale else "")
        out.append(Override(a.login, a.reason, a.created_at, scope))
    return out


# The overrides recorded on pull request N (the App's database); None where there is none (a clone).
OverrideSource = Callable[[int], Sequence[OverrideAct]]


def merge_facts(repo: Source, pr: dict[str, Any], manifest_path: str = MANIFEST_PATH,
                backfilled: bool = False, previous_known_good: str | None = None,
                overrides_of: OverrideSource | None = None, app_id: int | str | None = None) -> EntryFacts:
    """The merged entry of a pull request. `app_id`: the App whose `gating / approval` run counts."""
    commit, head = pr["merge_commit_sha"], pr["head"]["sha"]
    acts = overrides_of(pr["number"]) if overrides_of else ()
    checks, eval_runs = merge_checks(repo, head, app_id)
    return EntryFacts(
        event="merged", commit=commit, repository=repo.full_name,
        actor=(pr.get("merged_by") or {}).get("login") or "unknown", pull_request=pr["number"],
        snapshot=snapshot_at(repo, commit, manifest_path), evals=eval_evidence(repo, head, eval_runs),
        approvals=approvals(repo, pr["number"]), overrides=recorded_overrides(acts, head),
        previous_known_good=previous_known_good, backfilled=backfilled, checks=checks)


def last_known_good(store: audit_log.NotesBackend, key: Ed25519PrivateKey,
                    environments: Sequence[str] = DEFAULT_ENVIRONMENTS) -> str | None:
    """The rollback pointer: the newest known_good commit of `environments` among entries this key signed."""
    good = [e for e in audit_log.read_log(store, {keyid(key): key.public_key()})
            if e.event == "known_good" and is_deployment(e, environments)]
    return good[-1].commit if good else None


def record_merge(repo: Source, store: audit_log.NotesBackend, key: Ed25519PrivateKey, number: int, now: datetime,
                 manifest_path: str = MANIFEST_PATH,
                 backfilled: bool = False, overrides_of: OverrideSource | None = None,
                 app_id: int | str | None = None) -> audit_log.AppendResult:
    pr = repo.pull(number)
    if not pr.get("merged") and not pr.get("merged_at"):
        raise ValueError(f"pull request #{number} is not merged")
    facts = merge_facts(repo, pr, manifest_path, backfilled, last_known_good(store, key),
                        overrides_of, app_id)
    return audit_log.append_entry(store, facts, key, now)


def deployment_facts(repository: str, deployment: dict[str, Any], status: dict[str, Any],
                     actor: str) -> EntryFacts | None:
    """known_good for a successful deployment of a SHA, deploy_failed for a failed one; None otherwise."""
    event = {"success": "known_good", "failure": "deploy_failed", "error": "deploy_failed"}.get(status["state"])
    if event is None:
        return None
    return EntryFacts(
        event=event, commit=deployment["sha"], repository=repository, actor=actor,
        deployment={"id": deployment["id"], "environment": deployment.get("environment"),
                    "status": status["state"], "status_id": status.get("id"),
                    "url": status.get("environment_url") or status.get("target_url") or None},
        discriminator=f"deployment {deployment['id']}")


def has_entry(store: audit_log.NotesBackend, key: str, commit: str) -> bool:
    """Whether the note of `commit` holds an entry with this idempotency key (one note read, not the log)."""
    for line in split_lines(audit_log.read_note(store, commit)):
        try:
            if parse_line(line, commit).key == key:
                return True
        except EntryError:
            continue
    return False


def backfill(repo: Source, store: audit_log.NotesBackend, key: Ed25519PrivateKey, now: datetime,
             manifest_path: str = MANIFEST_PATH,
             limit: int = 1000, overrides_of: OverrideSource | None = None,
             app_id: int | str | None = None) -> list[audit_log.AppendResult]:
    """Write a `merged` entry, marked backfilled, for each of the last `limit` merged pull requests
    that has none, oldest first. Safe beside the App: the idempotency key is the same."""
    written = []
    for pr in sorted(repo.merged_pulls(limit), key=lambda p: p["merged_at"]):
        if has_entry(store, f"merged:{pr['merge_commit_sha']}", pr["merge_commit_sha"]):
            continue
        facts = merge_facts(repo, pr, manifest_path, backfilled=True,  # no pointer: that was then
                            overrides_of=overrides_of, app_id=app_id)
        written.append(audit_log.append_entry(store, facts, key, now))
    return written


def replace_pointer(facts: EntryFacts, previous_known_good: str | None) -> EntryFacts:
    return dataclasses.replace(facts, previous_known_good=previous_known_good)
