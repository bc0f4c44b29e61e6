"""Audit entries: in-toto Statements in DSSE envelopes, signed with Ed25519, chained by seq and prev.

Sans-I/O: everything here takes bytes, dicts, keys and `now`, and returns values. The notes store
(gating/audit/log.py) does the reading and writing; gating.audit.verify judges what it read.

One entry is one line: the canonical JSON (sorted keys, no spaces) of a DSSE envelope whose payload is
a Statement about a commit. `seq` numbers the entries of the whole log from 1 and `prev` is the
sha256 of the previous entry's line, so removing, reordering or editing any entry breaks the chain.
"""

from __future__ import annotations

import base64
import binascii
import gc
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gating import limits
from gating.audit.keys import keyid as key_id
from gating.errors import FAILED, GatingError
from gating.system.canonical import canonical_json

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://gating.dev/audit-entry/v1"
EVENTS: tuple[str, ...] = ("merged", "deployed", "known_good", "deploy_failed", "rolled_back", "override", "key_rotated",
          "monitor_alert", "deploy_approved", "deploy_rejected", "promoted")
EVENTS += ("canary_failed", "drill")  # a canary analysis that failed (gating.monitor.canary); a rollback drill


class EntryError(GatingError):
    """A line that is not a well-formed audit entry: the audit log fails verification (exit 1)."""

    exit_code = FAILED


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


