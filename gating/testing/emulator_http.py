"""What a REST handler sees (Ctx) and returns (Reply), GitHub's error shape, and pagination."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from werkzeug.datastructures import MultiDict

from gating.testing.emulator_auth import Token
from gating.testing.emulator_openapi import Operation
from gating.testing.emulator_state import Repo

if TYPE_CHECKING:
    from gating.testing.github_emulator import Emulator

DOCS = "https://docs.github.com/rest"


class ApiError(Exception):
    """An error response: GitHub's {"message", "documentation_url"} body (plus `errors` for 422s)."""

    def __init__(self, status: int, message: str, errors: list[Any] | None = None,
                 headers: dict[str, str] | None = None, doc: str = DOCS):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}
        self.doc = doc

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = {"message": self.message, "documentation_url": self.doc, "status": str(self.status)}
        if self.errors is not None:
            data["errors"] = self.errors
        return data


def not_found() -> ApiError:
    return ApiError(404, "Not Found")


@dataclass
class Actor:
    kind: str  # app | installation | user | anonymous
    login: str | None = None
    token: Token | None = None


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Ctx:
    emu: Emulator
    op: Operation
    params: dict[str, str]
    query: MultiDict
    body: Any
    actor: Actor
    url: str  # the request URL without its query, for Link headers
    repo: Repo | None = None

    def int_param(self, name: str) -> int:
        try:
            return int(self.params[name])
        except (KeyError, ValueError) as e:
            raise not_found() from e

    def arg(self, name: str, default: Any = None) -> Any:
        return (self.body or {}).get(name, default) if isinstance(self.body, dict) else default

    def require_repo(self) -> Repo:
        if self.repo is None:
            raise not_found()
        return self.repo

    def paginate(self, items: list[Any], wrap: Callable[[list[Any]], Any] | None = None) -> Reply:
        """One page of `items` with GitHub's Link header (per_page default 30, max 100)."""
        per_page = max(1, min(100, int(self.query.get("per_page", 30))))
        page = max(1, int(self.query.get("page", 1)))
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        links = []

        def link(p: int, rel: str) -> str:
            q = [(k, v) for k, v in self.query.items(multi=True) if k != "page"] + [("page", str(p))]
            return f'<{self.url}?{urlencode(q)}>; rel="{rel}"'

        if page > 1:
            links += [link(page - 1, "prev"), link(1, "first")]
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        headers = {"Link": ", ".join(links)} if links else {}
        return Reply(200, wrap(chunk) if wrap else chunk, headers)


Handler = Callable[[Ctx], Reply]
HANDLERS: dict[str, Handler] = {}


def handles(*operation_ids: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for op in operation_ids:
            HANDLERS[op] = fn
        return fn
    return register
