#!/usr/bin/env python3
"""Regenerate the GitHub reference subset the emulator checks itself against.

Writes gating/testing/data/openapi-subset.json.gz (only the operations gating uses and the payload
schemas of the webhooks the emulator sends, with every component they reference, documentation
stripped) and gating/testing/data/webhook-examples.json.gz
(one real example payload per event/action the emulator sends).

Sources, in order of preference:
  --from DIR   a folder holding api.github.com.json[.gz] and webhook-examples.json[.gz], or the
               unpacked npm packages (package/generated/api.github.com.json,
               package/api.github.com/index.json) in any sub-folders
  (default)    `npm pack @octokit/openapi@VERSION @octokit/webhooks-examples@VERSION` in a temp dir
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

OPENAPI_PACKAGE = "@octokit/openapi@23.0.2"
EXAMPLES_PACKAGE = "@octokit/webhooks-examples@7.6.1"
DATA_DIR = Path(__file__).resolve().parent.parent / "gating" / "testing" / "data"

R = "/repos/{owner}/{repo}"
OPERATIONS: list[tuple[str, str]] = [
    ("get", "/app"),
    ("get", "/app/installations"),
    ("post", "/app-manifests/{code}/conversions"),
    ("get", "/app/installations/{installation_id}"),
    ("post", "/app/installations/{installation_id}/access_tokens"),
    ("get", "/installation/repositories"),
    ("get", "/rate_limit"),
    ("get", "/user"),
    ("get", "/users/{username}"),
    ("get", "/orgs/{org}/teams/{team_slug}/memberships/{username}"),
    ("get", "/orgs/{org}/teams/{team_slug}/members"),
    ("get", R),
    ("get", R + "/installation"),
    ("get", R + "/branches"),
    ("get", R + "/branches/{branch}"),
    ("get", R + "/branches/{branch}/protection"),
    ("put", R + "/branches/{branch}/protection"),
    ("delete", R + "/branches/{branch}/protection"),
    ("get", R + "/contents/{path}"),
    ("get", R + "/commits"),
    ("get", R + "/commits/{ref}"),
    ("get", R + "/compare/{basehead}"),
    ("post", R + "/merges"),
    ("get", R + "/collaborators/{username}/permission"),
    ("post", R + "/git/blobs"),
    ("get", R + "/git/blobs/{file_sha}"),
    ("post", R + "/git/trees"),
    ("get", R + "/git/trees/{tree_sha}"),
    ("post", R + "/git/commits"),
    ("get", R + "/git/commits/{commit_sha}"),
    ("get", R + "/git/ref/{ref}"),
    ("get", R + "/git/matching-refs/{ref}"),
    ("post", R + "/git/refs"),
    ("patch", R + "/git/refs/{ref}"),
    ("delete", R + "/git/refs/{ref}"),
    ("get", R + "/pulls"),
    ("post", R + "/pulls"),
    ("get", R + "/pulls/{pull_number}"),
    ("patch", R + "/pulls/{pull_number}"),
    ("get", R + "/pulls/{pull_number}/files"),
    ("get", R + "/pulls/{pull_number}/commits"),
    ("get", R + "/pulls/{pull_number}/reviews"),
    ("post", R + "/pulls/{pull_number}/reviews"),
    ("get", R + "/pulls/{pull_number}/reviews/{review_id}"),
    ("put", R + "/pulls/{pull_number}/reviews/{review_id}/dismissals"),
    ("put", R + "/pulls/{pull_number}/merge"),
    ("get", R + "/issues"),
    ("post", R + "/issues"),
    ("get", R + "/issues/{issue_number}"),
    ("get", R + "/issues/{issue_number}/comments"),
    ("post", R + "/issues/{issue_number}/comments"),
    ("get", R + "/issues/comments/{comment_id}"),
    ("patch", R + "/issues/comments/{comment_id}"),
    ("get", R + "/issues/comments/{comment_id}/reactions"),
    ("post", R + "/issues/comments/{comment_id}/reactions"),
    ("get", R + "/issues/{issue_number}/reactions"),
    ("post", R + "/issues/{issue_number}/reactions"),
    ("get", R + "/issues/{issue_number}/labels"),
    ("post", R + "/issues/{issue_number}/labels"),
    ("post", R + "/check-runs"),
    ("get", R + "/check-runs/{check_run_id}"),
    ("patch", R + "/check-runs/{check_run_id}"),
    ("get", R + "/check-runs/{check_run_id}/annotations"),
    ("get", R + "/commits/{ref}/check-runs"),
    ("get", R + "/commits/{ref}/check-suites"),
    ("get", R + "/deployments"),
    ("post", R + "/deployments"),
    ("get", R + "/deployments/{deployment_id}"),
    ("get", R + "/deployments/{deployment_id}/statuses"),
    ("post", R + "/deployments/{deployment_id}/statuses"),
    ("post", R + "/actions/runs/{run_id}/deployment_protection_rule"),
]

WEBHOOKS: dict[str, list[str | None]] = {
    "pull_request": ["opened", "synchronize", "closed", "reopened", "labeled", "edited", "ready_for_review"],
    "pull_request_review": ["submitted", "dismissed", "edited"],
    "issue_comment": ["created", "edited"],
    "check_run": ["completed", "created", "rerequested", "requested_action"],
    "check_suite": ["rerequested"],
    "deployment_status": ["created"],
    "push": [None],
    "installation": ["created", "new_permissions_accepted"],
    "ping": [None],
    "workflow_run": ["completed"],  # the event of the privileged half of the fork pattern
    "deployment_protection_rule": ["requested"],  # the App's custom deployment protection rule
}

def webhook_schema_name(event: str, action: str | None) -> str:
    """The x-webhooks key GitHub's description uses for an event/action (pull-request-opened)."""
    return f"{event}-{action}".replace("_", "-") if action else event.replace("_", "-")


