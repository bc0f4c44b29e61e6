"""The gunicorn worker `gating app serve` runs by default: one request at a time per process.

A webhook's acknowledgement costs a fraction of a millisecond of the App's own time; under gunicorn's
threaded worker (gthread) the rest of each request (the accepting thread hands the connection to a
pool thread through a queue, the pool thread hands the finished request back through a pipe, and
every hand-over waits for the GIL, which the job threads hold too) cost more than the App itself,
and a burst's slowest acknowledgements waited tens of milliseconds for the GIL.
The sync worker accepts, reads, answers and closes in one thread: no hand-over, no GIL contention
between requests, and connections wait their turn in the kernel's accept queue, first come first
served (bench/webhook_ack.py: the figures are in gating.commands.app.gunicorn_argv).

Two changes to gunicorn's sync worker. It has no bound on a client that stops sending: one would hold
the process until gunicorn's master kills it (--timeout), cutting off the jobs that process runs.
Here a connection that sends nothing for CLIENT_SECONDS (at most a third of --timeout) is dropped instead (gunicorn logs it as a
socket error); GitHub sends a delivery at once and gives up on an answer after 10 s, and behind a
buffering reverse proxy no client is slow. And a connection whose request was read whole is closed
at once, not after a round trip to the client (`_nothing_unread`).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from gunicorn import util
from gunicorn.workers.sync import SyncWorker


class AckWorker(SyncWorker):
    """gunicorn's sync worker, with a stall timeout on each connection and no wait to close one."""

    CLIENT_SECONDS = 10  # the longest a connection may send nothing while its request is read or answered

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Well within gunicorn's --timeout, past which its master kills a worker it has not heard from:
        # after a stall gunicorn still waits up to 2 s for the client to close its end.
        timeout = int(self.cfg.timeout or 0)
        seconds = min(self.CLIENT_SECONDS, max(1, timeout // 3)) if timeout > 0 else self.CLIENT_SECONDS
        self.stall = struct.pack("ll", seconds, 0)  # a struct timeval

    def accept(self, listener: socket.socket) -> None:
        client, addr = listener.accept()
        client.setblocking(True)
        # The kernel's timeouts, not socket.settimeout: that one polls the socket before every read and
        # write. A stalled read or write fails with EAGAIN, and gunicorn closes the connection.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self.stall)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self.stall)
        util.close_on_exec(client)
        self.handle(listener, client, addr)

    def handle_request(self, listener: socket.socket, req: Any, client: socket.socket, addr: Any) -> None:
        super().handle_request(listener, req, client, addr)  # a socket error raises: gunicorn's own close
        if getattr(req.body.reader, "length", None) == 0 and _nothing_unread(client):
            client.close()  # the answer is sent or queued: the kernel sends it, then the end of the connection


def _nothing_unread(client: socket.socket) -> bool:
    """Whether the client sent nothing past the request the App read (or closed its side already).

    gunicorn closes every connection by sending its end and then waiting, up to 2 s, for the client
    to close its own, reading whatever else it sends: closing with unread bytes in the socket would
    answer them with a reset, which may destroy the answer before the client reads it. With nothing
    unread there is nothing to protect, and the wait (a round trip to the client) would hold this
    process, which serves one connection at a time, idle."""
    try:
        return client.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return True
    except OSError:
        return False
