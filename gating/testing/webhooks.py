"""Webhook deliveries built from GitHub's real example payloads, adapted to the emulator's state.

Each delivery starts from the vendored example of its event/action (so every field a real payload
has is there), then the repository, installation, sender and the objects the event is about are
replaced by the emulator's own records, and the body is signed like GitHub signs it.
"""

from __future__ import annotations

import copy
import functools
import gzip
import hashlib
import hmac
import json
import queue
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import httpx

from gating.testing import emulator_render as render
from gating.testing.emulator_openapi import DATA_DIR, api_description

if TYPE_CHECKING:
    from gating.testing.github_emulator import Emulator

EXAMPLES_FILE = DATA_DIR / "webhook-examples.json.gz"


@functools.cache
def examples() -> dict[str, dict[str, Any]]:
    with gzip.open(EXAMPLES_FILE, "rt", encoding="utf-8") as f:
        return cast(dict[str, dict[str, Any]], json.load(f))


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Delivery:
    event: str
    action: str | None
    headers: dict[str, str]
    body_bytes: bytes
    payload: dict[str, Any]

    @property
    def id(self) -> str:
        return self.headers["X-GitHub-Delivery"]

    def replayed(self) -> Delivery:
        """The same signed body under a new X-GitHub-Delivery id, as a redelivery that GitHub (or
        anyone who captured it) sends again looks to a receiver that de-duplicates on the id alone."""
        return Delivery(self.event, self.action, {**self.headers, "X-GitHub-Delivery": str(uuid.uuid4())},
                        self.body_bytes, copy.deepcopy(self.payload))

    def verify(self, secret: str) -> bool:
        """Check X-Hub-Signature-256 the way a receiver must (constant-time, over the raw body)."""
        return hmac.compare_digest(self.headers.get("X-Hub-Signature-256", ""), sign(secret, self.body_bytes))


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def _overlay(example: Any, ours: dict[str, Any]) -> dict[str, Any]:
    """Our record's fields over the example's (which keeps the fields only payloads carry)."""
    return (dict(example) if isinstance(example, dict) else {}) | ours


def _rebase(value: Any, emu: Emulator, r: Any, example_repo: str | None = None) -> Any:
    """Point the example's leftover URLs and names at the emulator (its repository, its hosts)."""
    if example_repo is None and isinstance(value, dict):
        example_repo = (value.get("repository") or {}).get("full_name") or "Codertocat/Hello-World"
    if isinstance(value, dict):
        return {k: _rebase(v, emu, r, example_repo) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebase(v, emu, r, example_repo) for v in value]
    if isinstance(value, str) and "://" in value:
        if r is not None and example_repo:
            value = value.replace(f"/{example_repo}", f"/{r.full_name}")
        return value.replace("https://api.github.com", emu.api_url).replace("https://github.com", emu.web_url)
    return value


def _latest(records: list[Any], what: str) -> Any:
    if not records:
        raise ValueError(f"no {what} to build the webhook from")
    return max(records, key=lambda x: x.id)


