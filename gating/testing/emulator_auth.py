"""Credentials as GitHub checks them: App JWTs, installation tokens, user tokens, permissions."""

from __future__ import annotations

import functools
import secrets
import time
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

MAX_JWT_LIFETIME = 600  # GitHub: exp at most 10 minutes in the future
IAT_SKEW = 60
TOKEN_LIFETIME = 3600

DEFAULT_PERMISSIONS = {
    "contents": "write", "pull_requests": "write", "checks": "write", "issues": "write",
    "deployments": "write", "statuses": "write", "metadata": "read", "members": "read",
}
READ_ONLY_PERMISSIONS = {k: "read" for k in DEFAULT_PERMISSIONS}

# operationId -> permissions that grant it (any one suffices), as X-Accepted-GitHub-Permissions lists.
_R = "read"
_W = "write"
OPERATION_PERMISSIONS: dict[str, list[tuple[str, str]]] = {
    "repos/get": [("metadata", _R)],
    "repos/list-branches": [("contents", _R)],
    "repos/get-branch": [("contents", _R)],
    "repos/get-branch-protection": [("administration", _R)],
    "repos/update-branch-protection": [("administration", _W)],
    "repos/delete-branch-protection": [("administration", _W)],
    "repos/get-content": [("contents", _R)],
    "repos/list-commits": [("contents", _R)],
    "repos/get-commit": [("contents", _R)],
    "repos/compare-commits-with-basehead": [("contents", _R)],
    "repos/merge": [("contents", _W)],
    "repos/get-collaborator-permission-level": [("metadata", _R)],
    "git/create-blob": [("contents", _W)],
    "git/get-blob": [("contents", _R)],
    "git/create-tree": [("contents", _W)],
    "git/get-tree": [("contents", _R)],
    "git/create-commit": [("contents", _W)],
    "git/get-commit": [("contents", _R)],
    "git/get-ref": [("contents", _R)],
    "git/list-matching-refs": [("contents", _R)],
    "git/create-ref": [("contents", _W)],
    "git/update-ref": [("contents", _W)],
    "git/delete-ref": [("contents", _W)],
    "pulls/list": [("pull_requests", _R)],
    "pulls/create": [("pull_requests", _W)],
    "pulls/get": [("pull_requests", _R)],
    "pulls/update": [("pull_requests", _W)],
    "pulls/list-files": [("pull_requests", _R)],
    "pulls/list-commits": [("pull_requests", _R)],
    "pulls/list-reviews": [("pull_requests", _R)],
    "pulls/create-review": [("pull_requests", _W)],
    "pulls/get-review": [("pull_requests", _R)],
    "pulls/dismiss-review": [("pull_requests", _W)],
    "pulls/merge": [("contents", _W)],
    "issues/get": [("issues", _R), ("pull_requests", _R)],
    "issues/create": [("issues", _W)],
    "issues/list-comments": [("issues", _R), ("pull_requests", _R)],
    "issues/create-comment": [("issues", _W), ("pull_requests", _W)],
    "issues/get-comment": [("issues", _R), ("pull_requests", _R)],
    "issues/update-comment": [("issues", _W), ("pull_requests", _W)],
    "issues/list-labels-on-issue": [("issues", _R), ("pull_requests", _R)],
    "issues/add-labels": [("issues", _W), ("pull_requests", _W)],
    "reactions/list-for-issue-comment": [("issues", _R), ("pull_requests", _R)],
    "reactions/create-for-issue-comment": [("issues", _W), ("pull_requests", _W)],
    "reactions/list-for-issue": [("issues", _R), ("pull_requests", _R)],
    "reactions/create-for-issue": [("issues", _W), ("pull_requests", _W)],
    "checks/create": [("checks", _W)],
    "checks/get": [("checks", _R)],
    "checks/update": [("checks", _W)],
    "checks/list-annotations": [("checks", _R)],
    "checks/list-for-ref": [("checks", _R)],
    "checks/list-suites-for-ref": [("checks", _R)],
    "repos/list-deployments": [("deployments", _R)],
    "repos/create-deployment": [("deployments", _W)],
    "repos/get-deployment": [("deployments", _R)],
    "repos/list-deployment-statuses": [("deployments", _R)],
    "repos/create-deployment-status": [("deployments", _W)],
    "actions/review-custom-gates-for-run": [("deployments", _W)],
    "teams/get-membership-for-user-in-org": [("members", _R)],
    "teams/list-members-in-org": [("members", _R)],
}
JWT_OPERATIONS = {"apps/get-authenticated", "apps/list-installations", "apps/get-installation",
                  "apps/create-installation-access-token", "apps/get-repo-installation"}
