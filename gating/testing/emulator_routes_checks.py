"""Check runs, check suites, deployments and deployment statuses."""

from __future__ import annotations

from gating.testing import emulator_render as render
from gating.testing.emulator_http import ApiError, Ctx, Reply, handles, not_found
from gating.testing.emulator_state import CheckRun, Deployment

MAX_OUTPUT_CHARS = 65535
MAX_ANNOTATIONS = 50


def _check_output(output: dict | None) -> None:
    """GitHub's output limits: 65,535 characters for summary and text, 50 annotations per request."""
    if not output:
        return
    for key in ("summary", "text"):
        value = output.get(key)
        if value is not None and len(value) > MAX_OUTPUT_CHARS:
            raise ApiError(422, "Invalid request.\n\n"
                                f"Only {MAX_OUTPUT_CHARS} characters are allowed; {len(value)} were supplied.",
                           errors=[{"resource": "CheckRun", "field": f"output.{key}", "code": "too_long"}])
    annotations = output.get("annotations") or []
    if len(annotations) > MAX_ANNOTATIONS:
        raise ApiError(422, "Invalid request.\n\n"
                            f"Only {MAX_ANNOTATIONS} annotations are allowed per request; "
                            f"{len(annotations)} were supplied.",
                       errors=[{"resource": "CheckRun", "field": "output.annotations", "code": "too_long"}])


def _apply(run: CheckRun, ctx: Ctx, now: float) -> None:
    body = ctx.body or {}
    for key in ("name", "details_url", "external_id"):
        if key in body:
            setattr(run, key, body[key])
    if "actions" in body:
        run.actions = list(body["actions"])
    if body.get("started_at"):
        run.started_at = ctx.emu.parse_time(body["started_at"])
    output = body.get("output")
    if output:
        run.output = {k: output.get(k, run.output.get(k)) for k in ("title", "summary", "text")}
        run.annotations.extend(output.get("annotations") or [])
    if "conclusion" in body and body["conclusion"] is not None:
        run.conclusion = body["conclusion"]
        run.status = "completed"
    if body.get("status"):
        run.status = body["status"]
        if run.status == "completed" and run.conclusion is None:
            raise ApiError(422, "Invalid request.\n\nNo conclusion was supplied for a completed check run.",
                           errors=[{"resource": "CheckRun", "field": "conclusion", "code": "missing_field"}])
    if run.status == "completed" and run.completed_at is None:
        run.completed_at = ctx.emu.parse_time(body["completed_at"]) if body.get("completed_at") else now


def _app_id(ctx: Ctx) -> int:
    """The app the installation token belongs to: the emulated App, or GitHub Actions (GITHUB_TOKEN)."""
    token = ctx.actor.token
    return (token.app_id if token else None) or ctx.emu.app.app_id


def _run(ctx: Ctx) -> CheckRun:
    run = ctx.require_repo().check_runs.get(ctx.int_param("check_run_id"))
    if run is None:
        raise not_found()
    return run


