"""`gating rollback --to last-good|previous|SHA`: the App's rollback plan, as a branch in a local clone.

The plan is the one `/rollback` builds (gating.rollback.make_plan); only the reading (local git)
and the writing (one commit on a new branch, made with plumbing: the work tree is not touched) differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gating.audit import keys as keymod
from gating.audit import log as audit_log
from gating.commands.audit import fetch, load_keys
from gating.commands.cli import UsageError
from gating.commands.common import owner_name, repo
from gating.diff.render import render_diff_markdown
from gating.errors import GatingError
from gating.git import notes as git_notes
from gating.git.repository import Git
from gating.git.revision import GitRevision
from gating.git.snapshot_store import DiskSnapshotCache
from gating.rollback.plan import (
    LAST_GOOD,
    Refusal,
    Request,
    RestorePlan,
    commit_message,
    environments_of,
    files_table,
    make_plan,
    resolve_target,
    rolled_back_facts,
)
from gating.system.manifest import MANIFEST_PATH, ManifestError, parse_manifest

if TYPE_CHECKING:
    from gating.rollback.drill import DrillResult


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rollback", help="restore the LLM system of the last known-good state as a new branch")
    p.add_argument("--to", default=LAST_GOOD, metavar="TARGET",
                   help="last-good (default), previous, or the SHA of an audited merge")
    p.add_argument("--branch", metavar="NAME", help="branch to create (default gating/rollback-<sha>)")
    p.add_argument("--onto", metavar="REV", help="compute the restore against this revision "
                   "(default: the default branch, origin/HEAD)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the diff; create nothing")
    p.add_argument("--drill", action="store_true",
                   help="rehearse: build the restore on a scratch branch, check it is the recorded snapshot byte "
                   "for byte and its evals pass (replayed), delete the branch; exit 1 if the rollback would fail")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--reason", default="", help="why (recorded in the commit message and the audit entry)")
    p.add_argument("--key", action="append", metavar="PUB.pem",
                   help="trusted public key for the audit log (default: .gating/audit.pub at HEAD)")
    p.add_argument("--sign", metavar="PRIVATE.pem",
                   help="also record a signed rolled_back entry in the local notes ref")
    p.add_argument("--config", default=MANIFEST_PATH, help="manifest path (default: gating.yml)")
    p.add_argument("--remote", default="origin", help="remote to fetch the notes ref from (default origin)")
    p.add_argument("--no-fetch", action="store_true", help="use the local notes ref as it is")
    p.add_argument("--repo", dest="github_repo", metavar="OWNER/NAME", type=owner_name,
                   help="with --drill: the GitHub repository a failed drill opens an issue in (default "
                        "$GITHUB_REPOSITORY, else the remote's URL; the token: GITHUB_TOKEN or GH_TOKEN)")
    p.add_argument("--api-url", help="with --drill: REST API base (default $GITHUB_API_URL, else from the remote's "
                   "host)")
    p.add_argument("--no-issue", action="store_true", help="with --drill: open no issue when the drill fails")
    p.set_defaults(func=run)


def _onto(g: Git, rev: str | None) -> tuple[str, str]:
    """(commit, branch name as people say it) of the revision the restore applies to."""
    name = rev or g.default_branch()
    if name is None:
        raise UsageError("no default branch found (origin/HEAD, main or master); pass --onto REV")
    sha = g.resolve(name)
    if sha is None:
        raise UsageError(f"unknown revision {name!r} (--onto)")
    return sha, name.split("/", 1)[1] if name.startswith("origin/") else name


def build(g: Git, args: argparse.Namespace) -> RestorePlan:
    trusted = load_keys(g, args.key)
    fetch(g, args)
    entries = audit_log.read_log(git_notes.LocalNotes(g), trusted)
    tip, branch = _onto(g, args.onto)
    return make_plan(entries, args.to, tip, branch, lambda sha: GitRevision(g, sha), g.resolve,
                     args.config, DiskSnapshotCache.for_repo(g), environments=_environments(g, tip, args.config))


def resolve_symbolic(g: Git, args: argparse.Namespace, target: str) -> tuple[str, str]:
    """(commit, how it was found) of `last-good` or `previous`, exactly as `/rollback` resolves them:
    the signed audit log, the default branch's rollback.environments. Raises UsageError naming why."""
    trusted = load_keys(g, args.key)
    fetch(g, args)
    entries = audit_log.read_log(git_notes.LocalNotes(g), trusted)
    tip, _ = _onto(g, getattr(args, "onto", None))
    try:
        r = resolve_target(entries, target, tip, None, _environments(g, tip, args.config))
    except Refusal as e:
        raise UsageError(f"cannot resolve {target}: {e.text('cli')}") from None
    chosen = [e for e in r.entries if e.commit == r.commit and e.event != "merged"]
    how = f"{chosen[-1].event}, audit seq {chosen[-1].seq}" if chosen else "audited merge"
    return r.commit, how


