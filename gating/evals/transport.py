"""httpcore's network layer on plain asyncio streams, for ClientPool's connection pools.

httpx's default backend for asyncio goes through anyio, which costs more CPU per request than the
HTTP exchange itself (a cancel scope per read and write, and the attributes of a socket rebuilt each
time the pool asks whether an idle connection has been closed). At hundreds of requests a second
that CPU is what keeps a run above its ideal wall time, so the pool drives httpcore directly on
asyncio's own streams: the same HTTP/1.1 implementation (h11), TLS from the ssl module, timeouts
from `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterable
from typing import Any

import httpcore

READ_LIMIT = 2**20  # bytes a stream buffers before it stops reading from its socket
HAPPY_EYEBALLS_S = 0.25  # as anyio: an address family that does not answer soon is raced by the next (RFC 8305)
WRITE_BATCH = 2**16  # bytes of a request held back for one send, at most


class AsyncioStream(httpcore.AsyncNetworkStream):
    """A connection whose writes wait for the next read: httpcore writes a request's head and body
    apart, and sending them in one segment saves a system call (and a wake-up of the server) each."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pending: list[bytes] = []
        self._pending_timeout: float | None = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._pending:
            await self._flush()
        try:
            if timeout is None:
                return await self._reader.read(max_bytes)
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout(f"no data within {timeout:g} s") from None
        except OSError as e:
            raise httpcore.ReadError(str(e) or type(e).__name__) from e

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._pending.append(buffer)
            self._pending_timeout = timeout
            if sum(map(len, self._pending)) >= WRITE_BATCH:
                await self._flush()

    async def _flush(self) -> None:
        data, timeout = b"".join(self._pending), self._pending_timeout
        self._pending.clear()
        try:
            self._writer.write(data)
            if timeout is None:
                await self._writer.drain()
            else:
                async with asyncio.timeout(timeout):
                    await self._writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout(f"could not send within {timeout:g} s") from None
        except (OSError, RuntimeError) as e:
            raise httpcore.WriteError(str(e) or type(e).__name__) from e

    async def aclose(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            await self.aclose()
            raise httpcore.ConnectTimeout(f"TLS handshake not done within {timeout:g} s") from None
        except (OSError, ssl.SSLError) as e:
            await self.aclose()
            raise httpcore.ConnectError(str(e) or type(e).__name__) from e
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # asyncio reads the socket as data comes, so an idle connection the server closed (or one
            # with bytes nobody asked for) shows in the stream, not in the socket
            return self._reader.at_eof() or self._writer.is_closing() or bool(getattr(self._reader, "_buffer", b""))
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, local_addr=local, limit=READ_LIMIT,
                                                               happy_eyeballs_delay=HAPPY_EYEBALLS_S)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"no connection to {host}:{port} within {timeout:g} s") from None
        except OSError as e:
            raise httpcore.ConnectError(str(e) or type(e).__name__) from e
        sock = writer.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path, limit=READ_LIMIT)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"no connection to {path} within {timeout:g} s") from None
        except OSError as e:
            raise httpcore.ConnectError(str(e) or type(e).__name__) from e
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class LazyTLSPool(httpcore.AsyncConnectionPool):
    """A connection pool that takes its TLS context at its first https connection: loading the trust
    store costs tens of milliseconds of CPU in every process that builds a pool, and a run against
    plain-http endpoints (a local server, a gateway on loopback) never needs it."""

    def __init__(self, tls: Callable[[], ssl.SSLContext], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tls = tls

    def create_connection(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface:
        if self._ssl_context is None and origin.scheme == b"https":
            self._ssl_context = self._tls()
        return super().create_connection(origin)