DROP_KEYS = {"summary", "externalDocs", "tags", "examples", "example", "x-github",
             "x-octokit", "x-github-breaking-changes", "x-multi-segment", "x-stainless-skip"}


def strip_docs(node: Any, in_properties: bool = False) -> Any:
    """Drop documentation-only keys (blank the descriptions, which responses require); never touch a
    property that happens to be called `description`."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if not in_properties and k in DROP_KEYS:
                continue
            if not in_properties and k == "description" and isinstance(v, str):
                out[k] = ""  # required on responses, useless to us
                continue
            out[k] = strip_docs(v, in_properties=(k == "properties" and not in_properties))
        return out
    if isinstance(node, list):
        return [strip_docs(v) for v in node]
    return node


def allow_null_in_enums(node: Any) -> Any:
    """OpenAPI 3.0.3 says a nullable enum must list null itself; GitHub's description leaves it out
    (check-run `conclusion` is null while a run is in progress), so add it where nullable is true."""
    if isinstance(node, dict):
        if node.get("nullable") is True and isinstance(node.get("enum"), list) and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]
        for v in node.values():
            allow_null_in_enums(v)
    elif isinstance(node, list):
        for v in node:
            allow_null_in_enums(v)
    return node


def drop_array_discriminators(node: Any, components: dict[str, Any]) -> Any:
    """A discriminator needs object alternatives; GitHub's get-content one maps "array" to the
    directory listing (an array), which no validator can apply, so that discriminator is dropped
    (oneOf alone still tells the four shapes apart)."""
    if isinstance(node, dict):
        disc = node.get("discriminator")
        if isinstance(disc, dict):
            targets = [components["schemas"].get(ref.rsplit("/", 1)[-1], {}) for ref in disc.get("mapping", {}).values()]
            if any(t.get("type", "object") != "object" for t in targets):
                del node["discriminator"]
        for v in node.values():
            drop_array_discriminators(v, components)
    elif isinstance(node, list):
        for v in node:
            drop_array_discriminators(v, components)
    return node


def refs_in(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                found.add(v)
            else:
                found |= refs_in(v)
    elif isinstance(node, list):
        for v in node:
            found |= refs_in(v)
    return found


def subset_openapi(spec: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, path in OPERATIONS:
        item = spec["paths"].get(path)
        if item is None or method not in item:
            raise SystemExit(f"operation {method.upper()} {path} is missing from the OpenAPI description")
        dest = paths.setdefault(path, {})
        if "parameters" in item:
            dest["parameters"] = item["parameters"]
        dest[method] = item[method]
    paths = drop_array_discriminators(strip_docs(paths), spec["components"])
    hooks: dict[str, Any] = {}
    for event, actions in WEBHOOKS.items():
        for action in actions:
            name = webhook_schema_name(event, action)
            schema = spec["x-webhooks"][name]["post"]["requestBody"]["content"]["application/json"]["schema"]
            hooks[name] = {"post": {"requestBody": {"required": True, "content": {"application/json": {
                "schema": strip_docs(schema)}}}, "responses": {"200": {"description": ""}}}}
    components: dict[str, dict[str, Any]] = {}
    todo = sorted(refs_in(paths) | refs_in(hooks))
    seen: set[str] = set()
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _hash, _components, kind, name = ref.split("/", 3)
        value = strip_docs(spec["components"][kind][name], in_properties=False)
        components.setdefault(kind, {})[name] = value
        todo.extend(sorted(refs_in(value) - seen))
    return allow_null_in_enums({
        "openapi": spec["openapi"],
        "info": {"title": spec["info"]["title"], "version": spec["info"]["version"],
                 "x-subset-of": OPENAPI_PACKAGE},
        "servers": spec["servers"],
        "paths": paths,
        "x-webhooks": hooks,
        "components": {k: dict(sorted(v.items())) for k, v in sorted(components.items())},
    })


# Events the examples package has no payload for: the fields GitHub's description documents, filled
# the way its documentation shows them; the emulator overlays repository, deployment and sender.
DOCUMENTED_EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "deployment_protection_rule": [{
        "action": "requested", "environment": "production", "event": "workflow_dispatch",
        "sha": "0000000000000000000000000000000000000000", "ref": "refs/heads/main",
        "deployment_callback_url": "https://api.github.com/repos/octo-org/octo-repo/actions/runs/1234/"
                                   "deployment_protection_rule",
        "pull_requests": [], "installation": {"id": 1, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="},
        "x-derived-from": "the webhook-deployment-protection-rule-requested schema"}],
}


def subset_examples(examples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_name = {e["name"]: e for e in examples}
    out: dict[str, dict[str, Any]] = {}
    for event, actions in WEBHOOKS.items():
        candidates = by_name[event]["examples"] if event in by_name else DOCUMENTED_EXAMPLES[event]
        for action in actions:
            matching = [x for x in candidates if x.get("action") == action]
            if matching:
                best = next((x for x in matching if "installation" in x), matching[0])
            else:
                best = derive_example(event, action, candidates)
            out.setdefault(event, {})[action or ""] = best
    return out


def derive_example(event: str, action: str | None, candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """No published example for this action (pull_request.edited, say): take the richest one of the
    same event and give it the action and the `changes` object GitHub sends with edits."""
    if action != "edited":
        raise SystemExit(f"no example payload for {event}.{action}")
    base = next((x for x in candidates if x.get("action") == "opened" and "installation" in x),
                next(x for x in candidates if "installation" in x))
    field = "title" if event == "pull_request" else "body"
    derived = dict(base, action=action, changes={field: {"from": f"An earlier {field}"}})
    derived["x-derived-from"] = f"{event}.{base.get('action')}"
    return derived


def load_json(path: Path) -> Any:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def find_source(root: Path, names: list[str]) -> Path:
    for name in names:
        hits = sorted(root.rglob(name))
        if hits:
            return hits[0]
    raise SystemExit(f"none of {names} found under {root}")


def npm_pack(dest: Path) -> Path:
    """Fetch the two npm packages with the ordinary npm client and unpack them under dest."""
    subprocess.run(["npm", "pack", "--silent", OPENAPI_PACKAGE, EXAMPLES_PACKAGE], cwd=dest, check=True,
                   stdout=subprocess.DEVNULL)
    for i, tgz in enumerate(sorted(dest.glob("*.tgz"))):
        with tarfile.open(tgz) as tf:
            tf.extractall(dest / f"pkg{i}", filter="data")
    return dest


def write_gz(path: Path, data: Any) -> int:
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="source", type=Path, help="folder with the reference files")
    ap.add_argument("--out", type=Path, default=DATA_DIR, help=f"output folder (default {DATA_DIR})")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.source or npm_pack(Path(tmp))
        spec = load_json(find_source(root, ["api.github.com.json.gz", "api.github.com.json"]))
        examples_path = find_source(root, ["webhook-examples.json.gz", "webhook-examples.json", "index.json"])
        examples = load_json(examples_path)
    n1 = write_gz(args.out / "openapi-subset.json.gz", subset_openapi(spec))
    n2 = write_gz(args.out / "webhook-examples.json.gz", subset_examples(examples))
    print(f"wrote {args.out}/openapi-subset.json.gz ({n1} bytes, {len(OPERATIONS)} operations)")
    print(f"wrote {args.out}/webhook-examples.json.gz ({n2} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