def _environments(g: Git, tip: str, path: str) -> tuple[str, ...]:
    """rollback.environments of the manifest on the branch the restore applies to (default production)."""
    data = g.show_file(tip, path)
    try:
        return environments_of(parse_manifest(data, path).rollback if data is not None else None)
    except ManifestError:
        return environments_of(None)


def write_branch(g: Git, plan: RestorePlan, name: str, message: str) -> str:
    """One commit on top of the tip that restores the plan's files; the branch must not exist yet."""
    modes = {e.path: (e.mode, e.sha) for e in g.ls_tree(plan.resolution.commit, sorted(plan.writes))}
    changes: dict[str, tuple[str, str] | None] = {p: modes.get(p) or ("100644", g.hash_object(b))
                                                   for p, b in plan.writes.items()}
    changes.update({p: None for p in plan.deletes})
    tree = g.write_tree_changes(plan.tip, changes)
    if tree == g.tree_of(plan.tip):
        raise Refusal("nothing_to_restore", f"nothing to restore: the files of {plan.resolution.short} are "
                      f"already on {plan.branch} ({plan.tip[:7]}).")
    commit = g.commit_tree(tree, [plan.tip], message)
    if not g.update_ref(f"refs/heads/{name}", commit, None):
        raise UsageError(f"branch {name!r} already exists; pass --branch NAME")
    return commit


def _actor(g: Git) -> str:
    return g.try_run("config", "user.email") or g.try_run("config", "user.name") or "gating rollback"