OPEN_OPERATIONS = {"users/get-by-username", "rate-limit/get", "apps/create-from-manifest"}
WRITE_OPERATIONS_FOR_ANY_READER = {  # on GitHub anyone who can read may comment, react and review
    "issues/create-comment", "reactions/create-for-issue-comment", "reactions/create-for-issue",
    "pulls/create-review", "pulls/create",
}


@dataclass
class AppIdentity:
    """The emulated GitHub App: what its owner would copy from the App settings page."""

    app_id: int
    slug: str
    private_key_pem: str
    public_key_pem: str
    installation_id: int
    webhook_secret: str
    client_id: str = "Iv1.emulated0000001"
    name: str = "gating"
    client_secret: str = field(default_factory=lambda: secrets.token_hex(20), repr=False)  # the OAuth web flow's

    @property
    def bot_login(self) -> str:
        return f"{self.slug}[bot]"

    def jwt(self, now: float | None = None, ttl: int = 540, iat_offset: int = -60,
            key_pem: str | None = None) -> str:
        """An App JWT as GitHub's docs describe it (RS256, iss = App id)."""
        now = time.time() if now is None else now
        claims = {"iat": int(now) + iat_offset, "exp": int(now) + ttl, "iss": str(self.app_id)}
        return jwt.encode(claims, key_pem or self.private_key_pem, algorithm="RS256")


@functools.cache
def _process_key() -> tuple[str, str]:
    """One RSA key per process: generating 2048-bit keys per test would dominate test time."""
    return generate_key_pair()


def generate_key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


# GitHub Actions is an app too: a workflow's GITHUB_TOKEN is an installation token of it, so the
# check runs an Action posts with that token belong to it, not to the emulated App.
ACTIONS_APP_ID = 15368
ACTIONS_APP_SLUG = "github-actions"


def new_app_identity(app_id: int = 424242, installation_id: int = 4242001) -> AppIdentity:
    private, public = _process_key()
    return AppIdentity(app_id=app_id, slug="gating-emulated", private_key_pem=private, public_key_pem=public,
                       installation_id=installation_id, webhook_secret=secrets.token_hex(20))


@dataclass
class Token:
    value: str
    kind: str  # installation | user
    created_at: float
    expires_at: float | None
    permissions: dict[str, str] = field(default_factory=dict)
    repositories: list[str] | None = None  # repository names (not full names); None = all
    login: str | None = None
    app_id: int | None = None  # the app an installation token belongs to; None = the emulated App


class AuthError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def verify_app_jwt(token: str, app: AppIdentity, now: float) -> None:
    """GitHub's rules: RS256 signed by the App's key, iss = the App, iat not in the future (60 s of
    clock drift allowed), exp in the future but at most 10 minutes away."""
    try:
        claims = jwt.decode(token, app.public_key_pem, algorithms=["RS256"],
                            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                                     "require": ["iat", "exp", "iss"]})
    except jwt.PyJWTError as e:
        raise AuthError(401, "A JSON web token could not be decoded") from e
    if str(claims["iss"]) not in (str(app.app_id), app.client_id):
        raise AuthError(401, "'Issuer' claim ('iss') must be an Integer")
    iat, exp = claims["iat"], claims["exp"]
    if not isinstance(iat, int | float) or iat > now + IAT_SKEW:
        raise AuthError(401, "'Issued at' claim ('iat') must be an Integer representing the time that "
                             "the assertion was issued")
    if not isinstance(exp, int | float) or exp <= now:
        raise AuthError(401, "'Expiration time' claim ('exp') must be a numeric value representing the "
                             "future time at which the assertion expires")
    if exp > now + MAX_JWT_LIFETIME or exp - iat > MAX_JWT_LIFETIME + IAT_SKEW:
        raise AuthError(401, "'Expiration time' claim ('exp') is too far in the future")


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


def new_token_value(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(27)[:36]


def missing_permission(op_id: str, granted: dict[str, str]) -> str | None:
    """None when `granted` allows the operation, else the X-Accepted-GitHub-Permissions value."""
    need = OPERATION_PERMISSIONS.get(op_id)
    if not need:
        return None
    for perm, level in need:
        have = granted.get(perm)
        if have == "write" or (have == "read" and level == "read") or have == "admin":
            return None
    return ", ".join(f"{p}={lvl}" for p, lvl in need)


def user_permissions(repo_permission: str) -> dict[str, str]:
    """What a person's role on a repository lets their token do, in App permission terms."""
    if repo_permission in ("admin", "maintain", "write"):
        admin = {"administration": "write"} if repo_permission == "admin" else {}
        return {k: "write" for k in DEFAULT_PERMISSIONS} | {"metadata": "read", "members": "read"} | admin
    if repo_permission in ("triage", "read"):
        return dict(READ_ONLY_PERMISSIONS)
    return {}
