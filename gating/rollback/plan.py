"""Rollback: which state to go back to, and what restoring it changes.

Pure: the audit log arrives parsed, snapshots arrive built (with their file bytes), and the answer is
a value. The App (a `/rollback` comment, an alert, a failed deployment) and `gating rollback` differ
only in how they read revisions and where they write the result, so they always agree on the plan.

The restore is computed against the default branch tip: every file of the target snapshot is set to
its target content, files the system gained since are removed, gating.yml itself is restored, and
every other file of the repository stays as it is on the branch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gating import errors
from gating.audit.entry import (
    DEFAULT_ENVIRONMENTS,
    DEPLOY_EVENTS,
    Entry,
    EntryFacts,
    RollbackRecord,
    is_deployment,
)
from gating.diff.render import render_diff_markdown
from gating.diff.semantic import ChangeSet, diff_snapshots
from gating.system.canonical import sha256_hex
from gating.system.manifest import MANIFEST_PATH, ManifestError
from gating.system.revision import RevisionReader
from gating.system.snapshot import Snapshot, SnapshotCache, build_snapshot, empty_snapshot

LAST_GOOD, PREVIOUS = "last-good", "previous"
PERMISSION_RANK = {"none": 0, "read": 1, "triage": 2, "write": 3, "maintain": 4, "admin": 5}
DEFAULT_WHO = ("write",)
BRANCH_PREFIX = "gating/rollback-"
MAX_BODY = 60_000  # GitHub refuses pull request bodies over 65,536 characters

_COMMAND = re.compile(r"^\s*/rollback(?:[ \t]+(?P<rest>.*))?$", re.MULTILINE)
_SHA = re.compile(r"^[0-9a-fA-F]{7,40}$")
USAGE = ("Use `/rollback last-good`, `/rollback previous` or `/rollback <commit sha>`, "
         "optionally followed by a reason.")
# What to do next, as each door spells it: a comment names targets one way, the command line another.
HINTS = {
    "usage": {"comment": USAGE, "cli": "Use `--to last-good`, `--to previous` or `--to <commit sha>`."},
    "name_a_commit": {"comment": "Mark a deployment known good first, or name a commit: `/rollback <commit sha>`.",
                      "cli": "Mark a deployment known good first, or name a commit: `--to <commit sha>`."},
}


class Refusal(errors.GatingError):
    """Why a rollback will not happen; `code` is stable, `message` is what a commenter reads and
    `text("cli")` what a command-line user reads."""

    CODES = ("no_permission", "unknown_target", "no_known_good", "not_audited", "nothing_to_restore",
             "bad_manifest", "empty_repository")

    def __init__(self, code: str, message: str, hint: str | None = None):
        assert code in self.CODES, code
        assert hint is None or hint in HINTS, hint
        self.code, self.reason, self.hint = code, message, hint
        self.message = self.text("comment")
        super().__init__(self.message, exit_code=errors.USAGE if code == "unknown_target" else errors.FAILED)

    def text(self, door: str) -> str:
        return f"{self.reason} {HINTS[self.hint][door]}" if self.hint else self.reason


# -- the request -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A parsed `/rollback [target] [reason...]`; the target word as written (default last-good)."""

    target: str
    reason: str


def parse_command(body: str) -> Command | None:
    """The first `/rollback` line of a comment, or None when the comment holds no command."""
    m = _COMMAND.search(body or "")
    if m is None:
        return None
    words = (m.group("rest") or "").strip().split(None, 1)
    if not words:
        return Command(LAST_GOOD, "")
    return Command(words[0], words[1].strip() if len(words) > 1 else "")


def check_target(word: str) -> str:
    """`last-good`, `previous` or a hex commit prefix (lower-cased); anything else is refused."""
    if word in (LAST_GOOD, PREVIOUS):
        return word
    if _SHA.match(word):
        return word.lower()
    raise Refusal("unknown_target", f"unknown target `{word}`.", "usage")


def is_sha(target: str) -> bool:
    return target not in (LAST_GOOD, PREVIOUS)


