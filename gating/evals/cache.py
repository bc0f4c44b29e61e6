"""Response cache and cassettes: both keyed by the rendered request, never holding errors.

Cassettes are the committed truth that replay serves; the cache is a local accelerator for live calls
only, keyed also by the server's base URL. The cache lives outside the work tree (in the repository's
git directory, which git never tracks, unless $GATING_CACHE_DIR says otherwise): a file a pull request
commits is never read as a cached answer.

The cache is a set of append-only segment files, one per writing process, so two processes sharing
a cache directory never write the same file and never read a half-written entry. Cassettes are committed
JSONL files beside a dataset (`evals/cassettes/<dataset stem>.jsonl`), one sorted line per key, so a
re-recording diffs cleanly in review.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gating import limits
from gating.evals.dataset import DatasetError
from gating.system.evidence import cassette_path

if TYPE_CHECKING:  # at run time only where an answer is read back: a merge of shards never loads the HTTP clients
    from gating.evals.providers import ChatRequest, Completion

__all__ = ["ResponseCache", "cache_key", "cache_location", "cassette_path", "parse_cassette", "request_key",
           "write_cassette"]

CACHE_VERSION = 1


def request_key(req: ChatRequest) -> str:
    """The cassette key: the rendered request alone, so a recording replays wherever it is run."""
    return _digest({"v": CACHE_VERSION, **req.key_material()})


def cache_key(req: ChatRequest, base_url: str | None) -> str:
    """The response-cache key: the request and the server it went to, so two servers never share answers."""
    return _digest({"v": CACHE_VERSION, **req.key_material(), "endpoint": base_url or ""})


def _digest(material: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()


class ResponseCache:
    """Append-only segment files: `seg-<id>.jsonl`, one `<key> <json>` line per response.

    Each process appends to a segment of its own, so writers never share a file; a reader indexes
    every segment at open and skips a torn last line (a writer still busy, or one that crashed).
    One file per entry would cost a file creation per response, which on some filesystems is a
    millisecond of kernel time; appending a line costs microseconds. Old segments are merged into
    one (written to a temporary file and renamed) when they pile up.
    """

    MERGE_AT = 16  # segments
    MERGE_AGE_S = 60.0  # only segments nobody has written to for this long are merged

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.index: dict[str, tuple[Path, int, int]] = {}
        self._fds: dict[Path, int] = {}
        self._out: Any = None
        self._out_path: Path | None = None
        if self.root.is_dir():
            segs = sorted(self.root.glob("seg-*.jsonl"), key=lambda p: p.stat().st_mtime)
            if len(segs) >= self.MERGE_AT:
                segs = self._merge(segs)
            for seg in segs:
                self._scan(seg)

    def _scan(self, seg: Path) -> None:
        try:
            data = seg.read_bytes()
        except OSError:
            return
        pos = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl < 0:
                break  # torn last line
            if nl - pos > 66 and data[pos + 64 : pos + 65] == b" ":
                self.index[data[pos : pos + 64].decode("ascii", "replace")] = (seg, pos + 65, nl - pos - 65)
            pos = nl + 1

    def _merge(self, segs: list[Path]) -> list[Path]:
        now = time.time()
        old = [p for p in segs if now - p.stat().st_mtime > self.MERGE_AGE_S]
        if len(old) < 2:
            return segs
        lines: dict[bytes, bytes] = {}
        for seg in old:
            try:
                data = seg.read_bytes()
            except OSError:
                continue
            for line in data.split(b"\n")[:-1]:
                if len(line) > 66 and line[64:65] == b" ":
                    lines[line[:64]] = line
        merged = self.root / f"seg-{uuid.uuid4().hex}.jsonl"
        _atomic_write(merged, b"".join(v + b"\n" for v in lines.values()))
        for seg in old:
            try:
                seg.unlink()
            except OSError:
                pass
        return [merged] + [p for p in segs if p not in old]

    def get(self, key: str) -> Completion | None:
        where = self.index.get(key)
        if where is None:
            return None
        seg, off, length = where
        try:
            fd = self._fds.get(seg)
            if fd is None:
                fd = self._fds[seg] = os.open(seg, os.O_RDONLY)
            data = json.loads(os.pread(fd, length, off))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or "text" not in data:
            return None
        from gating.evals.providers import Completion

        return Completion.from_dict(data, "cache")

    def put(self, key: str, completion: Completion) -> None:
        if self._out is None:
            self.root.mkdir(parents=True, exist_ok=True)
            ignore = self.root / ".gitignore"
            if not ignore.exists():
                _atomic_write(ignore, b"# response cache of gating eval\n*\n")
            self._out_path = self.root / f"seg-{uuid.uuid4().hex}.jsonl"
            self._out = open(self._out_path, "ab")  # noqa: SIM115 - closed in close()
        body = json.dumps(completion.to_dict(), sort_keys=True).encode()
        off = self._out.tell() + 65
        self._out.write(key.encode("ascii") + b" " + body + b"\n")
        self._out.flush()
        self.index[key] = (self._out_path, off, len(body))  # type: ignore[assignment]

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers see the old or the new file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
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


def parse_cassette(path: str, data: bytes) -> dict[str, dict[str, Any]]:
    """key -> entry. A bad line is a DatasetError naming the file and line (a cassette is reviewed code)."""
    out: dict[str, dict[str, Any]] = {}
    try:
        limits.check_size(path, len(data))
        text = data.decode("utf-8")
    except limits.LimitError as e:
        raise DatasetError([str(e)]) from None
    except UnicodeDecodeError:
        raise DatasetError([f"{path}:1: cassette is not UTF-8 text"]) from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = limits.load_json(line, path, limits.LINE, line=n)
            key = entry["key"]
            entry["response"]["text"]
        except limits.LimitError as e:
            raise DatasetError([str(e)]) from None
        except (ValueError, KeyError, TypeError) as e:
            raise DatasetError([f"{path}:{n}: not a cassette entry ({e})"]) from None
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


CACHE_SUBDIR = ("gating", "responses")  # under the git directory, beside the snapshot cache


def cache_location(chosen: str | os.PathLike[str] | None, worktree: Path | None,
                   git_dir: Path | None) -> tuple[Path | None, str | None]:
    """(the response cache directory to use or None, a warning to show or None).

    `chosen` is what the user set ($GATING_CACHE_DIR or a flag; None: the default, inside the git
    directory). A directory inside the work tree is never used: a pull request could commit answers
    there, and they would be served as if a model had given them.
    """
    if chosen is None or str(chosen) == "":
        if git_dir is None:
            return None, None
        return git_dir.joinpath(*CACHE_SUBDIR), None
    path = Path(chosen)
    if worktree is not None and not path.is_absolute():
        path = worktree / path
    if worktree is not None and _inside(path, worktree) and not (git_dir is not None and _inside(path, git_dir)):
        return None, (f"the response cache {chosen} is inside the checkout, where a pull request could commit "
                      "answers: it was not used, and every answer came from the models or the cassettes; "
                      "set GATING_CACHE_DIR (or --cache-dir) to a directory outside the work tree, or leave it "
                      "unset for the default in the git directory")
    return path, None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (OSError, ValueError):
        return False
    return True
