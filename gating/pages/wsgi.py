"""A plain WSGI application over a `Site` (no web framework), and a threaded loopback server for it:
what `gating view` serves, and what tests and the bench render through."""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from html import escape
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qsl
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from gating.pages.site import Page, Site

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def query_of(text: str) -> dict[str, str]:
    """The first value of each parameter (the pages take no repeated ones)."""
    out: dict[str, str] = {}
    for k, v in parse_qsl(text, keep_blank_values=True):
        out.setdefault(k, v)
    return out


def respond(page: Page, start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = page.html.encode("utf-8")
    headers = {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(body)),
               **SECURITY_HEADERS, **page.headers}
    start_response(f"{page.status} {HTTPStatus(page.status).phrase}", list(headers.items()))
    return [body]


def application(site: Site) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return respond(Page(405, "method not allowed"), start_response)
        path = environ.get("PATH_INFO") or "/"
        if path == "/favicon.ico":
            return respond(Page(404, ""), start_response)
        try:
            page = site.handle(path, query_of(environ.get("QUERY_STRING", "")))
        except Exception as e:  # a bug or a broken clone: the console gets the traceback, the page the gist
            traceback.print_exc(file=sys.stderr)
            page = Page(500, f"<!doctype html><title>error</title><h1>This page failed</h1><p>{escape(type(e).__name__)}: "
                             f"{escape(str(e))[:500]}</p>")
        return respond(page, start_response)
    return app


class _Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(site: Site, host: str = "127.0.0.1", port: int = 0, quiet: bool = True) -> tuple[Any, threading.Thread]:
    """Start serving in a daemon thread; returns (server, thread). Stop with server.shutdown()."""
    server = make_server(host, port, application(site), server_class=_Threaded,
                         handler_class=_Quiet if quiet else WSGIRequestHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    return server, thread
