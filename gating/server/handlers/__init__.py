"""The dispatch table: which handler runs, as a background job, for which event and action.

Each handler module has a `register(registry)` function and is listed once in
`app.settings.HANDLER_MODULES` (or GATING_HANDLERS). Inside it:

    def register(registry: Registry) -> None:
        registry.on("pull_request", "closed", key=pull_key, when=lambda p: p["pull_request"]["merged"])(on_merge)

A module that also serves HTTP (an endpoint other systems post to, like POST /alerts) defines a
Flask Blueprint named `blueprint`; its views enqueue work with
`current_app.extensions["gating"].queue.enqueue(...)` and `.worker.wake()`, like /webhooks does.

`key` groups jobs that must not run at the same time (one pull request: "owner/repo#12"); `when`
filters on the payload before a job is queued; `coalesce=True` says a run of the handler covers
every job of the same handler and key queued before it started (it reads the current state, not
the payload), so a burst of deliveries about one pull request costs one run. A handler receives a
`JobContext` and must be idempotent: the same delivery twice changes nothing twice.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from gating.github import BlobCache, GitHubApp, GitHubClient, Repo
from gating.monitor.rollup import MemoryRollups, RollupSource
from gating.server.jobs import Job, JobQueue, PermanentError
from gating.server.settings import Settings

Payload = dict[str, Any]


@dataclass
class JobContext:
    """What a running handler may use: the job and its payload, settings, and GitHub as the App."""

    job: Job
    payload: Payload
    settings: Settings
    github: GitHubApp
    blobs: BlobCache = field(default_factory=BlobCache)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("gating.app.handlers"))
    queue: JobQueue | None = None  # the App's database: once-only acts and recorded overrides live there
    rollups: RollupSource = field(default_factory=MemoryRollups)  # the monitor's minute roll-ups

    def installation(self) -> GitHubClient:
        inst = (self.payload.get("installation") or {}).get("id")
        if not isinstance(inst, int):
            raise PermanentError(f"{self.job.event} delivery {self.job.delivery} names no App installation")
        return self.github.installation(inst)

    def repo(self) -> Repo:
        full = (self.payload.get("repository") or {}).get("full_name")
        if not isinstance(full, str) or "/" not in full:
            raise PermanentError(f"{self.job.event} delivery {self.job.delivery} names no repository")
        return Repo(self.installation(), full)


HandlerFunc = Callable[[JobContext], None]


@dataclass(frozen=True)
class Handler:
    name: str
    event: str
    actions: frozenset[str]  # empty: every action
    func: HandlerFunc
    key: Callable[[Payload], str | None]
    when: Callable[[Payload], bool]
    coalesce: bool = False  # one run covers the queued jobs of this handler with the same key

    def matches(self, event: str, payload: Payload) -> bool:
        if event != self.event:
            return False
        if self.actions and payload.get("action") not in self.actions:
            return False
        return bool(self.when(payload))


SCHEDULE = "schedule"  # the event of timed jobs; GitHub never sends it


@dataclass(frozen=True)
class Schedule:
    name: str
    seconds: Callable[[Any], float]  # settings -> period (0: off)


class Registry:
    def __init__(self) -> None:
        self.handlers: list[Handler] = []
        self.schedules: list[Schedule] = []
        self.internal: set[str] = {SCHEDULE}  # events the App queues itself: a webhook naming one is forged

    def every(self, name: str, seconds: Callable[[Any], float]) -> Callable[[HandlerFunc], HandlerFunc]:
        """A job queued once per period of `seconds(settings)` (see app.schedule), with no webhook."""
        def add(func: HandlerFunc) -> HandlerFunc:
            self.on(SCHEDULE, name, key=lambda _p: f"{SCHEDULE}:{name}", coalesce=True)(func)
            self.schedules.append(Schedule(name, seconds))
            return func
        return add

    def on(self, event: str, *actions: str, key: Callable[[Payload], str | None] | None = None,
           when: Callable[[Payload], bool] | None = None, name: str | None = None,
           coalesce: bool = False, internal: bool = False) -> Callable[[HandlerFunc], HandlerFunc]:
        """`internal`: the event is the App's own (queued by one of its endpoints), never GitHub's."""
        if internal:
            self.internal.add(event)

        def add(func: HandlerFunc) -> HandlerFunc:
            hname = name or f"{func.__module__.rsplit('.', 1)[-1]}.{func.__name__}"
            if self.get(event, hname):
                raise ValueError(f"handler {hname!r} is registered twice for {event}")
            self.handlers.append(Handler(hname, event, frozenset(actions), func, key or (lambda _p: None),
                                         when or (lambda _p: True), coalesce))
            return func
        return add

    def match(self, event: str, payload: Payload) -> list[Handler]:
        return [h for h in self.handlers if h.matches(event, payload)]

    def get(self, event: str, name: str) -> Handler | None:
        return next((h for h in self.handlers if h.event == event and h.name == name), None)

    def events(self) -> dict[str, list[str]]:
        """event -> actions handled (for the App manifest and the docs)."""
        out: dict[str, set[str]] = {}
        for h in self.handlers:
            if h.event not in self.internal:
                out.setdefault(h.event, set()).update(h.actions or {"*"})
        return {e: sorted(a) for e, a in sorted(out.items())}


def load_registry(modules: Sequence[str]) -> Registry:
    registry = Registry()
    for name in modules:
        importlib.import_module(name).register(registry)
    return registry


def blueprints(modules: Sequence[str]) -> list[Any]:
    """The Flask blueprints handler modules define as `blueprint` (HTTP endpoints beside /webhooks,
    such as POST /alerts); `create_app` registers them."""
    found = (getattr(importlib.import_module(name), "blueprint", None) for name in modules)
    return [bp for bp in found if bp is not None]


def installed_repos(ctx: JobContext, limit: int) -> Iterator[Repo]:
    """Every repository the App is installed on (at most `limit`), each with its installation's token."""
    n = 0
    for inst in ctx.github.app_client().paginate("/app/installations", limit=limit):
        client = ctx.github.installation(int(inst["id"]))
        for r in client.paginate("/installation/repositories", key="repositories", limit=limit):
            yield Repo(client, r["full_name"])
            n += 1
            if n >= limit:
                return


def pull_key(payload: Payload) -> str | None:
    """"owner/repo#N" for events about one pull request (or an issue comment on one)."""
    repo = (payload.get("repository") or {}).get("full_name")
    number = (payload.get("pull_request") or payload.get("issue") or {}).get("number")
    return f"{repo}#{number}" if repo and number else None
