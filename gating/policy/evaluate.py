"""Evaluate parsed rules against a pull request's facts: pure, no I/O beyond the facts seam."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from gating.policy.facts import OverrideAct, PullFacts, Review
from gating.policy.result import Override, Result, ReviewNote, Status, all_of, any_of
from gating.policy.rules import (
    POLICY_CHANGE_FILES,
    POLICY_CHANGE_PATHS,
    POLICY_CHANGE_RULE,
    Condition,
    Policy,
    Requires,
    Rule,
)
from gating.system.schema import PERMISSIONS

EVAL_CHECK = "gating / eval"
OVERRIDE_COMMAND = re.compile(r"^/gating[ \t]+override\b[ \t]*(.*)$", re.MULTILINE)
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
UNLISTED = ("cannot evaluate so many files: GitHub did not list {n:,} of this pull request's changed files (it "
            "lists at most 3,000), and none of the listed ones match {shown}")
UNLISTED_MISSING = ("a pull request with fewer changed files (GitHub lists at most 3,000), or an admin's "
                    "`/gating override <reason>`")


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """CODEOWNERS-style globs: `*` stays within a folder, `**` crosses folders, a pattern without
    a slash matches at any depth, and a pattern naming a folder covers everything under it (only a
    trailing `/*` stays in the folder; a trailing `/` names a folder, never a file)."""
    anchored = "/" in pattern.rstrip("/")
    folder = pattern.endswith("/")
    p = pattern.strip("/")
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif p.startswith("**", i):
            out, i = out + ".*", i + 2
        elif p[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif p[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(p[i]), i + 1
    below = "/.*" if folder else "" if pattern.endswith("/*") else "(?:/.*)?"
    return re.compile(("" if anchored else "(?:.*/)?") + out + below + r"\Z")


def glob_match(pattern: str, path: str) -> bool:
    return bool(_glob_regex(pattern).match(path))


def branch_match(pattern: str, branch: str) -> bool:
    """Branch globs as GitHub's branch protection rules read them: `*` and `?` stop at `/`, `**`
    does not, `[...]` is a character class."""
    rx = ""
    for tok in re.split(r"(\*\*|\*|\?|\[!?\]?[^\]]*\])", pattern):
        if tok == "**":
            rx += ".*"
        elif tok == "*":
            rx += "[^/]*"
        elif tok == "?":
            rx += "[^/]"
        elif tok.startswith("[") and tok.endswith("]") and len(tok) > 2:
            rx += "[" + ("^" + tok[2:-1] if tok[1] == "!" else tok[1:-1]) + "]"
        else:
            rx += re.escape(tok)
    return re.fullmatch(rx, branch) is not None


def _segments(path: str) -> list[str]:
    """`evals.datasets[1]` is the segments evals, datasets, [1]: a list item is under its list."""
    return re.sub(r"(?<=.)\[", ".[", path).split(".")


def _segment_regex(segment: str) -> str:
    return "".join("[^.]*" if c == "*" else "[^.]" if c == "?" else re.escape(c) for c in segment)


def manifest_path_match(pattern: str, path: str) -> bool:
    """`components.models.*.model` matches that leaf, its descendants, and an ancestor that was
    added or removed whole (a new model brings its pin with it). `*` is one segment, `**` any."""
    ps, xs = _segments(pattern), _segments(path)
    if "**" in ps:
        rx = r"\.".join(".*" if p == "**" else _segment_regex(p) for p in ps)
        return bool(re.match(rx + r"(?:\..*)?\Z", ".".join(xs)))
    return all(re.fullmatch(_segment_regex(p), x) for p, x in zip(ps, xs, strict=False))


def _cond(name: str, ok: bool, sentence: str) -> Result:
    return Result(name, Status.APPROVED if ok else Status.SKIPPED, sentence, kind="condition")


def _conditions(c: Condition, facts: PullFacts) -> list[Result]:
    out: list[Result] = []
    if c.changed_files or c.ignore:
        pats = c.changed_files or ("**",)
        hits = [f for f in facts.changed_files
                if any(glob_match(p, f) for p in pats) and not any(glob_match(i, f) for i in c.ignore)]
        shown = ", ".join(pats)
        ignoring = f" (ignoring {', '.join(c.ignore)})" if c.ignore else ""
        if not hits and facts.unlisted_files:  # an unlisted file may match: the rule may apply (fail closed)
            out.append(Result("changed_files", Status.PENDING, UNLISTED.format(
                n=facts.unlisted_files, shown=shown + ignoring), kind="condition"))
        else:
            out.append(_cond("changed_files", bool(hits), f"{_few(hits)} match {shown}" if hits
                             else f"no changed file matches {shown}{ignoring}"))
    if c.manifest_paths:
        hits = [p for p in facts.manifest_paths if any(manifest_path_match(m, p) for m in c.manifest_paths)]
        out.append(_cond("manifest_paths", bool(hits), f"{_few(hits)} changed" if hits
                         else f"no change to {', '.join(c.manifest_paths)}"))
    if c.categories:
        hits = [x for x in c.categories if x in facts.categories]
        have = ", ".join(facts.categories) or "none"
        out.append(_cond("categories", bool(hits), f"{', '.join(hits)} changed" if hits
                         else f"no {' or '.join(c.categories)} change (changes: {have})"))
    if c.labels:
        hits = [x for x in c.labels if x.lower() in {lb.lower() for lb in facts.labels}]
        out.append(_cond("labels", bool(hits), f"labelled {', '.join(hits)}" if hits
                         else f"not labelled {' or '.join(c.labels)}"))
    if c.target_branches:
        ok = any(branch_match(b, facts.base_branch) for b in c.target_branches)
        out.append(_cond("target_branches", ok, f"targets {facts.base_branch}" if ok
                         else f"targets {facts.base_branch}, not {' or '.join(c.target_branches)}"))
    if c.author_users or c.author_teams:
        login = facts.author.login
        team = next((t for t in c.author_teams if facts.is_team_member(t, login)), None)
        listed = login.lower() in {u.lower() for u in c.author_users}
        ok = listed or team is not None
        why = f"author @{login} is listed" if listed else f"author @{login} is a member of {team}"
        out.append(_cond("authors", ok, why if ok else f"author @{login} is not one of the listed authors"))
    return out


def _few(items: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


# -- approvals and evidence -----------------------------------------------------------------------

_RANK = {p: i for i, p in enumerate(PERMISSIONS)}


def has_permission(have: str, need: str) -> bool:
    return _RANK.get(have, -1) >= _RANK[need]


def latest_reviews(reviews: Iterable[Review]) -> dict[str, Review]:
    """Each reviewer's standing review, as GitHub counts it: a comment-only review neither grants
    nor withdraws an approval; a dismissal withdraws it."""
    out: dict[str, Review] = {}
    for r in reviews:
        key = r.user.login.lower()
        if r.state in ("APPROVED", "CHANGES_REQUESTED"):
            out[key] = r
        elif r.state == "DISMISSED":
            out.pop(key, None)
    return out


def _eligible(login: str, req: Requires, facts: PullFacts) -> bool:
    if not (req.users or req.teams or req.permission):
        return True
    if login.lower() in {u.lower() for u in req.users}:
        return True
    if any(facts.is_team_member(t, login) for t in req.teams):
        return True
    return bool(req.permission and has_permission(facts.permission(login), req.permission))


def _who(req: Requires, exclude: set[str]) -> str:
    parts = [f"@{u}" for u in req.users if u.lower() not in exclude]
    parts += [f"a member of {t}" for t in req.teams]
    if req.permission:
        parts.append(f"anyone with {req.permission} permission" + ("" if req.permission == "admin" else " or higher"))
    if not parts:
        return "anyone with access to the repository"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _approvals(rule: Rule, facts: PullFacts) -> Result:
    req, opts, head, author = rule.requires, rule.options, facts.head_sha, facts.author.login.lower()
    notes: list[ReviewNote] = []
    for login, r in sorted(latest_reviews(facts.reviews).items()):
        state = r.state.lower()
        note = ""
        if login == author and not opts.allow_author:
            note = "the author's own review does not count"
        elif opts.ignore_bots and r.user.is_bot:
            note = "reviews by bots do not count"
        elif not _eligible(r.user.login, req, facts):
            note = "not an eligible approver for this rule"
        elif state == "approved" and opts.invalidate_on_push and r.commit_id != head:
            note = "approved before the last push"
        notes.append(ReviewNote(r.user.login, state, r.commit_id, not note, note))
    blockers = [n for n in notes if n.counted and n.state == "changes_requested"]
    got = [n for n in notes if n.counted and n.state == "approved"]
    if blockers:
        who = ", ".join(f"@{n.login}" for n in blockers)
        return Result("approvals", Status.BLOCKED, f"changes requested by {who}", kind="approvals",
                      reviews=tuple(notes), missing=f"{who} to approve or dismiss their review")
    if len(got) >= req.count:
        sentence = ("no approval required" if req.count == 0
                    else "approved by " + ", ".join(f"@{n.login}" for n in got))
        return Result("approvals", Status.APPROVED, sentence, kind="approvals", reviews=tuple(notes))
    exclude = {n.login.lower() for n in got} | (set() if opts.allow_author else {author})
    need = req.count - len(got)
    missing = f"{need} approval{'s' if need != 1 else ''} from {_who(req, exclude)}"
    if req.users and not (req.teams or req.permission) and all(u.lower() in exclude for u in req.users):
        why = "; ".join(f"@{u} is the author" if u.lower() == author and not opts.allow_author
                        else f"@{u} has approved" for u in req.users)
        missing = f"{need} approval{'s' if need != 1 else ''}, but no listed approver can give it ({why})"
    return Result("approvals", Status.PENDING, f"has {len(got)} of {req.count} approvals; needs {missing}",
                  kind="approvals", reviews=tuple(notes), missing=missing)


def _evidence(facts: PullFacts) -> Result:
    sha = facts.head_sha[:7]
    check = facts.checks.get(EVAL_CHECK)
    name = f"`{EVAL_CHECK}`"
    if check is None or check.head_sha != facts.head_sha:
        return Result("evidence", Status.PENDING, f"waiting for {name} on {sha}", kind="evidence",
                      missing=f"{name} to succeed on {sha}")
    if check.status != "completed":
        return Result("evidence", Status.PENDING, f"{name} is {check.status.replace('_', ' ')} on {sha}",
                      kind="evidence", missing=f"{name} to succeed on {sha}")
    if check.conclusion == "success":
        return Result("evidence", Status.APPROVED, f"{name} succeeded on {sha}", kind="evidence")
    return Result("evidence", Status.BLOCKED, f"{name} concluded {check.conclusion} on {sha}", kind="evidence",
                  missing=f"{name} to succeed on {sha} (or an admin's `/gating override <reason>`)")


# -- evaluation -----------------------------------------------------------------------------------


def _eval_rule(rule: Rule, facts: PullFacts) -> Result:
    conds = _conditions(rule.condition, facts) if rule.condition else []
    failed = next((c for c in conds if c.status == Status.SKIPPED), None)
    if failed:
        return Result(rule.name, Status.SKIPPED, f"does not apply: {failed.description}", tuple(conds))
    unknown = next((c for c in conds if c.status == Status.PENDING), None)
    result = _applying(rule, facts, conds)
    if unknown is None or result.status == Status.SKIPPED:  # skipped: none of its parts would apply anyway
        return result
    # Whether the rule applies cannot be told, so it can neither be skipped nor approved: held
    # pending (or blocked, if its reviews block it), whatever approvals it has.
    status = Status.BLOCKED if result.status == Status.BLOCKED else Status.PENDING
    missing = "; ".join(m for m in (UNLISTED_MISSING, result.missing if status == result.status else "") if m)
    return Result(rule.name, status, f"{unknown.description}, so this rule stays {status.label}; "
                  f"{result.description}", result.children, missing=missing)


def _applying(rule: Rule, facts: PullFacts, conds: list[Result]) -> Result:
    if rule.op:
        kids = [_eval_rule(r, facts) for r in rule.children]
        status = (all_of if rule.op == "and" else any_of)(k.status for k in kids)
        sentence = _composite_sentence(rule.op, status, kids)
        sep = " or " if rule.op == "or" and status == Status.PENDING else "; "
        missing = sep.join(k.missing for k in kids if k.status == status and k.missing)
        return Result(rule.name, status, sentence, (*conds, *kids), missing=missing)
    parts = [_approvals(rule, facts)]
    if rule.options.require_evidence:
        parts.append(_evidence(facts))
    status = all_of(p.status for p in parts)
    if status == Status.APPROVED:
        sentence = "; ".join(p.description for p in parts)
    else:
        sentence = "; ".join(p.description for p in parts if p.status == status)
    missing = "; ".join(p.missing for p in parts if p.missing and p.status == status)
    return Result(rule.name, status, sentence, (*conds, *parts), missing=missing)


def _composite_sentence(op: str, status: Status, kids: Sequence[Result]) -> str:
    if status == Status.SKIPPED:
        return f"does not apply: none of {', '.join(k.name for k in kids)} applies"
    names = ", ".join(k.name for k in kids if k.status == status)
    if status == Status.BLOCKED:
        return f"blocked by {names}"
    if status == Status.APPROVED:
        return f"approved by way of {names}"
    return f"needs one of: {names}" if op == "or" else f"waiting on {names}"


_QUOTE = re.compile(r"^ {0,3}>")
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)


def _visible_lines(body: str) -> str:
    """The comment with every line a reader does not see as plain text blanked: HTML comments
    (on one line or many, closed or not), fenced code blocks, and block quotes with the lines that
    continue them (a line right after a quoted one is part of the quote). Indented code never
    matches, since a command starts its line."""
    body = _HTML_COMMENT.sub(lambda m: "\x00" + "\n" * m.group(0).count("\n"), body)
    out, fence, quoted = [], "", False
    for line in body.splitlines():
        m = _FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip(" `~"):
                fence = ""
            out.append("")
        elif m:
            fence, quoted = m.group(1), False
            out.append("")
        elif _QUOTE.match(line) or (quoted and line.strip()):
            quoted = True
            out.append("")
        else:
            quoted = False
            out.append(line)
    return "\n".join(out)


def parse_override(body: str) -> str | None:
    """The reason of the last `/gating override <reason>` line a reader sees in a comment ("" when it
    gives none), or None when the comment holds no such command."""
    found = [m.group(1).strip() for m in OVERRIDE_COMMAND.finditer(_visible_lines(body or ""))]
    return found[-1] if found else None


def overrides_survive_push(policy: Policy, results: Sequence[Result]) -> bool:
    """Whether every rule an override would decide (pending or blocked) keeps an override given
    before the last push (`invalidate_override_on_push: false`); the built-in rule never does."""
    rules = {r.name: r for r in (*policy.rules, POLICY_CHANGE_RULE)}
    deciding = [rules[r.name] for r in results if r.status in (Status.PENDING, Status.BLOCKED) and r.name in rules]
    return bool(deciding) and not any(r.options.invalidate_override_on_push for r in deciding)


def _why_not(act: OverrideAct, head_sha: str, survive_push: bool) -> str:
    if act.void:
        return act.void
    if not act.reason:
        return "it needs a reason"
    if act.permission != "admin":
        return f"needs admin permission (has {act.permission or 'none'})"
    if (act.head_sha != head_sha or act.pushed_after) and not survive_push:
        return (f"given on `{act.head_sha[:7]}`, before the last push; a push voids an override, so it needs a "
                f"new one on `{head_sha[:7]}`")
    return ""


def find_overrides(facts: PullFacts, survive_push: bool = False) -> tuple[Override | None, list[Result]]:
    """The latest override the App recorded that still counts, and a note for each that does not."""
    found: Override | None = None
    ignored: list[Result] = []
    for act in facts.overrides:
        why = _why_not(act, facts.head_sha, survive_push)
        if why:
            ignored.append(Result("override", Status.SKIPPED, f"override by @{act.login} ignored: {why}",
                                  kind="override"))
        else:
            found = Override(act.login, act.reason, act.created_at, act.url, act.head_sha)
    return found, ignored


def gate_changes(facts: PullFacts) -> list[str]:
    """What the pull request changes of how pull requests are judged or approved: the manifest's
    `approvals`, `evals`, `rollback` and `monitor`, the audit key and the workflows that set the check's options."""
    paths = [p for p in facts.manifest_paths if any(manifest_path_match(m, p) for m in POLICY_CHANGE_PATHS)]
    files = [f for f in facts.changed_files if any(glob_match(g, f) for g in POLICY_CHANGE_FILES)]
    if not paths and {"policy", "evals"} & set(facts.categories):
        paths = [c for c in ("policy", "evals") if c in facts.categories]
    return list(dict.fromkeys(paths + files))


