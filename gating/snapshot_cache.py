"""Snapshots cached on disk by git tree id, inside the repository's git directory.

The key is the tree id plus a fingerprint of the code that builds snapshots, so a cached entry is
exactly what building it again would give. Writes are atomic (write, then rename), so two processes
sharing a repository never read half a file. Entries are `marshal` data (plain dicts, lists and
strings; loading them runs no code), several times faster to load than JSON for a large system.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import gating
from gating.git import Git

_SOURCES = ("manifest.py", "manifest_schema.py", "snapshot.py", "snapshot_cache.py")


def _fingerprint() -> str:
    h = hashlib.sha256(f"{gating.__version__} {sys.version_info[:2]} marshal {marshal.version}".encode())
    here = Path(__file__).resolve().parent
    for name in _SOURCES:
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


FINGERPRINT = _fingerprint()


class DiskSnapshotCache:
    def __init__(self, directory: str | os.PathLike[str]):
        self.dir = Path(directory)

    @classmethod
    def for_repo(cls, git: Git) -> DiskSnapshotCache:
        return cls(git.common_dir / "gating" / "snapshots")

    def key(self, tree: str, manifest_path: str) -> str:
        return hashlib.sha256(f"{FINGERPRINT}\0{tree}\0{manifest_path}".encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            value = marshal.loads((self.dir / f"{key}.snap").read_bytes())
        except (OSError, ValueError, EOFError, TypeError):
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(marshal.dumps(value))
                os.replace(tmp, self.dir / f"{key}.snap")
            except ValueError:  # a value marshal cannot hold: leave it uncached
                os.unlink(tmp)
        except OSError:
            pass  # a cache that cannot be written only costs time
