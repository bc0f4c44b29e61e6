"""Response cache and cassettes: both keyed by the rendered request, never holding errors.

The cache is one small JSON file per key, written to a temporary file and renamed into place, so
two processes sharing a cache directory never read a half-written entry. Cassettes are committed
JSONL files beside a dataset (`evals/cassettes/<dataset stem>.jsonl`), one sorted line per key, so a
re-recording diffs cleanly in review.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gating.evals.providers import ChatRequest, Completion

CACHE_VERSION = 1


def request_key(req: ChatRequest) -> str:
    material = {"v": CACHE_VERSION, **req.key_material()}
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()


class ResponseCache:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self._made: set[Path] = set()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Completion | None:
        try:
            data = json.loads(self._path(key).read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or "text" not in data:
            return None
        return Completion.from_dict(data, "cache")

    def put(self, key: str, completion: Completion) -> None:
        path = self._path(key)
        if path.parent not in self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(path.parent)
            ignore = self.root / ".gitignore"
            if not ignore.exists():
                _atomic_write(ignore, b"# response cache of gating eval\n*\n")
        _atomic_write(path, json.dumps(completion.to_dict(), sort_keys=True).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cassette_path(dataset_path: str) -> str:
    """evals/golden.jsonl -> evals/cassettes/golden.jsonl (repository-relative, posix)."""
    d, name = posixpath.split(dataset_path)
    stem = posixpath.splitext(name)[0]
    return posixpath.join(d, "cassettes", f"{stem}.jsonl")


def parse_cassette(path: str, data: bytes) -> dict[str, dict[str, Any]]:
    """key -> entry. A bad line is an error naming the file and line (a cassette is reviewed code)."""
    out: dict[str, dict[str, Any]] = {}
    for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            key = entry["key"]
            entry["response"]["text"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: not a cassette entry ({e})") from None
        out[key] = entry
    return out


def cassette_entry(key: str, req: ChatRequest, completion: Completion) -> dict[str, Any]:
    return {"key": key, "request": req.key_material(), "response": completion.to_dict()}


def render_cassette(entries: Iterable[dict[str, Any]]) -> bytes:
    lines = [json.dumps(e, sort_keys=True, ensure_ascii=False) for e in sorted(entries, key=lambda e: e["key"])]
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


def write_cassette(path: Path, new: dict[str, dict[str, Any]]) -> int:
    """Merge new entries into the cassette file on disk (kept entries win nothing: new replace old)."""
    existing: dict[str, dict[str, Any]] = {}
    if path.is_file():
        existing = parse_cassette(str(path), path.read_bytes())
    existing.update(new)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, render_cassette(existing.values()))
    return len(new)
