"""The App and its installation, users, teams, collaborators and the rate limit."""

from __future__ import annotations

from typing import Any

from gating.testing import emulator_render as render
from gating.testing.emulator_http import ApiError, Ctx, Reply, handles, not_found
from gating.testing.emulator_state import PERMISSION_ORDER


@handles("apps/get-authenticated")
def get_app(ctx: Ctx) -> Reply:
    data = render.app(ctx.emu)
    data["installations_count"] = 1
    return Reply(200, data)


@handles("apps/list-installations")
def list_installations(ctx: Ctx) -> Reply:
    return ctx.paginate([render.installation(ctx.emu)])


def _installation_id(ctx: Ctx) -> int:
    ident = ctx.int_param("installation_id")
    if ident != ctx.emu.app.installation_id:
        raise not_found()
    return ident


@handles("apps/get-installation")
def get_installation(ctx: Ctx) -> Reply:
    _installation_id(ctx)
    return Reply(200, render.installation(ctx.emu))


@handles("apps/get-repo-installation")
def get_repo_installation(ctx: Ctx) -> Reply:
    ctx.require_repo()
    return Reply(200, render.installation(ctx.emu))


@handles("apps/create-installation-access-token")
def create_token(ctx: Ctx) -> Reply:
    _installation_id(ctx)
    emu = ctx.emu
    wanted = ctx.arg("permissions")
    if wanted:
        for perm, level in wanted.items():
            have = emu.installation_permissions.get(perm)
            if have is None or (have == "read" and level == "write"):
                raise ApiError(422, "The permissions requested are not granted to this installation.")
    names = ctx.arg("repositories")
    ids = ctx.arg("repository_ids")
    if ids:
        by_id = {r.id: r.name for r in emu.repos.values()}
        if any(i not in by_id for i in ids):
            raise ApiError(422, "There is at least one repository that does not exist or is not accessible "
                                "to the parent installation.")
        names = list(names or []) + [by_id[i] for i in ids]
    if names:
        known = {r.name for r in emu.repos.values()}
        if any(n not in known for n in names):
            raise ApiError(422, "There is at least one repository that does not exist or is not accessible "
                                "to the parent installation.")
    token = emu.mint_installation_token(permissions=wanted, repositories=names)
    data: dict[str, Any] = {"token": token.value, "expires_at": render.iso(token.expires_at), "permissions": token.permissions,
            "repository_selection": "selected" if names else "all"}
    if names:
        data["repositories"] = [render.repo(emu, r) for r in emu.repos.values() if r.name in names]
    return Reply(201, data)


@handles("apps/list-repos-accessible-to-installation")
def list_installation_repos(ctx: Ctx) -> Reply:
    token = ctx.actor.token
    repos = [r for r in ctx.emu.repos.values()
             if token is None or token.repositories is None or r.name in token.repositories]
    items = [render.repo(ctx.emu, r) for r in repos]
    return ctx.paginate(items, wrap=lambda chunk: {"total_count": len(items), "repositories": chunk,
                                                   "repository_selection": "all"})


@handles("users/get-by-username")
def get_user(ctx: Ctx) -> Reply:
    login = ctx.params["username"]
    if login.lower() not in ctx.emu.users:
        raise not_found()
    return Reply(200, render.public_user(ctx.emu, ctx.emu.user_record(login).login))


@handles("users/get-authenticated")
def get_me(ctx: Ctx) -> Reply:
    if ctx.actor.kind != "user" or not ctx.actor.login:
        raise ApiError(403, "Resource not accessible by integration")
    data = render.public_user(ctx.emu, ctx.actor.login)
    data |= {"private_gists": 0, "total_private_repos": 0, "owned_private_repos": 0, "disk_usage": 0,
             "collaborators": 0, "two_factor_authentication": True, "user_view_type": "private"}
    return Reply(200, data)


@handles("teams/get-membership-for-user-in-org")
def team_membership(ctx: Ctx) -> Reply:
    team = ctx.emu.teams.get((ctx.params["org"].lower(), ctx.params["team_slug"].lower()))
    if team is None:
        raise not_found()
    role = team.members.get(ctx.params["username"].lower())
    if role is None:
        raise not_found()
    api = ctx.emu.api_url
    return Reply(200, {"url": f"{api}/teams/{team.id}/memberships/{ctx.params['username']}",
                       "role": role, "state": "active"})


@handles("teams/list-members-in-org")
def team_members(ctx: Ctx) -> Reply:
    team = ctx.emu.teams.get((ctx.params["org"].lower(), ctx.params["team_slug"].lower()))
    if team is None:
        raise not_found()
    role = ctx.query.get("role", "all")
    logins = [m for m, rl in team.members.items() if role == "all" or rl == role]
    return ctx.paginate([render.user(ctx.emu, ctx.emu.user_record(m).login) for m in logins])


@handles("repos/get-collaborator-permission-level")
def collaborator_permission(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    login = ctx.params["username"]
    if login.lower() not in ctx.emu.users:
        raise ApiError(404, f"{login} is not a user")
    role = ctx.emu.permission_of(r, login)  # a custom role's base role
    # GitHub's legacy `permission` folds maintain into write and triage into read; role_name names the
    # role itself: a base role, or a custom role such as "release-manager" (its base only shows here).
    legacy = {"maintain": "write", "triage": "read"}.get(role, role)
    u = render.user(ctx.emu, ctx.emu.user_record(login).login) or {}
    perms = {p: PERMISSION_ORDER.index(role) >= PERMISSION_ORDER.index(q)
             for p, q in (("admin", "admin"), ("maintain", "maintain"), ("push", "write"),
                          ("triage", "triage"), ("pull", "read"))}
    u["permissions"] = perms
    u["role_name"] = name = ctx.emu.role_name_of(r, login)
    return Reply(200, {"permission": legacy, "role_name": name, "user": u})


@handles("rate-limit/get")
def rate_limit(ctx: Ctx) -> Reply:
    core = ctx.emu.rate_limit_snapshot(ctx.actor)
    resources = {"core": core, "search": dict(core, limit=30, remaining=30, used=0),
                 "graphql": dict(core, limit=5000, remaining=5000, used=0)}
    return Reply(200, {"resources": resources, "rate": core})

