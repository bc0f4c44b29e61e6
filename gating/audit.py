"""Audit entries: in-toto Statements in DSSE envelopes, signed with Ed25519, chained by seq and prev.

Sans-I/O: everything here takes bytes, dicts, keys and `now`, and returns values. The notes store
(gating/notes.py) does the reading and writing; `verify_log` judges what it read.

One entry is one line: the canonical JSON (sorted keys, no spaces) of a DSSE envelope whose payload is
a Statement about a commit. `seq` numbers the entries of the whole log from 1 and `prev` is the
sha256 of the previous entry's line, so removing, reordering or editing any entry breaks the chain.
"""

from __future__ import annotations

import base64
import binascii
import gc
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gating.keys import keyid as key_id
from gating.snapshot import canonical_json

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://gating.dev/audit-entry/v1"
EVENTS = ("merged", "deployed", "known_good", "deploy_failed", "rolled_back", "override")


class EntryError(ValueError):
    """A line that is not a well-formed audit entry."""


@dataclass(frozen=True)
class Approval:
    """One review in the approval chain: who, what, when, and on which head SHA."""

    reviewer: str
    state: str
    time: str
    sha: str


@dataclass(frozen=True)
class Override:
    """A recorded decision to proceed despite a gate (failed evals, missing approval), with its reason."""

    actor: str
    reason: str
    time: str
    scope: str = "evals"


ROLLBACK_TRIGGERS = ("comment", "alert", "deploy_failure", "cli")


@dataclass(frozen=True)
class RollbackRecord:
    """What a rolled_back entry says about the rollback itself, kept beside the rollback pointer: the
    commit whose LLM system was restored, the target as asked for, who asked and why, and what asked."""

    target: str  # the full sha restored
    target_ref: str  # as requested: last-good, previous or a commit sha (prefix)
    requested_by: str
    reason: str  # "" when none was given
    trigger: str  # one of ROLLBACK_TRIGGERS
    source: str = ""  # where the request came from: the comment's URL, the alert, the deployment's log


@dataclass(frozen=True)
class EntryFacts:
    """What an entry says, before it gets its place in the chain (seq, prev) and a signature."""

    event: str
    commit: str
    repository: str
    actor: str
    pull_request: int | None = None
    snapshot: Mapping[str, Any] | None = None
    evals: Mapping[str, Any] | None = None
    approvals: Sequence[Approval] = ()
    overrides: Sequence[Override] = ()
    previous_known_good: str | None = None
    rollback: RollbackRecord | None = None  # on rolled_back entries
    deployment: Mapping[str, Any] | None = None
    backfilled: bool = False
    discriminator: str = ""

    @property
    def key(self) -> str:
        """Idempotency key: the same fact delivered twice (or by two replicas) has the same key."""
        return f"{self.event}:{self.commit}" + (f":{self.discriminator}" if self.discriminator else "")


def timestamp(now: datetime) -> str:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_line(line: bytes) -> str:
    return "sha256:" + hashlib.sha256(line).hexdigest()


def snapshot_digest(snapshot: Mapping[str, Any]) -> str:
    """The digest gating.snapshot.Snapshot.digest gives for the same data."""
    return "sha256:" + hashlib.sha256(canonical_json(dict(snapshot))).hexdigest()


