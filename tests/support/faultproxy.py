"""A TCP proxy that breaks the network on command, for the chaos suite.

::

    gateway ──TCP──▶ FaultProxy (127.0.0.1:port) ──TCP──▶ broker or InfluxDB

It passes bytes both ways until told otherwise:

* :meth:`FaultProxy.drop`: a cable pulled out and a firewall rule added. Every open connection
  is reset, and new connections are reset as soon as they are accepted, until :meth:`resume`.
* :meth:`FaultProxy.stall`: the failure a reset never shows, "connected but nothing arrives".
  Connections stay open and new ones are accepted, but no byte is forwarded either way; what
  was read is held. Only a keepalive, a timeout or a watchdog on the client can notice.
* :meth:`FaultProxy.resume`: back to passing. Held bytes are forwarded in order (the network
  healed before either end gave up), and an end that closed meanwhile sees the close.

The proxy runs on the event loop that calls :meth:`start`; all methods must be called there.
It holds no global state, so a test can put one in front of the broker and another in front of
InfluxDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
from dataclasses import dataclass
from types import TracebackType

__all__ = ["FaultProxy", "Mode", "ProxyStats"]

_CHUNK = 65536


class Mode(enum.Enum):
    PASS = "pass"
    DROP = "drop"
    STALL = "stall"


@dataclass
class ProxyStats:
    accepted: int = 0        # client connections accepted (including those reset by a drop)
    refused: int = 0         # connections reset on arrival because the proxy was dropping
    reset: int = 0           # open connections reset by drop()
    upstream_failed: int = 0  # upstream refused or unreachable: the client was closed
    bytes_up: int = 0        # client → upstream
    bytes_down: int = 0      # upstream → client


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST rather than a FIN: what a peer sees when a link is torn down."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # SO_LINGER with a zero timeout makes close() send RST and drop unsent data.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One client connection and its upstream twin."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    def reset(self) -> None:
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)
        if self.task is not None:
            self.task.cancel()


class FaultProxy:
    """``async with FaultProxy(upstream_port) as proxy:``, then connect to ``proxy.port``."""

    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1",
                 listen_host: str = "127.0.0.1", listen_port: int = 0,
                 name: str = "proxy") -> None:
        self.name = name
        self.upstream = (upstream_host, upstream_port)
        self._listen = (listen_host, listen_port)
        self._mode = Mode.PASS
        # Set while bytes may flow; every pipe waits on it before reading and before writing.
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self.port = listen_port
        self.stats = ProxyStats()

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def open_connections(self) -> int:
        return len(self._links)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, *self._listen)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.reset()
        tasks = [link.task for link in self._links if link.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._links.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # -- commands ------------------------------------------------------------------------------

    def drop(self) -> None:
        """Reset every connection now and every new one until :meth:`resume`."""
        self._mode = Mode.DROP
        # Wake pipes held by a stall so that they notice their sockets are gone.
        self._flowing.set()
        for link in list(self._links):
            link.reset()
            self.stats.reset += 1

    def stall(self) -> None:
        """Keep every connection open but forward nothing, until :meth:`resume`."""
        self._mode = Mode.STALL
        self._flowing.clear()

    def resume(self) -> None:
        self._mode = Mode.PASS
        self._flowing.set()

    # -- plumbing ------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        if self._mode is Mode.DROP:
            self.stats.refused += 1
            _reset(writer)
            return
        link = _Link(writer)
        link.task = asyncio.current_task()
        self._links.add(link)
        try:
            await self._serve(link, reader)
        except asyncio.CancelledError:
            pass  # reset by drop() or close(): the sockets are already aborted
        finally:
            self._links.discard(link)
            for w in (link.client, link.upstream):
                if w is not None and not w.transport.is_closing():
                    w.transport.abort()

    async def _serve(self, link: _Link, client_reader: asyncio.StreamReader) -> None:
        # A stalled network does not carry the SYN either: connect upstream only when flowing.
        await self._flowing.wait()
        if self._mode is Mode.DROP:
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            # Upstream down (a stopped broker or InfluxDB): the client sees its connection close.
            self.stats.upstream_failed += 1
            return
        link.upstream = up_writer
        await asyncio.gather(self._pipe(client_reader, link.client, up_writer, up=True),
                             self._pipe(up_reader, up_writer, link.client, up=False))

    async def _pipe(self, reader: asyncio.StreamReader, source: asyncio.StreamWriter,
                    writer: asyncio.StreamWriter, *, up: bool) -> None:
        """Copy ``reader`` (the read side of ``source``) into ``writer`` while flowing."""
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(_CHUNK)
                if not data:
                    break
                # A stall that began while the read was pending holds what it returned.
                await self._flowing.wait()
                if self._mode is Mode.DROP:
                    return
                writer.write(data)
                await writer.drain()
                if up:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
            # Half-close: pass the FIN on, and let the other direction finish on its own.
            if writer.can_write_eof() and not writer.transport.is_closing():
                writer.write_eof()
        except (ConnectionError, OSError):
            # One side vanished: tear the whole link down, as a router would forget the flow.
            writer.transport.abort()
            source.transport.abort()
