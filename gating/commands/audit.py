"""`gating audit log|show|verify|backfill` and `gating keygen`: the audit trail from any clone."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gating.audit import keys as keymod
from gating.audit import log as audit_log
from gating.audit.entry import Entry, EntryError, parse_line, signature_problem, split_lines
from gating.commands import audit_verify
from gating.commands.cli import UsageError
from gating.commands.common import owner_name, repo
from gating.evals.report import _num
from gating.git import notes as git_notes
from gating.git.repository import Git
from gating.github import DEFAULT_API_URL

VERIFIED_REF = audit_verify.VERIFIED_REF
PUBLISHED_KEY = audit_verify.PUBLISHED_KEY


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="the signed audit trail in refs/notes/gating/audit")
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    def fetch_opts(q: argparse.ArgumentParser) -> None:
        q.add_argument("--remote", default="origin", help="remote to fetch the notes ref from (default origin)")
        q.add_argument("--no-fetch", action="store_true", help="use the local notes ref as it is")

    q = asub.add_parser("log", help="one line per entry, oldest first")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    fetch_opts(q)
    q.set_defaults(func=run_log)

    q = asub.add_parser("show", help="the entries recorded on one commit, readable")
    q.add_argument("rev", help="commit (merge commit, deployed commit)")
    q.add_argument("--json", action="store_true", help="print the statements as JSON")
    q.add_argument("--key", action="append", metavar="PUB.pem", help="check signatures with this public key")
    fetch_opts(q)
    q.set_defaults(func=run_show)

    q = asub.add_parser("verify", help="check every signature, the key rotation chain, the seq/prev chain, the "
                        "notes history and the App's witnesses")
    audit_verify.add_arguments(q)
    fetch_opts(q)
    q.set_defaults(func=lambda args: audit_verify.run_verify(args, fetch))

    q = asub.add_parser("rotate-key", help="hand the log over to a new signing key: an entry signed by the "
                        "key in force that introduces the new one")
    q.add_argument("--key", required=True, metavar="PRIVATE.pem", help="the signing key in force (signs this entry)")
    q.add_argument("--new-key", required=True, metavar="PUB.pem", help="the new key (its public half is recorded)")
    q.add_argument("--at", metavar="REV", help="the commit the entry is recorded on (default: the default branch tip)")
    q.add_argument("--actor", help="who rotates (default: git config user.name)")
    q.add_argument("--no-fetch", action="store_true", help="use the local notes ref as it is")
    q.add_argument("--remote", default="origin", help="remote to fetch the notes ref from (default origin)")
    q.set_defaults(func=run_rotate)

    q = asub.add_parser("backfill", help="write a backfilled merged entry for every merged pull request "
                        "that has none (through the GitHub API)")
    q.add_argument("--repo", dest="github_repo", required=True, metavar="OWNER/NAME", type=owner_name,
                   help="the GitHub repository")
    q.add_argument("--key", required=True, metavar="PRIVATE.pem", help="the audit signing key")
    q.add_argument("--api-url", default=os.environ.get("GITHUB_API_URL", DEFAULT_API_URL),
                   help="REST API base (default $GITHUB_API_URL or GitHub's)")
    q.add_argument("--limit", type=int, default=1000, help="closed pull requests to look at (newest first)")
    q.add_argument("--app-id", default=os.environ.get("GATING_AUDIT_APP_ID"), metavar="ID|SLUG",
                   help="the App whose `gating / approval` check run each entry records (default "
                        "$GATING_AUDIT_APP_ID; unset: the newest of any app, with its id, which the deployment "
                        "rule then checks is its own)")
    q.set_defaults(func=run_backfill)

    k = sub.add_parser("keygen", help="write an Ed25519 key pair for signing audit entries")
    k.add_argument("private", nargs="?", default="gating-audit.key",
                   help="private key file, written with mode 0600 (default gating-audit.key)")
    k.add_argument("--public", help="public key file (default: PRIVATE.pub)")
    k.add_argument("--force", action="store_true", help="replace existing files")
    k.set_defaults(func=run_keygen)


# -- shared ----------------------------------------------------------------------------------------


def fetch(g: Git, args: argparse.Namespace) -> None:
    """Bring the notes ref up to date with the remote's (forced: a rewrite must be seen, not skipped).
    A clone with no `origin` reads its local ref; a remote named by --remote must exist."""
    if args.no_fetch:
        return
    remotes = g.run("remote").split()
    if args.remote not in remotes:
        if args.remote == "origin":
            return
        raise UsageError(f"no remote {args.remote!r} in this repository (remotes: {', '.join(remotes) or 'none'}); "
                         "pass --remote NAME")
    if not g.fetch(args.remote, f"+{git_notes.AUDIT_REF}:{git_notes.AUDIT_REF}"):
        print(f"gating: note: could not fetch {git_notes.AUDIT_REF} from {args.remote}; using the local copy",
              file=sys.stderr)


def load_keys(g: Git, paths: list[str] | None) -> dict[str, Ed25519PublicKey]:
    found: list[tuple[bytes, str]] = [(keymod.read_file(p), p) for p in paths or []]
    if not found:
        data = g.show_file("HEAD", PUBLISHED_KEY) if g.resolve("HEAD") else None
        if data is None:
            raise UsageError(f"no public key: pass --key PUB.pem (or commit it as {PUBLISHED_KEY})")
        found = [(data, f"{PUBLISHED_KEY} at HEAD")]
    pubs = [keymod.load_public(data, source) for data, source in found]
    return {keymod.keyid(pub): pub for pub in pubs}


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def rollback_of(e: Entry) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the rollback a rolled_back entry records, the entry's real overrides). Entries written before
    the predicate had rollback fields kept the request as an override with scope `rollback`: it is read
    back as the rollback (its target is the rollback pointer), not counted as an override."""
    p = e.predicate
    overrides = list(p.get("overrides") or [])
    if e.event != "rolled_back":
        return None, overrides
    rb = p.get("rollback") or {}
    legacy = [o for o in overrides if o.get("scope") == "rollback"]
    overrides = [o for o in overrides if o.get("scope") != "rollback"]
    if rb.get("target"):
        return rb, overrides
    if not legacy:
        return None, overrides
    o = legacy[0]
    return {"target": rb.get("previous_known_good"), "requested_by": o.get("actor"), "reason": o.get("reason")}, overrides