@handles("checks/create")
def create_check_run(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    if ctx.actor.kind != "installation":
        raise ApiError(403, "You must authenticate via a GitHub App.")
    head_sha = ctx.arg("head_sha")
    if ctx.emu.bare(r).commit(head_sha) is None:
        raise ApiError(422, "No commit found for SHA: " + head_sha)
    _check_output(ctx.arg("output"))
    run = ctx.emu.new_check_run(r, head_sha, ctx.arg("name"), _app_id(ctx))
    _apply(run, ctx, ctx.emu.now())
    ctx.emu.check_run_changed(r, run, created=True)
    return Reply(201, render.check_run(ctx.emu, r, run),
                 {"Location": f"{ctx.emu.api_url}/repos/{r.full_name}/check-runs/{run.id}"})


@handles("checks/update")
def update_check_run(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    if ctx.actor.kind != "installation":
        raise ApiError(403, "You must authenticate via a GitHub App.")
    run = _run(ctx)
    if run.app_id != _app_id(ctx):
        raise ApiError(403, f"Invalid app_id `{_app_id(ctx)}` - check run can only be modified by "
                            "the GitHub App that created it.")
    _check_output(ctx.arg("output"))
    was = run.status
    _apply(run, ctx, ctx.emu.now())
    ctx.emu.check_run_changed(r, run, created=False, was=was)
    return Reply(200, render.check_run(ctx.emu, r, run))


@handles("checks/get")
def get_check_run(ctx: Ctx) -> Reply:
    return Reply(200, render.check_run(ctx.emu, ctx.require_repo(), _run(ctx)))


@handles("checks/list-annotations")
def list_annotations(ctx: Ctx) -> Reply:
    run = _run(ctx)
    items = [{"path": a.get("path"), "start_line": a.get("start_line"), "end_line": a.get("end_line"),
              "start_column": a.get("start_column"), "end_column": a.get("end_column"),
              "annotation_level": a.get("annotation_level"), "title": a.get("title"), "message": a.get("message"),
              "raw_details": a.get("raw_details"), "blob_href": ""} for a in run.annotations]
    return ctx.paginate(items)


def _head(ctx: Ctx) -> str:
    sha = ctx.emu.bare(ctx.require_repo()).resolve_commit(ctx.params["ref"])
    if sha is None:
        raise ApiError(422, f"No commit found for SHA: {ctx.params['ref']}")
    return sha


@handles("checks/list-for-ref")
def list_for_ref(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    sha = _head(ctx)
    name, status = ctx.query.get("check_name"), ctx.query.get("status")
    app_id = ctx.query.get("app_id")
    runs = [c for c in sorted(r.check_runs.values(), key=lambda c: -c.id) if c.head_sha == sha]
    runs = [c for c in runs if (name is None or c.name == name) and (status is None or c.status == status)
            and (app_id is None or str(c.app_id) == app_id)]
    if ctx.query.get("filter", "latest") == "latest":
        seen: set[str] = set()
        latest = []
        for c in runs:
            if c.name not in seen:
                seen.add(c.name)
                latest.append(c)
        runs = latest
    items = [render.check_run(ctx.emu, r, c) for c in runs]
    return ctx.paginate(items, wrap=lambda chunk: {"total_count": len(items), "check_runs": chunk})


@handles("checks/list-suites-for-ref")
def list_suites(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    sha = _head(ctx)
    suites = [render.check_suite(ctx.emu, r, s) for s in r.check_suites.values() if s.head_sha == sha]
    return ctx.paginate(suites, wrap=lambda chunk: {"total_count": len(suites), "check_suites": chunk})


# -- deployments ----------------------------------------------------------------------------------


@handles("repos/create-deployment")
def create_deployment(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    ref = ctx.arg("ref")
    if ctx.emu.bare(r).resolve_commit(ref) is None:
        raise ApiError(422, f"No ref found for: {ref}")
    data = ctx.emu.create_deployment(
        r, ref, environment=ctx.arg("environment", "production"), user=ctx.actor.login,
        task=ctx.arg("task", "deploy"), payload=ctx.arg("payload", {}), description=ctx.arg("description"),
        production_environment=ctx.arg("production_environment"),
        transient_environment=bool(ctx.arg("transient_environment", False)))
    return Reply(201, data)


@handles("repos/list-deployments")
def list_deployments(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    q = ctx.query
    items = [render.deployment(ctx.emu, r, d) for d in sorted(r.deployments.values(), key=lambda d: -d.id)
             if all(q.get(k) is None or getattr(d, k) == q.get(k) for k in ("sha", "ref", "task", "environment"))]
    return ctx.paginate(items)


def _deployment(ctx: Ctx) -> Deployment:
    d = ctx.require_repo().deployments.get(ctx.int_param("deployment_id"))
    if d is None:
        raise not_found()
    return d


@handles("repos/get-deployment")
def get_deployment(ctx: Ctx) -> Reply:
    return Reply(200, render.deployment(ctx.emu, ctx.require_repo(), _deployment(ctx)))


@handles("repos/create-deployment-status")
def create_status(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    d = _deployment(ctx)
    data = ctx.emu.add_deployment_status(
        r, d.id, ctx.arg("state"), user=ctx.actor.login, description=ctx.arg("description", ""),
        environment_url=ctx.arg("environment_url", ""), log_url=ctx.arg("log_url") or ctx.arg("target_url", ""),
        environment=ctx.arg("environment"))
    return Reply(201, data)


@handles("repos/list-deployment-statuses")
def list_statuses(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    d = _deployment(ctx)
    return ctx.paginate([render.deployment_status(ctx.emu, r, d, s) for s in reversed(d.statuses)])
