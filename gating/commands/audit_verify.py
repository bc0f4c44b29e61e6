"""`gating audit verify`: the log as read (signatures, rotation chain, hash chain, notes history), a
rewrite since this clone last verified, and the App's witnesses on GitHub when the API can be reached.

Where the trusted key comes from is always said: --key, .gating/audit.pub at a commit, or the key
the App's newest witness names. A writer can change the notes ref and the .pub file, not the App's
check runs, so the witnesses are what lets a clone that never verified before tell a truncated or
re-signed log.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gating.audit import keys as keymod
from gating.audit import log as audit_log
from gating.audit.verify import Finding, Report, rewrite_findings
from gating.audit.witness import WITNESS_CHECK, AppPin, CrossCheck, Witness, cross_check, parse_run
from gating.commands.cli import UsageError
from gating.commands.common import owner_name, repo
from gating.git import notes as git_notes
from gating.git.repository import Git
from gating.github import DEFAULT_API_URL, GitHubError

if TYPE_CHECKING:
    from gating.github import Repo

VERIFIED_REF = "refs/gating/audit-verified"
PUBLISHED_KEY = ".gating/audit.pub"
APP_CONFIG = "gating.auditAppId"  # the App a successful verify saw, recorded in the clone
WITNESS_DEPTH = 20


def add_arguments(q: argparse.ArgumentParser) -> None:
    q.add_argument("--key", action="append", metavar="PUB.pem",
                   help=f"trusted public key (repeatable; default: {PUBLISHED_KEY} at HEAD, else the key the "
                        "App's newest witness names)")
    q.add_argument("--repo", dest="github_repo", metavar="OWNER/NAME", type=owner_name,
                   help="GitHub repository whose `gating / audit` check runs witness the log "
                        "(default $GITHUB_REPOSITORY, else the remote's URL)")
    q.add_argument("--api-url", help="REST API base (default $GITHUB_API_URL, else from the remote's host: "
                   "GitHub's, or https://HOST/api/v3 for GitHub Enterprise)")
    q.add_argument("--app-id", metavar="ID|SLUG",
                   help="the App whose check runs are witnesses (default $GATING_AUDIT_APP_ID, else the one "
                        "an earlier verify of this clone recorded, else the only app that posted them)")
    q.add_argument("--witness-depth", type=int, default=WITNESS_DEPTH, metavar="N",
                   help=f"witnesses are read on the newest N commits of the default branch and the commits of "
                        f"the newest N entries (default {WITNESS_DEPTH})")
    q.add_argument("--no-witness", action="store_true", help="do not read the App's witnesses")
    q.add_argument("--require-witness", action="store_true",
                   help="fail when the witnesses cannot be read or none is found")


@dataclass
class Source:
    """Where verify reads witnesses (repo None: it cannot, and `why` says so)."""

    repo: Repo | None
    why: str = ""


_REMOTE = re.compile(r"^(?:(?P<scheme>https?)://(?:[^@/]+@)?(?P<host>[^/]+)/|[^@]+@(?P<sshhost>[^:]+):|"
                     r"ssh://(?:[^@/]+@)?(?P<sshhost2>[^/]+)/)(?P<path>.+?)(?:\.git)?/?$")


def _from_remote(g: Git, remote: str) -> tuple[str | None, str | None]:
    """(owner/name, API base) a remote's URL implies: GitHub's API for github.com, /api/v3 elsewhere."""
    url = g.try_run("remote", "get-url", remote)
    m = _REMOTE.match(url or "")
    if not m:
        return None, None
    parts = m.group("path").split("/")
    name = "/".join(parts[-2:]) if len(parts) >= 2 else None
    host = m.group("host") or m.group("sshhost") or m.group("sshhost2")
    if host in ("github.com", "www.github.com"):
        return name, DEFAULT_API_URL
    return name, f"{m.group('scheme') or 'https'}://{host}/api/v3"


def repository_name(g: Git, remote: str) -> str:
    """owner/name as the remote's URL says, else the directory's name (for entries written locally)."""
    return os.environ.get("GITHUB_REPOSITORY") or _from_remote(g, remote)[0] or g.root.resolve().name


def witness_source(g: Git, args: argparse.Namespace) -> Source:
    if args.no_witness:
        return Source(None, "--no-witness")
    return github_source(g, args, "to check the App's witnesses")


def github_source(g: Git, args: argparse.Namespace, purpose: str) -> Source:
    """The repository on GitHub a clone's command talks to: a token from GITHUB_TOKEN (or GH_TOKEN),
    the repository from --repo, $GITHUB_REPOSITORY or the remote's URL, the API from --api-url,
    $GITHUB_API_URL or the remote's host. Without one of them, `why` says what to set."""
    token = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN")
    if not token:
        return Source(None, f"no token: set GITHUB_TOKEN (or GH_TOKEN) {purpose}")
    name, api = _from_remote(g, args.remote)
    name = args.github_repo or os.environ.get("GITHUB_REPOSITORY") or name
    api = args.api_url or os.environ.get("GITHUB_API_URL") or api
    if not name:
        return Source(None, f"no repository: pass --repo OWNER/NAME (the remote {args.remote!r} is not a GitHub URL)")
    from gating.github import Repo, token_client  # PyGithub: only when the witnesses are read

    return Source(Repo(token_client(api or DEFAULT_API_URL, token), name))


def scan_commits(g: Git, report_commits: list[str], depth: int) -> list[str]:
    """The newest commits of the default branch, then the commits of the newest entries."""
    branch = g.default_branch() or ("HEAD" if g.resolve("HEAD") else None)
    tips = g.run("rev-list", "--first-parent", "-n", str(depth), branch).split() if branch else []
    return list(dict.fromkeys(tips + report_commits[::-1][:depth]))


