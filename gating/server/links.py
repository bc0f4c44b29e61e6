"""Where the App's pages live, for links from check runs (no import of the pages themselves)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gating.server.settings import Settings

PREFIX = "/pages"


def report_url(settings: Settings, full_name: str, sha: str) -> str | None:
    """Where a check run's `details_url` points: the eval report page, when the App has pages."""
    if not settings.public_url:
        return None
    return f"{settings.public_url.rstrip('/')}{PREFIX}/{full_name}/report/{sha}"
