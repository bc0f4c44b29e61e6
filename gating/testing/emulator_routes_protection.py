"""Classic branch protection: the rule's REST endpoints, and the check a ref update must pass.

Only ref updates through the Git Database API are checked (`PATCH` / `DELETE git/refs/heads/...`),
with GitHub's messages, so a client that writes to a protected branch meets the refusal it would meet
on GitHub. Pull request merges, `POST /merges`, git pushes and the test helpers are not checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gating.testing import emulator_render as render
from gating.testing.emulator_http import Actor, ApiError, Ctx, Reply, handles
from gating.testing.emulator_state import BranchProtection, Repo

if TYPE_CHECKING:
    from gating.testing.github_emulator import Emulator

FLAGS = ("required_linear_history", "allow_force_pushes", "allow_deletions", "block_creations",
         "required_conversation_resolution", "lock_branch", "allow_fork_syncing")
REVIEW_FIELDS = {"dismiss_stale_reviews": False, "require_code_owner_reviews": False,
                 "required_approving_review_count": 1, "require_last_push_approval": False}
PASSING = ("success", "neutral", "skipped")


def documented_form(body: Any) -> Any:
    """GitHub takes null for any of the optional switches, and `checks` without the deprecated
    `contexts` (PyGithub's edit_protection sends both); the description requires booleans and
    `contexts`, so the body is validated with nulls dropped and `contexts` derived from `checks`."""
    if not isinstance(body, dict):
        return body
    out = {k: v for k, v in body.items() if not (k in FLAGS and v is None)}
    checks = out.get("required_status_checks")
    if isinstance(checks, dict) and "contexts" not in checks and isinstance(checks.get("checks"), list):
        out["required_status_checks"] = checks | {"contexts": [c.get("context") for c in checks["checks"]
                                                               if isinstance(c, dict)]}
    return out


def from_body(body: dict[str, Any]) -> BranchProtection:
    """The rule a PUT body describes (GitHub replaces the whole rule on every PUT)."""
    reviews = body.get("required_pull_request_reviews")
    checks = body.get("required_status_checks")
    restrictions = body.get("restrictions")
    p = BranchProtection(enforce_admins=bool(body.get("enforce_admins")),
                         flags={f: bool(body.get(f)) for f in FLAGS})
    if reviews is not None:
        p.required_reviews = {k: reviews.get(k, default) for k, default in REVIEW_FIELDS.items()}
    if checks is not None:
        p.strict = bool(checks.get("strict"))
        if checks.get("checks") is not None:
            p.check_apps = {c["context"]: c.get("app_id") for c in checks["checks"]}
            p.contexts = list(p.check_apps)
        else:
            p.contexts = list(checks.get("contexts") or [])
            p.check_apps = dict.fromkeys(p.contexts)
    if restrictions is not None:
        p.restrictions = {"users": list(restrictions.get("users") or []),
                          "teams": list(restrictions.get("teams") or [])}
    return p


# -- rendering ---------------------------------------------------------------------------------------


def _enforcement_level(p: BranchProtection) -> str:
    if p.contexts is None:
        return "off"
    return "everyone" if p.enforce_admins else "non_admins"


def _checks(p: BranchProtection) -> list[dict[str, Any]]:
    return [{"context": c, "app_id": p.check_apps.get(c)} for c in p.contexts or []]


def summary(p: BranchProtection | None) -> dict[str, Any]:
    """The `protection` object of a branch in get-branch / list-branches."""
    if p is None:
        return {"enabled": False, "required_status_checks": {"enforcement_level": "off", "contexts": [], "checks": []}}
    return {"enabled": True, "required_status_checks": {"enforcement_level": _enforcement_level(p),
                                                        "contexts": list(p.contexts or []), "checks": _checks(p)}}


def protection_json(emu: Emulator, r: Repo, branch: str, p: BranchProtection) -> dict[str, Any]:
    """The rule as GET and PUT .../protection return it."""
    url = f"{emu.api_url}/repos/{r.full_name}/branches/{branch}/protection"
    data: dict[str, Any] = {
        "url": url,
        "required_signatures": {"url": f"{url}/required_signatures", "enabled": False},
        "enforce_admins": {"url": f"{url}/enforce_admins", "enabled": p.enforce_admins},
    } | {f: {"enabled": p.flag(f)} for f in FLAGS}
    if p.required_reviews is not None:
        data["required_pull_request_reviews"] = {"url": f"{url}/required_pull_request_reviews", **p.required_reviews}
    if p.contexts is not None:
        data["required_status_checks"] = {
            "url": f"{url}/required_status_checks", "strict": p.strict, "contexts": list(p.contexts),
            "checks": _checks(p), "contexts_url": f"{url}/required_status_checks/contexts",
            "enforcement_level": _enforcement_level(p)}
    if p.restrictions is not None:
        teams = [emu.teams.get((r.owner.lower(), slug.lower())) for slug in p.restrictions["teams"]]
        data["restrictions"] = {
            "url": f"{url}/restrictions", "users_url": f"{url}/restrictions/users",
            "teams_url": f"{url}/restrictions/teams", "apps_url": f"{url}/restrictions/apps",
            "users": [render.user(emu, login) for login in p.restrictions["users"]],
            "teams": [{"id": t.id, "slug": t.slug, "name": t.name} for t in teams if t is not None], "apps": []}
    return data


# -- endpoints ---------------------------------------------------------------------------------------


def _existing_branch(ctx: Ctx) -> tuple[Repo, str]:
    r = ctx.require_repo()
    name = ctx.params["branch"]
    if ctx.emu.bare(r).ref(f"refs/heads/{name}") is None:
        raise ApiError(404, "Branch not found")
    return r, name


@handles("repos/get-branch-protection")
def get_protection(ctx: Ctx) -> Reply:
    r, name = _existing_branch(ctx)
    p = r.protections.get(name)
    if p is None:
        raise ApiError(404, "Branch not protected")
    return Reply(200, protection_json(ctx.emu, r, name, p))


@handles("repos/update-branch-protection")
def update_protection(ctx: Ctx) -> Reply:
    r, name = _existing_branch(ctx)
    p = r.protections[name] = from_body(ctx.body or {})
    return Reply(200, protection_json(ctx.emu, r, name, p))


@handles("repos/delete-branch-protection")
def delete_protection(ctx: Ctx) -> Reply:
    r, name = _existing_branch(ctx)
    if r.protections.pop(name, None) is None:
        raise ApiError(404, "Branch not protected")
    return Reply(204)


# -- enforcement -------------------------------------------------------------------------------------


def _bypasses(emu: Emulator, r: Repo, p: BranchProtection, actor: Actor) -> bool:
    """Admins are exempt unless the rule includes administrators; Apps never are."""
    return actor.kind == "user" and not p.enforce_admins and emu.permission_of(r, actor.login) == "admin"


def _missing_checks(r: Repo, p: BranchProtection, sha: str) -> list[str]:
    """Required contexts without a passing check run on `sha` (the latest run of that name counts)."""
    missing = []
    for context in p.contexts or []:
        app_id = p.check_apps.get(context)
        runs = [c for c in r.check_runs.values() if c.head_sha == sha and c.name == context
                and (app_id in (None, -1) or c.app_id == app_id)]
        latest = max(runs, key=lambda c: c.id, default=None)
        if latest is None or latest.status != "completed" or latest.conclusion not in PASSING:
            missing.append(context)
    return missing


def check_update(emu: Emulator, r: Repo, ref: str, actor: Actor, new: str, fast_forward: bool) -> None:
    """Raise GitHub's 422 when the rule on `ref` forbids this actor moving it to `new`."""
    p = _rule(r, ref)
    if p is None or _bypasses(emu, r, p, actor):
        return
    if p.required_reviews is not None:
        raise ApiError(422, "Changes must be made through a pull request.")
    missing = _missing_checks(r, p, new)
    if len(missing) == 1:
        raise ApiError(422, f'Required status check "{missing[0]}" is expected.')
    if missing:
        raise ApiError(422, f"{len(missing)} of {len(p.contexts or [])} required status checks are expected.")
    if not fast_forward and not p.flag("allow_force_pushes"):
        raise ApiError(422, "Update is not a fast forward")


def check_delete(emu: Emulator, r: Repo, ref: str, actor: Actor) -> None:
    p = _rule(r, ref)
    if p is not None and not _bypasses(emu, r, p, actor) and not p.flag("allow_deletions"):
        raise ApiError(422, "Cannot delete this protected branch")


def _rule(r: Repo, ref: str) -> BranchProtection | None:
    return r.protections.get(ref[len("refs/heads/"):]) if ref.startswith("refs/heads/") else None
