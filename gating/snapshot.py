"""The resolved LLM system at one revision: every component's settings and every file's sha256.

The canonical JSON form (sorted keys, no spaces, UTF-8) is what gets hashed, locked, noted and
signed, so two clones that agree on the system agree on the digest.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Protocol

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from gating.manifest import (
    MANIFEST_PATH,
    MAX_FILE_BYTES,
    FileRef,
    Manifest,
    ManifestError,
    Problem,
    parse_manifest,
    resolve_files,
)
from gating.revision import RevisionReader

SNAPSHOT_VERSION = 1

_SHA_BY_OID: dict[str, str] = {}  # git blob id -> sha256 of its bytes; ids name content, so never stale


class SnapshotCache(Protocol):
    def key(self, tree: str, manifest_path: str) -> str: ...

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any]) -> None: ...


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Snapshot:
    """`data` is the canonical, hashable part; `contents` keeps file bytes for diffs and restores.

    A snapshot taken from the cache parses its manifest again only if someone asks for it.
    """

    def __init__(
        self,
        data: dict[str, Any],
        manifest: Manifest | None = None,
        contents: Mapping[str, bytes] | None = None,
        manifest_path: str = MANIFEST_PATH,
    ):
        self.data = data
        self.contents: Mapping[str, bytes] = contents if contents is not None else {}
        self._manifest = manifest
        self._manifest_path = manifest_path

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = parse_manifest(self.contents[self._manifest_path], self._manifest_path)
        return self._manifest

    @cached_property
    def digest(self) -> str:
        """sha256 of the canonical JSON; `data` is never changed after a snapshot is built."""
        return "sha256:" + sha256_hex(canonical_json(self.data))

    @property
    def files(self) -> dict[str, str]:
        """path -> sha256 of every file in the system, gating.yml included."""
        return self.data["files"]

    @property
    def components(self) -> dict[str, Any]:
        return self.data["components"]

    def to_json(self, pretty: bool = False) -> str:
        doc = {"digest": self.digest, **self.data}
        if pretty:
            return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
        return canonical_json(doc).decode()

    def text(self, path: str) -> str:
        return self.contents[path].decode("utf-8")

    def preload(self, paths: list[str]) -> None:
        if isinstance(self.contents, LazyContents):
            self.contents.preload(paths)


def _parse_structured(path: str, data: bytes) -> Any:
    """Tool schemas and guardrails are JSON or YAML; parse them so the diff is semantic."""
    text = data.decode("utf-8")
    ext = posixpath.splitext(path)[1].lower()
    if ext == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ManifestError([Problem(path, e.lineno, e.colno, f"invalid JSON: {e.msg}")]) from None
    if ext in (".yml", ".yaml"):
        try:
            return YAML(typ="safe").load(text)
        except YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            what = getattr(e, "problem", None) or str(e)
            raise ManifestError([Problem(path, line, col, f"invalid YAML: {what}")]) from None
    return None


def _check_text(path: str, data: bytes | None) -> Problem | None:
    if data is None:
        return Problem(path, 1, 1, "file could not be read")
    if len(data) > MAX_FILE_BYTES:
        return Problem(path, 1, 1, f"file is {len(data):,} bytes; a system file may be at most {MAX_FILE_BYTES:,}")
    if b"\x00" in data:
        return Problem(path, 1, 1, "file is binary (contains NUL bytes); system files must be UTF-8 text")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        return Problem(path, line, col, "file is not UTF-8 text")
    return None


class NoManifest(ManifestError):
    """The revision has no manifest at all (before the repository adopted gating, say)."""


class LazyContents(Mapping[str, bytes]):
    """File bytes of a snapshot's files, read through the revision only when first asked for."""

    def __init__(self, reader: RevisionReader, paths: list[str], data: dict[str, bytes] | None = None):
        self._reader, self._paths, self._data = reader, paths, dict(data or {})

    def preload(self, paths: list[str]) -> None:
        """Read many files in one round instead of one round per file."""
        missing = [p for p in paths if p not in self._data]
        if missing:
            self._data.update({p: b for p, b in self._reader.read_many(missing).items() if b is not None})

    def __getitem__(self, path: str) -> bytes:
        if path not in self._data:
            self.preload([path])
        return self._data[path]

    def __iter__(self):
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def build_snapshot(
    reader: RevisionReader, manifest_path: str = MANIFEST_PATH, cache: SnapshotCache | None = None
) -> Snapshot:
    """Read the manifest and every file it names at one revision; raises ManifestError.

    With a cache and a reader that names its git tree, a snapshot already built for that tree is
    reused: a snapshot is a pure function of the tree's content, so the cache can never be stale.
    """
    key = None
    tree = getattr(reader, "tree", None)
    if cache is not None and tree:
        key = cache.key(tree, manifest_path)
        hit = cache.get(key)
        if hit is not None:
            if hasattr(reader, "seed_ids"):
                reader.seed_ids(hit.get("oids") or {})
            snap = Snapshot(hit["data"], None, LazyContents(reader, list(hit["data"]["files"])), manifest_path)
            snap.__dict__["digest"] = hit["digest"]  # the cached_property, already computed once
            return snap
    snap = _build(reader, manifest_path)
    if key is not None and cache is not None:
        oids = getattr(reader, "blob_ids", dict)()
        cache.put(key, {"data": snap.data, "digest": snap.digest,
                        "oids": {p: oids[p] for p in snap.files if p in oids}})
    return snap


