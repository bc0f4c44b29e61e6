"""Witnesses: the App's `gating / audit` check run on an entry's commit, carrying the entry's seq, its
hash and the keyid that signed it.

A writer of the repository can move the notes ref back, rewrite it, or commit another public key and
re-sign every entry; a writer cannot create, change or delete a check run of the App. So a clone that
has never verified before cross-checks the log against the witnesses it can read from the API: a
witnessed entry that is missing from the log, or differs from it, or a `gating / audit` run that
another app created, fails verification, named by seq. Sans-I/O: runs (as the API returns them) and
entries in, findings out; gating/github/witness.py does the reading and writing.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gating.audit.entry import Entry
from gating.audit.keys import keyid, raw_public
from gating.audit.verify import Finding

WITNESS_CHECK = "gating / audit"
MARKER = "gating-audit-witness "
ACTIONS_SLUG = "github-actions"  # any workflow's GITHUB_TOKEN posts check runs as this app


def record(entry: Entry, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The machine-readable part of a witness."""
    return {"v": 1, "seq": entry.seq, "event": entry.event, "commit": entry.commit, "hash": entry.digest,
            "keyid": entry.keyids[0] if entry.keyids else "",
            "public_key": base64.b64encode(raw_public(public_key)).decode()}


def output(entry: Entry, public_key: Ed25519PublicKey) -> dict[str, str]:
    """The check run's output: a title and summary people read, and the record as one line in text."""
    p = entry.predicate
    pr = f" of #{p['pull_request']}" if p.get("pull_request") else ""
    by = f" by {p['actor']}" if p.get("actor") else ""
    title = f"Audit entry seq {entry.seq}: {entry.event}{pr}{by}"
    rows = [("event", entry.event), ("seq", str(entry.seq)), ("commit", f"`{entry.commit}`"),
            ("time", str(p.get("timestamp"))), ("actor", str(p.get("actor") or "-")),
            ("pull request", f"#{p['pull_request']}" if p.get("pull_request") else "-")]
    if p.get("evals"):
        rows.append(("evals", str(p["evals"].get("verdict"))))
    if p.get("approvals"):
        rows.append(("approvals", ", ".join(f"{a.get('reviewer')} ({a.get('state')})" for a in p["approvals"])))
    if p.get("deployment"):
        rows.append(("deployment", f"{p['deployment'].get('environment')} ({p['deployment'].get('status')})"))
    if p.get("key_rotation"):
        rows.append(("new key", f"`{(p['key_rotation'].get('next') or {}).get('keyid')}`"))
    rows += [("entry hash", f"`{entry.digest}`"), ("signed by key", f"`{record(entry, public_key)['keyid']}`")]
    summary = "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "",
                         "The App witnesses every audit entry here, where a writer of the repository cannot "
                         "change it. Check the notes log against it from any clone: `gating audit verify`."])
    text = MARKER + json.dumps(record(entry, public_key), sort_keys=True, separators=(",", ":"))
    return {"title": title, "summary": summary, "text": text}


@dataclass(frozen=True)
class Witness:
    """A `gating / audit` check run, as read back: who created it, and what it says (None: nothing
    readable, with `problem` saying why)."""

    run_id: int
    commit: str  # the check run's head_sha
    app_id: int | None
    app_slug: str
    record: Mapping[str, Any] | None
    problem: str = ""

    @property
    def seq(self) -> int | None:
        return self.record["seq"] if self.record else None

    def where(self) -> str:
        return f"{WITNESS_CHECK} check run {self.run_id} on commit {self.commit[:12]}"

    def public_key(self) -> Ed25519PublicKey | None:
        """The key the witness names, when its keyid is the key's (else None)."""
        if not self.record:
            return None
        try:
            raw = base64.b64decode(self.record.get("public_key") or "", validate=True)
            pub = Ed25519PublicKey.from_public_bytes(raw)
        except (binascii.Error, ValueError):
            return None
        return pub if keyid(pub) == self.record.get("keyid") else None


_FIELDS = {"seq": int, "event": str, "commit": str, "hash": str, "keyid": str, "public_key": str}


def parse_run(run: Mapping[str, Any]) -> Witness:
    app = run.get("app") or {}
    base: dict[str, Any] = dict(run_id=int(run.get("id") or 0), commit=str(run.get("head_sha") or ""),
                app_id=app.get("id") if isinstance(app.get("id"), int) else None, app_slug=str(app.get("slug") or "?"))
    text = (run.get("output") or {}).get("text") or ""
    line = next((ln for ln in text.splitlines() if ln.startswith(MARKER)), None)
    if line is None:
        return Witness(**base, record=None, problem=f"has no `{MARKER.strip()}` line")
    try:
        rec = json.loads(line[len(MARKER):])
    except ValueError:
        return Witness(**base, record=None, problem="its witness line is not JSON")
    if not isinstance(rec, dict) or any(type(rec.get(k)) is not t for k, t in _FIELDS.items()):
        return Witness(**base, record=None, problem=f"its witness line lacks one of {', '.join(_FIELDS)}")
    return Witness(**base, record=rec)