def who_allows(who: Sequence[str] | None, login: str, permission: str, teams: Sequence[str] = ()) -> bool:
    """rollback.who: a permission (that or higher), an `org/team` the user belongs to, or a login."""
    rank = PERMISSION_RANK.get(permission, 0)
    for item in who or DEFAULT_WHO:
        item = item.strip()
        if item in PERMISSION_RANK:
            if rank >= PERMISSION_RANK[item] > 0:
                return True
        elif "/" in item:
            if item.lower() in {t.lower() for t in teams}:
                return True
        elif item.lstrip("@").lower() == login.lower():
            return True
    return False


def who_text(who: Sequence[str] | None) -> str:
    parts = []
    for item in who or DEFAULT_WHO:
        parts.append(f"{item} permission (or higher)" if item in PERMISSION_RANK else
                     f"members of {item}" if "/" in item else f"@{item.lstrip('@')}")
    return ", ".join(parts)


# -- resolving the target ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Deployed:
    """The current deployed state: the newest deployment entry, or the branch tip when there is none."""

    commit: str
    entry: Entry | None

    def describe(self) -> str:
        if self.entry is None:
            return f"the default branch tip {self.commit[:7]} (no deployment in the audit log)"
        return f"{self.commit[:7]} ({self.entry.event}, audit seq {self.entry.seq})"


@dataclass(frozen=True)
class Resolution:
    target: str  # as requested: last-good, previous or a sha prefix
    commit: str  # the full sha restored
    current: Deployed
    entries: tuple[Entry, ...]  # the audit entries involved, by seq

    @property
    def short(self) -> str:
        return self.commit[:7]


def environments_of(rollback: Mapping[str, Any] | None) -> tuple[str, ...]:
    """rollback.environments of the default branch's gating.yml: the environments whose deployments
    decide known-good and the currently deployed state (default: production)."""
    envs = (rollback or {}).get("environments")
    return tuple(envs) if envs else DEFAULT_ENVIRONMENTS


def current_state(entries: Sequence[Entry], tip: str,
                  environments: Sequence[str] = DEFAULT_ENVIRONMENTS) -> Deployed:
    deployments = [e for e in entries if is_deployment(e, environments)]
    if not deployments:
        return Deployed(tip, None)
    newest = max(deployments, key=lambda e: e.seq)
    return Deployed(newest.commit, newest)


def _older(entries: Sequence[Entry], events: Sequence[str], cur: Deployed,
           environments: Sequence[str] = DEFAULT_ENVIRONMENTS) -> Entry | None:
    found = [e for e in entries if e.event in events and e.commit != cur.commit
             and (e.event not in DEPLOY_EVENTS or is_deployment(e, environments))
             and (cur.entry is None or e.seq < cur.entry.seq)]
    return max(found, key=lambda e: e.seq) if found else None


def resolve_target(entries: Sequence[Entry], target: str, tip: str, commit: str | None = None,
                   environments: Sequence[str] = DEFAULT_ENVIRONMENTS) -> Resolution:
    """The commit a target names. `commit` is the full sha a sha target resolved to in the repository
    (None: no such commit). The target must be an audited merge (a `merged` entry in the log). Only
    deployments to `environments` are known-good or deployed."""
    target = check_target(target)
    cur = current_state(entries, tip, environments)
    chosen: Entry | None = None
    if target == LAST_GOOD:
        chosen = _older(entries, ("known_good",), cur, environments)
        if chosen is None:
            raise Refusal("no_known_good", "no known-good state yet: the audit log has no known_good entry "
                          f"older than the current deployed state, {cur.describe()}.", "name_a_commit")
        commit = chosen.commit
    elif target == PREVIOUS:
        chosen = _older(entries, ("deployed", "known_good"), cur, environments)
        if chosen is None and cur.entry is None:
            chosen = _older(entries, ("merged",), cur)
        if chosen is None:
            raise Refusal("no_known_good", "no earlier deployment to go back to: the audit log has nothing "
                          f"deployed before the current deployed state, {cur.describe()}.")
        commit = chosen.commit
    elif commit is None:
        raise Refusal("unknown_target", f"unknown target `{target}`: no such commit in this repository.", "usage")
    merged = [e for e in entries if e.event == "merged" and e.commit == commit]
    if not merged:
        raise Refusal("not_audited", f"{commit[:7]} is not an audited merge: the audit log has no merged "
                      "entry for it, so there is no recorded snapshot, evidence or approval to return to.")
    involved = {e.seq: e for e in (merged[-1], chosen, cur.entry) if e is not None}
    good = [e for e in entries if e.event == "known_good" and e.commit == commit and is_deployment(e, environments)]
    if good:
        involved.setdefault(good[-1].seq, good[-1])
    return Resolution(target, commit, cur, tuple(involved[s] for s in sorted(involved)))