def run(args: argparse.Namespace) -> int:
    g = repo(args)
    if args.branch and g.try_run("check-ref-format", f"refs/heads/{args.branch}") is None:
        raise UsageError(f"--branch {args.branch!r} is not a valid branch name")
    signer = _signing_key(args.sign) if args.sign else None  # a bad key must stop us before the branch exists
    if args.drill:
        if args.dry_run or args.branch:
            raise UsageError("--drill makes and deletes its own scratch branch; drop --dry-run and --branch")
        return drill(g, args, signer)
    try:
        plan = build(g, args)
    except Refusal as r:
        print(f"gating: rollback refused: {r.text('cli')}", file=sys.stderr)
        return 2 if r.code == "unknown_target" else 1
    req = Request(_actor(g), args.reason, "gating rollback", "cli")
    name = args.branch or plan.branch_name
    if args.json:
        json.dump(plan.to_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(f"{plan.title}: {len(plan.changes)} file(s) on {plan.branch} ({plan.tip[:7]})")
        print(f"current deployed state: {plan.resolution.current.describe()}")
        for n in plan.notes:
            print(f"note: {n}")
        print("\n" + "\n".join(files_table(plan)) + "\n")
        sys.stdout.write(render_diff_markdown(plan.changeset))
    if args.dry_run:
        print("\ndry run: no branch created", file=sys.stderr)
        return 0
    try:
        commit = write_branch(g, plan, name, commit_message(plan, req))
    except Refusal as r:
        print(f"gating: rollback refused: {r.text('cli')}", file=sys.stderr)
        return 1
    print(f"\ncreated branch {name} at {commit[:12]} (one commit on {plan.branch}); open a pull request from it:"
          f"\n  git push {args.remote} {name}", file=sys.stderr)
    if signer is not None:
        facts = rolled_back_facts(plan, commit, _repository(g, args.remote), req)
        res = audit_log.append_entry(git_notes.LocalNotes(g), facts, signer, datetime.now(UTC))
        print(f"recorded rolled_back entry seq {res.entry.seq} on {commit[:12]} in {git_notes.AUDIT_REF}; "
              f"push it with: git push {args.remote} {git_notes.AUDIT_REF}", file=sys.stderr)
    return 0


def _signing_key(path: str) -> Ed25519PrivateKey:
    return keymod.load_private(keymod.read_file(path), path)


def _repository(g: Git, remote: str) -> str:
    """owner/name from the remote's URL, as the App names the repository in its entries."""
    url = (g.try_run("remote", "get-url", remote) or "").removesuffix(".git").rstrip("/")
    parts = url.replace(":", "/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 and url else g.root.name


def drill(g: Git, args: argparse.Namespace, signer: Ed25519PrivateKey | None) -> int:
    """`--drill`: the restore on a scratch branch, checked and deleted; the result (and, with --sign,
    a signed `drill` entry in the local notes ref). History is read without the snapshot cache."""
    from gating.rollback import drill as drills

    now = datetime.now(UTC)
    started = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    tip = ""
    req = Request(_actor(g), "rollback drill", "gating rollback --drill", "cli")

    def write(plan: RestorePlan) -> tuple[str, str]:
        name = drills.scratch_branch(plan.resolution.commit, started)
        return write_branch(g, plan, name, commit_message(plan, req)), name

    def delete(name: str, commit: str) -> None:
        g.run("update-ref", "-d", f"refs/heads/{name}", commit)

    try:
        trusted = load_keys(g, args.key)
        fetch(g, args)
        entries = audit_log.read_log(git_notes.LocalNotes(g), trusted)
        tip, branch = _onto(g, args.onto)
        result = drills.rehearse(entries, args.to, tip, branch, lambda sha: GitRevision(g, sha), g.resolve, write,
                                 delete, started, args.config, _environments(g, tip, args.config))
    except UsageError:
        raise
    except GatingError as e:  # the audit log cannot be read: the drill cannot even start
        result = drills.DrillResult(args.to, None, False, drills.failure(args.to, e), started=started)
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(result.summary)
        if result.branch:
            print(f"scratch branch {result.branch} deleted")
    seq = None
    if signer is not None:
        facts = drills.drill_facts(result, _repository(g, args.remote), _actor(g), tip)
        res = audit_log.append_entry(git_notes.LocalNotes(g), facts, signer, now)
        seq = res.entry.seq
        print(f"recorded drill entry seq {seq} in {git_notes.AUDIT_REF}; push it with: "
              f"git push {args.remote} {git_notes.AUDIT_REF}", file=sys.stderr)
    if not result.ok and not args.no_issue:
        open_drill_issue(g, args, result, seq)
    return 0 if result.ok else 1


def open_drill_issue(g: Git, args: argparse.Namespace, result: DrillResult, seq: int | None) -> None:
    """A failed drill opens an issue, as the App's scheduled drill does, when GitHub can be reached;
    else it says why none was opened (the exit code says the drill failed either way)."""
    from gating.commands.audit_verify import github_source
    from gating.github import GitHubError
    from gating.github import rollback as gh
    from gating.rollback import drill as drills

    source = github_source(g, args, "to open an issue when a drill fails (or pass --no-issue)")
    if source.repo is None:
        print(f"no issue opened: {source.why}", file=sys.stderr)
        return
    try:
        # whoever the token is (a person, github-actions[bot]): any open issue a drill opened is the one
        issue, new = gh.report_issue(source.repo, drills.ISSUE_MARK, drills.issue_title(result),
                                     drills.issue_body(result, seq, "A rollback drill run with `gating rollback --drill`"),
                                     f"A rollback drill run with `gating rollback --drill` failed again ({result.started}).",
                                     bots_only=False)
    except GitHubError as e:
        print(f"no issue opened in {source.repo.full_name}: {e}", file=sys.stderr)
        return
    said = "opened issue" if new else "the drill's issue is still open: commented on"
    print(f"{said} #{issue.get('number')} in {source.repo.full_name}: {issue.get('html_url')}", file=sys.stderr)
