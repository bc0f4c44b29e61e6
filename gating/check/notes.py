"""Eval results as git notes (refs/notes/gating/evals): a later pull request's baseline, no re-run.

A note is one JSON document on the evaluated commit: the RunResult (so `load_run` reads it back),
with `verdict`, `dataset_digest`, `metrics` and `snapshot_digest` at the top level for readers that
only want the outcome (the audit entry on merge). Notes are shared with a plain `git push` of the
notes ref; when another job moved it first (non-fast-forward), the ref is fetched again and the note
rewritten on top of the new tip, a few times.

Both go with the token given to `gating check` when there is one, as an Authorization header set for
that one git command through the environment (never in .git/config, a URL or a log); without a token
git uses whatever credentials the clone has (what `actions/checkout` persisted).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gating import limits
from gating.evals.records import RunResult, SchemaError
from gating.git.notes import EVALS_REF
from gating.git.repository import Git

NOTE_SCHEMA = "gating.eval.note/1"
PUSH_ATTEMPTS = 4
_CONFLICT = ("non-fast-forward", "fetch first", "stale info", "rejected", "cannot lock ref", "failed to update ref")


@dataclass(frozen=True)
class PushResult:
    ok: bool
    attempts: int
    message: str  # git's words when it failed


def note_document(run: RunResult, *, verdict: str | None, role: str, base: str | None = None,
                  comparison: dict[str, Any] | None = None) -> bytes:
    """The note's bytes: deterministic JSON (sorted keys) ending in a newline."""
    doc = run.to_dict()
    doc.update({
        "note_schema": NOTE_SCHEMA,
        "verdict": verdict,
        "role": role,  # "head" (evaluated for a pull request) or "base" (its baseline, re-run)
        "compared_with": base,
        "comparison": comparison,
    })
    return (json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def parse_note(data: bytes | None) -> RunResult | None:
    """The RunResult stored in a note, or None when there is none or it is unreadable."""
    if not data:
        return None
    try:
        return RunResult.from_dict(limits.load_json(data, "eval note", limits.NOTE))
    except (ValueError, TypeError, KeyError, SchemaError, limits.LimitError):
        return None


def read_run(g: Git, commit: str) -> RunResult | None:
    return parse_note(g.notes_show(EVALS_REF, commit))


def auth_env(g: Git, remote: str, token: str | None) -> dict[str, str]:
    """Git config, in environment variables, that sends `token` to the remote's URL for one command.

    The header is keyed by the remote's own URL, which outranks a header stored for the whole host
    (`http.https://github.com/.extraheader`, as actions/checkout writes it), and its empty first
    value drops any header collected before it, so exactly one Authorization header goes out.
    """
    url = (g.try_run("remote", "get-url", remote) or "") if token else ""
    parts = urlsplit(url)
    if not token or parts.scheme not in ("http", "https") or not parts.hostname:
        return {}
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")  # no user:password in the key
    key = f"http.{urlunsplit((parts.scheme, netloc, parts.path, '', ''))}.extraheader"
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {"GIT_CONFIG_COUNT": "2", "GIT_CONFIG_KEY_0": key, "GIT_CONFIG_VALUE_0": "",
            "GIT_CONFIG_KEY_1": key, "GIT_CONFIG_VALUE_1": f"Authorization: Basic {basic}"}


def fetch_notes(g: Git, remote: str, token: str | None = None) -> bool:
    """Bring refs/notes/gating/* up to date with the remote (fast-forward only; a diverged local ref stays)."""
    return g.fetch(remote, "refs/notes/gating/*:refs/notes/gating/*", env=auth_env(g, remote, token))


def write_local(g: Git, notes: dict[str, bytes]) -> None:
    for commit, data in notes.items():
        g.notes_add(EVALS_REF, commit, data, force=True)


def push_notes(g: Git, remote: str, notes: dict[str, bytes], attempts: int = PUSH_ATTEMPTS,
               token: str | None = None) -> PushResult:
    """Write `notes` (commit -> bytes) on top of the remote's notes tip and push; retry on a race."""
    message = ""
    env = auth_env(g, remote, token)
    for attempt in range(1, attempts + 1):
        # Start from the remote's tip so the push is a fast-forward (our own notes are re-added);
        # when the remote has no notes yet the fetch fails and the local ref is pushed as it is.
        g.fetch(remote, f"+{EVALS_REF}:{EVALS_REF}", env=env)
        write_local(g, notes)
        ok, message = g.push(remote, f"{EVALS_REF}:{EVALS_REF}", env=env)
        if ok:
            return PushResult(True, attempt, "")
        if not any(word in message for word in _CONFLICT) or "denied" in message or "403" in message:
            return PushResult(False, attempt, message.strip())
    return PushResult(False, attempts, message.strip())