def eval_summary(record: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The part of an eval result an entry keeps: verdict, dataset digest, metrics, and where it came from."""
    return {
        "verdict": record.get("verdict"),
        "dataset_digest": record.get("dataset_digest"),
        "metrics": record.get("metrics") or {},
        "source": source,
    }


def build_statement(facts: EntryFacts, now: datetime, seq: int, prev: str | None) -> dict[str, Any]:
    if facts.event not in EVENTS:
        raise ValueError(f"unknown audit event {facts.event!r}; allowed: {', '.join(EVENTS)}")
    rollback: dict[str, Any] = {"previous_known_good": facts.previous_known_good}
    if facts.rollback is not None:
        if facts.rollback.trigger not in ROLLBACK_TRIGGERS:
            raise ValueError(f"unknown rollback trigger {facts.rollback.trigger!r}; allowed: "
                             f"{', '.join(ROLLBACK_TRIGGERS)}")
        rollback.update(vars(facts.rollback))
    subject: list[dict[str, Any]] = [{"name": f"{facts.repository}@{facts.commit}",
                                      "digest": {"gitCommit": facts.commit}}]
    digest = snapshot_digest(facts.snapshot) if facts.snapshot is not None else None
    if digest:
        subject.append({"name": "gating-snapshot", "digest": {"sha256": digest.removeprefix("sha256:")}})
    predicate = {
        "event": facts.event,
        "timestamp": timestamp(now),
        "actor": facts.actor,
        "repository": facts.repository,
        "commit": facts.commit,
        "pull_request": facts.pull_request,
        "snapshot_digest": digest,
        "snapshot": dict(facts.snapshot) if facts.snapshot is not None else None,
        "evals": dict(facts.evals) if facts.evals is not None else None,
        "approvals": [vars(a) for a in facts.approvals],
        "overrides": [vars(o) for o in facts.overrides],
        "rollback": rollback,
        "deployment": dict(facts.deployment) if facts.deployment is not None else None,
        "backfilled": facts.backfilled,
        "key": facts.key,
        "seq": seq,
        "prev": prev,
    }
    return {"_type": STATEMENT_TYPE, "subject": subject, "predicateType": PREDICATE_TYPE, "predicate": predicate}


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what the signature covers."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def sign_statement(statement: Mapping[str, Any], key: Ed25519PrivateKey) -> bytes:
    """The envelope line (no trailing newline) for a statement."""
    payload = canonical_json(dict(statement))
    sig = key.sign(pae(PAYLOAD_TYPE, payload))
    envelope = {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"keyid": key_id(key), "sig": base64.b64encode(sig).decode()}],
    }
    return canonical_json(envelope)


def make_line(facts: EntryFacts, now: datetime, seq: int, prev: str | None, key: Ed25519PrivateKey) -> bytes:
    return sign_statement(build_statement(facts, now, seq, prev), key)


@dataclass(frozen=True)
class Entry:
    """A parsed entry (signature not checked): the line as stored and the Statement inside it."""

    commit: str
    line: bytes
    envelope: dict[str, Any] = field(repr=False)
    payload: bytes = field(repr=False)
    statement: dict[str, Any] = field(repr=False)

    @property
    def predicate(self) -> dict[str, Any]:
        return self.statement["predicate"]

    @property
    def seq(self) -> int:
        return self.predicate["seq"]

    @property
    def prev(self) -> str | None:
        return self.predicate.get("prev")

    @property
    def event(self) -> str:
        return self.predicate["event"]

    @property
    def key(self) -> str:
        return self.predicate.get("key", "")

    @property
    def time(self) -> datetime:
        return datetime.strptime(self.predicate["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)

    @property
    def digest(self) -> str:
        return sha256_line(self.line)

    @property
    def subject_commit(self) -> str | None:
        for s in self.statement.get("subject", []):
            if isinstance(s, dict) and "gitCommit" in s.get("digest", {}):
                return s["digest"]["gitCommit"]
        return None

    @property
    def keyids(self) -> list[str]:
        return [s.get("keyid", "") for s in self.envelope.get("signatures", [])]

    def label(self) -> str:
        return f"seq {self.seq} ({self.event}) on commit {self.commit[:12]}"


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise EntryError(f"{what} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EntryError(f"{what} is not valid base64") from None


def parse_line(line: bytes, commit: str) -> Entry:
    """Decode an envelope line and its Statement; raises EntryError naming what is wrong."""
    try:
        envelope = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise EntryError("not JSON: not a DSSE envelope") from None
    if not isinstance(envelope, dict) or envelope.get("payloadType") != PAYLOAD_TYPE:
        raise EntryError(f"not a DSSE envelope with payloadType {PAYLOAD_TYPE}")
    sigs = envelope.get("signatures")
    if not isinstance(sigs, list) or not sigs or not all(isinstance(s, dict) for s in sigs):
        raise EntryError("the envelope has no signatures")
    payload = _b64(envelope.get("payload"), "payload")
    try:
        statement = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise EntryError("the payload is not JSON (payload changed?)") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise EntryError(f"the payload is not an in-toto Statement ({STATEMENT_TYPE})")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise EntryError(f"predicateType is {statement.get('predicateType')!r}, not {PREDICATE_TYPE}")
    pred = statement.get("predicate")
    if not isinstance(pred, dict) or type(pred.get("seq")) is not int or pred.get("event") not in EVENTS:
        raise EntryError("the predicate has no valid seq or event")
    problem = _shape_problem(sigs, statement.get("subject"), pred)
    if problem:
        raise EntryError(problem)
    return Entry(commit=commit, line=line, envelope=envelope, payload=payload, statement=statement)


_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_PREDICATE_TYPES: dict[str, tuple[type, ...]] = {
    "prev": (str, type(None)), "key": (str,), "actor": (str, type(None)), "repository": (str, type(None)),
    "commit": (str, type(None)), "snapshot": (dict, type(None)), "evals": (dict, type(None)),
    "deployment": (dict, type(None)), "rollback": (dict, type(None)), "approvals": (list,), "overrides": (list,),
}


def _shape_problem(sigs: list[dict[str, Any]], subject: Any, pred: dict[str, Any]) -> str | None:
    """What a reader of the entry would trip over (a field of the wrong type), said once here so that
    verify names it, and log, show and rollback skip the entry instead of crashing on it."""
    for i, s in enumerate(sigs, 1):
        if not isinstance(s.get("keyid"), str) or not isinstance(s.get("sig"), str):
            return f"signature {i} of the envelope has no keyid and sig strings"
    if not isinstance(subject, list) or not all(
            isinstance(s, dict) and isinstance(s.get("digest"), dict) for s in subject):
        return "the statement's subject is not a list of objects with a digest"
    if pred["seq"] < 1:
        return f"seq {pred['seq']} is not a positive number"
    if not isinstance(pred.get("timestamp"), str) or not _TIMESTAMP.fullmatch(pred["timestamp"]):
        return f"the predicate's timestamp {pred.get('timestamp')!r} is not a UTC time (YYYY-MM-DDTHH:MM:SSZ)"
    for name, types in _PREDICATE_TYPES.items():
        if name in pred and not isinstance(pred[name], types):
            return f"the predicate's {name} is {type(pred[name]).__name__}, not {' or '.join(_TYPE_NAMES[t] for t in types)}"
    for name in ("approvals", "overrides"):
        if not all(isinstance(x, dict) for x in pred.get(name) or ()):
            return f"the predicate's {name} is not a list of objects"
    return None


_TYPE_NAMES = {str: "a string", dict: "an object", list: "a list", type(None): "null"}


def signature_problem(entry: Entry, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    """None when a trusted key signed the entry; otherwise why not."""
    msg = pae(PAYLOAD_TYPE, entry.payload)
    seen = []
    for sig in entry.envelope["signatures"]:
        kid = sig.get("keyid", "")
        seen.append(kid)
        pub = keys.get(kid)
        if pub is None:
            continue
        try:
            pub.verify(_b64(sig.get("sig"), "signature"), msg)
            return None
        except (InvalidSignature, EntryError):
            return "signature does not verify: the payload or the signature was changed"
    trusted = ", ".join(k[:16] for k in keys)
    return f"signed by key {', '.join(k[:16] for k in seen)}, which is not a trusted key ({trusted})"


# -- verification ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One thing wrong with the log, named by the entry it concerns (by seq where it can be read)."""

    where: str
    message: str
    seq: int | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class NotesChange:
    """How one commit's note changed in one notes commit (None: absent before/after).

    A reader that has already established that the step appended one line (by blob id) passes that
    line as `appended` (and its line number) instead of both versions of the note.
    """

    commit: str
    old: bytes | None
    new: bytes | None
    appended: bytes | None = None
    line_no: int = 0


@dataclass(frozen=True)
class NotesCommit:
    sha: str
    parents: tuple[str, ...]
    changes: tuple[NotesChange, ...]


@dataclass
class Report:
    entries: list[Entry]
    findings: list[Finding]
    notes_commits: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first(self) -> Finding | None:
        return self.findings[0] if self.findings else None


@contextmanager
def no_gc() -> Iterator[None]:
    """Parsing thousands of statements makes millions of small objects and none of them cyclic: the
    cyclic collector would rescan them over and over (it doubles the time of a 10,000-entry verify)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def split_lines(note: bytes | None) -> list[bytes]:
    if not note:
        return []
    lines = note.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def _loose(line: bytes) -> tuple[int | None, str | None]:
    """(seq, event) of a line without any checks, to name an entry even when it is damaged."""
    try:
        payload = base64.b64decode(json.loads(line)["payload"])
    except Exception:
        return None, None
    try:
        pred = json.loads(payload)["predicate"]
        if isinstance(pred, dict) and type(pred.get("seq")) is int:
            return pred["seq"], str(pred.get("event"))
    except Exception:
        pass
    m = re.search(rb'"seq":(\d+)[,}]', payload)  # a damaged payload usually keeps its seq readable
    return (int(m.group(1)), None) if m else (None, None)


def _name(line: bytes, commit: str, line_no: int) -> tuple[str, int | None]:
    seq, event = _loose(line)
    if seq is None:
        return f"line {line_no} of the note on commit {commit[:12]}", None
    if event is None:
        return f"seq {seq} on commit {commit[:12]} (line {line_no} of its note)", seq
    return f"seq {seq} ({event}) on commit {commit[:12]}", seq


def _finding(line: bytes, commit: str, line_no: int, message: str) -> Finding:
    where, seq = _name(line, commit, line_no)
    return Finding(where, message, seq)


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.seq is None, f.seq or 0))


def verify_log(
    notes: Mapping[str, bytes],
    keys: Mapping[str, Ed25519PublicKey],
    history: Sequence[NotesCommit] | None = None,
) -> Report:
    """Every signature, the seq/prev chain, each entry's place, and (given history) that notes only grew.

    `notes` maps annotated commit -> note bytes at the tip; `keys` maps keyid -> trusted public key.
    """
    findings: list[Finding] = []
    entries: list[Entry] = []
    checks: list[tuple[list[Entry], Future[list[str | None]]]] = []

    def check(batch: list[Entry]) -> list[str | None]:
        return [signature_problem(e, keys) for e in batch]

    # Ed25519 verification releases the GIL: it runs on worker threads while this one parses JSON.
    with no_gc(), ThreadPoolExecutor(max_workers=2) as pool:
        batch: list[Entry] = []
        for commit, data in notes.items():
            last: Entry | None = None
            for i, line in enumerate(split_lines(data), 1):
                try:
                    e = parse_line(line, commit)
                except EntryError as ex:
                    findings.append(_finding(line, commit, i, str(ex)))
                    continue
                entries.append(e)
                batch.append(e)
                if len(batch) == 256:
                    checks.append((batch, pool.submit(check, batch)))
                    batch = []
                if e.subject_commit != commit:
                    findings.append(Finding(e.label(), f"its subject is commit {str(e.subject_commit)[:12]} "
                                            "but it is stored on another commit (entry moved?)", e.seq))
                if last is not None and e.seq <= last.seq:
                    findings.append(Finding(e.label(), f"out of order in its note: it comes after seq {last.seq}",
                                            e.seq))
                last = e
        checks.append((batch, pool.submit(check, batch)))
        for done, future in checks:
            findings += [Finding(e.label(), p, e.seq) for e, p in zip(done, future.result(), strict=True) if p]
    entries.sort(key=lambda e: e.seq)
    findings += _chain_findings(entries)
    if history is not None:
        findings += _history_findings(history)
    return Report(entries=entries, findings=_sorted(findings), notes_commits=len(history or ()))


def _chain_findings(entries: Sequence[Entry]) -> list[Finding]:
    findings = []
    before: Entry | None = None
    for e in entries:
        if before is not None and e.seq == before.seq:
            findings.append(Finding(e.label(), f"seq {e.seq} appears twice (also on commit {before.commit[:12]})",
                                    e.seq))
            continue
        expected = before.seq + 1 if before else 1
        if e.seq != expected:
            gap = f"seq {expected}" if e.seq == expected + 1 else f"seq {expected} to {e.seq - 1}"
            after = before.label() if before else "the start of the log"
            findings.append(Finding(gap, f"missing from the log: {e.label()} follows {after}", expected))
        elif e.prev != (sha256_line(before.line) if before else None):
            what = f"the sha256 of seq {before.seq}" if before else "null (it is the first entry)"
            findings.append(Finding(e.label(), f"prev {e.prev} is not {what}", e.seq))
        before = e
    return findings


def _history_findings(history: Sequence[NotesCommit]) -> list[Finding]:
    findings = []
    for nc in history:
        if len(nc.parents) > 1:
            findings.append(Finding(f"notes commit {nc.sha[:12]}", "is a merge; the notes ref only moves "
                                    "fast-forward, one entry at a time"))
        added: list[tuple[bytes, str, int]] = []
        for ch in nc.changes:
            if ch.appended is not None:
                added.append((ch.appended, ch.commit, ch.line_no))
                continue
            old, new = ch.old or b"", ch.new or b""
            if new.startswith(old) and (not old or old.endswith(b"\n")):
                start = len(split_lines(old))
                added += [(ln, ch.commit, start + k + 1) for k, ln in enumerate(split_lines(new[len(old):]))]
                continue
            old_lines, new_lines = split_lines(old), split_lines(new)
            k = 0
            while k < len(old_lines) and k < len(new_lines) and old_lines[k] == new_lines[k]:
                k += 1
            if k < len(old_lines):
                findings.append(_finding(old_lines[k], ch.commit, k + 1,
                                         f"notes commit {nc.sha[:12]} removed or changed this entry "
                                         "(a note only grows)"))
        if len(added) != 1:
            where, seq = _name(*added[0]) if added else (f"notes commit {nc.sha[:12]}", None)
            findings.append(Finding(where, f"notes commit {nc.sha[:12]} adds {len(added)} lines; "
                                    "every notes commit adds exactly one", seq))
    return findings


def rewrite_findings(old_notes: Mapping[str, bytes], new_notes: Mapping[str, bytes],
                     old_tip: str, new_tip: str) -> list[Finding]:
    """The ref was force-pushed: name every entry of the old history that the new one lost or changed."""
    why = (f"removed or changed by a rewrite of the notes ref (the previously verified tip {old_tip[:12]} "
           f"is not in the history of {new_tip[:12]}: force-pushed)")
    findings = []
    for commit, data in old_notes.items():
        new = new_notes.get(commit) or b""
        if new.startswith(data):
            continue
        old_lines, new_lines = split_lines(data), split_lines(new)
        for i, line in enumerate(old_lines):
            if i >= len(new_lines) or new_lines[i] != line:
                findings.append(_finding(line, commit, i + 1, why))
                break
    if not findings:
        findings.append(Finding("notes ref", f"was force-pushed: the previously verified tip {old_tip[:12]} "
                                f"is not in the history of {new_tip[:12]}"))
    return _sorted(findings)