# -- the restore -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileChange:
    path: str
    action: str  # restored | added back | removed
    before: str | None  # sha256 at the branch tip (None: not in the system there)
    after: str | None  # sha256 in the target snapshot (None: removed)


@dataclass
class RestorePlan:
    resolution: Resolution
    tip: str  # the default branch commit the restore is computed against
    branch: str  # the default branch's name
    target: Snapshot
    writes: dict[str, bytes]  # every file of the target snapshot, at its target content
    deletes: tuple[str, ...]  # files the system gained since the target
    changes: tuple[FileChange, ...]  # what actually differs from the tip
    changeset: ChangeSet
    current_digest: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"Rollback LLM system to {self.resolution.short} ({self.resolution.target})"

    @property
    def branch_name(self) -> str:
        """One branch per target, so concurrent requests for the same state meet on one pull request."""
        return BRANCH_PREFIX + self.resolution.commit[:12]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.resolution.target, "commit": self.resolution.commit, "tip": self.tip,
            "branch": self.branch, "deployed": self.resolution.current.commit,
            "snapshot_digest": self.target.digest, "current_digest": self.current_digest,
            "writes": {p: sha256_hex(b) for p, b in sorted(self.writes.items())},
            "deletes": list(self.deletes),
            "changes": [vars(c) for c in self.changes],
            "entries": [{"seq": e.seq, "event": e.event, "commit": e.commit} for e in self.resolution.entries],
            "diff": self.changeset.to_dict(),
        }


def plan_restore(resolution: Resolution, current: Snapshot | None, target: Snapshot, tip: str,
                 branch: str = "main", tip_files: Mapping[str, bytes | None] | None = None) -> RestorePlan:
    """The file changes that bring the system at `tip` back to `target`; `current` is None when the
    tip's manifest cannot be read, and then `tip_files` (the target's paths as they are at the tip)
    says which of them the restore really changes. Raises Refusal("nothing_to_restore") when the two
    systems are the same."""
    if current is not None:
        before = dict(current.files)
    else:
        before = {p: sha256_hex(b) for p, b in (tip_files or {}).items() if b is not None}
    after = dict(target.files)
    writes: dict[str, bytes] = {}
    for path, digest in after.items():
        data = target.contents.get(path)
        if data is None:
            raise Refusal("bad_manifest", f"the LLM system at {resolution.short} cannot be restored: {path} is "
                          "missing from the repository's history (its blob is gone).")
        if sha256_hex(data) != digest:
            raise ValueError(f"{path}: content does not match the snapshot's sha256")
        writes[path] = data
    deletes = tuple(sorted(p for p in before if p not in after))
    changes = []
    for path in sorted(before.keys() | after.keys()):
        b, a = before.get(path), after.get(path)
        if b == a:
            continue
        action = "removed" if a is None else "added back" if b is None else "restored"
        changes.append(FileChange(path, action, b, a))
    if not changes:
        raise Refusal("nothing_to_restore", f"nothing to restore: the LLM system on {branch} ({tip[:7]}) is "
                      f"already the snapshot of {resolution.short} ({resolution.target}).")
    base = current if current is not None else empty_snapshot(target.data.get("name", "(none)"))
    cs = diff_snapshots(base, target, f"{branch} ({tip[:7]})", f"{resolution.short} ({resolution.target})")
    return RestorePlan(resolution, tip, branch, target, writes, deletes, tuple(changes), cs,
                       current.digest if current is not None else None)