def rollback_text(rb: dict[str, Any]) -> str:
    """`to a1b2c3d4e5f6 (last-good) by @alice via comment: answers cite the wrong article`."""
    target, ref = rb.get("target") or "", rb.get("target_ref") or ""
    text = f"to {_short(target)}"
    if ref and not target.startswith(ref):
        text += f" ({ref})"
    if rb.get("requested_by"):
        text += f" by {rb['requested_by']}"
    if rb.get("trigger"):
        text += f" via {rb['trigger']}"
    return text + (f": {rb['reason']}" if rb.get("reason") else "")


def summary(e: Entry) -> dict[str, Any]:
    p = e.predicate
    return {"seq": e.seq, "time": p.get("timestamp"), "event": e.event, "commit": e.commit,
            "repository": p.get("repository"), "pull_request": p.get("pull_request"), "actor": p.get("actor"),
            "verdict": (p.get("evals") or {}).get("verdict"), "backfilled": bool(p.get("backfilled")),
            "key": e.key, "digest": e.digest, "keyids": e.keyids, "predicate": p}


# Merges and deployments record the bare login of the GitHub account behind them (`maya`); a
# `/rollback` comment records `@dave`. The log shows every GitHub account one way: @login.
_LOGIN_EVENTS = ("merged", "deployed", "known_good", "deploy_failed", "override", "promoted")
_LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\[bot\])?")


def actor_text(e: Entry) -> str:
    """Who, as the log shows it: `@maya`; anything not a GitHub login (`alertmanager`, an email) as recorded."""
    actor = str(e.predicate.get("actor") or "-")
    if e.event in _LOGIN_EVENTS and actor != "unknown" and _LOGIN.fullmatch(actor):
        return f"@{actor}"
    return actor


def health_text(e: Entry) -> list[str]:
    """What the monitor recorded: the bake of a known_good entry, the rule of a monitor_alert entry."""
    health = e.predicate.get("health")
    if not isinstance(health, dict):
        return []
    rule, bake = health.get("rule"), health.get("bake")
    if e.event == "monitor_alert" and isinstance(rule, dict):
        return [f"{rule.get('rule')} → {health.get('action')}: {rule.get('reason')}"]
    if e.event in ("canary_failed", "drill"):  # each carries its own sentence
        return [str(health.get("verdict") if e.event == "canary_failed" else health.get("summary"))]
    if isinstance(bake, dict):
        return [f"baked {bake.get('minutes')} min on {bake.get('requests')} requests, no rule fired"]
    return []


