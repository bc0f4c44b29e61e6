"""`gating app serve --check`: what the App needs at its first event, tried before any event comes.

The key must sign a JWT that GitHub accepts (`GET /app`), the audit signing key must load when a
handler that signs audit entries is on, and the job queue must take a write. Then, from the
installation's permissions, what each handler will and will not be able to do. A problem is an error
(the App would fail its first job); a missing permission is shown, since an owner may grant it later.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from gating.github import GitHubApp, GitHubError
from gating.server.settings import Settings

R, W = "read", "write"
# What each handler does, and the permission each part needs (as the App's settings page names it).
NEEDS: dict[str, list[tuple[str, str, str]]] = {
    "gating.server.handlers.approvals": [
        ("post the `gating / approval` check", "checks", W), ("read pull requests, their files and reviews",
                                                               "pull_requests", R),
        ("read gating.yml from the base branch", "contents", R), ("read `/gating override` comments", "issues", R),
        ("check team membership for `requires.teams`", "members", R)],
    "gating.server.handlers.merge_audit": [("read the merged pull request", "pull_requests", R),
                                 ("write signed audit entries (git notes)", "contents", W)],
    "gating.server.handlers.deployments": [("see deployment statuses", "deployments", R),
                                 ("write deployed and known-good audit entries", "contents", W)],
    "gating.server.handlers.rollback_command": [("answer and react to `/rollback` comments", "issues", W),
                                      ("push the rollback branch and its audit entry", "contents", W),
                                      ("open the rollback pull request", "pull_requests", W)],
    "gating.server.handlers.alerts": [("push the rollback branch and its audit entry", "contents", W),
                            ("open the rollback pull request", "pull_requests", W)],
    "gating.server.handlers.monitor": [("write known-good and monitor_alert audit entries", "contents", W),
                                       ("open the rollback pull request", "pull_requests", W),
                                       ("comment on the tracking issue or pull request", "issues", W)],
    "gating.server.handlers.canary": [("write canary_failed audit entries", "contents", W)],
    "gating.server.handlers.drills": [("write the scratch branch of a rollback drill and its audit entry", "contents", W),
                                      ("open an issue when a drill fails", "issues", W)],
    "gating.server.handlers.reevaluate": [("re-post `gating / approval` when asked", "checks", W),
                                ("list the open pull requests", "pull_requests", R)],
}


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def grants(have: str | None, need: str) -> bool:
    return have == "admin" or have == "write" or (have == "read" and need == "read")


def audit_key_problem(settings: Settings) -> str | None:
    """A missing or unreadable audit key, when a handler that signs is on."""
    from gating.audit.keys import KeyError_

    signing = settings.signing_handlers()
    if not signing or (settings.no_audit and not (settings.audit_key_path or settings.audit_key_pem)):
        return None
    try:
        settings.audit_key()
    except KeyError_ as e:
        return (f"{e} (`gating keygen`): {', '.join(signing)} sign{'s' if len(signing) == 1 else ''} audit entries "
                "and would fail their first job; or leave them out of GATING_HANDLERS")
    return None


def db_problem(db_path: str) -> str | None:
    """The queue must take a write: a read-only file or folder fails every delivery, not only the first."""
    try:
        conn = sqlite3.connect(db_path, timeout=5)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE gating_write_check (x)")
            conn.rollback()
        finally:
            conn.close()
    except sqlite3.Error as e:
        return f"GATING_DB: the job queue {db_path} is not writable: {e}"
    return None


def queue_problem(settings: Settings) -> str | None:
    """A shared queue (GATING_QUEUE_URL) must be reachable, and take the App's tables."""
    if not settings.queue_url:
        return None
    from gating.server.database import errors_of, shown
    from gating.server.jobs import JobQueue

    try:
        JobQueue(settings.queue_url).counts()
    except errors_of(settings.queue_url) as e:
        return f"GATING_QUEUE_URL: cannot use the job queue {shown(settings.queue_url)}: {e}"
    return None


def capabilities(handlers: tuple[str, ...], permissions: dict[str, str]) -> list[str]:
    """Per handler: what it can do with these permissions, and what it cannot (and the permission)."""
    out = []
    for h in handlers:
        needs = NEEDS.get(h)
        if needs is None:
            out.append(f"  {h}: (not a built-in handler; its needs are unknown)")
            continue
        can = [what for what, p, lvl in needs if grants(permissions.get(p), lvl)]
        cannot = [f"{what} (needs {p}: {lvl})" for what, p, lvl in needs if not grants(permissions.get(p), lvl)]
        out.append(f"  {h.rsplit('.', 1)[-1]}: " + ("can " + "; ".join(can) if can else "can do nothing"))
        out += [f"    cannot {c}" for c in cannot]
    return out


def check(settings: Settings, github: GitHubApp | None = None) -> Report:
    """Every check, each problem named; `github` defaults to the App as the settings describe it."""
    report = Report()
    for p in (audit_key_problem(settings), db_problem(settings.db_path), queue_problem(settings)):
        if p:
            report.problems.append(p)
    github = github or GitHubApp(settings.app_id, settings.key(), settings.github_api_url)
    client = github.app_client()
    try:
        app = client.get("/app")
    except GitHubError as e:
        hint = " (APP_ID and the private key do not belong together, or the key was revoked)" \
            if e.status == 401 else ""
        report.problems.append(f"GitHub refused the App's JWT at {settings.github_api_url}: {e}{hint}")
        return report
    report.lines.append(f"the key signs a JWT that GitHub accepts: App {app.get('slug')} (id {app.get('id')}), "
                        f"owned by {(app.get('owner') or {}).get('login')}")
    try:
        installations = list(client.paginate("/app/installations", limit=100))
    except GitHubError as e:
        report.problems.append(f"cannot list the App's installations: {e}")
        return report
    handlers = settings.handler_modules
    if not installations:
        report.lines.append(f"not installed anywhere yet: install it at {app.get('html_url')}/installations/new; "
                            "with the permissions it asks for, the handlers will be able to:")
        report.lines += capabilities(handlers, dict(app.get("permissions") or {}))
    for inst in installations[:20]:
        account = (inst.get("account") or {}).get("login")
        report.lines.append(f"installation {inst.get('id')} on {account}: with its permissions the handlers can:")
        report.lines += capabilities(handlers, dict(inst.get("permissions") or {}))
    return report
