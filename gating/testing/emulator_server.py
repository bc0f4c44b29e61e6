"""The emulator's WSGI application: faults, authentication, OpenAPI checks, handlers, smart HTTP.

Request path: fault? -> /api/v3/... (REST) or /{owner}/{repo}.git/... (git smart HTTP).
REST: route in the vendored description (else a recorded problem) -> credentials -> repository ->
permission -> request validation (422) -> handler -> response completed and validated (a violation
is a recorded problem, which fails the test using the fixture).
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
import traceback
import uuid
from typing import TYPE_CHECKING, Any

from werkzeug.datastructures import Headers
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from gating.testing import (  # noqa: F401  (importing the route modules registers their handlers)
    emulator_limits,
    emulator_manifest,
    emulator_oauth,
    emulator_routes_apps,
    emulator_routes_checks,
    emulator_routes_environments,
    emulator_routes_git,
    emulator_routes_protection,
    emulator_routes_pulls,
)
from gating.testing.emulator_auth import (
    JWT_OPERATIONS,
    OPEN_OPERATIONS,
    AuthError,
    looks_like_jwt,
    missing_permission,
    verify_app_jwt,
)
from gating.testing.emulator_git import BareRepo
from gating.testing.emulator_http import HANDLERS, Actor, ApiError, Ctx, Reply
from gating.testing.emulator_openapi import NotInSubset, api_description
from gating.testing.faults import AFTER_WRITE, SECONDARY_RATE_LIMIT_MESSAGE

if TYPE_CHECKING:
    from gating.testing.github_emulator import Emulator

API_PREFIX = "/api/v3"
GIT_PATH = re.compile(r"^/(?P<owner>[^/]+)/(?P<name>[^/]+?)(?:\.git)?/(?P<rest>info/refs|git-upload-pack|"
                      r"git-receive-pack|HEAD|objects/.+)$")
RATE_DOCS = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"


# Request shapes GitHub accepts that the description leaves out; each is validated in its documented form.
# issues/add-labels: a bare JSON array of names (PyGithub's Issue.add_to_labels sends this).
# repos/update-branch-protection: nulls for the optional switches, `checks` without `contexts` (PyGithub).
DOCUMENTED_FORM = {"issues/add-labels": lambda body: {"labels": body} if isinstance(body, list) else body,
                   "repos/update-branch-protection": emulator_routes_protection.documented_form}


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header on the emulator's clock (emu.advance moves it), as GitHub's says its own time."""
        if timestamp is None:
            timestamp = self.server.app.emu.now()  # type: ignore[attr-defined]
        return super().date_time_string(timestamp)


