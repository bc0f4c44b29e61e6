"""Re-evaluating `gating / approval` when nothing in the pull request changed: the "Re-run" buttons
(`check_run.rerequested` is handled in approvals.py; here "Re-run all checks", `check_suite.rerequested`)
and an installation that accepted the App's new permissions (`installation.new_permissions_accepted`:
every open pull request of every repository it covers, since their checks may say a permission is
missing)."""

from __future__ import annotations

from gating.github import Repo
from gating.server.approval_evaluation import evaluate_and_publish
from gating.server.handlers import JobContext, Payload, Registry

MAX_REPOSITORIES = 300  # an installation's repositories re-evaluated per accepted permission change
MAX_PULLS = 300  # open pull requests per repository


def register(registry: Registry) -> None:
    registry.on("check_suite", "rerequested", key=_suite_key, coalesce=True)(on_suite_rerequested)
    registry.on("installation", "new_permissions_accepted", key=_installation_key,
                coalesce=True)(on_permissions_accepted)


def _suite_key(p: Payload) -> str | None:
    prs = (p.get("check_suite") or {}).get("pull_requests") or []
    repo = (p.get("repository") or {}).get("full_name")
    return f"{repo}#{prs[0]['number']}" if len(prs) == 1 else None


def _installation_key(p: Payload) -> str | None:
    inst = (p.get("installation") or {}).get("id")
    return f"installation:{inst}" if inst is not None else None


def on_suite_rerequested(ctx: JobContext) -> None:
    suite = ctx.payload["check_suite"]
    if str((suite.get("app") or {}).get("id", ctx.settings.app_id)) != str(ctx.settings.app_id):
        return  # another app's suite: its own app re-runs it
    repo = ctx.repo()
    numbers = [p["number"] for p in suite.get("pull_requests") or []]
    if not numbers:  # forks: GitHub leaves pull_requests empty, so look the head SHA up
        numbers = [p["number"] for p in repo.open_pulls() if p["head"]["sha"] == suite["head_sha"]]
    for n in numbers:
        ctx.log.info("%s#%s (re-run): %s", repo.full_name, n, evaluate_and_publish(ctx, repo, int(n)))


def on_permissions_accepted(ctx: JobContext) -> None:
    inst = int(ctx.payload["installation"]["id"])
    ctx.github.forget(inst)  # the cached token still has the old permissions
    client = ctx.installation()
    for r in client.paginate("/installation/repositories", key="repositories", limit=MAX_REPOSITORIES):
        repo = Repo(client, r["full_name"])
        for pr in list(client.paginate(f"{repo.path}/pulls", state="open", limit=MAX_PULLS)):
            ctx.log.info("%s#%s (permissions accepted): %s", repo.full_name, pr["number"],
                         evaluate_and_publish(ctx, repo, int(pr["number"])))