def make_plan(entries: Sequence[Entry], target: str, tip: str, branch: str,
              reader_at: Callable[[str], RevisionReader], find_commit: Callable[[str], str | None],
              manifest_path: str = MANIFEST_PATH, cache: SnapshotCache | None = None,
              environments: Sequence[str] = DEFAULT_ENVIRONMENTS) -> RestorePlan:
    """Resolve and plan over the RevisionReader seam: the CLI passes git revisions, the App the API."""
    target = check_target(target)
    commit = find_commit(target) if is_sha(target) else None
    resolution = resolve_target(entries, target, tip, commit, environments)
    try:
        target_snap = build_snapshot(reader_at(resolution.commit), manifest_path, cache)
    except ManifestError as e:
        raise Refusal("bad_manifest", f"the LLM system at {resolution.short} cannot be read: "
                      + "; ".join(str(p) for p in e.problems[:5])) from None
    note = ""
    try:
        current = build_snapshot(reader_at(tip), manifest_path, cache)
    except ManifestError as e:
        current = None  # no (or a broken) manifest at the tip: restore every file of the target
        note = (f"The manifest on {branch} ({tip[:7]}) cannot be read ({e.problems[0] if e.problems else 'missing'}), "
                "so files the system gained since the target are not known and are left in place.")
    tip_files = reader_at(tip).read_many(sorted(target_snap.files)) if current is None else None
    plan = plan_restore(resolution, current, target_snap, tip, branch, tip_files)
    if note:
        plan.notes.append(note)
    return plan


# -- what people read ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """Who asked, why, from where (a comment's URL, an alert's name), and what asked: one of
    gating.audit.ROLLBACK_TRIGGERS (comment, alert, deploy_failure, cli)."""

    actor: str
    reason: str
    source: str
    trigger: str


def commit_message(plan: RestorePlan, req: Request) -> str:
    r = plan.resolution
    lines = [plan.title, "",
             f"Restores the LLM system snapshot {plan.target.digest} of {r.commit}",
             f"onto {plan.branch} ({plan.tip[:12]}): {len(plan.changes)} file(s) changed.", "",
             f"Requested-by: {req.actor}"]
    if req.reason:
        lines.append(f"Reason: {req.reason}")
    return "\n".join(lines) + "\n"


def _entry_rows(entries: Sequence[Entry]) -> list[str]:
    rows = ["| seq | event | commit | time | actor | pull request |", "|---|---|---|---|---|---|"]
    for e in entries:
        p = e.predicate
        pr = f"#{p['pull_request']}" if p.get("pull_request") else "-"
        rows.append(f"| {e.seq} | {e.event} | `{e.commit[:12]}` | {p.get('timestamp')} | {p.get('actor')} | {pr} |")
    return rows


def files_table(plan: RestorePlan) -> list[str]:
    rows = ["| File | Action |", "|---|---|"]
    for c in plan.changes:
        note = f" (not in the system at {plan.resolution.short})" if c.action == "removed" else ""
        rows.append(f"| `{c.path}` | {c.action}{note} |")
    return rows


def pr_body(plan: RestorePlan, req: Request) -> str:
    """The rollback pull request: why, what it restores, the semantic diff, the audit entries."""
    r = plan.resolution
    head = [f"Rolls the LLM system back to `{r.commit[:12]}` ({r.target}), snapshot `{plan.target.digest}`.", "",
            f"- Requested by: {req.actor}" + (f" ({req.source})" if req.source else ""),
            f"- Reason: {req.reason or '(none given)'}",
            f"- Current deployed state: {r.current.describe()}",
            f"- Computed against: {plan.branch} at `{plan.tip[:12]}`; files outside the LLM system stay as they are.",
            *(f"- Note: {n}" for n in plan.notes), "", *files_table(plan), ""]
    tail = ["", "#### Audit entries involved", "", *_entry_rows(r.entries), "",
            "Merging this pull request records a new audited merge; the App has recorded a `rolled_back` entry."]
    for excerpts in (True, False):
        body = "\n".join(head) + "\n" + render_diff_markdown(plan.changeset, "####", excerpts) + "\n".join(tail) + "\n"
        if len(body) <= MAX_BODY:
            return body
    return body[: MAX_BODY - 40] + "\n\n(truncated: the diff is too long)\n"


def done_reply(plan: RestorePlan, url: str, number: int | None, existing: bool, fallback: str = "") -> str:
    """The reply on the requesting issue once the rollback is open (or committed, in direct mode)."""
    r = plan.resolution
    if number is None:
        lead = f"Rolled the LLM system back to `{r.short}` ({r.target}) with a commit on {plan.branch}: {url}"
    elif existing:
        lead = f"A rollback to `{r.short}` ({r.target}) is already open: #{number} {url}"
    else:
        lead = f"Opened #{number} to roll the LLM system back to `{r.short}` ({r.target}): {url}"
    parts = [lead]
    if fallback:
        parts += ["", fallback]
    parts += ["", render_diff_markdown(plan.changeset, "####", excerpts=False).rstrip()]
    return "\n".join(parts) + "\n"


def refusal_reply(refusal: Refusal, target: str = "") -> str:
    untargeted = ("unknown_target", "no_permission", "empty_repository")
    what = f" to `{target}`" if target and refusal.code not in untargeted else ""
    return f"Rollback{what} refused: {refusal.message}\n"


def failure_reply(target: str, status: int, message: str) -> str:
    """The reply when GitHub refused a request the rollback needs, which running it again won't fix."""
    hint = ""
    if status in (401, 403):
        hint = (" The App's installation needs contents: write and pull requests: write on this repository "
                "(and issues: write to reply).")
    what = f" to `{target}`" if target else ""
    return f"Rollback{what} failed: GitHub refused a request it needs ({message}).{hint}\n"


