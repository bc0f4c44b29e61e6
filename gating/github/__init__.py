"""The one place that talks to the GitHub REST API.

- basics.py: the GitHubError family, the App's private key, the API's URL and version (no PyGithub).
- client.py: PyGithub configured never to sleep or throttle (App JWT, installation tokens cached
  until shortly before they expire, one refresh on 401), its errors as the GitHubError family, rate
  limits raised as RateLimited for the job queue.
- repo.py: the repository calls the App needs, and `ApiRevision`, a `RevisionReader` over the git
  trees and blobs API (a snapshot at any SHA without a clone).
- checks.py: the Action's check runs and its sticky pull request comment.
- gitdb.py: refs, trees and commits over the Git Database API.
- rollback.py: the rollback's pull request, replies and reactions.
- notes.py: `GitDatabaseNotes`, the GitHub backend of the audit log (gating/audit/log.py).
- facts.py: `RepoFacts`, a repository as the audit trail reads it (gating.audit.record.Source).
- witness.py: check runs by name across commits (the App's witnesses, read back).

Every public name is importable from `gating.github` itself, and loads its module (and PyGithub) only
when first used. Secrets never reach a log line or a repr.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gating.github.basics import (
        API_VERSION,
        DEFAULT_API_URL,
        EmptyRepository,
        GitHubError,
        MissingPermission,
        NotFound,
        PrivateKeyError,
        RateLimited,
        Token,
        load_private_key,
    )
    from gating.github.checks import (
        ANNOTATIONS_PER_REQUEST,
        COMMENT_MARKER,
        finish_check_run,
        start_check_run,
        upsert_comment,
    )
    from gating.github.client import (
        JWT_BACKDATE,
        JWT_LIFETIME,
        TOKEN_REFRESH_MARGIN,
        GitHubApp,
        GitHubClient,
        RetryPolicy,
        raw,
        token_client,
    )
    from gating.github.gitdb import (
        commit_tree,
        create_blob,
        create_commit,
        create_ref,
        create_tree,
        git_commit,
        ref_sha,
        update_ref,
    )
    from gating.github.notes import GitDatabaseNotes
    from gating.github.repo import ApiRevision, BlobCache, Repo
    from gating.github.rollback import comment, commit_sha, create_pull, open_pull_for, react, repository

_WHERE = {
    "ANNOTATIONS_PER_REQUEST": "gating.github.checks",
    "API_VERSION": "gating.github.basics",
    "ApiRevision": "gating.github.repo",
    "BlobCache": "gating.github.repo",
    "COMMENT_MARKER": "gating.github.checks",
    "DEFAULT_API_URL": "gating.github.basics",
    "EmptyRepository": "gating.github.basics",
    "GitDatabaseNotes": "gating.github.notes",
    "GitHubApp": "gating.github.client",
    "GitHubClient": "gating.github.client",
    "GitHubError": "gating.github.basics",
    "JWT_BACKDATE": "gating.github.client",
    "JWT_LIFETIME": "gating.github.client",
    "MissingPermission": "gating.github.basics",
    "NotFound": "gating.github.basics",
    "PrivateKeyError": "gating.github.basics",
    "RateLimited": "gating.github.basics",
    "Repo": "gating.github.repo",
    "RetryPolicy": "gating.github.client",
    "TOKEN_REFRESH_MARGIN": "gating.github.client",
    "Token": "gating.github.basics",
    "comment": "gating.github.rollback",
    "commit_sha": "gating.github.rollback",
    "commit_tree": "gating.github.gitdb",
    "create_blob": "gating.github.gitdb",
    "create_commit": "gating.github.gitdb",
    "create_pull": "gating.github.rollback",
    "create_ref": "gating.github.gitdb",
    "create_tree": "gating.github.gitdb",
    "finish_check_run": "gating.github.checks",
    "git_commit": "gating.github.gitdb",
    "load_private_key": "gating.github.basics",
    "open_pull_for": "gating.github.rollback",
    "raw": "gating.github.client",
    "react": "gating.github.rollback",
    "ref_sha": "gating.github.gitdb",
    "repository": "gating.github.rollback",
    "start_check_run": "gating.github.checks",
    "token_client": "gating.github.client",
    "update_ref": "gating.github.gitdb",
    "upsert_comment": "gating.github.checks",
}

__all__ = [
    "ANNOTATIONS_PER_REQUEST", "API_VERSION", "COMMENT_MARKER", "DEFAULT_API_URL", "JWT_BACKDATE",
    "JWT_LIFETIME", "TOKEN_REFRESH_MARGIN",
    "ApiRevision", "BlobCache", "EmptyRepository", "GitDatabaseNotes", "GitHubApp", "GitHubClient", "GitHubError",
    "MissingPermission", "NotFound",
    "PrivateKeyError", "RateLimited", "Repo", "RetryPolicy", "Token",
    "comment", "commit_sha", "commit_tree", "create_blob", "create_commit", "git_commit", "raw", "create_pull", "create_ref",
    "create_tree", "finish_check_run", "load_private_key", "open_pull_for", "react", "ref_sha", "repository",
    "start_check_run", "token_client", "update_ref", "upsert_comment",
]


def __getattr__(name: str) -> Any:
    """Names load their module on first use: importing gating.github (or gating.github.limits) does
    not import PyGithub, so the core and `gating --help` stay light."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'gating.github' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
