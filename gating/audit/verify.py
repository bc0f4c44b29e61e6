"""Judging an audit log as read: every signature, the seq/prev chain, and the history of the notes
ref (no notes commit may remove or change a line). Sans-I/O like gating.audit: the notes store reads,
this decides."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gating.audit.entry import (
    Entry,
    EntryError,
    no_gc,
    parse_line,
    sha256_line,
    signature_problem,
    split_lines,
)


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
    epochs: list[Any] = field(default_factory=list)  # gating.audit.rotation.Epoch, oldest first

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first(self) -> Finding | None:
        return self.findings[0] if self.findings else None


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


_DEFER = "defer"


def verify_log(
    notes: Mapping[str, bytes] | Iterable[tuple[str, bytes]],
    keys: Mapping[str, Ed25519PublicKey],
    history: Sequence[NotesCommit] | Callable[[], Sequence[NotesCommit]] | None = None,
    keep: bool = False,
) -> Report:
    """Every signature, the key rotation chain, the seq/prev chain, each entry's place, and (given
    history) that notes only grew.

    `notes` maps annotated commit -> note bytes at the tip (or yields those pairs as they are read:
    the first signatures are checked while git reads the rest); `keys` maps keyid -> trusted public
    key. `history` may be a function that reads it: it is called while the signatures are checked.
    `keep`: the entries hold their parsed statements (for a caller that reads every one of them).
    Entries signed by a key that only the log's own key_rotated entries name are checked once all
    are read (gating.audit.rotation decides whether that chain is anchored in a trusted key).
    """
    from gating.audit.rotation import declared_keys, key_findings

    findings: list[Finding] = []
    entries: list[Entry] = []
    checks: list[tuple[list[Entry], Future[list[str | None]]]] = []

    def check(batch: list[Entry]) -> list[str | None]:
        return [signature_problem(e, keys) if set(e.keyids) & keys.keys() else _DEFER for e in batch]

    # Ed25519 verification releases the GIL: it runs on worker threads while this one parses JSON,
    # then reads the history and follows the chains (the findings keep the order they had when each
    # step waited for the one before).
    with no_gc(), ThreadPoolExecutor(max_workers=2) as pool:
        batch: list[Entry] = []
        for commit, data in notes.items() if isinstance(notes, Mapping) else notes:
            last: Entry | None = None
            for i, line in enumerate(split_lines(data), 1):
                try:
                    e = parse_line(line, commit, keep)
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
        entries.sort(key=lambda e: e.seq)
        chain = _chain_findings(entries)
        steps = history() if callable(history) else history
        grew = _history_findings(steps) if steps is not None else []
        declared, bad_keys = declared_keys(entries)
        deferred = []
        for done, future in checks:
            for e, p in zip(done, future.result(), strict=True):
                if p == _DEFER:
                    deferred.append(e)
                elif p:
                    findings.append(Finding(e.label(), p, e.seq))
    findings += bad_keys
    every = {**declared, **keys}
    findings += [Finding(e.label(), p, e.seq) for e in deferred if (p := signature_problem(e, every))]
    chain_keys, epochs = key_findings(entries, keys, {f.seq for f in findings if f.seq is not None})
    findings += chain_keys
    findings += chain
    findings += grew
    return Report(entries=entries, findings=_sorted(findings), notes_commits=len(steps or ()), epochs=epochs)


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