def _token_from(request: Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if not auth:
        return None
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("token", "bearer"):
        return value.strip()
    if scheme.lower() == "basic" and request.authorization:
        user, pw = request.authorization.username or "", request.authorization.password or ""
        return pw if pw and pw != "x-oauth-basic" else user
    return ""


class EmulatorApp:
    def __init__(self, emu: Emulator):
        self.emu = emu
        self.desc = api_description()

    # -- entry --------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        t0 = time.perf_counter()
        path = request.path
        is_api = path == API_PREFIX or path.startswith(API_PREFIX + "/")
        rel = path[len(API_PREFIX):] or "/" if is_api else path
        fault = self.emu.faults.take(request.method, rel)
        if fault is not None and fault.kind in AFTER_WRITE and is_api:
            self._api(request, rel, t0)  # done and recorded; the client never hears of it
            if fault.kind == "reset_after_write":
                self._record(request, rel, 0, None, t0, "fault/reset_after_write")
                self._reset(environ)
                raise ConnectionResetError("injected fault: connection reset after the write")
            response = self._json(fault.status, {"message": "Server Error"})
            self._record(request, rel, fault.status, None, t0, "fault/5xx_after_write")
            return response(environ, start_response)
        if fault is not None:
            if fault.kind == "latency":
                time.sleep(fault.delay)
            elif fault.kind == "reset":
                self._record(request, rel, 0, None, t0, "fault/reset")
                self._reset(environ)
                raise ConnectionResetError("injected fault: connection reset")  # werkzeug drops it quietly
            else:
                response = self._fault_response(fault)
                self._record(request, rel, response.status_code, None, t0, f"fault/{fault.kind}")
                return response(environ, start_response)
        if is_api:
            response = self._api(request, rel, t0)
        elif (m := GIT_PATH.match(path)) is not None:
            response = self._smart_http(request, m, t0)
        elif (page := emulator_manifest.web_page(self.emu, request)
                      or emulator_oauth.web_page(self.emu, request)) is not None:
            response = page
        else:
            self.emu.problem(f"{request.method} {path}: not an API path (expected {API_PREFIX}/...) "
                             "nor a git smart-HTTP path")
            response = self._json(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
            self._record(request, path, 404, None, t0, None)
        return response(environ, start_response)

    @staticmethod
    def _reset(environ: dict[str, Any]) -> None:
        """Drop the connection without a response (RST), like a load balancer resetting it."""
        sock = environ.get("werkzeug.socket")
        if sock is None:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _fault_response(self, fault: Any) -> Response:
        if fault.kind == "secondary_rate_limit":
            body = {"message": SECONDARY_RATE_LIMIT_MESSAGE,
                    "documentation_url": RATE_DOCS + "#about-secondary-rate-limits"}
            resp = self._json(fault.status, body)
            if fault.retry_after is not None:
                resp.headers["Retry-After"] = str(fault.retry_after)
            resp.headers["X-RateLimit-Limit"] = "5000"
            resp.headers["X-RateLimit-Remaining"] = "4999"
            resp.headers["X-RateLimit-Reset"] = str(int(time.time()) + 3600)
            return resp
        return self._json(fault.status, {"message": "Server Error"})

    @staticmethod
    def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        data = b"" if body is None else json.dumps(body).encode()
        resp = Response(data, status=status, headers=headers or {})
        if body is not None:
            resp.headers["Content-Type"] = "application/json; charset=utf-8"
        return resp

    def _record(self, request: Request, path: str, status: int, body: Any, t0: float, op: str | None) -> None:
        from gating.testing.github_emulator import RecordedRequest

        self.emu.record(RecordedRequest(
            request.method, path, dict(request.args.items()), status, body,
            {k: v for k, v in request.headers.items() if k.lower() != "authorization"}, op,
            (time.perf_counter() - t0) * 1000))

    # -- REST ---------------------------------------------------------------------------------------

    def _api(self, request: Request, rel: str, t0: float) -> Response:
        emu = self.emu
        try:
            op = self.desc.match(request.method, rel)
        except NotInSubset:
            emu.problem(f"{request.method} {rel}: endpoint outside the vendored OpenAPI subset "
                        "(add it to scripts/vendor_github_reference.py and the emulator)")
            self._record(request, rel, 404, None, t0, None)
            return self._json(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        raw = request.get_data()
        body: Any = None
        actor = Actor("anonymous")
        try:
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError as e:
                    raise ApiError(400, "Problems parsing JSON") from e
            actor = self._authenticate(request, op.operation_id)
            with emu.lock:
                ctx = Ctx(emu, op, op.params, request.args, body, actor, f"{emu.api_url}{rel}")
                self._resolve_repo(ctx)
                self._check_permission(ctx)
                emulator_limits.refuse_empty(ctx)
                checked = raw
                if op.operation_id in DOCUMENTED_FORM and body is not None:
                    checked = json.dumps(DOCUMENTED_FORM[op.operation_id](body)).encode()
                errors = self.desc.validate_request(op, rel, request.args, request.headers, checked or None,
                                                    request.content_type or "application/json")
                if errors:
                    raise ApiError(422, "Invalid request.\n\n" + "\n".join(errors))
                handler = HANDLERS.get(op.operation_id)
                if handler is None:
                    emu.problem(f"{op.operation_id}: in the vendored subset but not emulated")
                    raise ApiError(501, "Not Implemented")
                reply = handler(ctx)
        except ApiError as e:
            reply = Reply(e.status, e.body(), e.headers)
        except Exception:  # an emulator bug: fail the test loudly, answer like GitHub's 500
            emu.problem(f"{request.method} {rel}: the emulator failed:\n{traceback.format_exc()}")
            reply = Reply(500, {"message": "Server Error"})
        return self._finish(request, rel, op, reply, actor, body, t0)

    def _authenticate(self, request: Request, op_id: str) -> Actor:
        emu = self.emu
        token = _token_from(request)
        if token is None:
            if op_id in JWT_OPERATIONS or op_id in ("users/get-authenticated",
                                                    "apps/list-repos-accessible-to-installation"):
                raise ApiError(401, "Requires authentication")
            return Actor("anonymous")
        if looks_like_jwt(token):
            try:
                verify_app_jwt(token, emu.app, emu.now())
            except AuthError as e:
                raise ApiError(e.status, e.message) from e
            if op_id not in JWT_OPERATIONS:
                raise ApiError(403, "Resource not accessible by integration")
            return Actor("app", None)
        tok = emu.tokens.get(token)
        if tok is None or (tok.expires_at is not None and tok.expires_at <= emu.now()):
            raise ApiError(401, "Bad credentials")
        if op_id in JWT_OPERATIONS:
            raise ApiError(401, "A JSON web token could not be decoded")
        return Actor(tok.kind, tok.login, tok)

    def _resolve_repo(self, ctx: Ctx) -> None:
        if "owner" not in ctx.params or "repo" not in ctx.params:
            return
        r = ctx.emu.repos.get(f"{ctx.params['owner']}/{ctx.params['repo']}".lower())
        if r is None:
            raise ApiError(404, "Not Found")
        actor = ctx.actor
        if actor.kind == "user" and ctx.emu.permission_of(r, actor.login) == "none":
            raise ApiError(404, "Not Found")
        if actor.kind == "anonymous" and r.private:
            raise ApiError(404, "Not Found")
        if actor.kind == "installation" and actor.token and actor.token.repositories is not None \
                and r.name not in actor.token.repositories and (r.private or ctx.op.method != "get"):
            raise ApiError(404 if r.private else 403, "Not Found" if r.private else
                           "Resource not accessible by integration")
        ctx.repo = r

    def _check_permission(self, ctx: Ctx) -> None:
        op_id = ctx.op.operation_id
        if op_id in OPEN_OPERATIONS or op_id in JWT_OPERATIONS or ctx.actor.kind == "app":
            return
        if ctx.actor.kind == "anonymous":
            if ctx.op.method != "get" or op_id.startswith("teams/"):
                raise ApiError(401, "Requires authentication")
            return
        if op_id == "users/get-authenticated" or op_id.startswith("apps/"):
            return
        missing = missing_permission(op_id, ctx.emu.effective_permissions(ctx.actor, ctx.repo))
        if missing:
            kind = "integration" if ctx.actor.kind == "installation" else "personal access token"
            raise ApiError(403, f"Resource not accessible by {kind}",
                           headers={"X-Accepted-GitHub-Permissions": missing.replace(", ", "; ")})

    def _finish(self, request: Request, rel: str, op: Any, reply: Reply, actor: Actor, req_body: Any,
                t0: float) -> Response:
        emu = self.emu
        body = reply.body
        if body is not None and reply.status < 400:
            body = self.desc.complete(body, self.desc.response_schema(op, reply.status), emu.api_url)
        rate = emu.count_request(actor)
        headers = {
            "X-GitHub-Request-Id": uuid.uuid4().hex[:20].upper(), "X-GitHub-Media-Type": "github.v3; format=json",
            "X-RateLimit-Limit": str(rate["limit"]), "X-RateLimit-Remaining": str(rate["remaining"]),
            "X-RateLimit-Reset": str(rate["reset"]), "X-RateLimit-Used": str(rate["used"]),
            "X-RateLimit-Resource": "core",
        } | reply.headers
        if actor.token is not None and actor.token.kind == "installation":
            headers["X-OAuth-Scopes"] = ""
        response = self._json(reply.status, body, headers)
        if self.desc.documents_status(op, reply.status):
            problems = self.desc.validate_response(op, rel, reply.status, response.get_data() or None,
                                                   Headers(response.headers))
            for p in problems:
                emu.problem(f"{request.method} {rel} -> {reply.status}: response violates the OpenAPI "
                            f"description: {p}")
        elif reply.status < 400:
            emu.problem(f"{request.method} {rel} -> {reply.status}: status not in the OpenAPI description")
        self._record(request, rel, reply.status, req_body, t0, op.operation_id)
        return response

    # -- git smart HTTP -----------------------------------------------------------------------------

    def _smart_http(self, request: Request, m: re.Match[str], t0: float) -> Response:
        emu = self.emu
        op = "git/smart-http"
        r = emu.repos.get(f"{m['owner']}/{m['name']}".lower())
        if r is None:
            self._record(request, request.path, 404, None, t0, op)
            return Response("Repository not found.\n", status=404)
        service = request.args.get("service") or m["rest"]
        write = service == "git-receive-pack"
        token = _token_from(request)
        challenge = {"WWW-Authenticate": 'Basic realm="GitHub"'}
        login = None
        if token:
            tok = emu.tokens.get(token)
            if tok is None or (tok.expires_at is not None and tok.expires_at <= emu.now()):
                self._record(request, request.path, 401, None, t0, op)
                return Response("Invalid username or token.\n", status=401, headers=challenge)
            login = tok.login
            actor = Actor(tok.kind, tok.login, tok)
            perms = emu.effective_permissions(actor, r)
            repo_ok = tok.repositories is None or r.name in tok.repositories
            need = "write" if write else "read"
            have = perms.get("contents")
            if not repo_ok or have is None or (need == "write" and have != "write"):
                self._record(request, request.path, 403, None, t0, op)
                return Response(f"Permission to {r.full_name}.git denied to {login}.\n", status=403)
        elif write or r.private:
            self._record(request, request.path, 401, None, t0, op)
            return Response("Authentication required.\n", status=401, headers=challenge)
        body = request.get_data()
        env = {
            "GIT_PROJECT_ROOT": str(emu.repos_root), "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{r.owner}/{r.name}.git/{m['rest']}", "REQUEST_METHOD": request.method,
            "QUERY_STRING": request.query_string.decode(), "CONTENT_TYPE": request.content_type or "",
            "CONTENT_LENGTH": str(len(body)), "REMOTE_USER": login or "", "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": request.headers.get("Git-Protocol", ""), "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_CONTENT_ENCODING": request.headers.get("Content-Encoding", ""),
        }
        before = {name: sha for name, sha, _t in emu.bare(r).refs()} if write and request.method == "POST" else None
        out = BareRepo.http_backend(emu.repos_root, env, body)
        sep = out.find(b"\r\n\r\n")
        cut = 4
        if sep < 0 or (0 <= out.find(b"\n\n") < sep):
            sep, cut = out.find(b"\n\n"), 2
        head, payload = (out[:sep], out[sep + cut:]) if sep >= 0 else (b"", out)
        status, headers = 200, {}
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers[key.strip()] = value.strip()
        if before is not None:
            with emu.lock:
                after = {name: sha for name, sha, _t in emu.bare(r).refs()}
                for name in sorted(set(before) | set(after)):
                    if before.get(name) != after.get(name):
                        emu.after_push(r, name, before.get(name), after.get(name), login)
        self._record(request, request.path, status, None, t0, op)
        return Response(payload, status=status, headers=headers)


def serve(emu: Emulator) -> tuple[Any, threading.Thread]:
    server = make_server("127.0.0.1", 0, EmulatorApp(emu), threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="github-emulator", daemon=True)
    thread.start()
    return server, thread

