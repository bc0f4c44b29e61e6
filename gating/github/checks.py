"""gating check (the Action): check runs and the pull request comment.

The Action's GITHUB_TOKEN is an installation token of GitHub Actions' own App: a plain token client
(`token_client`), the check run it creates (in_progress at once, completed at the end) and, when
asked, one sticky comment on the pull request. Annotations go 50 per request, GitHub's limit.
"""

from __future__ import annotations

from typing import Any

from gating.github.limits import fit
from gating.github.repo import Repo

ANNOTATIONS_PER_REQUEST = 50
COMMENT_MARKER = "<!-- gating:eval -->"


def start_check_run(repo: Repo, name: str, head_sha: str, *, started_at: str, title: str, summary: str,
                    details_url: str | None = None, external_id: str | None = None) -> int:
    """Create the check run in_progress; returns its id."""
    body: dict[str, Any] = {"name": name, "head_sha": head_sha, "status": "in_progress", "started_at": started_at,
                            "output": {"title": title, "summary": summary}}
    if details_url:
        body["details_url"] = details_url
    if external_id:
        body["external_id"] = external_id
    return int(repo.create_check_run(body)["id"])


def _batches(items: list[dict[str, Any]], size: int = ANNOTATIONS_PER_REQUEST) -> list[list[dict[str, Any]]]:
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


def finish_check_run(repo: Repo, check_run_id: int | None, *, name: str, head_sha: str, conclusion: str,
                     completed_at: str, title: str, summary: str, text: str = "",
                     annotations: list[dict[str, Any]] | None = None, details_url: str | None = None) -> int:
    """Complete the check run (creating it when `check_run_id` is None); returns its id.

    Annotations beyond the first 50 are added by further updates (GitHub appends them), so n
    annotations cost ceil(n / 50) requests; the last request carries the conclusion.
    """
    batches = _batches(list(annotations or []))

    def output(batch: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"title": title, "summary": summary}
        if text:
            out["text"] = text
        if batch:
            out["annotations"] = batch
        return out

    final = {"status": "completed", "conclusion": conclusion, "completed_at": completed_at}
    if check_run_id is None:
        body: dict[str, Any] = {"name": name, "head_sha": head_sha, **final, "output": output(batches[0])}
        if details_url:
            body["details_url"] = details_url
        check_run_id = int(repo.create_check_run(body)["id"])
        held = len(batches[0])
        for batch in batches[1:]:
            repo.update_check_run(check_run_id, {"output": output(batch)}, annotations_before=held)
            held += len(batch)
        return check_run_id
    held = 0  # a started run carries no annotations
    for batch in batches[:-1]:
        repo.update_check_run(check_run_id, {"output": output(batch)}, annotations_before=held)
        held += len(batch)
    repo.update_check_run(check_run_id, {**final, "output": output(batches[-1])}, annotations_before=held)
    return check_run_id


def upsert_comment(repo: Repo, number: int, body: str, marker: str = COMMENT_MARKER) -> int:
    """Keep one comment per pull request: update the bot's comment carrying `marker`, else create it."""
    text = fit(f"{marker}\n{body}")
    for c in repo.issue_comments(number):
        if marker in (c.get("body") or "") and (c.get("user") or {}).get("type") == "Bot":
            repo.update_comment(int(c["id"]), text)
            return int(c["id"])
    return int(repo.create_comment(number, text)["id"])