def _policy_change(facts: PullFacts, changed: list[str]) -> Result:
    """The built-in rule, with the changes that call for it as its (met) condition."""
    r = _eval_rule(POLICY_CHANGE_RULE, facts)
    why = _cond("gate settings", True, f"changes how pull requests are judged or approved: {_few(changed)}")
    return Result(r.name, r.status, r.description, (why, *r.children), r.kind, r.reviews, r.missing)


def evaluate(policy: Policy, facts: PullFacts) -> Result:
    """The whole verdict for one pull request at its head SHA."""
    results = [_eval_rule(r, facts) for r in policy.rules]
    changed = gate_changes(facts)
    if changed:
        results.append(_policy_change(facts, changed))
    status = all_of(r.status for r in results)
    override, ignored = find_overrides(facts, overrides_survive_push(policy, results))
    children = tuple(results) + tuple(ignored)
    missing = "; ".join(f"{r.name}: {r.missing}" for r in results if r.status == status and r.missing)
    if override and status in (Status.PENDING, Status.BLOCKED):  # `override` is set only when it decides
        return Result("policy", Status.APPROVED, f"overridden by @{override.login}: {override.reason} "
                      f"(rules alone: {status.label})", children, kind="policy", override=override)
    if override:
        children += (Result("override", Status.SKIPPED, f"override by @{override.login} not needed: "
                            f"{override.reason}", kind="override"),)
    return Result("policy", status, _verdict(status, results), children, kind="policy", missing=missing)


def _verdict(status: Status, results: Sequence[Result]) -> str:
    applicable = [r for r in results if r.status != Status.SKIPPED]
    if status == Status.SKIPPED:
        return "no approval rule applies to this pull request"
    if status == Status.APPROVED:
        n = len(applicable)
        return f"{'all ' if n > 1 else ''}{n} applicable rule{'s' if n != 1 else ''} approved"
    hit = [r for r in results if r.status == status]
    more = len(hit) - 1
    return f"{hit[0].name}: {hit[0].description}" + (
        f" (and {more} more rule{'s' if more > 1 else ''} {status.label})" if more else "")
