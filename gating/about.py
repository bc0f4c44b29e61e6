"""What this package is and where it is published: its version and its GitHub repository.

The version is written once (`gating.__version__`, which pyproject reads) and the repository once
(pyproject's [project.urls] `Repository`); the README, the example workflows and `gating init` take
the `uses:` reference from `action_ref()`, and a test checks they agree.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import gating

DIST = "gating"
GITHUB_URL = re.compile(r"^https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?/?$")


def version() -> str:
    """The running code's version (the package's own `__version__`, also the wheel's metadata)."""
    return gating.__version__


def major() -> int:
    """The major version: the moving tag `v{major}` that `uses: OWNER/REPO@v{major}` follows."""
    return int(version().split(".", 1)[0])


@cache
def repository() -> str:
    """`owner/name` of the GitHub repository that publishes the Action, from the project URLs.

    A source checkout's pyproject.toml wins over installed metadata (an editable install's metadata
    is as old as the install)."""
    urls = _checkout_urls()
    if urls is None:
        from importlib import metadata  # here, as tomllib is: `gating --help` needs only the version

        try:
            urls = dict(u.split(", ", 1) for u in metadata.metadata(DIST).get_all("Project-URL") or [])
        except metadata.PackageNotFoundError:
            urls = {}
    found = GITHUB_URL.match(urls.get("Repository", ""))
    if not found:
        raise RuntimeError("pyproject.toml: [project.urls] Repository must be https://github.com/OWNER/NAME, "
                           f"got {urls.get('Repository')!r}")
    return found.group(1)


def action_ref() -> str:
    """What a workflow writes to use the Action: `owner/name@v{major}`."""
    return f"{repository()}@v{major()}"


def _checkout_urls() -> dict[str, str] | None:
    import tomllib

    path = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project") or {}
    except (OSError, ValueError):
        return None
    return dict(project.get("urls") or {}) if project.get("name") == DIST else None
