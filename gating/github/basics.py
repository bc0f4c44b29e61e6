"""What needs no HTTP client: the GitHubError family, the App's private key, GitHub's API URL and version.

Kept apart from client.py so that reading settings, or naming an error, does not import PyGithub.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gating.errors import GatingError, ServiceError

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"


class GitHubError(ServiceError):
    """GitHub answered with an error (or could not be reached: status 0)."""

    def __init__(self, status: int, message: str, method: str = "", path: str = "",
                 headers: Mapping[str, str] | None = None):
        self.status, self.method, self.path = status, method, path
        self.message = message
        self.headers: Mapping[str, str] = headers or {}
        where = f" ({method} {path})" if method else ""
        super().__init__(f"GitHub {status or 'unreachable'}{where}: {message}")


class NotFound(GitHubError):
    pass


class EmptyRepository(GitHubError):
    """The repository has no commit yet: GitHub answers 409 "Git Repository is empty." (404 "This
    repository is empty." for contents) to anything that needs one."""


EMPTY_MESSAGES = ("Git Repository is empty.", "This repository is empty.")


class MissingPermission(GitHubError):
    """403 "Resource not accessible by integration": the installation lacks a permission; `accepted`
    lists what GitHub would take (X-Accepted-GitHub-Permissions), e.g. ["members=read"]."""

    @property
    def accepted(self) -> list[str]:
        value = self.headers.get("x-accepted-github-permissions") or ""
        return [p.strip() for p in value.replace(",", ";").split(";") if p.strip()]


class RateLimited(GitHubError):
    """GitHub asked us to wait; `retry_after` says how long (the job queue tries again then)."""

    def __init__(self, status: int, message: str, retry_after: float, method: str = "", path: str = "",
                 headers: Mapping[str, str] | None = None):
        super().__init__(status, message, method, path, headers)
        self.retry_after = retry_after


# -- the App's private key ------------------------------------------------------------------------


class PrivateKeyError(GatingError):
    """The App's private key is missing or unusable (the message never contains the key)."""


def load_private_key(path: str | None = None, value: str | None = None) -> str:
    """The PEM text of the App's RSA key, from a file or an environment value; a value may have its
    newlines escaped as `\\n` or be base64-encoded, as Probot accepts."""
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise PrivateKeyError(f"cannot read the private key file {path}: {e.strerror}") from None
        where = f"the private key file {path}"
    elif value:
        text = value.replace("\\n", "\n").strip()
        if "-----BEGIN" not in text:
            try:
                text = base64.b64decode(text, validate=True).decode("utf-8")
            except ValueError:
                raise PrivateKeyError("PRIVATE_KEY is neither PEM text nor base64-encoded PEM") from None
        where = "PRIVATE_KEY"
    else:
        raise PrivateKeyError("no private key: set PRIVATE_KEY_PATH (a .pem file) or PRIVATE_KEY")
    try:
        key = load_pem_private_key(text.encode("utf-8"), password=None)
    except (ValueError, TypeError):
        raise PrivateKeyError(f"{where} does not hold a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PrivateKeyError(f"{where} is not an RSA key; GitHub Apps sign with RS256")
    return text


@dataclass(frozen=True)
class Token:
    token: str = field(repr=False)
    expires_at: float
