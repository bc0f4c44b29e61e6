"""The artifact of the fork pattern: the LLM system files of a pull request's head, collected by an
unprivileged `pull_request` run (`gating collect`) for a privileged `workflow_run` run to evaluate.

One JSON file, `gating-collect.json`:

    {"format": "gating-collect/1", "repository": "acme/bot", "pull_number": 7,
     "head_sha": "…", "base_sha": "…", "config": "gating.yml",
     "files": {"prompts/answer.md": {"sha256": "…", "size": 120, "base64": "…"}, …}}

A fork's pull request runs the fork's own workflow files, so whoever opened it wrote this artifact.
Reading it is therefore hostile input: its size is bounded before it is parsed, its shape and every
path are checked, nothing in it is executed, and what it claims (the head, the pull request, every
file) is verified elsewhere (gating/check/fork.py) against the event, the API and git.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import posixpath
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gating.check.context import ContextError
from gating.git.repository import Git
from gating.git.revision import GitRevision
from gating.system.manifest import ManifestError
from gating.system.snapshot import build_snapshot

FORMAT = "gating-collect/1"
FILE_NAME = "gating-collect.json"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # the artifact file; the files inside are base64 (4/3 larger)
MAX_FILES = 10_000
_SHA = re.compile(r"^[0-9a-f]{40}$")


class ArtifactRefused(ContextError):
    """The artifact is missing, too large, malformed, or claims something that is not true."""


@dataclass(frozen=True)
class Collected:
    """What an artifact says about a pull request's head (claims until verified)."""

    repository: str | None
    pull_number: int
    head_sha: str
    base_sha: str | None
    config: str
    files: dict[str, bytes]


def system_files(g: Git, rev: str, config: str) -> dict[str, bytes]:
    """The files of the LLM system at `rev` (the manifest and every file it names), read from git
    objects; a manifest that does not parse still yields itself, so the evaluation can say why."""
    try:
        snap = build_snapshot(GitRevision(g, rev), config)
    except ManifestError:
        data = g.show_file(rev, config)
        return {config: data} if data is not None else {}
    return {path: snap.contents[path] for path in snap.files}


def collect(g: Git, head: str, config: str, *, repository: str | None, pull_number: int,
            base_sha: str | None) -> Collected:
    return Collected(repository, pull_number, head, base_sha, config, system_files(g, head, config))


def to_json(c: Collected) -> bytes:
    files = {p: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b), "base64": base64.b64encode(b).decode()}
             for p, b in sorted(c.files.items())}
    doc = {"format": FORMAT, "repository": c.repository, "pull_number": c.pull_number, "head_sha": c.head_sha,
           "base_sha": c.base_sha, "config": c.config, "files": files}
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def write(c: Collected, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / FILE_NAME
    path.write_bytes(to_json(c))
    return path


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    target = path / FILE_NAME if path.is_dir() and not path.is_symlink() else path
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        raise ArtifactRefused(f"no {FILE_NAME} at {target}: the collect run uploaded no artifact "
                              "(did it fail, or was it skipped?)") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise ArtifactRefused(f"{target} is not a regular file (a link or a device is never followed)")
    if st.st_size > max_bytes:
        raise ArtifactRefused(f"{target} is {st.st_size} bytes, more than the {max_bytes} allowed "
                              "(--max-artifact-bytes)")
    fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ArtifactRefused(f"{target} grew past the {max_bytes} bytes allowed while it was read")
    return data


def safe_path(path: Any) -> str | None:
    """A repository-relative path in git's form, or None for anything that could leave the tree."""
    if not isinstance(path, str) or not path or len(path) > 4096 or "\\" in path or "\0" in path:
        return None
    if path.startswith("/") or posixpath.normpath(path) != path or path.split("/")[0] in ("..", ".", ".git"):
        return None
    return path


def _file(path: str, entry: Any) -> bytes:
    if not isinstance(entry, dict) or not isinstance(entry.get("base64"), str):
        raise ArtifactRefused(f"artifact file {path!r} has no base64 content")
    try:
        data = base64.b64decode(entry["base64"], validate=True)
    except (binascii.Error, ValueError):
        raise ArtifactRefused(f"artifact file {path!r} is not valid base64") from None
    if entry.get("size") != len(data) or entry.get("sha256") != hashlib.sha256(data).hexdigest():
        raise ArtifactRefused(f"artifact file {path!r} does not match its own sha256 and size")
    return data


def read(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Collected:
    """The artifact's claims, or ArtifactRefused naming what is wrong with it."""
    raw = _read_bounded(path, max_bytes)
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ArtifactRefused(f"the artifact is not JSON: {str(e)[:200]}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ArtifactRefused(f"the artifact's format is {got!r}, not {FORMAT!r}")
    head, base, number = doc.get("head_sha"), doc.get("base_sha"), doc.get("pull_number")
    if not isinstance(head, str) or not _SHA.match(head):
        raise ArtifactRefused(f"the artifact's head_sha {str(head)[:60]!r} is not a commit sha")
    if base is not None and (not isinstance(base, str) or not _SHA.match(base)):
        raise ArtifactRefused(f"the artifact's base_sha {str(base)[:60]!r} is not a commit sha")
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise ArtifactRefused(f"the artifact's pull_number {str(number)[:60]!r} is not a pull request number")
    repo, config = doc.get("repository"), safe_path(doc.get("config"))
    if repo is not None and not isinstance(repo, str):
        raise ArtifactRefused("the artifact's repository is not a name")
    if config is None:
        raise ArtifactRefused(f"the artifact's config {str(doc.get('config'))[:60]!r} is not a path in the repository")
    entries = doc.get("files")
    if not isinstance(entries, dict):
        raise ArtifactRefused("the artifact has no `files` object")
    if len(entries) > MAX_FILES:
        raise ArtifactRefused(f"the artifact lists {len(entries)} files, more than the {MAX_FILES} allowed")
    files: dict[str, bytes] = {}
    for p, entry in entries.items():
        if safe_path(p) is None:
            raise ArtifactRefused(f"the artifact names the path {str(p)[:100]!r}, which is not a path in the repository")
        files[p] = _file(p, entry)
    return Collected(repo, number, head, base, config, files)
