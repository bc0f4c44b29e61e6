"""What `gating / approval` says when the App's installation lacks a permission it needs to read the
facts (a 403 "Resource not accessible by integration", e.g. team membership without `members:
read`): which permission, and how an owner grants it. Never green: the rules were not evaluated."""

from __future__ import annotations

from gating.policy.render import APPROVAL_CHECK, CheckOutput

# GitHub's permission keys as its settings page names them.
_NAMES = {"members": "Organization permissions → Members", "contents": "Repository permissions → Contents",
          "pull_requests": "Repository permissions → Pull requests", "checks": "Repository permissions → Checks",
          "issues": "Repository permissions → Issues", "metadata": "Repository permissions → Metadata"}


def wanted(accepted: list[str]) -> list[tuple[str, str]]:
    """[(permission, level)] from X-Accepted-GitHub-Permissions items such as "members=read"."""
    out = []
    for item in accepted:
        name, _, level = item.partition("=")
        out.append((name.strip(), level.strip() or "read"))
    return out


def missing_permission_check(accepted: list[str], method: str, path: str, answer: str) -> CheckOutput:
    """A failure check run naming the permission GitHub asked for (`accepted`), the request it refused
    and its `answer` ("403: ..."), and how to grant it."""
    what = ("read team membership" if "/teams/" in path else "call the API") + f" ({method} {path})"
    perms = wanted(accepted) or [("unknown", "read")]
    listed = " or ".join(f"`{p}: {lvl}`" for p, lvl in perms)
    title = f"Cannot evaluate the approval rules: the App needs {listed}"
    steps = "\n".join(f"- {_NAMES.get(p, p)}: **{lvl.capitalize()}**" for p, lvl in perms)
    summary = (f"GitHub refused to let the App {what} ({answer}). Without it the approval rules "
               f"cannot be evaluated, so `{APPROVAL_CHECK}` stays failed (it is never green on missing facts).\n\n"
               "**How to fix it.** The App's owner adds the permission to the App (Settings → Developer "
               f"settings → GitHub Apps → the App → Permissions & events):\n\n{steps}\n\n"
               "then an owner of this organization accepts the new permission (Settings → GitHub Apps → the App "
               "→ Review request). The App re-evaluates every open pull request once it is accepted.")
    return CheckOutput("completed", "failure", title, summary, "")
