"""The one place that talks to the GitHub REST API.

- client.py: App authentication (a short RS256 JWT, installation tokens cached until shortly before
  they expire, one refresh on 401) and a client that retries 5xx and rate limits with backoff.
- repo.py: the repository calls the App needs, and `ApiRevision`, a `RevisionReader` over the git
  trees and blobs API (a snapshot at any SHA without a clone).
- checks.py: the Action's check runs and its sticky pull request comment.
- gitdb.py: refs, trees and commits over the Git Database API.
- rollback.py: the rollback's pull request, replies and reactions.
- notes.py: `GitDatabaseNotes`, the GitHub backend of the audit log (gating/audit/log.py).
- facts.py: `RepoFacts`, a repository as the audit trail reads it (gating.audit.record.Source).
- witness.py: check runs by name across commits (the App's witnesses, read back).

Every public name is importable from `gating.github` itself. Secrets never reach a log line or a repr.
"""

from gating.github.checks import (
    ANNOTATIONS_PER_REQUEST,
    COMMENT_MARKER,
    finish_check_run,
    start_check_run,
    upsert_comment,
)
from gating.github.client import (
    API_VERSION,
    DEFAULT_API_URL,
    JWT_BACKDATE,
    JWT_LIFETIME,
    TOKEN_REFRESH_MARGIN,
    EmptyRepository,
    GitHubApp,
    GitHubClient,
    GitHubError,
    MissingPermission,
    NotFound,
    PrivateKeyError,
    RateLimited,
    RetryPolicy,
    Token,
    app_jwt,
    load_private_key,
    token_client,
)
from gating.github.gitdb import commit_tree, create_commit, create_ref, create_tree, ref_sha, update_ref
from gating.github.notes import GitDatabaseNotes
from gating.github.repo import ApiRevision, BlobCache, Repo
from gating.github.rollback import comment, commit_sha, create_pull, open_pull_for, react, repository

__all__ = [
    "ANNOTATIONS_PER_REQUEST", "API_VERSION", "COMMENT_MARKER", "DEFAULT_API_URL", "JWT_BACKDATE",
    "JWT_LIFETIME", "TOKEN_REFRESH_MARGIN",
    "ApiRevision", "BlobCache", "EmptyRepository", "GitDatabaseNotes", "GitHubApp", "GitHubClient", "GitHubError",
    "MissingPermission", "NotFound",
    "PrivateKeyError", "RateLimited", "Repo", "RetryPolicy", "Token",
    "app_jwt", "comment", "commit_sha", "commit_tree", "create_commit", "create_pull", "create_ref",
    "create_tree", "finish_check_run", "load_private_key", "open_pull_for", "react", "ref_sha", "repository",
    "start_check_run", "token_client", "update_ref", "upsert_comment",
]