def published_key(g: Git) -> tuple[dict[str, Ed25519PublicKey], str] | None:
    head = g.resolve("HEAD")
    data = g.show_file("HEAD", PUBLISHED_KEY) if head else None
    if data is None:
        return None
    pub = keymod.load_public(data, f"{PUBLISHED_KEY} at HEAD")
    return {keymod.keyid(pub): pub}, f"{PUBLISHED_KEY} at {head[:12]}"  # type: ignore[index]


def trusted_keys(g: Git, paths: list[str] | None, witnesses: CrossCheck | None
                 ) -> tuple[dict[str, Ed25519PublicKey], str]:
    """(keys, where they came from): --key files, else the published key, else the newest witness's."""
    if paths:
        pubs = [keymod.load_public(keymod.read_file(p), p) for p in paths]
        return {keymod.keyid(p): p for p in pubs}, "--key " + ", ".join(paths)
    found = published_key(g)
    if found:
        return found
    for w in reversed(witnesses.counted if witnesses else []):
        pub = w.public_key()
        if pub is not None:
            return {keymod.keyid(pub): pub}, f"witnessed keyid: the App's {w.where()} (seq {w.seq})"
    raise UsageError(f"no public key: pass --key PUB.pem (or commit it as {PUBLISHED_KEY})")


def read_witnesses(g: Git, source: Source, store: git_notes.LocalNotes, depth: int) -> list[Witness]:
    from gating.github.witness import runs_on

    assert source.repo is not None
    entries = audit_log.read_log(store)
    return [parse_run(r) for r in runs_on(source.repo, scan_commits(g, [e.commit for e in entries], depth), WITNESS_CHECK)]


def app_pin(g: Git, args: argparse.Namespace) -> AppPin:
    if args.app_id:
        return AppPin(args.app_id, "from --app-id")
    if os.environ.get("GATING_AUDIT_APP_ID"):
        return AppPin(os.environ["GATING_AUDIT_APP_ID"], "from $GATING_AUDIT_APP_ID")
    recorded = g.try_run("config", "--get", APP_CONFIG)
    return AppPin(recorded or None, "recorded by an earlier verify of this clone")


def run_verify(args: argparse.Namespace, fetch: Callable[[Git, argparse.Namespace], None]) -> int:
    g = repo(args)
    if args.key:
        trusted_keys(g, args.key, None)  # a bad key file is refused before anything is fetched
    fetch(g, args)
    store = git_notes.LocalNotes(g)
    tip = store.tip()
    source = witness_source(g, args)
    witnesses: list[Witness] = []
    if source.repo is not None:
        try:
            witnesses = read_witnesses(g, source, store, args.witness_depth)
        except GitHubError as e:
            source = Source(None, f"the API could not be read ({e})")
    checked = cross_check(witnesses, audit_log.read_log(store) if witnesses else [], app_pin(g, args)) \
        if source.repo is not None else None
    if tip is None:
        if checked and checked.findings:
            return _fail(checked.findings)
        print(f"gating: no audit entries in {git_notes.AUDIT_REF}")
        return _witness_verdict(args, source, checked)
    trusted, key_source = trusted_keys(g, args.key, checked)
    report = audit_log.verify(store, trusted) if tip else Report(entries=[], findings=[])
    findings = list(report.findings)
    seen = g.resolve(VERIFIED_REF)
    if tip and seen and not g.is_ancestor(seen, tip):
        findings = rewrite_findings(store.all_notes(seen), store.all_notes(tip), seen, tip) + findings
    if checked:
        findings = sorted(findings + checked.findings, key=lambda f: (f.seq is None, f.seq or 0))
    if findings:
        return _fail(findings)
    g.update_ref(VERIFIED_REF, tip, seen)
    n = len(report.entries)
    print(f"ok: {n} entr{'y' if n == 1 else 'ies'} (seq 1..{n}), {report.notes_commits} notes commits; "
          f"every signature verifies ({', '.join(k[:16] for k in trusted)}), the chain is unbroken and "
          f"no notes commit removed or changed a line")
    if not args.key:
        print(f"key: {key_source}")
    if len(report.epochs) > 1:
        print("keys: " + " -> ".join(ep.describe() for ep in report.epochs))
    return _witness_verdict(args, source, checked, g)


def _fail(findings: list[Finding]) -> int:
    for f in findings:
        print(f"BAD  {f}")
    print(f"gating: audit log verification failed: first bad entry: {findings[0].where} ({len(findings)} "
          f"problem{'s' if len(findings) != 1 else ''})", file=sys.stderr)
    return 1


def _witness_verdict(args: argparse.Namespace, source: Source, checked: CrossCheck | None,
                     g: Git | None = None) -> int:
    if checked is None:
        print(f"gating: note: the App's witnesses were not checked ({source.why})", file=sys.stderr)
        return 1 if args.require_witness else 0
    if not checked.counted:
        print(f"gating: note: no {WITNESS_CHECK} check run of the App on the newest {args.witness_depth} commits "
              "of the default branch or of the newest entries", file=sys.stderr)
        return 1 if args.require_witness else 0
    newest = checked.counted[-1]
    print(f"witnesses: {len(checked.counted)} {WITNESS_CHECK} check run{'s' if len(checked.counted) != 1 else ''} "
          f"of {checked.app_text} match the log (newest: seq {newest.seq} on {newest.commit[:12]})")
    if g is not None and checked.app_id is not None:
        g.try_run("config", APP_CONFIG, str(checked.app_id))
    return 0