def log_line(e: Entry) -> str:
    p = e.predicate
    pr = f"#{p['pull_request']}" if p.get("pull_request") else "-"
    extra = []
    if p.get("evals"):
        extra.append(f"evals {p['evals'].get('verdict')}")
    if p.get("deployment"):
        d = p["deployment"]
        extra.append(f"env {d.get('environment')}" + (f" {d['weight']:g}%" if isinstance(d.get("weight"), (int, float))
                                                      else ""))
        if e.event == "deploy_rejected" and d.get("reasons"):
            extra.append("; ".join(str(r).split(":")[0] for r in d["reasons"]))
    rollback, overrides = rollback_of(e)
    if overrides:
        extra.append(f"{len(overrides)} override(s)")
    if p.get("backfilled"):
        extra.append("backfilled")
    if rollback:
        extra.append(rollback_text(rollback))
    extra += health_text(e)
    return (f"{e.seq:>5}  {p.get('timestamp')}  {e.event:<13}  {_short(e.commit)}  {pr:>6}  "
            f"{actor_text(e)}" + (f"  ({', '.join(extra)})" if extra else ""))


# -- log / show ------------------------------------------------------------------------------------


def run_log(args: argparse.Namespace) -> int:
    g = repo(args)
    fetch(g, args)
    entries = audit_log.read_log(git_notes.LocalNotes(g))
    for e in entries:
        print(json.dumps(summary(e), sort_keys=True) if args.json else log_line(e))
    if not entries and not args.json:
        print(f"no audit entries in {git_notes.AUDIT_REF}", file=sys.stderr)
    return 0


def human(metric: str, v: Any) -> str:
    """A recorded number as a person reads it: costs in dollars, latencies in ms, scores to 3 decimals."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if metric.startswith("latency"):
        return f"{v:,.0f} ms"
    if metric.startswith("cost") or metric.endswith("_usd") or isinstance(v, float):
        return _num(float(v), metric)
    return f"{v:,}"


def checks_rows(p: dict[str, Any]) -> list[tuple[str, str]]:
    """The check runs a merged entry recorded on the pull request's head (none in older entries)."""
    checks = p.get("checks")
    if not isinstance(checks, dict):
        return [("checks", "not recorded (the entry predates recording them)")]
    rows = []
    for i, (name, run) in enumerate(sorted(checks.items())):
        text = (f"{run.get('conclusion') or run.get('status')} by {run.get('app') or '-'} (app id {run.get('app_id')}) "
                f"on {_short(run.get('head_sha'))}" if isinstance(run, dict) else "none")
        rows.append(("checks" if i == 0 else "", f"{name}: {text}"))
    return rows


def show_text(e: Entry, signature: str) -> str:
    p = e.predicate
    rows = [("commit", e.commit), ("repository", p.get("repository") or "-"),
            ("pull request", f"#{p['pull_request']}" if p.get("pull_request") else "-"),
            ("actor", p.get("actor") or "-")]
    snap = p.get("snapshot")
    files = f"  ({len(snap.get('files', {}))} files)" if isinstance(snap, dict) else ""
    rows.append(("snapshot", (p.get("snapshot_digest") or "-") + files))
    ev = p.get("evals")
    if ev:
        metrics = ", ".join(f"{k} {human(k, v)}" for k, v in sorted((ev.get("metrics") or {}).items()))
        rows.append(("evals", f"{ev.get('verdict')} (dataset {ev.get('dataset_digest')}; from the "
                              f"{ev.get('source')})" + (f": {metrics}" if metrics else "")))
    else:
        rows.append(("evals", "-"))
    for i, a in enumerate(p.get("approvals") or [{}]):
        text = f"{a.get('reviewer')} {a.get('state')} at {a.get('time')} on {_short(a.get('sha'))}" if a else "-"
        rows.append(("approvals" if i == 0 else "", text))
    if e.event == "merged":
        rows += checks_rows(p)
    rollback, overrides = rollback_of(e)
    for i, o in enumerate(overrides or [{}]):
        text = f"{o.get('actor')} at {o.get('time')} ({o.get('scope')}): {o.get('reason')}" if o else "-"
        rows.append(("overrides" if i == 0 else "", text))
    if rollback:
        rows.append(("rollback", rollback_text(rollback)))
        if rollback.get("source"):
            rows.append(("requested from", rollback["source"]))
    rows.append(("known-good before", _short((p.get("rollback") or {}).get("previous_known_good"))))
    dep = p.get("deployment")
    if dep:
        rows.append(("deployment", ", ".join(f"{k} {v}" for k, v in sorted(dep.items()))))
    rows.append(("chain", f"seq {e.seq}, prev {p.get('prev') or '-'}"))
    rows.append(("signature", signature))
    head = f"entry seq {e.seq}: {e.event} at {p.get('timestamp')}" + ("  [backfilled]" if p.get("backfilled") else "")
    return "\n".join([head] + [f"  {k:<18} {v}" for k, v in rows])