def _build(reader: RevisionReader, manifest_path: str) -> Snapshot:
    manifest_bytes = reader.read_many([manifest_path])[manifest_path]
    if manifest_bytes is None:
        raise NoManifest([Problem(manifest_path, 1, 1, f"no {manifest_path} at {reader.label}")])
    m = parse_manifest(manifest_bytes, manifest_path)
    listing = reader.list_files()
    refs = resolve_files(m, listing)
    wanted = sorted({r.path for r in refs})
    # A blob already hashed (the same file at the other side of a diff) is not read again: its git
    # id fixes its content. Tool and guardrail files are always read, since they are parsed.
    oids: dict[str, str] = reader.blob_ids() if hasattr(reader, "blob_ids") else {}
    parsed_paths = {r.path for r in refs if r.category in ("tool", "guardrail")}
    known = {p: _SHA_BY_OID[oids[p]] for p in wanted if p not in parsed_paths and oids.get(p) in _SHA_BY_OID}
    blobs = reader.read_many([p for p in wanted if p not in known])
    problems = [p for p in (_check_text(path, blob) for path, blob in blobs.items()) if p]
    if problems:
        raise ManifestError(problems)
    read = {manifest_path: manifest_bytes, **{p: b for p, b in blobs.items() if b is not None}}
    files = {**known, **{p: sha256_hex(b) for p, b in read.items()}}
    if len(_SHA_BY_OID) > 500_000:
        _SHA_BY_OID.clear()
    _SHA_BY_OID.update({oids[p]: files[p] for p in read if p in oids})
    contents: Mapping[str, bytes] = read if not known else LazyContents(reader, sorted(files), read)

    comps = m.components
    components: dict[str, Any] = {
        "models": comps.get("models") or {},
        "prompts": {
            name: {**p, "sha256": files[p["file"]]} for name, p in (comps.get("prompts") or {}).items()
        },
        "retrieval": comps.get("retrieval") or {},
        "orchestration": comps.get("orchestration") or {},
        "tools": {},
        "guardrails": {},
    }
    problems = []
    for cat, section in (("tool", "tools"), ("guardrail", "guardrails")):
        seen: dict[str, FileRef] = {}
        for ref in (r for r in refs if r.category == cat):
            parsed = _parse_structured(ref.path, contents[ref.path])
            name = _component_name(ref.path, parsed)
            if name in seen and seen[name].path != ref.path:
                problems.append(
                    Problem(ref.path, 1, 1, f"duplicate {cat} name {name!r}: also defined in {seen[name].path}")
                )
                continue
            seen[name] = ref
            components[section][name] = {"file": ref.path, "sha256": files[ref.path], "config": parsed}
    if problems:
        raise ManifestError(problems)
    datasets = {r.path: files[r.path] for r in refs if r.category == "evals"}
    data = {
        "version": SNAPSHOT_VERSION,
        "name": m.name,
        "manifest": {"path": manifest_path, "sha256": files[manifest_path]},
        "components": components,
        "evals": {**m.evals, "dataset_digests": datasets} if m.evals else {},
        "approvals": m.approvals,
        "rollback": m.rollback,
        "files": dict(sorted(files.items())),
    }
    return Snapshot(data, m, contents, manifest_path)


def _component_name(path: str, parsed: Any) -> str:
    if isinstance(parsed, dict):
        fn = parsed.get("function")
        name = fn.get("name") if isinstance(fn, dict) else parsed.get("name")
        if isinstance(name, str) and name:
            return name
    return posixpath.splitext(posixpath.basename(path))[0]
