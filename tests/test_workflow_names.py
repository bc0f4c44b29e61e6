"""What the pull request's check list shows for the example workflows: no job reads like the check runs
gating posts, and the cache does not gain an entry on every run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from gating.policy.render import APPROVAL_CHECK

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted([*(ROOT / "examples" / "workflows").glob("*.yml"), *(ROOT / ".github" / "workflows").glob("*.yml")])
EVAL_CHECK = "gating / eval"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_no_job_is_listed_under_a_check_run_name(path: Path) -> None:
    wf = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    for job_id, job in wf["jobs"].items():
        shown = f"{wf.get('name', path.name)} / {job.get('name', job_id)}"  # as GitHub lists a job's check
        assert shown not in (EVAL_CHECK, APPROVAL_CHECK), f"{path.name}: job {job_id!r} is listed as {shown!r}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_cache_keys_are_stable_across_runs(path: Path) -> None:
    wf = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    for job in wf["jobs"].values():
        for step in job.get("steps", []):
            if not str(step.get("uses", "")).startswith("actions/cache"):
                continue
            key = step["with"]["key"]
            assert not re.search(r"github\.(run_id|run_number|run_attempt|sha)\b", key), key
            assert "hashFiles(" in key and step["with"].get("restore-keys"), key
