"""What every endpoint that takes a body shares: the refusal it answers with, and the bounded read.

Webhooks (gating.server.webhooks) and telemetry (gating.server.telemetry) read the raw WSGI body the
same way and refuse in the same words; each door turns a `Refused` into its own answer.
"""

from __future__ import annotations

from typing import Any

from gating.errors import FAILED, USAGE, GatingError


class Refused(GatingError):
    """A request refused: `status` is the HTTP answer, `message` says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message, exit_code=USAGE if status < 500 else FAILED)
        self.status = status


def read_body(environ: dict[str, Any], limit: int) -> bytes:
    """The raw body: exactly Content-Length bytes, or a chunked body read to its end; 413 past `limit`;
    408 when the client stops sending it (the server's socket timeout: gating.server.gunicorn_worker)."""
    try:
        return _read_body(environ, limit)
    except (TimeoutError, BlockingIOError):
        raise Refused(408, "the body stopped arriving before its end") from None


def _read_body(environ: dict[str, Any], limit: int) -> bytes:
    stream = environ["wsgi.input"]
    length_header = environ.get("CONTENT_LENGTH")
    if length_header:
        try:
            length = int(length_header)
        except ValueError:
            raise Refused(400, f"Content-Length {length_header!r} is not a number") from None
        if length > limit:
            raise Refused(413, f"body of {length} bytes is over the limit of {limit}")
        body = stream.read(length) if length > 0 else b""
        while len(body) < length and (more := stream.read(length - len(body))):
            body += more
        if len(body) < length:
            raise Refused(400, f"body ended after {len(body)} of {length} bytes")
        return body
    if not environ.get("wsgi.input_terminated"):
        return b""  # no length and a server that does not delimit the stream: nothing is safe to read
    buf = bytearray()
    while chunk := stream.read(65536):
        buf += chunk
        if len(buf) > limit:
            raise Refused(413, f"body is over the limit of {limit} bytes")
    return bytes(buf)