@dataclass(frozen=True)
class AppPin:
    """Which app's check runs are witnesses: an app id or slug (None: learn it from the runs, which
    must then all come from one app that is not GitHub Actions), and where the pin came from."""

    value: str | None
    source: str


@dataclass
class CrossCheck:
    findings: list[Finding]
    app_id: int | None  # the App whose runs counted
    app_text: str  # "gating-emulated (app id 424242, from --app-id)"
    counted: list[Witness]  # the App's readable witnesses, by seq


def which_app(witnesses: Sequence[Witness], pin: AppPin) -> tuple[int | None, str, str]:
    """(app id, how it is described, problem) of the App whose runs are witnesses."""
    if pin.value:
        found = next((w for w in witnesses if pin.value in (str(w.app_id), w.app_slug)), None)
        if found is None:
            return None, f"{pin.value} ({pin.source})", ""
        return found.app_id, f"{found.app_slug} (app id {found.app_id}, {pin.source})", ""
    apps = {(w.app_id, w.app_slug) for w in witnesses if w.app_slug != ACTIONS_SLUG}
    if len(apps) == 1:
        ((app_id, slug),) = apps
        return app_id, f"{slug} (app id {app_id}, the only app that posted {WITNESS_CHECK}; pin it with --app-id)", ""
    if len(apps) > 1:
        names = ", ".join(f"{s} ({i})" for i, s in sorted(apps, key=lambda a: str(a[0])))
        return None, "", f"{WITNESS_CHECK} check runs come from more than one app ({names}): pass --app-id"
    return None, "", ""


def cross_check(witnesses: Sequence[Witness], entries: Sequence[Entry], pin: AppPin) -> CrossCheck:
    """Every witness against the log: created by the App, and naming an entry the log holds as is."""
    app_id, app_text, problem = which_app(witnesses, pin)
    findings: list[Finding] = []
    if problem:
        findings.append(Finding(WITNESS_CHECK, problem))
    by_seq = {e.seq: e for e in entries}
    top = max(by_seq, default=0)
    counted = []
    for w in witnesses:
        label = f"seq {w.seq}" if w.seq is not None else w.where()
        if app_id is None or w.app_id != app_id:
            if not problem:
                findings.append(Finding(label, f"{w.where()} was created by {w.app_slug} (app id {w.app_id}), not "
                                        f"by the App ({app_text or 'none identified'}): only the App's witnesses "
                                        "count, and a forged one fails verification", w.seq))
            continue
        if w.record is None:
            findings.append(Finding(label, f"{w.where()} is not a witness: {w.problem}"))
            continue
        e = by_seq.get(w.record["seq"])
        rec = w.record
        if e is None:
            findings.append(Finding(label, f"witnessed by the App ({w.where()}: {rec['event']} on commit "
                                    f"{rec['commit'][:12]}) but missing from the log, which ends at "
                                    f"{'seq ' + str(top) if top else 'no entry'}: the notes ref was moved back "
                                    "or rewritten", w.seq))
        elif e.digest != rec["hash"] or e.commit != rec["commit"]:
            findings.append(Finding(e.label(), f"differs from what the App witnessed ({w.where()}): the App "
                                    f"recorded {rec['event']} on {rec['commit'][:12]}, hash {rec['hash'][:23]}, "
                                    f"signed by key {rec['keyid'][:16]}; the log has {e.event} on "
                                    f"{e.commit[:12]}, hash {e.digest[:23]}, signed by key "
                                    f"{(e.keyids or [''])[0][:16]}: the entry was rewritten or re-signed", e.seq))
        counted.append(w)
    counted.sort(key=lambda w: w.seq or 0)
    findings.sort(key=lambda f: (f.seq is None, f.seq or 0))
    return CrossCheck(findings, app_id, app_text, counted)


class Checks(Protocol):
    """Where witnesses are posted: a repository's check runs (gating.github.Repo)."""

    def check_runs(self, sha: str, name: str) -> list[dict[str, Any]]: ...
    def create_check_run(self, body: dict[str, Any]) -> dict[str, Any]: ...


def witness_entry(repo: Checks, entry: Entry, public_key: Ed25519PublicKey, app_id: int) -> tuple[int, bool]:
    """(check run id, created) of the App's witness of `entry` on its commit; a witness already there
    (a redelivery, a retried job, the reconciliation) is not made twice."""
    for run in repo.check_runs(entry.commit, WITNESS_CHECK):
        w = parse_run(run)
        if w.app_id == app_id and w.record and w.record["seq"] == entry.seq and w.record["hash"] == entry.digest:
            return w.run_id, False
    body = {"name": WITNESS_CHECK, "head_sha": entry.commit, "status": "completed", "conclusion": "success",
            "external_id": f"gating-audit-seq-{entry.seq}", "output": output(entry, public_key)}
    return int(repo.create_check_run(body)["id"]), True
