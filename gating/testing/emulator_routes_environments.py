"""Custom deployment protection rules: the review endpoint a rule's GitHub App answers a held
workflow run through (`POST .../actions/runs/{run_id}/deployment_protection_rule`).

The body is validated against the OpenAPI description before this runs (a `state` other than
approved/rejected, or no `environment_name`, is GitHub's 422). Here: only a GitHub App's installation
may review, only its own rule, only on an environment the run is waiting for, and only once.
"""

from __future__ import annotations

from gating.testing.emulator_http import ApiError, Ctx, Reply, handles, not_found


@handles("actions/review-custom-gates-for-run")
def review_custom_gates(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    run = r.gate_runs.get(ctx.int_param("run_id"))
    if run is None:
        raise not_found()
    if ctx.actor.kind != "installation":
        raise ApiError(403, "Resource not accessible by personal access token"
                       if ctx.actor.kind == "user" else "Resource not accessible by integration")
    app_id = ctx.emu.app.app_id
    env = ctx.arg("environment_name")
    if env != run.environment or app_id not in run.apps:
        raise ApiError(422, f"No pending custom deployment protection rule for this app on environment '{env}' "
                            f"in workflow run {run.id}")
    if app_id in run.reviews:
        raise ApiError(422, f"Workflow run {run.id} is not waiting for this app's deployment protection rule "
                            f"(already {run.reviews[app_id][0]})")
    state = ctx.arg("state")
    with ctx.emu.lock:
        if state is None:  # a comment alone is posted on the run and leaves it waiting
            run.comments.append(ctx.arg("comment") or "")
            return Reply(204)
        run.reviews[app_id] = (state, ctx.arg("comment") or "")
    return Reply(204)