ROLLBACK_TRIGGERS = ("comment", "alert", "deploy_failure", "cli", "monitor")


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
    key_rotation: Mapping[str, Any] | None = None  # on key_rotated entries: gating.audit.rotation.rotation
    # On known_good entries the bake's evidence, on monitor_alert entries the firing rule: rules,
    # figures, window, comparison (gating.monitor.rules.RuleResult.to_dict). On canary_failed entries
    # the analysis (gating.monitor.canary.Analysis.to_dict), on drill entries the drill's result.
    health: Mapping[str, Any] | None = None
    # On merged entries: the check runs that gated the merge, by name (gating / approval, gating / eval),
    # each as recorded on the pull request's head (gating.audit.record.check_record), None where there
    # was none. Absent from entries written before it was recorded: "not recorded", never "passed".
    checks: Mapping[str, Any] | None = None

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
    """The digest gating.system.snapshot.Snapshot.digest gives for the same data."""
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
        **({"key_rotation": dict(facts.key_rotation)} if facts.key_rotation is not None else {}),
        **({"health": dict(facts.health)} if facts.health is not None else {}),
        **({"checks": dict(facts.checks)} if facts.checks is not None else {}),
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
    """A parsed entry (signature not checked): the line as stored, what the chain and the signature
    check need (read once by parse_line), and the Statement inside it, parsed again when something
    asks for it if parse_line did not keep it (a verify of thousands of entries keeps none)."""

    commit: str
    line: bytes
    payload: bytes = field(repr=False)
    seq: int
    event: str
    prev: str | None
    subject_commit: str | None
    signatures: tuple[tuple[str, str], ...] = field(repr=False)  # (keyid, base64 sig), as in the envelope

    @cached_property
    def statement(self) -> dict[str, Any]:
        return cast(dict[str, Any], limits.load_json(self.payload, f"audit note on {self.commit}", limits.NOTE))

    @property
    def predicate(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.statement["predicate"])

    @property
    def key(self) -> str:
        return cast(str, self.predicate.get("key", ""))

    @property
    def time(self) -> datetime:
        return datetime.strptime(self.predicate["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)

    @property
    def digest(self) -> str:
        return sha256_line(self.line)

    @property
    def keyids(self) -> list[str]:
        return [kid for kid, _sig in self.signatures]

    def label(self) -> str:
        return f"seq {self.seq} ({self.event}) on commit {self.commit[:12]}"


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise EntryError(f"{what} is not a string")
    try:  # strict mode takes only what validate=True takes, at C speed; anything else is judged below
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EntryError(f"{what} is not valid base64") from None


def parse_line(line: bytes, commit: str, keep: bool = True) -> Entry:
    """Decode an envelope line and its Statement; raises EntryError naming what is wrong. `keep`:
    the entry holds the parsed Statement (else it is parsed again if asked for)."""
    try:
        fast = _signed_envelope(line, commit)
        envelope = limits.load_json(line, f"audit note on {commit}", limits.NOTE) if fast is None else None
    except (ValueError, UnicodeDecodeError, limits.LimitError):
        raise EntryError("not JSON: not a DSSE envelope") from None
    sigs: list[dict[str, Any]] = []
    if fast is not None:
        payload, signatures = fast
    else:
        if not isinstance(envelope, dict) or envelope.get("payloadType") != PAYLOAD_TYPE:
            raise EntryError(f"not a DSSE envelope with payloadType {PAYLOAD_TYPE}")
        sigs = envelope.get("signatures")  # type: ignore[assignment]
        if not isinstance(sigs, list) or not sigs or not all(isinstance(s, dict) for s in sigs):
            raise EntryError("the envelope has no signatures")
        payload = _b64(envelope.get("payload"), "payload")
    try:
        statement = limits.load_json(payload, f"audit note on {commit}", limits.NOTE)
    except (ValueError, UnicodeDecodeError, limits.LimitError):
        raise EntryError("the payload is not JSON (payload changed?)") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise EntryError(f"the payload is not an in-toto Statement ({STATEMENT_TYPE})")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise EntryError(f"predicateType is {statement.get('predicateType')!r}, not {PREDICATE_TYPE}")
    pred = statement.get("predicate")
    if not isinstance(pred, dict) or type(pred.get("seq")) is not int or pred.get("event") not in EVENTS:
        raise EntryError("the predicate has no valid seq or event")
    subject = cast(list[dict[str, Any]], statement.get("subject"))  # a list of objects with a digest, once checked
    problem = _shape_problem(sigs, subject, pred)
    if problem:
        raise EntryError(problem)
    if fast is None:
        signatures = tuple((s["keyid"], s["sig"]) for s in sigs)
    entry = Entry(commit, line, payload, pred["seq"], pred["event"], pred.get("prev"),
                  next((s["digest"]["gitCommit"] for s in subject if "gitCommit" in s["digest"]), None), signatures)
    if keep:
        entry.__dict__["statement"] = statement  # what cached_property would hold
    return entry


# An envelope exactly as sign_statement writes it (canonical JSON, one signature): no escape can hide
# in the characters these allow, so what they capture is what a JSON reader would read.
_ENVELOPE_HEAD = b'{"payload":"'
_ENVELOPE_TAIL = re.compile(rb'","payloadType":"application/vnd\.in-toto\+json","signatures":'
                            rb'\[\{"keyid":"([0-9a-f]*)","sig":"([A-Za-z0-9+/=]*)"\}\]\}')


def _signed_envelope(line: bytes, commit: str) -> tuple[bytes, tuple[tuple[str, str], ...]] | None:
    """(payload, signatures) of a line in the form sign_statement writes, read without a JSON reader
    (most of the line is the payload's base64: the reader would build it as a string only to hand it
    to the decoder); None for any other line, which the JSON reader then judges. Raises LimitError
    where load_json would (the job's budget)."""
    limits.check_budget(f"audit note on {commit}")
    if not line.startswith(_ENVELOPE_HEAD) or len(line) > limits.NOTE.max_bytes:
        return None
    end = line.find(b'"', len(_ENVELOPE_HEAD))
    m = _ENVELOPE_TAIL.fullmatch(line, end) if end > 0 else None
    if m is None:
        return None
    try:
        payload = binascii.a2b_base64(memoryview(line)[len(_ENVELOPE_HEAD):end], strict_mode=True)
    except (binascii.Error, ValueError):
        return None  # not in strict form: _b64 judges it as before
    return payload, ((m.group(1).decode(), m.group(2).decode()),)


_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_PREDICATE_TYPES: dict[str, tuple[type, ...]] = {
    "prev": (str, type(None)), "key": (str,), "actor": (str, type(None)), "repository": (str, type(None)),
    "commit": (str, type(None)), "snapshot": (dict, type(None)), "evals": (dict, type(None)),
    "deployment": (dict, type(None)), "rollback": (dict, type(None)), "approvals": (list,), "overrides": (list,),
    "key_rotation": (dict,), "health": (dict,),
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
    for kid, sig in entry.signatures:
        seen.append(kid)
        pub = keys.get(kid)
        if pub is None:
            continue
        try:
            pub.verify(_b64(sig, "signature"), msg)
            return None
        except (InvalidSignature, EntryError):
            return "signature does not verify: the payload or the signature was changed"
    trusted = ", ".join(k[:16] for k in keys)
    return f"signed by key {', '.join(k[:16] for k in seen)}, which is not a trusted key ({trusted})"


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


# Deployment entries, and the environments whose deployments count when none are configured.
DEPLOY_EVENTS = ("deployed", "known_good", "deploy_failed")
DEFAULT_ENVIRONMENTS = ("production",)


def is_deployment(e: Entry, environments: Sequence[str] = DEFAULT_ENVIRONMENTS) -> bool:
    """A deployment entry of one of `environments`; a preview (any other environment) is not. An
    entry that names no environment (written before they were recorded) counts."""
    if e.event not in DEPLOY_EVENTS:
        return False
    env = (e.predicate.get("deployment") or {}).get("environment")
    return env is None or env in environments


def split_lines(note: bytes | None) -> list[bytes]:
    if not note:
        return []
    lines = note.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines
