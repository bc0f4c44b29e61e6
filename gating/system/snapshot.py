"""The resolved LLM system at one revision: every component's settings and every file's sha256.

The canonical JSON form (sorted keys, no spaces, UTF-8) is what gets hashed, locked, noted and
signed, so two clones that agree on the system agree on the digest.
"""

from __future__ import annotations

import json
import marshal
import posixpath
import zlib
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from typing import Any, Protocol, cast

from ruamel.yaml.error import YAMLError

from gating import limits
from gating.system.canonical import canonical_json, sha256_hex
from gating.system.evidence import cassette_path, cassette_refs
from gating.system.manifest import (
    MANIFEST_PATH,
    MAX_FILE_BYTES,
    FileRef,
    Manifest,
    ManifestError,
    Problem,
    file_refs,
    jsonable,
    parse_manifest,
    resolve_files,
)
from gating.system.revision import RevisionReader

SNAPSHOT_VERSION = 1
BUCKETS = 1024  # large maps of a stored snapshot are split by a stable hash of their keys

_SHA_BY_OID: dict[str, str] = {}  # git blob id -> sha256 of its bytes; ids name content, so never stale


class SnapshotCache(Protocol):
    def key(self, tree: str, manifest_path: str) -> str: ...

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any]) -> None: ...


class Snapshot:
    """`data` is the canonical, hashable part; `contents` keeps file bytes for diffs and restores.

    A snapshot taken from the cache parses its manifest again only if someone asks for it, and
    unpacks its prompt entries only if someone reads `data`: a diff of two stored snapshots reads
    `outline`, the prompt buckets that differ and the prompt users, so its cost follows the size of
    the change rather than the size of the system.
    """

    def __init__(
        self,
        data: dict[str, Any] | None,
        manifest: Manifest | None = None,
        contents: Mapping[str, bytes] | None = None,
        manifest_path: str = MANIFEST_PATH,
    ):
        self._data = data
        self.contents: Mapping[str, bytes] = contents if contents is not None else {}
        self._manifest = manifest
        self._manifest_path = manifest_path
        self._stored: dict[str, Any] | None = None
        self._cache: SnapshotCache | None = None
        self._users: dict[str, dict[str, list[str]]] = {}

    @classmethod
    def from_stored(cls, stored: dict[str, Any], reader: RevisionReader, manifest_path: str,
                    cache: SnapshotCache | None = None) -> Snapshot:
        """The inverse of `stored()`; nothing large is unpacked yet."""
        snap = cls(None, None, None, manifest_path)
        snap._cache = cache
        snap.contents = LazyContents(reader, lambda: list(snap.files))
        snap._stored = stored
        snap.__dict__["digest"] = stored["digest"]  # the cached_property, already computed once
        return snap

    def stored(self, oids: dict[str, str]) -> dict[str, Any]:
        """The form kept in the snapshot cache: plain values only, so `marshal` can hold it."""
        prompts = self.data["components"]["prompts"]
        return {
            "digest": self.digest,
            "data": marshal.dumps(self.data),
            "outline": self.outline,
            "buckets": Buckets.pack({n: {k: p[k] for k in sorted(p)} for n, p in prompts.items()}),
            "users": {k: marshal.dumps(self.prompt_users(k)) for k in ("model", "system")},
            "oids": Buckets.pack(oids),
        }

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            assert self._stored is not None
            self._data = marshal.loads(self._stored["data"])
        return self._data

    @cached_property
    def outline(self) -> dict[str, Any]:
        """`data` without prompt entries and file hashes (which may or may not be present): cheap."""
        if self._data is None and self._stored is not None:
            return cast(dict[str, Any], self._stored["outline"])
        d = self.data
        return {**d, "components": {**d["components"], "prompts": {}}, "files": {}}

    @cached_property
    def blob_ids(self) -> Mapping[str, str]:
        """path -> git blob id of a stored snapshot's files (empty for one built here)."""
        return Buckets(self._stored["oids"]) if self._stored is not None else {}

    @cached_property
    def prompt_buckets(self) -> Buckets | None:
        return Buckets(self._stored["buckets"]) if self._stored is not None else None

    def prompt_users(self, key: str) -> dict[str, list[str]]:
        """`model` or `system` name -> the prompts that name it."""
        if key not in self._users:
            if self._stored is not None:
                self._users[key] = marshal.loads(self._stored["users"][key])
            else:
                index: dict[str, list[str]] = {}
                for name, p in self.data["components"]["prompts"].items():
                    if p.get(key):
                        index.setdefault(p[key], []).append(name)
                self._users[key] = index
        return self._users[key]

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = load_manifest(self.contents[self._manifest_path], self._manifest_path, self._cache)
        return self._manifest

    @cached_property
    def digest(self) -> str:
        """sha256 of the canonical JSON; `data` is never changed after a snapshot is built."""
        return "sha256:" + sha256_hex(canonical_json(self.data))

    @property
    def files(self) -> dict[str, str]:
        """path -> sha256 of every file in the system, gating.yml included."""
        return cast(dict[str, str], self.data["files"])

    @property
    def components(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.data["components"])

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


