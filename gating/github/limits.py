"""GitHub's size limits on what we write, applied at the one place every write goes through.

A check run's `output.summary` and `output.text` take 65,535 characters each, a comment or pull
request body 65,536; more is a 422, and a reply that fails that way leaves the user with nothing.
`fit` cuts on a line boundary (counting UTF-8 bytes, which is stricter than characters), closes an
open code fence or <details>, says that it cut, and keeps a trailing `<!-- marker -->` line that
later runs look for.
"""

from __future__ import annotations

import re
from typing import Any

MAX_TEXT = 65_535  # output.summary, output.text; comment and pull request bodies (GitHub: 65,536)
MAX_TITLE = 255  # output.title and pull request titles: kept short of GitHub's limits
_MARKER = re.compile(r"\n?<!-- [^\n]*-->\n?\Z")


def fit(text: str, limit: int = MAX_TEXT, where: str = "") -> str:
    """`text` within `limit` UTF-8 bytes, with a visible note when it had to be cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    m = _MARKER.search(text)
    marker = m.group(0) if m else ""
    body = text[: m.start()] if m else text
    note_room = 400 + len(marker.encode("utf-8"))
    cut = body.encode("utf-8")[: max(0, limit - note_room)].decode("utf-8", "ignore")
    if "\n" in cut:
        cut = cut.rsplit("\n", 1)[0]
    closers = []
    if sum(1 for line in cut.splitlines() if line.lstrip().startswith("```")) % 2:
        closers.append("```")
    closers += ["</details>"] * max(0, cut.count("<details>") - cut.count("</details>"))
    rest = f"; the full report is in {where}" if where else ""
    note = (f"\n\n---\n✂️ **Truncated**: showing {len(cut):,} of {len(body):,} characters (GitHub allows "
            f"{MAX_TEXT:,} here){rest}.\n")
    return cut + ("\n" + "\n".join(closers) if closers else "") + note + marker.lstrip("\n")


def fit_title(title: str, limit: int = MAX_TITLE) -> str:
    return title if len(title) <= limit else title[: limit - 1].rstrip() + "…"


def fit_output(body: dict[str, Any]) -> dict[str, Any]:
    """A check run create/update body with its output's title, summary and text within GitHub's limits."""
    out = body.get("output")
    if not isinstance(out, dict):
        return body
    fitted = dict(out)
    if isinstance(fitted.get("title"), str):
        fitted["title"] = fit_title(fitted["title"])
    for key in ("summary", "text"):
        if isinstance(fitted.get(key), str):
            fitted[key] = fit(fitted[key])
    return {**body, "output": fitted}
