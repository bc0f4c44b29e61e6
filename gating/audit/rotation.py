"""Key rotation in the audit log: which key may sign which entry.

A key changes only by a `key_rotated` entry signed by the key in force, naming the previous and the
next public key. The log therefore carries its own chain of keys (an epoch per key), and a verifier
needs one trusted key of that chain: entries up to the newest one a trusted key signed are committed
to by that signature through the prev hashes; later entries are signed by keys that a trusted key
introduced. Sans-I/O: entries in, findings and epochs out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gating.audit.entry import Entry, EntryFacts, signature_problem
from gating.audit.keys import KeyError_, keyid, load_public, public_pem
from gating.audit.verify import Finding


def rotation(previous: Ed25519PrivateKey | Ed25519PublicKey, new: Ed25519PublicKey) -> dict[str, Any]:
    """The predicate's key_rotation: both public keys, so any clone can follow the chain."""
    return {"previous": {"keyid": keyid(previous), "public_key": public_pem(previous).decode()},
            "next": {"keyid": keyid(new), "public_key": public_pem(new).decode()}}


def rotation_facts(commit: str, repository: str, actor: str, previous: Ed25519PrivateKey,
                   new: Ed25519PublicKey) -> EntryFacts:
    """The entry that hands the log over to `new`; it must be signed by `previous`."""
    return EntryFacts(event="key_rotated", commit=commit, repository=repository, actor=actor,
                      key_rotation=rotation(previous, new), discriminator=f"to {keyid(new)}")


@dataclass(frozen=True)
class Epoch:
    """One key's stretch of the log: from `first_seq` until the next rotation (None: still in force)."""

    keyid: str
    first_seq: int
    since: str
    last_seq: int | None = None

    def describe(self) -> str:
        end = "" if self.last_seq is None else str(self.last_seq)
        return f"{self.keyid[:16]} (seq {self.first_seq}..{end}{', ' + self.since if self.first_seq > 1 else ''})"


def _side(entry: Entry, name: str) -> tuple[str, Ed25519PublicKey] | str:
    """(keyid, public key) of one side of a rotation, or why it cannot be read."""
    side = (entry.predicate.get("key_rotation") or {}).get(name)
    if not isinstance(side, dict) or not isinstance(side.get("keyid"), str) \
            or not isinstance(side.get("public_key"), str):
        return f"its key_rotation has no {name} keyid and public_key"
    try:
        pub = load_public(side["public_key"].encode(), f"key_rotation.{name}.public_key")
    except KeyError_ as e:
        return str(e)
    if keyid(pub) != side["keyid"]:
        return (f"its key_rotation.{name}.keyid {side['keyid'][:16]} is not the keyid of its public key "
                f"({keyid(pub)[:16]})")
    return side["keyid"], pub


def declared_keys(entries: Sequence[Entry]) -> tuple[dict[str, Ed25519PublicKey], list[Finding]]:
    """Every public key the log's rotation entries name, and what is wrong with any of them."""
    keys: dict[str, Ed25519PublicKey] = {}
    findings = []
    for e in entries:
        if e.event != "key_rotated":
            continue
        for name in ("previous", "next"):
            side = _side(e, name)
            if isinstance(side, str):
                findings.append(Finding(e.label(), side, e.seq))
            else:
                keys[side[0]] = side[1]
    return keys, findings


def key_findings(entries: Sequence[Entry], anchors: Mapping[str, Ed25519PublicKey],
                 skip: set[int]) -> tuple[list[Finding], list[Epoch]]:
    """Each entry signed by the key in force at its seq, and the chain anchored in a trusted key.

    `entries` by seq; `skip`: seqs already named for a bad signature (not named twice).
    """
    if not entries:
        return [], []
    findings: list[Finding] = []
    first = entries[0].keyids[0] if entries[0].keyids else ""
    epochs = [Epoch(first, entries[0].seq, "the log's first key")]
    for e in entries:
        signer = e.keyids[0] if e.keyids else ""
        cur = epochs[-1]
        if e.seq in skip:
            continue
        if signer != cur.keyid:
            findings.append(Finding(e.label(), f"signed by key {signer[:16]}, but the key in force at seq {e.seq} "
                                    f"is {cur.keyid[:16]} ({cur.since}); a key changes only by a key_rotated "
                                    "entry signed by the key before it", e.seq))
            continue
        if e.event == "key_rotated":
            prev, nxt = _side(e, "previous"), _side(e, "next")
            if isinstance(prev, str) or isinstance(nxt, str):
                continue  # named by declared_keys
            if prev[0] != signer:
                findings.append(Finding(e.label(), f"its key_rotation.previous is key {prev[0][:16]}, but key "
                                        f"{signer[:16]} signed it", e.seq))
                continue
            epochs[-1] = Epoch(cur.keyid, cur.first_seq, cur.since, e.seq)
            epochs.append(Epoch(nxt[0], e.seq + 1, f"introduced by the key_rotated entry at seq {e.seq}"))
    if not any(e.keyids and e.keyids[0] in anchors and e.seq not in skip for e in entries) and not skip:
        last = entries[-1]
        findings.append(Finding(last.label(), f"no entry is signed by a trusted key ({', '.join(k[:16] for k in anchors)}): "
                                f"the log's keys ({', '.join(ep.keyid[:16] for ep in epochs)}) come only from its own "
                                "key_rotated entries", last.seq))
    return findings, epochs


def follow(entries: Sequence[Entry], anchors: Mapping[str, Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """The anchors and every key the rotation chain links to them, for reading a log across a rotation
    (`read_log` with keys). Forward: a rotation a trusted key signed introduces a trusted key. Back: the
    previous key of a rotation is trusted when the next entry is signed by a trusted key and chains to
    the rotation (so that key's signature commits to the rotation and everything before it)."""
    keys = dict(anchors)
    by_seq = {e.seq: e for e in entries}
    rotations = []
    for e in entries:
        if e.event == "key_rotated":
            prev, nxt = _side(e, "previous"), _side(e, "next")
            if not isinstance(prev, str) and not isinstance(nxt, str) and e.keyids[:1] == [prev[0]]:
                rotations.append((e, prev, nxt))
    changed = True
    while changed:
        changed = False
        for e, (pk, ppub), (nk, npub) in rotations:
            if pk in keys and nk not in keys and signature_problem(e, keys) is None:
                keys[nk], changed = npub, True
            after = by_seq.get(e.seq + 1)
            if nk in keys and pk not in keys and after is not None and after.prev == e.digest \
                    and after.keyids[:1] == [nk] and signature_problem(after, keys) is None:
                keys[pk], changed = ppub, True
    return keys