def empty_snapshot(name: str = "(none)") -> Snapshot:
    """The system of a revision that has no manifest yet: everything at head is 'added'."""
    data = {
        "version": 1,
        "name": name,
        "manifest": None,
        "components": {k: {} for k in ("models", "prompts", "retrieval", "orchestration", "tools", "guardrails")},
        "evals": {},
        "approvals": [],
        "rollback": {},
        "files": {},
    }
    return Snapshot(data=data, manifest=Manifest({"version": 1, "name": name, "components": {}}))


def _parse_structured(path: str, data: bytes) -> Any:
    """Tool schemas and guardrails are JSON or YAML; parse them so the diff is semantic."""
    text = data.decode("utf-8")
    ext = posixpath.splitext(path)[1].lower()
    if ext == ".json":
        try:
            return limits.load_json(text, path)
        except limits.LimitError as e:
            raise ManifestError([Problem(path, e.line, e.column, e.message)]) from None
        except json.JSONDecodeError as e:
            raise ManifestError([Problem(path, e.lineno, e.colno, f"invalid JSON: {e.msg}")]) from None
    if ext in (".yml", ".yaml"):
        try:
            return jsonable(limits.load_yaml(text, path))  # a date stays the text it was
        except limits.LimitError as e:
            raise ManifestError([Problem(path, e.line, e.column, e.message)]) from None
        except YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            what = getattr(e, "problem", None) or str(e)
            raise ManifestError([Problem(path, line, col, f"invalid YAML: {what}")]) from None
    return None


class Buckets(Mapping[str, Any]):
    """A dict kept as `marshal` buckets by a stable hash of its keys.

    A lookup unpacks one bucket, and two such maps compare bucket by bucket: equal bytes mean equal
    entries, because version 2 of marshal writes no back-references and keys are packed sorted.
    """

    def __init__(self, raw: list[bytes]):
        self.raw = raw
        self._open: dict[int, dict[str, Any]] = {}

    @staticmethod
    def index(key: str) -> int:
        return zlib.crc32(key.encode("utf-8", "surrogatepass")) % BUCKETS

    @staticmethod
    def pack(d: Mapping[str, Any]) -> list[bytes]:
        buckets: list[dict[str, Any]] = [{} for _ in range(BUCKETS)]
        for key in sorted(d):
            buckets[Buckets.index(key)][key] = d[key]
        return [marshal.dumps(b, 2) for b in buckets]

    def bucket(self, i: int) -> dict[str, Any]:
        if i not in self._open:
            self._open[i] = marshal.loads(self.raw[i])
        return self._open[i]

    def __getitem__(self, key: str) -> Any:
        return self.bucket(self.index(key))[key]

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self.raw)):
            yield from self.bucket(i)

    def __len__(self) -> int:
        return sum(len(self.bucket(i)) for i in range(len(self.raw)))


