"""Snapshots cached on disk by git tree id, inside the repository's git directory.

The key is the tree id plus a fingerprint of the code that builds snapshots, so a cached entry is
exactly what building it again would give. Writes are atomic (write, then rename), so two processes
sharing a repository never read half a file. Entries are `marshal` data (plain dicts, lists and
strings; loading them runs no code), several times faster to load than JSON for a large system.

A hit touches its entry; entries untouched for KEEP_DAYS (those of old trees, or of an older
version of gating) and stray temporary files are removed once per process, at its first write, so
a store kept across CI runs does not grow for ever.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gating
from gating.git.repository import Git

# The code whose output is cached, as paths under gating/: a change to any of them is a new key.
_SOURCES = ("system/manifest.py", "system/schema.py", "system/snapshot.py", "system/canonical.py",
            "system/evidence.py",
            "git/snapshot_store.py")


def _fingerprint() -> str:
    h = hashlib.sha256(f"{gating.__version__} {sys.version_info[:2]} marshal {marshal.version}".encode())
    here = Path(__file__).resolve().parent.parent
    for name in _SOURCES:
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


FINGERPRINT = _fingerprint()
KEEP_DAYS = 14
_PRUNED: set[Path] = set()  # stores already pruned by this process


class DiskSnapshotCache:
    def __init__(self, directory: str | os.PathLike[str]):
        self.dir = Path(directory)

    @classmethod
    def for_repo(cls, git: Git) -> DiskSnapshotCache:
        return cls(git.common_dir / "gating" / "snapshots")

    def key(self, tree: str, manifest_path: str) -> str:
        return hashlib.sha256(f"{FINGERPRINT}\0{tree}\0{manifest_path}".encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.dir / f"{key}.snap"
        try:
            value = marshal.loads(path.read_bytes())
        except (OSError, ValueError, EOFError, TypeError):
            return None
        if not isinstance(value, dict):
            return None
        try:
            os.utime(path)  # in use: keep it
        except OSError:
            pass
        return value

    def prune(self, now: float | None = None) -> int:
        """Remove entries untouched for KEEP_DAYS and temporary files older than an hour; returns how many."""
        now = time.time() if now is None else now
        removed = 0
        for path in self.dir.glob("*"):
            limit = KEEP_DAYS * 86400 if path.suffix == ".snap" else 3600
            try:
                if path.suffix in (".snap", ".tmp") and now - path.stat().st_mtime > limit:
                    path.unlink()
                    removed += 1
            except OSError:
                pass
        return removed

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
            if self.dir not in _PRUNED:
                _PRUNED.add(self.dir)
                self.prune()
        except OSError:
            pass  # a cache that cannot be written only costs time
