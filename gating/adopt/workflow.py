"""The workflow `gating init` writes: the shipped examples/workflows/gating.yml, taken as it is."""

from __future__ import annotations

import sysconfig
from pathlib import Path

WORKFLOW_PATH = ".github/workflows/gating.yml"
_BESIDE = Path(__file__).resolve().parents[2] / "examples" / "workflows" / "gating.yml"


def template_path() -> Path:
    """The example beside the source tree (a checkout), else the copy a wheel installed under share/."""
    installed = Path(sysconfig.get_path("data")) / "share" / "gating" / "examples" / "workflows" / "gating.yml"
    for candidate in (_BESIDE, installed):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"the example workflow is missing: looked for {_BESIDE} and {installed}")


def workflow_text(template: str, default_branch: str) -> str:
    """The template for a repository whose default branch is `default_branch` (the example says main)."""
    if default_branch == "main":
        return template
    return template.replace("branches: [main]", f"branches: [{default_branch}]", 1)