def differing_prompts(base: Snapshot, head: Snapshot) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(base entries, head entries, names that differ); the entries hold at least those names.

    Two stored snapshots are compared bucket by bucket, and only the buckets whose bytes differ are
    unpacked; otherwise the whole prompt sections are compared.
    """
    bb, hb = base.prompt_buckets, head.prompt_buckets
    if bb is None or hb is None:
        bp, hp = base.data["components"]["prompts"], head.data["components"]["prompts"]
        return bp, hp, differing(bp, hp)
    bp, hp = {}, {}
    for i, (b, h) in enumerate(zip(bb.raw, hb.raw, strict=True)):
        if b != h:
            bp.update(bb.bucket(i))
            hp.update(hb.bucket(i))
    return bp, hp, differing(bp, hp)


def differing(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Names whose entry was added, removed or changed, sorted; untouched entries cost one comparison."""
    out = [n for n, v in a.items() if b.get(n, _ABSENT) != v]
    out += [n for n in b if n not in a]
    return sorted(out)


_ABSENT = object()


_LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\n"


def _check_text(path: str, data: bytes | None) -> Problem | None:
    if data is None:
        return Problem(path, 1, 1, "file could not be read")
    if len(data) > MAX_FILE_BYTES:
        return Problem(path, 1, 1, f"file is {len(data):,} bytes; a system file may be at most {MAX_FILE_BYTES:,}")
    if b"\x00" in data:
        return Problem(path, 1, 1, "file is binary (contains NUL bytes); system files must be UTF-8 text")
    if data.startswith(_LFS_POINTER) and len(data) < 1024:  # git-lfs writes pointers well under 1 KiB
        return Problem(path, 1, 1, "file is a Git LFS pointer, not the file: gating reads system files from git "
                       "objects, where LFS keeps only the pointer; keep system files out of LFS "
                       f"(git lfs untrack '{path}', then git add --renormalize {path})")
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

    def __init__(self, reader: RevisionReader, paths: list[str] | Callable[[], list[str]],
                 data: dict[str, bytes] | None = None):
        self._reader, self._paths, self._data = reader, paths, dict(data or {})

    @property
    def paths(self) -> list[str]:
        if callable(self._paths):
            self._paths = self._paths()
        return self._paths

    def preload(self, paths: list[str]) -> None:
        """Read many files in one round instead of one round per file."""
        missing = [p for p in paths if p not in self._data]
        if missing:
            self._data.update({p: b for p, b in self._reader.read_many(missing).items() if b is not None})

    def __getitem__(self, path: str) -> bytes:
        if path not in self._data:
            self.preload([path])
        return self._data[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


def build_snapshot(
    reader: RevisionReader, manifest_path: str = MANIFEST_PATH, cache: SnapshotCache | None = None,
    like: Snapshot | None = None,
) -> Snapshot:
    """Read the manifest and every file it names at one revision; raises ManifestError.

    With a cache and a reader that names its git tree, a snapshot already built for that tree is
    reused: a snapshot is a pure function of the tree's content, so the cache can never be stale.
    `like` is a stored snapshot of a nearby revision (the other side of a diff): a file with the same
    git blob id there is not read and hashed again.
    """
    key = None
    tree = getattr(reader, "tree", None)
    if cache is not None and tree:
        key = cache.key(tree, manifest_path)
        hit = cache.get(key)
        if hit is not None and hit.keys() >= _STORED_KEYS:
            snap = Snapshot.from_stored(hit, reader, manifest_path, cache)
            if hasattr(reader, "seed_ids"):
                reader.seed_ids(snap.blob_ids)
            return snap
    snap = _build(reader, manifest_path, like, cache)
    if key is not None and cache is not None:
        oids: dict[str, str] = getattr(reader, "blob_ids", dict)()
        try:
            stored = snap.stored({p: oids[p] for p in snap.files if p in oids})
        except ValueError:  # a value marshal cannot hold: build this one each time rather than fail
            return snap
        cache.put(key, stored)
    return snap


_STORED_KEYS = {"digest", "data", "outline", "buckets", "users", "oids"}


def load_manifest(data: bytes, path: str, cache: SnapshotCache | None) -> Manifest:
    """parse_manifest, remembered in the cache by the manifest's bytes: parsing and validating a
    large manifest costs far more than reading it back, and a pull request that only edits prompts
    leaves the manifest as it was."""
    if cache is None:
        return parse_manifest(data, path)
    key = cache.key(f"manifest {sha256_hex(data)}", path)
    hit = cache.get(key)
    if hit is not None and isinstance(hit.get("manifest"), dict):
        return Manifest(hit["manifest"], path, data.decode("utf-8"))
    m = parse_manifest(data, path)
    cache.put(key, {"manifest": m.data})
    return m


def _build(reader: RevisionReader, manifest_path: str, like: Snapshot | None = None,
           cache: SnapshotCache | None = None) -> Snapshot:
    manifest_bytes = reader.read_many([manifest_path])[manifest_path]
    if manifest_bytes is None:
        raise NoManifest([Problem(manifest_path, 1, 1, f"no {manifest_path} at {reader.label}")])
    _refuse_links(reader, [manifest_path])
    m = load_manifest(manifest_bytes, manifest_path, cache)
    # A reader over the API lists only the directories the manifest names, not the whole repository.
    matching = getattr(reader, "list_matching", None)
    if matching is not None:  # the cassettes beside each dataset are part of the system too
        patterns = [ref[0] for ref in file_refs(m)]
        patterns += [cassette_path(p).rsplit("/", 1)[0] + "/*.jsonl" for p, cat, *_ in file_refs(m) if cat == "evals"]
        listing = matching(patterns)
    else:
        listing = reader.list_files()
    refs = resolve_files(m, listing, reader.submodules() if hasattr(reader, "submodules") else ())
    refs += cassette_refs(refs, listing)
    wanted = sorted({r.path for r in refs})
    _refuse_names(wanted)
    _refuse_links(reader, wanted)
    # A blob already hashed (the same file at the other side of a diff) is not read again: its git
    # id fixes its content. Tool and guardrail files are always read, since they are parsed.
    oids: dict[str, str] = reader.blob_ids() if hasattr(reader, "blob_ids") else {}
    parsed_paths = {r.path for r in refs if r.category in ("tool", "guardrail")}
    known = {p: _SHA_BY_OID[oids[p]] for p in wanted if p not in parsed_paths and oids.get(p) in _SHA_BY_OID}
    if like is not None and like.blob_ids:
        same = [p for p in wanted if p not in parsed_paths and p not in known and oids.get(p)
                and like.blob_ids.get(p) == oids[p]]
        known.update({p: like.files[p] for p in same})
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
    if m.monitor:  # only when there is one: a manifest without it keeps the digest it always had
        data["monitor"] = m.monitor
    if m.deploy:  # likewise
        data["deploy"] = m.deploy
    # what replay serves, what a target runs, the Python the evals run, the files their cases read
    for cat, key in (("cassette", "cassettes"), ("code", "code"), ("python", "python"), ("evalfile", "eval_files")):
        found = {r.path: files[r.path] for r in refs if r.category == cat}
        if found:
            data[key] = dict(sorted(found.items()))
    return Snapshot(data, m, contents, manifest_path)


def _refuse_names(paths: list[str]) -> None:
    """A file name git holds as bytes that are not UTF-8 (matched by a glob) cannot be recorded as text."""
    problems = []
    for p in paths:
        try:
            p.encode("utf-8")
        except UnicodeEncodeError:
            shown = p.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            problems.append(Problem(shown, 1, 1, "file name is not UTF-8; rename the file "
                                    "(the names of system files are recorded as UTF-8 text)"))
    if problems:
        raise ManifestError(problems)


def _refuse_links(reader: RevisionReader, paths: list[str]) -> None:
    """A system file that is a symbolic link is refused, alike in the working tree and in git.

    Git stores a link as the path it points to, so reading it as git does would take that path for
    the prompt or schema, and following it could leave the repository; neither is the system.
    """
    links = getattr(reader, "links", None)
    found = links(paths) if links is not None else {}
    if found:
        raise ManifestError([Problem(p, 1, 1, f"file is a symbolic link (to {t!r}), and git keeps only the path a "
                                     "link points to: commit the file itself in its place, or name its target "
                                     "in gating.yml") for p, t in sorted(found.items())])


def _component_name(path: str, parsed: Any) -> str:
    if isinstance(parsed, dict):
        fn = parsed.get("function")
        name = fn.get("name") if isinstance(fn, dict) else parsed.get("name")
        if isinstance(name, str) and name:
            return name
    return posixpath.splitext(posixpath.basename(path))[0]
