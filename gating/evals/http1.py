"""A lean HTTP/1.1 connection pool on asyncio, for ClientPool's direct path (no proxy): h11 parses.

httpcore's pool, which httpx sits on, takes a lock and yields to the event loop about six times a
request, polls the socket of each idle connection and builds its own request and response models:
at hundreds of requests a second that CPU, more than the HTTP itself, kept a run above its ideal
wall time. This pool does what the eval engine needs and nothing else: keep-alive connections per
origin, reused last-in first-out; at most `max_connections` of them, callers beyond that queued in
order; each connection an asyncio.Protocol feeding h11, which does all of HTTP/1.1 (framing,
chunked and content-length bodies, keep-alive or close); TLS from the ssl module; a timeout on the
connect, on a blocked send and on each wait for data. Failures are httpx's own exceptions, naming
the endpoint, and an answer is an httpx.Response (which decodes gzip and deflate), so callers cannot
tell it from httpx. Proxies, HTTP/2 and the rest stay with httpx (ClientPool chooses).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable, Iterable

import h11
import httpx

HAPPY_EYEBALLS_S = 0.25  # as httpx: an address family that does not answer soon is raced by the next (RFC 8305)
ACCEPT_ENCODING = b"gzip, deflate"  # what httpx.Response decodes without optional packages

Origin = tuple[str, str, int]  # scheme, host, port


class _Target:
    """A URL taken apart once (it is the same for every request to an endpoint)."""

    __slots__ = ("origin", "path", "host", "url")

    def __init__(self, url: str) -> None:
        try:
            u = httpx.URL(url)
        except httpx.InvalidURL as e:
            raise httpx.UnsupportedProtocol(f"{url!r} is not a URL: {e}") from None
        if u.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"{url!r}: only http:// and https:// URLs can be requested")
        if not u.raw_host:
            raise httpx.UnsupportedProtocol(f"{url!r} names no host")
        self.origin: Origin = (u.scheme, u.raw_host.decode("ascii"), u.port or (443 if u.scheme == "https" else 80))
        self.path = u.raw_path
        self.host = u.netloc
        self.url = url


class _Connection(asyncio.Protocol):
    """One socket: the bytes asyncio reads go straight to h11; a request waits on a future for them."""

    def __init__(self, where: str) -> None:
        self.where = where  # host:port, for errors
        self.h11 = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.active = False  # an exchange is under way (bytes at any other time make the connection unusable)
        self.dead = False  # closed by either side, or unusable: never reused
        self.lost: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.active:  # a server speaks on an idle connection only to close it
            self.close()
            return
        self.h11.receive_data(data)
        self._wake()

    def eof_received(self) -> bool:
        if self.active:
            self.h11.receive_data(b"")
        self.dead = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.dead = True
        self.lost = exc
        self._wake()
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def close(self) -> None:
        self.dead = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, target: _Target, headers: list[tuple[bytes, bytes]], body: bytes,
                       timeout: float) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send one request and read its whole answer: (status, headers, body as sent)."""
        h = self.h11
        assert self.transport is not None
        self.active = True
        try:
            head = h11.Request(method=b"POST", target=target.path, headers=headers)
            self.transport.write(b"".join([h.send(head) or b"", h.send(h11.Data(data=body)) or b"",
                                           h.send(h11.EndOfMessage()) or b""]))
            if self._paused:
                await self._drain(timeout)
            status = 0
            got: list[tuple[bytes, bytes]] = []
            chunks: list[bytes] = []
            while True:
                event = h.next_event()
                if event is h11.NEED_DATA:
                    if self.dead:  # reset, with no end of stream for h11 to judge
                        raise httpx.ReadError(f"the connection to {self.where} was lost"
                                              + (f": {self.lost}" if self.lost else ""))
                    await self._wait(timeout)
                elif isinstance(event, h11.Response):
                    status, got = event.status_code, list(event.headers)
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise httpx.RemoteProtocolError(f"{self.where} closed the connection without sending an answer")
                # an InformationalResponse (100 Continue, 103 Early Hints) precedes the answer: skip it
        except h11.RemoteProtocolError as e:
            raise httpx.RemoteProtocolError(f"{self.where} sent a malformed HTTP answer: {e}") from None
        except h11.LocalProtocolError as e:
            raise httpx.LocalProtocolError(f"the request to {self.where} cannot be sent: {e}") from None
        finally:
            self.active = False
        if h.our_state is h11.DONE and h.their_state is h11.DONE and not self.dead:
            h.start_next_cycle()
        else:
            self.close()
        return status, got, b"".join(chunks)

    async def _wait(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        fut = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _expire, fut)
        try:
            await fut
        except TimeoutError:
            raise httpx.ReadTimeout(f"no answer from {self.where} within {timeout:g} s") from None
        finally:
            timer.cancel()
            self._waiter = None

    async def _drain(self, timeout: float) -> None:
        self._drained = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._drained
        except TimeoutError:
            raise httpx.WriteTimeout(f"could not send the request to {self.where} within {timeout:g} s") from None
        finally:
            self._drained = None
        if self.dead:
            raise httpx.WriteError(f"the connection to {self.where} was lost while sending"
                                   + (f": {self.lost}" if self.lost else ""))


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class Pool:
    """Keep-alive HTTP/1.1 connections to any origin, at most `max_connections` open at once.

    `tls()` gives the TLS context at the first https connection: loading the trust store costs tens
    of milliseconds, and a run against plain-http endpoints (a local server, a gateway on loopback)
    never needs it."""

    def __init__(self, max_connections: int, tls: Callable[[], ssl.SSLContext],
                 default_headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self.max_connections = max(1, max_connections)
        self._tls = tls
        self._defaults = [(b"accept-encoding", ACCEPT_ENCODING), *default_headers]
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open = 0  # connections open or opening
        self._queue: deque[asyncio.Future[None]] = deque()  # callers waiting for a connection
        self._targets: dict[str, _Target] = {}
        self._closed = False

    async def post(self, url: str, body: bytes, headers: Iterable[tuple[bytes, bytes]],
                   timeout: float) -> httpx.Response:
        """POST `body`; the whole answer, or an httpx exception. `timeout` bounds the wait for a
        connection, the connect, a blocked send and each wait for the answer's bytes."""
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = _Target(url)
        sent = [(b"host", target.host), *self._defaults, *headers, (b"content-length", b"%d" % len(body))]
        conn = await self._checkout(target.origin, timeout)
        try:
            status, got, content = await conn.exchange(target, sent, body, timeout)
        except BaseException:
            conn.close()
            self._gone()
            raise
        if conn.dead or self._closed:
            conn.close()
            self._gone()
        else:
            self._idle.setdefault(target.origin, []).append(conn)
            self._next()
        return httpx.Response(status, headers=got, content=content)

    async def _checkout(self, origin: Origin, timeout: float) -> _Connection:
        deadline: float | None = None
        while True:
            if self._closed:
                raise httpx.TransportError("the connection pool is closed: the run has ended")
            idle = self._idle.get(origin)
            while idle:
                conn = idle.pop()
                if not conn.dead:
                    return conn
                self._gone(notify=False)
            if self._open < self.max_connections or self._evict(origin):
                self._open += 1
                try:
                    return await self._connect(origin, timeout)
                except BaseException:
                    self._gone()
                    raise
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + timeout
            fut = loop.create_future()
            self._queue.append(fut)
            timer = loop.call_at(deadline, _expire, fut)
            try:
                await fut
            except TimeoutError:
                raise httpx.PoolTimeout(f"no free connection to {origin[1]}:{origin[2]} within {timeout:g} s "
                                        f"({self.max_connections} in use)") from None
            except BaseException:
                self._pass_on(fut)
                raise
            finally:
                timer.cancel()

    def _pass_on(self, fut: asyncio.Future[None]) -> None:
        """A waiter that was woken but leaves (cancelled) hands its turn to the next."""
        try:
            self._queue.remove(fut)
        except ValueError:
            self._next()

    def _evict(self, origin: Origin) -> bool:
        """Close an idle connection to another origin to make room for one to `origin`."""
        for other, conns in self._idle.items():
            if other != origin and conns:
                conns.pop(0).close()
                self._open -= 1
                return True
        return False

    async def _connect(self, origin: Origin, timeout: float) -> _Connection:
        scheme, host, port = origin
        where = f"{host}:{port}"
        tls = self._tls() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _t, conn = await loop.create_connection(lambda: _Connection(where), host, port, ssl=tls,
                                                        server_hostname=host if tls else None,
                                                        happy_eyeballs_delay=HAPPY_EYEBALLS_S)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {where} within {timeout:g} s") from None
        except (OSError, ssl.SSLError) as e:
            raise httpx.ConnectError(f"cannot connect to {where}: {e or type(e).__name__}") from None
        return conn

    def _gone(self, notify: bool = True) -> None:
        """A connection closed: room for another."""
        self._open -= 1
        if notify:
            self._next()

    def _next(self) -> None:
        while self._queue:
            fut = self._queue.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def aclose(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
                self._open -= 1
        self._idle.clear()
        for fut in self._queue:
            if not fut.done():
                fut.set_result(None)
        self._queue.clear()
        await asyncio.sleep(0)  # the transports finish closing on the next turn of the loop
