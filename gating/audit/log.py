"""The audit log: entries as lines of git notes in refs/notes/gating/audit.

One algorithm, three backends (gating/git/notes.py, gating/github/notes.py). `append_entry` reads the
tip, looks for an entry with the same idempotency key on the commit's note, chains the new entry to the
line the tip commit added, and writes one notes commit whose parent is the observed tip; a moved ref
(RefConflict) means re-read and retry, so redeliveries and racing writers never duplicate or fork the
log. The backends differ only in how they read trees and blobs and how they move the ref:

- LocalNotes: plumbing in a local repository, compare-and-swap `update-ref` (the CLI, tests).
- GitDatabaseNotes (gating/github/notes.py): the GitHub Git Database API, ref update with force: false.
- PushNotes: a local mirror plus a plain (fast-forward only) `git push` of the notes ref over HTTPS.

All of them place a note where the tree already keeps it, else by the tree's existing fanout, so the
same appends produce the same trees whichever backend wrote them.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gating.audit import entry as audit
from gating.audit.entry import Entry, EntryError, EntryFacts
from gating.audit.verify import Finding, NotesChange, NotesCommit, Report, verify_log
from gating.errors import FAILED, GatingError
from gating.git.notes import Item, LocalNotes, RefConflict, TransientError


class AppendError(GatingError):
    """The entry could not be written within the attempt budget."""

    exit_code = FAILED


class NotesBackend(Protocol):
    ref: str

    def tip(self) -> str | None: ...
    def commit(self, sha: str) -> tuple[str, list[str]]: ...  # (tree, parents)
    def tree(self, sha: str) -> list[Item]: ...
    def blobs(self, shas: Iterable[str]) -> dict[str, bytes]: ...
    def write(self, tip: str | None, path: str, data: bytes, message: str, now: datetime) -> str: ...
    def all_notes(self, tip: str) -> dict[str, bytes]: ...


# -- tree layout -----------------------------------------------------------------------------------


def _is_fanout_dir(item: Item) -> bool:
    return item.type == "tree" and len(item.name) == 2 and all(c in "0123456789abcdef" for c in item.name)


def find_note(store: NotesBackend, tree: str | None, commit: str) -> tuple[str, str | None]:
    """(path, blob) of `commit`'s note; for a new note, the path git's existing fanout implies."""
    prefix, rest = "", commit
    while tree is not None:
        items = store.tree(tree)
        for it in items:
            if it.name == rest and it.type == "blob":
                return prefix + rest, it.sha
        sub = next((it for it in items if it.name == rest[:2] and _is_fanout_dir(it)), None)
        if sub is None and not any(_is_fanout_dir(it) for it in items):
            break
        prefix, rest = prefix + rest[:2] + "/", rest[2:]
        tree = sub.sha if sub else None
    return prefix + rest, None


def _blobs_under(store: NotesBackend, item: Item, prefix: str) -> list[tuple[str, str]]:
    if item.type == "blob":
        return [(prefix + item.name, item.sha)]
    out = []
    for it in store.tree(item.sha):
        out += _blobs_under(store, it, prefix + item.name + "/")
    return out


def tree_notes(store: NotesBackend, tree: str) -> dict[str, str]:
    """annotated commit -> note blob, for every note under a notes tree."""
    out: dict[str, str] = {}
    for it in store.tree(tree):
        for path, sha in _blobs_under(store, it, ""):
            out[path.replace("/", "")] = sha
    return out


def _diff(store: NotesBackend, a: str | None, b: str, prefix: str = "") -> dict[str, list[str | None]]:
    """object -> [old blob, new blob] for notes that differ between two notes trees."""
    ea = {it.name: it for it in store.tree(a)} if a else {}
    eb = {it.name: it for it in store.tree(b)}
    out: dict[str, list[str | None]] = {}
    for name in sorted(ea.keys() | eb.keys()):
        x, y = ea.get(name), eb.get(name)
        if x and y and x.sha == y.sha:
            continue
        if x and y and x.type == y.type == "tree":
            for obj, (old, new) in _diff(store, x.sha, y.sha, prefix + name + "/").items():
                out.setdefault(obj, [None, None])
                out[obj] = [old or out[obj][0], new or out[obj][1]]
            continue
        for side, item in ((0, x), (1, y)):
            for path, sha in _blobs_under(store, item, prefix) if item else []:
                out.setdefault(path.replace("/", ""), [None, None])[side] = sha
    return {obj: pair for obj, pair in out.items() if pair[0] != pair[1]}


def last_line(store: NotesBackend, tip: str | None) -> bytes | None:
    """The line the tip notes commit added: the entry with the highest seq in a well-formed log."""
    if tip is None:
        return None
    tree, parents = store.commit(tip)
    parent_tree = store.commit(parents[0])[0] if parents else None
    changed = _diff(store, parent_tree, tree)
    if len(changed) == 1:
        ((obj, (old, new)),) = changed.items()
        data = store.blobs([s for s in (old, new) if s])
        before, after = data.get(old or "", b""), data.get(new or "", b"")
        lines = audit.split_lines(after)
        if new and after.startswith(before) and len(lines) == len(audit.split_lines(before)) + 1:
            try:
                audit.parse_line(lines[-1], obj)
                return lines[-1]
            except EntryError:
                pass
    # Not a one-line append (a log edited by hand): fall back to the highest seq anywhere.
    best: tuple[int, bytes] | None = None
    for commit, note in store.all_notes(tip).items():
        for line in audit.split_lines(note):
            try:
                seq = audit.parse_line(line, commit).seq
            except EntryError:
                continue
            if best is None or seq > best[0]:
                best = (seq, line)
    return best[1] if best else None


# -- reading and appending -------------------------------------------------------------------------


def read_note(store: NotesBackend, commit: str, tip: str | None = None) -> bytes | None:
    tip = tip or store.tip()
    if tip is None:
        return None
    _path, blob = find_note(store, store.commit(tip)[0], commit)
    return store.blobs([blob])[blob] if blob else None


def read_log(store: NotesBackend, keys: Mapping[str, Ed25519PublicKey] | None = None) -> list[Entry]:
    """Every parsed entry, by seq; with `keys`, only those a trusted key (or a key the rotation chain
    links to one) signed. Bad lines are skipped here; `gating audit verify` is what reports them."""
    from gating.audit.rotation import follow

    tip = store.tip()
    if tip is None:
        return []
    entries = []
    with audit.no_gc():
        for commit, note in store.all_notes(tip).items():
            for line in audit.split_lines(note):
                try:
                    entries.append(audit.parse_line(line, commit))
                except EntryError:
                    continue
    entries.sort(key=lambda e: e.seq)
    if keys is None:
        return entries
    if any(e.event == "key_rotated" for e in entries):
        keys = follow(entries, keys)
    return [e for e in entries if audit.signature_problem(e, keys) is None]


@dataclass(frozen=True)
class AppendResult:
    entry: Entry
    created: bool  # False: an entry with the same key was already there (redelivery, another replica)
    attempts: int


def append_entry(
    store: NotesBackend,
    facts: EntryFacts,
    key: Ed25519PrivateKey,
    now: datetime,
    max_attempts: int = 8,
    sleep: Callable[[float], None] = time.sleep,
) -> AppendResult:
    """Add one signed entry to the note of facts.commit, exactly once."""
    written: set[bytes] = set()
    for attempt in range(1, max_attempts + 1):
        try:
            tip = store.tip()
            path, blob = find_note(store, store.commit(tip)[0] if tip else None, facts.commit)
            current = store.blobs([blob])[blob] if blob else b""
            for line in audit.split_lines(current):
                try:
                    e = audit.parse_line(line, facts.commit)
                except EntryError:
                    continue
                if e.key == facts.key:
                    return AppendResult(e, created=line in written, attempts=attempt)
            last = last_line(store, tip)
            seq = audit.parse_line(last, "").seq + 1 if last else 1
            line = audit.make_line(facts, now, seq, audit.sha256_line(last) if last else None, key)
            written.add(line)
            sep = b"\n" if current and not current.endswith(b"\n") else b""
            message = f"audit: {facts.event} seq {seq} on {facts.commit}\n"
            store.write(tip, path, current + sep + line + b"\n", message, now)
            return AppendResult(audit.parse_line(line, facts.commit), created=True, attempts=attempt)
        except RefConflict:
            continue
        except TransientError:
            sleep(min(0.05 * 2**attempt, 1.0))
    raise AppendError(f"could not append the {facts.event} entry for {facts.commit[:12]} to {store.ref} "
                      f"after {max_attempts} attempts")


def history(store: LocalNotes, tip: str, notes: Mapping[str, bytes] | None = None,
            raw: list[tuple[str, list[str], list[tuple[str, str, str]]]] | None = None,
            ids: Mapping[str, str] | None = None) -> list[NotesCommit]:
    """Every notes commit of a local notes ref, oldest first, with how each note changed.

    A step whose blobs are the first j and j+1 lines of the tip's note (compared by blob id, as git
    hashes them) is an append of line j+1, known without reading it; only other steps are read.
    `ids` (object -> blob id of its note at the tip, as the tree says) spares hashing whole notes.
    """
    raw = store.git.raw_history(tip) if raw is None else raw
    notes = store.all_notes(tip) if notes is None else notes
    zero = "0" * len(tip)
    algo = hashlib.sha1 if len(tip) == 40 else hashlib.sha256
    lines = {obj: audit.split_lines(data) for obj, data in notes.items()}
    prefixes: dict[str, tuple[str, int]] = {}  # blob id of a tip note's first j lines -> (object, j)
    for obj, data in notes.items():
        end, view = 0, memoryview(data)
        for j, line in enumerate(lines[obj], 1):
            end += len(line) + 1
            if end == len(data) and ids and obj in ids:  # the whole note: git named it already
                prefixes[ids[obj]] = (obj, j)
                continue
            h = algo(b"blob %d\0" % end)
            h.update(view[:end])
            prefixes[h.hexdigest()] = (obj, j)
    steps: list[tuple[str, list[str], list[tuple[str, str | None, str | None]]]] = []
    unknown: set[str] = set()
    for sha, parents, changes in raw:
        by_obj: dict[str, list[str | None]] = {}
        for old, new, path in changes:
            pair = by_obj.setdefault(path.replace("/", ""), [None, None])
            pair[0] = old if old != zero else pair[0]
            pair[1] = new if new != zero else pair[1]
        steps.append((sha, parents, [(obj, o, n) for obj, (o, n) in by_obj.items() if o != n]))
        for obj, o, n in steps[-1][2]:
            if not _is_append(prefixes, obj, o, n):
                unknown |= {s for s in (o, n) if s}
    blobs = store.blobs(unknown) if unknown else {}
    out = []
    for sha, parents, changed in steps:
        out.append(NotesCommit(sha, tuple(parents), tuple(
            NotesChange(obj, None, None, lines[obj][prefixes[n][1] - 1], prefixes[n][1])  # type: ignore[index]
            if _is_append(prefixes, obj, o, n)
            else NotesChange(obj, blobs.get(o) if o else None, blobs.get(n) if n else None)
            for obj, o, n in changed)))
    return out

def _is_append(prefixes: Mapping[str, tuple[str, int]], obj: str, old: str | None, new: str | None) -> bool:
    before = prefixes.get(old) if old else (obj, 0)
    after = prefixes.get(new) if new else None
    return bool(before and after and before[0] == after[0] == obj and after[1] == before[1] + 1)


def verify(store: LocalNotes, keys: Mapping[str, Ed25519PublicKey], keep: bool = False) -> Report:
    """`gating audit verify` on a local notes ref: entries, chain and history (`keep`: as verify_log's)."""
    tip = store.tip()
    if tip is None:
        return Report(entries=[], findings=[])
    with ThreadPoolExecutor(max_workers=1) as pool:  # `git log` runs while the tip's notes are read
        raw = pool.submit(store.git.raw_history, tip)
        tree = store.git.ls_tree(tip)
        ids = {e.path.replace("/", ""): e.sha for e in tree if e.type == "blob"}
        foreign = [e for e in tree if e.type != "blob" or not _is_object_name(e.path.replace("/", ""))]
        notes: dict[str, bytes] = {}

        def read() -> Iterator[tuple[str, bytes]]:
            for obj, data in store.iter_notes(tip, tree):
                notes[obj] = data
                if _is_object_name(obj):
                    yield obj, data

        # entries are parsed (and their signatures checked) as git reads the notes, the history
        # while the last signatures are checked
        report = verify_log(read(), keys, lambda: history(store, tip, notes, raw.result(), ids), keep)
    report.findings[:0] = [Finding(f"{e.path} in the notes tree", f"is not a note: a note is a file named "
                                         f"by the full sha of a commit (this is a {e.type})") for e in foreign]
    return report


_OBJECT_NAME = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def _is_object_name(name: str) -> bool:
    return _OBJECT_NAME.fullmatch(name) is not None