def run_show(args: argparse.Namespace) -> int:
    g = repo(args)
    fetch(g, args)
    commit = g.resolve(args.rev)
    if commit is None:
        raise UsageError(f"unknown revision {args.rev!r}")
    store = git_notes.LocalNotes(g)
    note = audit_log.read_note(store, commit)
    if not note:
        print(f"gating: no audit entry on commit {commit[:12]}", file=sys.stderr)
        return 1
    trusted = load_keys(g, args.key) if args.key else None
    out = []
    for i, line in enumerate(split_lines(note), 1):
        try:
            e = parse_line(line, commit)
        except EntryError as ex:
            out.append(f"line {i} of the note on {commit[:12]}: {ex}")
            continue
        if args.json:
            out.append(json.dumps(e.statement, sort_keys=True, indent=2))
            continue
        sig = "keyid " + ", ".join(e.keyids)
        if trusted is not None:
            problem = signature_problem(e, trusted)
            sig += "  (verified)" if problem is None else f"  (NOT VERIFIED: {problem})"
        out.append(show_text(e, sig))
    print("\n\n".join(out))
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    from gating.audit.rotation import key_findings, rotation_facts

    g = repo(args)
    old = keymod.load_private(keymod.read_file(args.key), args.key)
    new = keymod.load_public(keymod.read_file(args.new_key), args.new_key)
    if keymod.keyid(new) == keymod.keyid(old):
        raise UsageError(f"{args.new_key}: is the key in force already; rotate to a new key (`gating keygen`)")
    fetch(g, args)
    store = git_notes.LocalNotes(g)
    entries = audit_log.read_log(store)
    _findings, epochs = key_findings(entries, {}, set())
    if epochs and epochs[-1].keyid != keymod.keyid(old):
        raise UsageError(f"{args.key}: is not the key in force; the log's newest entries are signed by "
                         f"{epochs[-1].keyid[:16]} ({epochs[-1].since})")
    rev = args.at or g.default_branch() or "HEAD"
    commit = g.resolve(rev)
    if commit is None:
        raise UsageError(f"unknown revision {rev!r} (--at)")
    name = audit_verify.repository_name(g, args.remote)
    actor = args.actor or g.try_run("config", "user.name") or "unknown"
    res = audit_log.append_entry(store, rotation_facts(commit, name, actor, old, new), old, datetime.now(UTC))
    print(f"rotated: seq {res.entry.seq} (key_rotated) on {commit[:12]}, signed by {keymod.keyid(old)[:16]}, "
          f"introduces {keymod.keyid(new)[:16]}")
    print(f"next: push it (git push {args.remote} {git_notes.AUDIT_REF}), commit the new public key as {PUBLISHED_KEY} "
          "and give the App the new private key (GATING_AUDIT_KEY_PATH or GATING_AUDIT_KEY)")
    return 0


def run_keygen(args: argparse.Namespace) -> int:
    private = Path(args.private)
    public = Path(args.public) if args.public else private.with_name(private.name + ".pub")
    key = keymod.write_keypair(private, public, force=args.force)
    print(f"wrote {private} (private, mode 0600) and {public} (public)")
    print(f"keyid {keymod.keyid(key)}")
    return 0


def run_backfill(args: argparse.Namespace) -> int:
    from gating.audit import record as audit_record
    from gating.github import GitDatabaseNotes, Repo, token_client
    from gating.github.facts import RepoFacts

    token = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN")
    if not token:
        raise UsageError("backfill needs a token with contents: write in GITHUB_TOKEN (or GH_TOKEN)")
    key = keymod.load_private(keymod.read_file(args.key), args.key)
    repo = Repo(token_client(args.api_url, token), args.github_repo)
    written = audit_record.backfill(RepoFacts(repo), GitDatabaseNotes(repo), key, datetime.now(UTC), limit=args.limit,
                                    app_id=args.app_id or None)
    for r in written:
        p = r.entry.predicate
        print(f"backfilled seq {r.entry.seq}: merged #{p['pull_request']} at {_short(r.entry.commit)}")
    print(f"{len(written)} merged pull request{'s' if len(written) != 1 else ''} had no audit entry"
          + ("" if written else "; the trail is complete"))
    return 0
