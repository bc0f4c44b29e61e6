"""GitHub at its edges: empty repositories, listing limits and body sizes, as GitHub answers them.

- An empty repository (no commit, no ref) answers 409 `Git Repository is empty.` on the commits
  endpoints and the whole Git Database API, and 404 `This repository is empty.` on contents.
- A pull request's files are listed up to 3,000 (the rest are not listed; `changed_files` on the
  pull request still counts them all); a recursive tree over 100,000 entries or 7 MB is cut short
  with `truncated: true`. `Limits` holds these numbers so tests can lower them.
- Comment and pull request bodies over 65,536 characters get GitHub's 422 (check run output limits
  live with the check runs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gating.testing.emulator_http import ApiError, Ctx

EMPTY_MESSAGE = "Git Repository is empty."
EMPTY_CONTENTS_MESSAGE = "This repository is empty."
MAX_BODY_CHARS = 65536  # issue and pull request bodies, comments: "maximum is 65536 characters"

DOCS = {
    "repos/list-commits": "https://docs.github.com/rest/commits/commits#list-commits",
    "repos/get-commit": "https://docs.github.com/rest/commits/commits#get-a-commit",
    "git/get-tree": "https://docs.github.com/rest/git/trees#get-a-tree",
    "git/create-tree": "https://docs.github.com/rest/git/trees#create-a-tree",
    "git/get-blob": "https://docs.github.com/rest/git/blobs#get-a-blob",
    "git/create-blob": "https://docs.github.com/rest/git/blobs#create-a-blob",
    "git/get-commit": "https://docs.github.com/rest/git/commits#get-a-commit-object",
    "git/create-commit": "https://docs.github.com/rest/git/commits#create-a-commit",
    "git/get-ref": "https://docs.github.com/rest/git/refs#get-a-reference",
    "git/list-matching-refs": "https://docs.github.com/rest/git/refs#list-matching-references",
    "git/create-ref": "https://docs.github.com/rest/git/refs#create-a-reference",
    "git/update-ref": "https://docs.github.com/rest/git/refs#update-a-reference",
    "git/delete-ref": "https://docs.github.com/rest/git/refs#delete-a-reference",
    "repos/get-content": "https://docs.github.com/rest/repos/contents#get-repository-content",
    "issues/create-comment": "https://docs.github.com/rest/issues/comments#create-an-issue-comment",
    "issues/create": "https://docs.github.com/rest/issues/issues#create-an-issue",
    "issues/update-comment": "https://docs.github.com/rest/issues/comments#update-an-issue-comment",
    "pulls/create": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
    "pulls/update": "https://docs.github.com/rest/pulls/pulls#update-a-pull-request",
}


# What answers 409 (or, for contents, 404) while the repository has no commit.
EMPTY_OPERATIONS = frozenset(op for op in DOCS if op.startswith("git/")) | {
    "repos/list-commits", "repos/get-commit", "repos/get-content"}


@dataclass
class Limits:
    """GitHub's numbers; a test lowers them (`emu.limits.pull_files = 5`) to stay fast."""

    pull_files: int = 3000  # GET .../pulls/{n}/files lists at most this many
    tree_entries: int = 100_000  # a recursive tree with more entries is truncated
    tree_bytes: int = 7 * 1024 * 1024  # ... or with a larger JSON body
    body_chars: int = MAX_BODY_CHARS


def refuse_empty(ctx: Ctx) -> None:
    """GitHub's answer when the repository has no commit yet, for the endpoints that need one."""
    op = ctx.op.operation_id
    if ctx.repo is None or op not in EMPTY_OPERATIONS:
        return
    if ctx.emu.bare(ctx.repo).refs():
        return
    if op == "repos/get-content":
        raise ApiError(404, EMPTY_CONTENTS_MESSAGE, doc=DOCS[op])
    raise ApiError(409, EMPTY_MESSAGE, doc=DOCS[op])


def check_body(ctx: Ctx, resource: str) -> None:
    """422 for a comment or pull request body over GitHub's limit, with GitHub's error entry."""
    body = ctx.arg("body")
    limit = ctx.emu.limits.body_chars
    if isinstance(body, str) and len(body) > limit:
        raise ApiError(422, "Validation Failed", doc=DOCS[ctx.op.operation_id], errors=[
            {"resource": resource, "code": "unprocessable", "field": "data",
             "message": f"Body is too long (maximum is {limit} characters)"}])


def cut_tree(items: list[dict[str, Any]], limits: Limits) -> tuple[list[dict[str, Any]], bool]:
    """A recursive listing as GitHub returns it: at most `tree_entries` entries and about
    `tree_bytes` of JSON; (entries kept, truncated)."""
    kept: list[dict[str, Any]] = []
    size = 0
    for item in items:
        size += len(json.dumps(item)) + 1
        if len(kept) >= limits.tree_entries or size > limits.tree_bytes:
            return kept, True
        kept.append(item)
    return kept, False
