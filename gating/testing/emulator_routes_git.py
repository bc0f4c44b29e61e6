"""Repository content and the Git Database API, straight onto the bare repository."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from gating.testing import emulator_limits as limits
from gating.testing import emulator_render as render
from gating.testing import emulator_routes_protection as protection
from gating.testing.emulator_git import SHA_RE, Person, RefConflict
from gating.testing.emulator_http import ApiError, Ctx, Reply, handles, not_found


def _sha_or_404(ctx: Ctx, rev: str) -> str:
    sha = ctx.emu.bare(ctx.require_repo()).resolve_commit(rev)
    if sha is None:
        raise ApiError(422 if ctx.op.operation_id == "repos/get-commit" else 404,
                       f"No commit found for SHA: {rev}" if ctx.op.operation_id == "repos/get-commit"
                       else "Not Found")
    return sha


@handles("repos/get")
def get_repo(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    perm = ctx.emu.permission_of(r, ctx.actor.login) if ctx.actor.kind == "user" else None
    data = render.repo(ctx.emu, r, permission=perm)
    data |= {"network_count": 0, "subscribers_count": 0, "allow_squash_merge": True, "allow_merge_commit": True,
             "allow_rebase_merge": True, "delete_branch_on_merge": False}
    return Reply(200, data)


def _branch_json(ctx: Ctx, name: str, sha: str) -> dict:
    r = ctx.require_repo()
    info = ctx.emu.bare(r).commit(sha)
    assert info is not None
    api = f"{ctx.emu.api_url}/repos/{r.full_name}"
    rule = r.protections.get(name)
    return {"name": name, "commit": render.commit(ctx.emu, r, info), "protected": rule is not None,
            "_links": {"self": f"{api}/branches/{name}", "html": f"{ctx.emu.web_url}/{r.full_name}/tree/{name}"},
            "protection": protection.summary(rule), "protection_url": f"{api}/branches/{name}/protection"}


@handles("repos/list-branches")
def list_branches(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    rows = ctx.emu.bare(r).refs("refs/heads/")
    api = f"{ctx.emu.api_url}/repos/{r.full_name}"
    items = []
    for ref, sha, _t in rows:
        name = ref[len("refs/heads/"):]
        rule = r.protections.get(name)
        items.append({"name": name, "protected": rule is not None, "commit": {"sha": sha, "url": f"{api}/commits/{sha}"},
                      "protection": protection.summary(rule), "protection_url": f"{api}/branches/{name}/protection"})
    wanted = ctx.query.get("protected")
    if wanted in ("true", "false"):
        items = [b for b in items if b["protected"] == (wanted == "true")]
    return ctx.paginate(items)


@handles("repos/get-branch")
def get_branch(ctx: Ctx) -> Reply:
    name = ctx.params["branch"]
    sha = ctx.emu.bare(ctx.require_repo()).ref(f"refs/heads/{name}")
    if sha is None:
        raise ApiError(404, "Branch not found")
    return Reply(200, _branch_json(ctx, name, sha))


@handles("repos/get-content")
def get_content(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    bare = ctx.emu.bare(r)
    ref = ctx.query.get("ref") or r.default_branch
    sha = bare.resolve_commit(ref)
    if sha is None:
        raise ApiError(404, f"No commit found for the ref {ref}")
    path = ctx.params["path"].strip("/")
    api = f"{ctx.emu.api_url}/repos/{r.full_name}"

    def entry(mode: str, otype: str, osha: str, size: int | None, p: str) -> dict:
        kind = {"blob": "symlink" if mode == "120000" else "file", "tree": "dir", "commit": "submodule"}[otype]
        return {"type": kind, "size": size or 0, "name": p.rsplit("/", 1)[-1], "path": p, "sha": osha,
                "url": f"{api}/contents/{p}?ref={ref}", "git_url": f"{api}/git/{otype}s/{osha}",
                "html_url": f"{ctx.emu.web_url}/{r.full_name}/blob/{ref}/{p}",
                "download_url": f"{ctx.emu.web_url}/{r.full_name}/raw/{ref}/{p}" if otype == "blob" else None,
                "_links": {"self": f"{api}/contents/{p}?ref={ref}", "git": f"{api}/git/{otype}s/{osha}",
                           "html": f"{ctx.emu.web_url}/{r.full_name}/blob/{ref}/{p}"}}

    found = bare.git.try_run("ls-tree", "-l", sha, "--", path) if path else None
    if path and not found:
        raise not_found()
    if found:
        meta, _p = found.split("\t", 1)
        mode, otype, osha, size = meta.split()
        if otype == "blob":
            data = bare.read_blob(osha) or b""
            body = entry(mode, otype, osha, int(size), path)
            body |= {"content": base64.encodebytes(data).decode(), "encoding": "base64"}
            return Reply(200, body)
        tree = osha
    else:
        tree = bare.tree_of(sha)
    entries = bare.read_tree(tree) or []
    prefix = f"{path}/" if path else ""
    return Reply(200, [entry(m, t, s, z, prefix + p) for m, t, s, z, p in entries])


@handles("repos/list-commits")
def list_commits(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    start = _sha_or_404(ctx, ctx.query.get("sha") or r.default_branch)
    paths = (ctx.query["path"],) if ctx.query.get("path") else ()
    infos = ctx.emu.bare(r).commits(start, max_count=1000, paths=paths)
    return ctx.paginate([render.commit(ctx.emu, r, c) for c in infos])


@handles("repos/get-commit")
def get_commit(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    bare = ctx.emu.bare(r)
    sha = _sha_or_404(ctx, ctx.params["ref"])
    info = bare.commit(sha)
    assert info is not None
    parent = info.parents[0] if info.parents else "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
    return Reply(200, render.commit(ctx.emu, r, info, files=bare.diff(parent, sha)))


@handles("repos/compare-commits-with-basehead")
def compare(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    bare = ctx.emu.bare(r)
    basehead = ctx.params["basehead"]
    if "..." not in basehead:
        raise not_found()
    base_rev, head_rev = basehead.split("...", 1)
    base, head = bare.resolve_commit(base_rev), bare.resolve_commit(head_rev)
    if base is None or head is None:
        raise not_found()
    mb = bare.merge_base(base, head)
    if mb is None:
        raise ApiError(404, f"No common ancestor between {base_rev} and {head_rev}.")
    ahead, behind = bare.count(f"{base}..{head}"), bare.count(f"{head}..{base}")
    status = "identical" if ahead == behind == 0 else "ahead" if behind == 0 else "behind" if ahead == 0 else "diverged"
    commits = list(reversed(bare.commits(f"{base}..{head}", max_count=250)))
    api = f"{ctx.emu.api_url}/repos/{r.full_name}"
    info_base, info_mb = bare.commit(base), bare.commit(mb)
    assert info_base is not None and info_mb is not None
    return Reply(200, {
        "url": f"{api}/compare/{basehead}", "html_url": f"{ctx.emu.web_url}/{r.full_name}/compare/{basehead}",
        "permalink_url": f"{ctx.emu.web_url}/{r.full_name}/compare/{base}...{head}",
        "diff_url": f"{ctx.emu.web_url}/{r.full_name}/compare/{basehead}.diff",
        "patch_url": f"{ctx.emu.web_url}/{r.full_name}/compare/{basehead}.patch",
        "base_commit": render.commit(ctx.emu, r, info_base), "merge_base_commit": render.commit(ctx.emu, r, info_mb),
        "status": status, "ahead_by": ahead, "behind_by": behind, "total_commits": ahead,
        "commits": [render.commit(ctx.emu, r, c) for c in commits],
        "files": [render.diff_entry(ctx.emu, r, f, head) for f in bare.diff(mb, head)],
    })


@handles("repos/merge")
def merge_branches(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    bare = ctx.emu.bare(r)
    base_name, head_rev = ctx.arg("base"), ctx.arg("head")
    base = bare.ref(f"refs/heads/{base_name}")
    head = bare.resolve_commit(head_rev)
    if base is None:
        raise ApiError(404, "Base does not exist")
    if head is None:
        raise ApiError(404, "Head does not exist")
    if bare.is_ancestor(head, base):
        return Reply(204)
    tree = bare.merge_tree(base, head)
    if tree is None:
        raise ApiError(409, "Merge conflict")
    who = ctx.emu.identity_person(ctx.actor)
    message = ctx.arg("commit_message") or f"Merge {head_rev} into {base_name}"
    sha = bare.write_commit(tree, [base, head], message, who, who)
    try:
        bare.update_ref(f"refs/heads/{base_name}", sha, base)
    except RefConflict as e:
        raise ApiError(409, "Reference update failed") from e
    ctx.emu.after_push(r, f"refs/heads/{base_name}", base, sha, ctx.actor.login)
    info = bare.commit(sha)
    assert info is not None
    return Reply(201, render.commit(ctx.emu, r, info))


# -- Git Database ---------------------------------------------------------------------------------


@handles("git/create-blob")
def create_blob(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    content, encoding = ctx.arg("content"), ctx.arg("encoding", "utf-8")
    if encoding == "base64":
        try:
            data = base64.b64decode(content, validate=False)
        except (binascii.Error, ValueError) as e:
            raise ApiError(422, "Invalid Base64 content") from e
    elif encoding in ("utf-8", "utf8"):
        data = content.encode("utf-8")
    else:
        raise ApiError(422, f"encoding must be either utf-8 or base64, not {encoding}")
    sha = ctx.emu.bare(r).write_blob(data)
    return Reply(201, {"url": f"{ctx.emu.api_url}/repos/{r.full_name}/git/blobs/{sha}", "sha": sha},
                 {"Location": f"{ctx.emu.api_url}/repos/{r.full_name}/git/blobs/{sha}"})


@handles("git/get-blob")
def get_blob(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    sha = ctx.params["file_sha"]
    data = ctx.emu.bare(r).read_blob(sha) if SHA_RE.match(sha) else None
    if data is None:
        raise not_found()
    return Reply(200, {"content": base64.encodebytes(data).decode(), "encoding": "base64",
                       "url": f"{ctx.emu.api_url}/repos/{r.full_name}/git/blobs/{sha}", "sha": sha,
                       "size": len(data), "node_id": render.node_id("Blob", sha)})


def _tree_json(ctx: Ctx, sha: str, recursive: bool) -> dict:
    r = ctx.require_repo()
    entries = ctx.emu.bare(r).read_tree(sha, recursive=recursive)
    if entries is None:
        raise not_found()
    api = f"{ctx.emu.api_url}/repos/{r.full_name}"
    items = []
    for mode, otype, osha, size, path in entries:
        item: dict[str, Any] = {"path": path, "mode": mode, "type": otype, "sha": osha, "url": f"{api}/git/{otype}s/{osha}"}
        if size is not None:
            item["size"] = size
        items.append(item)
    items, truncated = limits.cut_tree(items, ctx.emu.limits) if recursive else (items, False)
    return {"sha": sha, "url": f"{api}/git/trees/{sha}", "tree": items, "truncated": truncated}


@handles("git/create-tree")
def create_tree(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    bare = ctx.emu.bare(r)
    base_tree = ctx.arg("base_tree")
    if base_tree and bare.read_tree(base_tree) is None:
        raise ApiError(422, "base_tree is not a valid tree oid")
    want = {"100644": "blob", "100755": "blob", "120000": "blob", "040000": "tree", "160000": "commit"}
    for e in ctx.arg("tree", []):
        sha = e.get("sha")
        if sha is not None and "content" in e:
            raise ApiError(422, "Must supply either tree.sha or tree.content, not both")
        if sha is not None and e.get("mode") != "160000" and bare.object_type(sha) != want[e["mode"]]:
            raise ApiError(422, f"tree.sha {sha} is not a valid {want[e['mode']]}")
    sha = bare.write_tree(ctx.arg("tree", []), base_tree)
    return Reply(201, _tree_json(ctx, sha, recursive=False),
                 {"Location": f"{ctx.emu.api_url}/repos/{r.full_name}/git/trees/{sha}"})


@handles("git/get-tree")
def get_tree(ctx: Ctx) -> Reply:
    recursive = ctx.query.get("recursive") not in (None, "", "0", "false")
    bare = ctx.emu.bare(ctx.require_repo())
    sha = ctx.params["tree_sha"]
    resolved = bare.resolve_commit(sha) if not SHA_RE.match(sha) else sha
    if resolved is None:
        raise not_found()
    tree = bare.tree_of(resolved) if bare.object_type(resolved) == "commit" else resolved
    return Reply(200, _tree_json(ctx, tree, recursive))


def _person(ctx: Ctx, data: dict | None, default: Person) -> Person:
    if not data:
        return default
    date = default.date
    if data.get("date"):
        from datetime import datetime
        try:
            date = int(datetime.fromisoformat(data["date"].replace("Z", "+00:00")).timestamp())
        except ValueError as e:
            raise ApiError(422, f"Invalid date: {data['date']}") from e
    return Person(data.get("name", default.name), data.get("email", default.email), date)


@handles("git/create-commit")
def create_commit(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    bare = ctx.emu.bare(r)
    tree, parents = ctx.arg("tree"), ctx.arg("parents", [])
    if bare.object_type(tree) != "tree":
        raise ApiError(422, "Tree SHA does not exist")
    for p in parents:
        if bare.object_type(p) != "commit":
            raise ApiError(422, "Parent SHA does not exist or is not a commit object")
    who = ctx.emu.identity_person(ctx.actor)
    author = _person(ctx, ctx.arg("author"), who)
    committer = _person(ctx, ctx.arg("committer"), author if ctx.arg("author") else who)
    sha = bare.write_commit(tree, parents, ctx.arg("message"), author, committer)
    info = bare.commit(sha)
    assert info is not None
    return Reply(201, render.git_commit(ctx.emu, r, info),
                 {"Location": f"{ctx.emu.api_url}/repos/{r.full_name}/git/commits/{sha}"})


@handles("git/get-commit")
def get_git_commit(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    sha = ctx.params["commit_sha"]
    info = ctx.emu.bare(r).commit(sha) if SHA_RE.match(sha) else None
    if info is None:
        raise not_found()
    return Reply(200, render.git_commit(ctx.emu, r, info))


def _full_ref(ref: str) -> str:
    return ref if ref.startswith("refs/") else f"refs/{ref}"


@handles("git/get-ref")
def get_ref(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    name = _full_ref(ctx.params["ref"])
    rows = [x for x in ctx.emu.bare(r).refs(name) if x[0] == name]
    if not rows:
        raise not_found()
    return Reply(200, render.git_ref(ctx.emu, r, *rows[0]))


@handles("git/list-matching-refs")
def list_matching_refs(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    rows = ctx.emu.bare(r).refs(_full_ref(ctx.params["ref"]))
    return ctx.paginate([render.git_ref(ctx.emu, r, *x) for x in rows])


@handles("git/create-ref")
def create_ref(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    bare = ctx.emu.bare(r)
    name, sha = ctx.arg("ref"), ctx.arg("sha")
    if not name.startswith("refs/") or name.count("/") < 2:
        raise ApiError(422, f"{name} is not a valid ref name.")
    if bare.git.try_run("check-ref-format", name) is None:
        raise ApiError(422, f"{name} is not a valid ref name.")
    if not SHA_RE.match(sha) or bare.object_type(sha) is None:
        raise ApiError(422, "Object does not exist")
    try:
        bare.update_ref(name, sha, None)
    except RefConflict as e:
        raise ApiError(422, "Reference already exists") from e
    ctx.emu.after_push(r, name, None, sha, ctx.actor.login)
    rows = [x for x in bare.refs(name) if x[0] == name]
    return Reply(201, render.git_ref(ctx.emu, r, *rows[0]),
                 {"Location": f"{ctx.emu.api_url}/repos/{r.full_name}/git/{name}"})


@handles("git/update-ref")
def update_ref(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    bare = ctx.emu.bare(r)
    name = _full_ref(ctx.params["ref"])
    sha, force = ctx.arg("sha"), bool(ctx.arg("force", False))
    old = bare.ref(name)
    if old is None:
        raise ApiError(422, "Reference does not exist")
    if not SHA_RE.match(sha) or bare.object_type(sha) is None:
        raise ApiError(422, "Object does not exist")
    fast_forward = bare.is_ancestor(old, sha)
    protection.check_update(ctx.emu, r, name, ctx.actor, sha, fast_forward)
    if not force and not fast_forward:
        raise ApiError(422, "Update is not a fast forward")
    try:
        bare.update_ref(name, sha, old)
    except RefConflict as e:
        raise ApiError(422, "Update is not a fast forward") from e
    ctx.emu.after_push(r, name, old, sha, ctx.actor.login)
    rows = [x for x in bare.refs(name) if x[0] == name]
    return Reply(200, render.git_ref(ctx.emu, r, *rows[0]))


@handles("git/delete-ref")
def delete_ref(ctx: Ctx) -> Reply:
    r = ctx.require_repo()
    bare = ctx.emu.bare(r)
    name = _full_ref(ctx.params["ref"])
    old = bare.ref(name)
    if old is None:
        raise ApiError(422, "Reference does not exist")
    protection.check_delete(ctx.emu, r, name, ctx.actor)
    try:
        bare.delete_ref(name, old)
    except RefConflict as e:
        raise ApiError(422, "Reference cannot be deleted") from e
    return Reply(204)