def build(emu: Emulator, event: str, action: str | None = None, repo: Any = None, *, number: int | None = None,
          sender: str | None = None, review_id: int | None = None, comment_id: int | None = None,
          check_run_id: int | None = None, deployment_id: int | None = None, secret: str | None = None,
          **fields: Any) -> Delivery:
    by_event = examples().get(event)
    if by_event is None or (action or "") not in by_event:
        known = sorted(f"{e}.{a}" if a else e for e, acts in examples().items() for a in acts)
        raise ValueError(f"no vendored example for {event}{'.' + action if action else ''}; have: {', '.join(known)}")
    r = emu.repo_record(repo) if repo is not None else (next(iter(emu.repos.values())) if emu.repos else None)
    payload = _rebase(copy.deepcopy(by_event[action or ""]), emu, r)
    payload.pop("x-derived-from", None)
    who: str | None = None
    if r is not None:
        payload["repository"] = _overlay(payload.get("repository"), render.repo(emu, r))
        owner = emu.user_record(r.owner)
        if owner.type == "Organization":
            api = f"{emu.api_url}/orgs/{owner.login}"
            payload["organization"] = {"login": owner.login, "id": owner.id, "node_id": render.node_id("Org", owner.id),
                                       "url": api, "repos_url": f"{api}/repos", "events_url": f"{api}/events",
                                       "hooks_url": f"{api}/hooks", "issues_url": f"{api}/issues",
                                       "members_url": f"{api}/members{{/member}}",
                                       "public_members_url": f"{api}/public_members{{/member}}",
                                       "avatar_url": f"{emu.web_url}/avatars/{owner.login}", "description": None}
        else:
            payload.pop("organization", None)
    payload["installation"] = {"id": emu.app.installation_id, "node_id": render.node_id("Installation", emu.app.installation_id)}

    if event in ("pull_request", "pull_request_review", "issue_comment", "check_run", "check_suite",
                 "deployment_status", "workflow_run", "deployment_protection_rule") and r is None:
        raise ValueError(f"{event} needs a repository")
    if event == "pull_request" and r is not None:
        i = r.issues[number] if number is not None else _latest([x for x in r.issues.values() if x.is_pull], "pull request")
        payload["number"] = i.number
        payload["pull_request"] = _overlay(payload.get("pull_request"), render.pull(emu, r, i))
        if action == "labeled" and i.labels:
            payload["label"] = render.label(emu, r, i.labels[-1])
        if action == "synchronize":
            payload["after"] = emu.pull_shas(r, i)[0]
            payload.setdefault("before", payload["after"])
        who = i.user if action in ("opened", "edited", "ready_for_review", "synchronize") else i.merged_by or i.user
    elif event == "pull_request_review" and r is not None:
        reviews = [v for v in r.reviews.values() if number is None or v.number == number]
        v = r.reviews[review_id] if review_id is not None else _latest(reviews, "review")
        review = render.review(emu, r, v)
        review["state"] = review["state"].lower()  # webhooks say "approved" where REST says "APPROVED"
        payload["review"] = _overlay(payload.get("review"), review)
        payload["pull_request"] = _overlay(payload.get("pull_request"), render.pull(emu, r, r.issues[v.number], full=False))
        who = v.user
    elif event == "issue_comment" and r is not None:
        comments = [c for c in r.comments.values() if number is None or c.number == number]
        c = r.comments[comment_id] if comment_id is not None else _latest(comments, "comment")
        payload["issue"] = _overlay(payload.get("issue"), render.issue(emu, r, r.issues[c.number]))
        payload["comment"] = _overlay(payload.get("comment"), render.comment(emu, r, c))
        who = c.user
    elif event == "check_run" and r is not None:
        run = r.check_runs[check_run_id] if check_run_id is not None else _latest(list(r.check_runs.values()), "check run")
        data = render.check_run(emu, r, run)
        data["details_url"] = data["details_url"] or ""  # strings, never null, in the webhook
        data["external_id"] = data["external_id"] or ""
        suite_doc = render.check_suite(emu, r, r.check_suites[run.suite_id])
        data["check_suite"] = _overlay(payload.get("check_run", {}).get("check_suite"), suite_doc)
        payload["check_run"] = _overlay(payload.get("check_run"), data)
        who = emu.app.bot_login
    elif event == "check_suite" and r is not None:  # "Re-run all checks": the suite, with the open pull requests on its head
        sid = fields.pop("check_suite_id", None)
        suite = r.check_suites[sid] if sid is not None else _latest(list(r.check_suites.values()), "check suite")
        data = render.check_suite(emu, r, suite)
        data["pull_requests"] = [render.pull_minimal(emu, r, i) for i in r.issues.values() if i.is_pull
                                 and i.state == "open" and not i.head_repo and emu.pull_shas(r, i)[0] == suite.head_sha]
        data.pop("repository", None)
        payload["check_suite"] = _overlay(payload.get("check_suite"), data)
        who = emu.app.bot_login
    elif event == "deployment_status" and r is not None:
        d = r.deployments[deployment_id] if deployment_id is not None else _latest(list(r.deployments.values()), "deployment")
        if not d.statuses:
            raise ValueError(f"deployment {d.id} has no status yet")
        s = d.statuses[-1]
        payload["deployment"] = _overlay(payload.get("deployment"), render.deployment(emu, r, d))
        payload["deployment_status"] = _overlay(payload.get("deployment_status"), render.deployment_status(emu, r, d, s))
        who = s.creator
    elif event == "deployment_protection_rule" and r is not None:
        rid = fields.pop("gate_run_id", None)
        run = r.gate_runs[rid] if rid is not None else _latest(list(r.gate_runs.values()), "held workflow run")
        d = r.deployments[run.deployment_id]
        payload.update({"environment": run.environment, "event": run.event, "sha": run.sha, "ref": run.ref,
                        "deployment_callback_url": f"{emu.api_url}/repos/{r.full_name}/actions/runs/{run.id}/"
                                                   "deployment_protection_rule",
                        "deployment": render.deployment(emu, r, d), "pull_requests": []})
        who = d.creator
    elif event == "push":
        payload |= push_payload(emu, r, fields.pop("ref", None), fields.pop("before", None), fields.pop("after", None))
        who = sender or emu.app.bot_login
        payload["pusher"] = {"name": who, "email": emu.user_record(who).email}
    elif event == "workflow_run" and r is not None:  # a pull request's workflow run finished (the fork pattern's trigger)
        i = r.issues[number] if number is not None else _latest([x for x in r.issues.values() if x.is_pull], "pull request")
        payload["workflow_run"] = workflow_run_of(emu, r, i, payload.get("workflow_run") or {})
        who = i.user
    elif event == "installation":
        payload["installation"] = _overlay(payload.get("installation"), render.installation(emu))
        payload["repositories"] = [{"id": x.id, "node_id": render.node_id("Repository", x.id), "name": x.name,
                                    "full_name": x.full_name, "private": x.private} for x in emu.repos.values()]
        payload.pop("repository", None)
        who = emu.app_owner
    who = sender or who or (r.owner if r else emu.app_owner)
    payload["sender"] = render.user(emu, who)
    check_payload(emu, event, action, payload)
    deep_merge(payload, fields)
    body = json.dumps(payload).encode()
    key = secret if secret is not None else emu.app.webhook_secret
    headers = {
        "Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/emulated",
        "X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()), "X-GitHub-Hook-ID": "1",
        "X-GitHub-Hook-Installation-Target-ID": str(emu.app.app_id),
        "X-GitHub-Hook-Installation-Target-Type": "integration",
        "X-Hub-Signature": "sha1=" + hmac.new(key.encode(), body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": sign(key, body),
    }
    return Delivery(event, action, headers, body, payload)


def check_payload(emu: Emulator, event: str, action: str | None, payload: dict[str, Any]) -> None:
    """Complete the payload from GitHub's documented webhook schema, then validate it; a departure is
    an emulator problem (the test fails), caught before the caller's own overrides are merged in."""
    desc = api_description()
    name = f"{event}-{action}".replace("_", "-") if action else event.replace("_", "-")
    desc.complete(payload, desc.webhook_schema(name), emu.api_url)
    for err in desc.webhook_errors(name, payload):
        emu.problem(f"webhook {event}{'.' + action if action else ''}: payload violates the documented schema: {err}")


def workflow_run_of(emu: Emulator, r: Any, i: Any, example: dict[str, Any]) -> dict[str, Any]:
    """The run of a `pull_request` workflow on the pull request's head, as `workflow_run` reports it:
    for a pull request from a fork, `pull_requests` is empty and `head_repository` is the fork."""
    head_sha = emu.pull_shas(r, i)[0]
    head_repo = emu.repo_record(i.head_repo) if i.head_repo else r
    c = emu.bare(r).commit(head_sha)
    head_commit = {"id": head_sha, "tree_id": c.tree if c else "", "message": c.message if c else "",
                   "timestamp": render.iso(c.committer.date) if c else None,
                   "author": {"name": c.author.name, "email": c.author.email} if c else None,
                   "committer": {"name": c.committer.name, "email": c.committer.email} if c else None}
    return _overlay(example, {
        "event": "pull_request", "status": "completed", "conclusion": "success", "head_sha": head_sha,
        "head_branch": i.head_ref, "head_commit": head_commit, "name": "gating collect",
        "path": ".github/workflows/gating-collect.yml", "display_title": i.title,
        "head_repository": _overlay(example.get("head_repository"), render.repo(emu, head_repo)),
        "repository": _overlay(example.get("repository"), render.repo(emu, r)),
        "pull_requests": [] if i.head_repo else [render.pull_minimal(emu, r, i)],
        "actor": render.user(emu, i.user), "triggering_actor": render.user(emu, i.user)})


def push_payload(emu: Emulator, r: Any, ref: str | None, before: str | None, after: str | None) -> dict[str, Any]:
    bare = emu.bare(r)
    ref = ref or f"refs/heads/{r.default_branch}"
    after = after or bare.ref(ref) or "0" * 40
    zero = "0" * 40
    if before is None:
        info = bare.commit(after) if after != zero else None
        before = info.parents[0] if info and info.parents else zero
    commits = []
    if after != zero:
        rng = [after] if before == zero else [f"{before}..{after}"]
        commits = list(reversed(bare.commits(*rng, max_count=20)))

    def as_push(c: Any) -> dict[str, Any]:
        return {"id": c.sha, "tree_id": c.tree, "distinct": True, "message": c.message.rstrip("\n"),
                "timestamp": render.iso(c.committer.date), "url": f"{emu.web_url}/{r.full_name}/commit/{c.sha}",
                "author": {"name": c.author.name, "email": c.author.email},
                "committer": {"name": c.committer.name, "email": c.committer.email},
                "added": [], "removed": [], "modified": []}

    return {"ref": ref, "before": before, "after": after, "created": before == zero, "deleted": after == zero,
            "forced": False, "base_ref": None, "compare": f"{emu.web_url}/{r.full_name}/compare/{before[:12]}...{after[:12]}",
            "commits": [as_push(c) for c in commits], "head_commit": as_push(commits[-1]) if commits else None}


@dataclass
class Dispatcher:
    """Sends deliveries in order from a background thread, as GitHub does after the state change."""

    deliveries: list[tuple[Delivery, int | None]] = field(default_factory=list)
    _queue: queue.Queue = field(default_factory=queue.Queue)
    _pending: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None

    def submit(self, url: str, delivery: Delivery) -> None:
        with self._cond:
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="webhook-dispatcher", daemon=True)
                self._thread.start()
        self._queue.put((url, delivery))

    def _run(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                url, delivery = item
                status: int | None
                try:
                    status = client.post(url, content=delivery.body_bytes, headers=delivery.headers).status_code
                except httpx.HTTPError:
                    status = None
                with self._cond:
                    self.deliveries.append((delivery, status))
                    self._pending -= 1
                    self._cond.notify_all()

    def wait(self, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout=timeout)

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None


def deliver(url: str, delivery: Delivery, timeout: float = 10.0) -> httpx.Response:
    return httpx.post(url, content=delivery.body_bytes, headers=delivery.headers, timeout=timeout)