def rolled_back_facts(plan: RestorePlan, commit: str, repository: str, req: Request,
                      pull_request: int | None = None) -> EntryFacts:
    """The audit entry of a rollback: on the commit that restores, with the target's full snapshot and
    the request (target, who, why, what asked) in the predicate's `rollback`."""
    r = plan.resolution
    record = RollbackRecord(r.commit, r.target, req.actor, req.reason, req.trigger, req.source)
    return EntryFacts(event="rolled_back", commit=commit, repository=repository, actor=req.actor,
                      pull_request=pull_request, snapshot=plan.target.data, previous_known_good=r.commit,
                      rollback=record, discriminator=f"to {r.commit}")


# -- automatic rollback --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertRule:
    """One entry of rollback.on_alert: label matchers (exact and regular expression) and a target."""

    name: str
    match: Mapping[str, str]
    match_re: Mapping[str, str]
    repository: str | None
    target: str

    def matches(self, labels: Mapping[str, str], repository: str) -> bool:
        if self.repository and self.repository.lower() != repository.lower():
            return False
        if any(labels.get(k) != v for k, v in self.match.items()):
            return False
        try:
            return all(re.fullmatch(v, labels.get(k, "")) for k, v in self.match_re.items())
        except re.error:
            return False  # the schema accepts any string; a broken pattern matches nothing


def alert_rules(rollback: Mapping[str, Any]) -> list[AlertRule]:
    out = []
    for i, r in enumerate(rollback.get("on_alert") or []):
        out.append(AlertRule(r.get("name") or f"on_alert[{i}]", dict(r.get("match") or {}),
                             dict(r.get("match_re") or {}), r.get("repository"), r.get("target") or LAST_GOOD))
    return out


def matching_rule(rollback: Mapping[str, Any], labels: Mapping[str, str], repository: str) -> AlertRule | None:
    return next((r for r in alert_rules(rollback) if r.matches(labels, repository)), None)
