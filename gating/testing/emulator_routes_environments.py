"""Custom deployment protection rules: the review endpoint a rule's GitHub App answers a held
workflow run through (`POST .../actions/runs/{run_id}/deployment_protection_rule`).

The body is validated against the OpenAPI description before this runs (a `state` other than
approved/rejected, or no `environment_name`, is GitHub's 422 "Invalid request"); the description
documents only the 204, so the errors follow what GitHub answers (reported by the clients that meet
them): only a GitHub App's installation may call it (anyone else: 404), on a run of this repository
(404); the App must have a pending rule of its own on `environment_name` in that run, else 422 "No
pending custom deployment requests in workflow run `ID` to approve or reject" (an environment without
its rule, a run it already reviewed, a run another rule rejected); a comment is at most 1,024
characters and a pending request takes at most 10 comments without a state; and when GitHub fails to
pass the decision on, 422 "There was a problem approving one of the gates" (the run stays waiting).
"""

from __future__ import annotations

from gating.testing.emulator_http import ApiError, Ctx, Reply, handles, not_found

DOCS = "https://docs.github.com/rest/actions/workflow-runs#review-custom-deployment-protection-rules-for-a-workflow-run"
MAX_COMMENT = 1024
MAX_COMMENTS = 10


def _refused(message: str) -> ApiError:
    return ApiError(422, message, doc=DOCS)


@handles("actions/review-custom-gates-for-run")
def review_custom_gates(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    if ctx.actor.kind != "installation":  # GitHub answers only a GitHub App (a bot) here
        raise not_found()
    run = r.gate_runs.get(ctx.int_param("run_id"))
    if run is None:
        raise not_found()
    app_id = ctx.emu.app.app_id
    env, state, comment = ctx.arg("environment_name"), ctx.arg("state"), ctx.arg("comment") or ""
    with ctx.emu.lock:
        if env != run.environment or app_id not in run.apps or app_id in run.reviews or run.state != "waiting":
            raise _refused(f"No pending custom deployment requests in workflow run `{run.id}` to approve or reject")
        if len(comment) > MAX_COMMENT:
            raise _refused(f"Comment exceeded maximum length of {MAX_COMMENT} characters.")
        if not state and comment:  # a comment alone is posted on the run and leaves it waiting
            if len(run.comments) >= MAX_COMMENTS:
                raise _refused(f"You have exceeded the maximum allowed comments of {MAX_COMMENTS} for the pending "
                               f"approval in environment {env}.")
            run.comments.append(comment)
            return Reply(204)
        if state not in ("approved", "rejected"):
            raise _refused("Invalid state provided")
        if run.failing_reviews > 0:
            run.failing_reviews -= 1
            raise _refused("There was a problem approving one of the gates")
        run.reviews[app_id] = (state, comment)
    return Reply(204)
