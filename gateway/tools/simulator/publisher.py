"""A minimal asyncio MQTT 3.1.1 publisher for the simulator and the benchmarks.

Why not paho: measured on the 2-core benchmark machine, a paho publisher stalls near 17k msgs/s
(its per-message Python bookkeeping and thread hand-offs), and the benchmark must drive the
gateway harder than that. Publishing needs only a handful of packet types, so this speaks the
protocol directly over asyncio streams: CONNECT/CONNACK, PUBLISH (QoS 0/1), PUBACK, PINGREQ/RESP,
DISCONNECT. It never subscribes.

Delivery: every QoS 1 message stays in a bounded in-flight window until its PUBACK arrives.
:meth:`MqttPublisher.publish` waits for a free slot, which is the backpressure. When the
connection drops, a background task reconnects with capped exponential backoff and re-sends the
whole window, in order, with the DUP flag, before any new message goes out, so nothing is lost
across a broker restart (duplicates are possible, as QoS 1 allows).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from types import TracebackType

from gateway.ingest import mqttcodec as codec
from gateway.ingest.mqttcodec import encode_varint

__all__ = ["MqttPublishError", "MqttPublisher", "encode_publish", "encode_varint"]

_CONNACK, _PUBLISH, _PUBACK, _PINGRESP = 0x20, 0x30, 0x40, 0xD0
_PINGREQ = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"
_DUP = 0x08
class MqttPublishError(ConnectionError):
    """The broker could not be reached or refused the connection."""


def encode_publish(topic: str, payload: bytes, *, qos: int, retain: bool, packet_id: int = 0,
                   dup: bool = False) -> bytes:
    """One MQTT 3.1.1 PUBLISH packet (packet_id only for QoS 1): the ingest codec's encoder."""
    return codec.encode_publish(topic, payload, qos=qos, retain=retain, packet_id=packet_id,
                                version=codec.MQTT311, dup=dup)


def _parse_header(buf: bytearray, pos: int) -> tuple[int, int] | None:
    """(body offset, body length) of the packet starting at ``pos``, or None if incomplete."""
    length, offset = 0, pos + 1
    for shift in (0, 7, 14, 21):
        if offset >= len(buf):
            return None
        byte = buf[offset]
        offset += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (offset, length) if offset + length <= len(buf) else None
    raise ConnectionResetError("malformed remaining length from broker")


def _connect_packet(client_id: str, clean_session: bool, keepalive: int, username: str | None,
                    password: str | None) -> bytes:
    # A password without a user name is not allowed in 3.1.1: it is only sent with one.
    return codec.encode_connect(
        client_id=client_id, version=codec.MQTT311, keepalive=keepalive,
        clean_start=clean_session, username=username,
        password=password.encode() if username is not None and password is not None else None)


class MqttPublisher:
    """``async with MqttPublisher(host, port, client_id=...) as pub: await pub.publish(...)``."""

    def __init__(self, host: str, port: int, *, client_id: str, clean_session: bool = True,
                 username: str | None = None, password: str | None = None, keepalive: int = 30,
                 max_inflight: int = 1000, tls: ssl.SSLContext | None = None,
                 reconnect_min_s: float = 0.1, reconnect_max_s: float = 5.0,
                 connect_timeout_s: float = 10.0) -> None:
        if not 1 <= max_inflight <= 65535:
            raise ValueError("max_inflight must be 1..65535 (packet ids are 16-bit)")
        self.host, self.port = host, port
        self._connect_bytes = _connect_packet(client_id, clean_session, keepalive, username,
                                              password)
        self._keepalive = keepalive
        self._tls = tls
        self._backoff = (reconnect_min_s, reconnect_max_s)
        self._connect_timeout = connect_timeout_s
        self._window = asyncio.Semaphore(max_inflight)
        self._inflight: dict[int, bytes] = {}  # packet id -> packet; dicts keep send order
        self._next_id = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._connected = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._last_io = 0.0  # last write, to know when a PINGREQ is due
        self._last_rx = 0.0  # last read, to notice a broker that vanished without a FIN/RST
        self.sent = 0      # PUBLISH packets handed to the socket for the first time
        self.acked = 0     # PUBACKs received
        self.resent = 0    # QoS 1 packets re-sent with DUP after a reconnect
        self.reconnects = 0
        self.last_error: str = ""

    async def __aenter__(self) -> MqttPublisher:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close(flush_timeout_s=5.0 if exc_type is None else 0.0)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def connect(self) -> None:
        """First connection; raises :class:`MqttPublishError` instead of retrying."""
        reader, writer = await self._open()
        self._tasks.append(asyncio.create_task(self._session(reader, writer), name="mqtt-pub"))

    async def publish(self, topic: str, payload: bytes, qos: int = 1,
                      retain: bool = False) -> None:
        """Queue one message; returns once it is in the window (QoS 1) or written (QoS 0)."""
        if qos == 0:
            await self._connected.wait()
            await self._write(encode_publish(topic, payload, qos=0, retain=retain))
            self.sent += 1
            return
        await self._window.acquire()
        packet_id = self._allocate_id()
        packet = encode_publish(topic, payload, qos=1, retain=retain, packet_id=packet_id)
        self._inflight[packet_id] = packet
        self._idle.clear()
        self.sent += 1
        # While disconnected the message just waits in the window: the reconnect re-sends it.
        if self._connected.is_set():
            await self._write(packet)

    async def flush(self, timeout: float) -> None:  # noqa: ASYNC109 - the documented API
        """Wait until every QoS 1 message is acknowledged; TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            await self._idle.wait()
            if self._writer is not None and self._connected.is_set():
                with contextlib.suppress(ConnectionError):
                    await self._writer.drain()

    async def close(self, flush_timeout_s: float = 0.0) -> None:
        """Optionally wait for acknowledgements, then DISCONNECT and stop reconnecting."""
        if flush_timeout_s > 0:
            with contextlib.suppress(TimeoutError):
                await self.flush(flush_timeout_s)
        self._closing = True
        writer = self._writer
        if writer is not None and self._connected.is_set():
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.write(_DISCONNECT)
                await writer.drain()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    # ------------------------------------------------------------------ internals

    def _allocate_id(self) -> int:
        # The window guarantees a free id exists; skip ids still awaiting their PUBACK.
        while True:
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._inflight:
                return self._next_id

    async def _write(self, packet: bytes) -> None:
        writer = self._writer
        if writer is None or writer.transport.is_closing():
            # The connection is lost but the read loop has not noticed yet: writing would only
            # fail again (asyncio logs each attempt). A QoS 1 packet waits in the window for the
            # reconnect, which re-sends it.
            return
        writer.write(packet)
        self._last_io = asyncio.get_running_loop().time()
        # drain() only when the socket buffer is full: awaiting it per message halves throughput.
        transport = writer.transport
        if transport.get_write_buffer_size() > 256 * 1024:
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self._tls)
                writer.write(self._connect_bytes)
                header = await reader.readexactly(4)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            if writer is not None:
                # Connected but no CONNACK (a stalled link): close the socket now, or every
                # retry of a long stall leaks one until the garbage collector finds it.
                writer.close()
            raise MqttPublishError(f"cannot connect to {self.host}:{self.port}: {exc!r}") from exc
        if header[0] != _CONNACK or header[3] != 0:
            writer.close()
            raise MqttPublishError(f"broker refused the connection (CONNACK {header.hex()})")
        self._writer = writer
        # Re-send the window before any new message: publish() waits on _connected.
        for packet_id, packet in list(self._inflight.items()):
            dup = bytes([packet[0] | _DUP]) + packet[1:]
            self._inflight[packet_id] = dup
            writer.write(dup)
            self.resent += 1
        self._last_io = asyncio.get_running_loop().time()
        self._connected.set()
        return reader, writer

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Run one connection until it drops, then reconnect, forever (until close())."""
        delay = self._backoff[0]
        while True:
            pinger = asyncio.create_task(self._keepalive_loop(writer), name="mqtt-pub-ping")
            try:
                await self._read_loop(reader)
            except (ConnectionError, OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
                self.last_error = repr(exc)
            finally:
                pinger.cancel()
                self._connected.clear()
                writer.close()
            while not self._closing:
                await asyncio.sleep(delay)
                try:
                    reader, writer = await self._open()
                except MqttPublishError as exc:
                    self.last_error = str(exc)
                    delay = min(delay * 2, self._backoff[1])
                    continue
                self.reconnects += 1
                delay = self._backoff[0]
                break
            if self._closing:
                return

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        # Read in chunks and parse by hand: PUBACKs are 4 bytes, and one readexactly() per packet
        # costs more than the whole publish path at benchmark rates.
        loop = asyncio.get_running_loop()
        buf = bytearray()
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionResetError("broker closed the connection")
            self._last_rx = loop.time()
            buf += chunk
            pos = 0
            while (parsed := _parse_header(buf, pos)) is not None:
                offset, length = parsed
                self._on_packet(buf[pos] & 0xF0, bytes(buf[offset:offset + length]))
                pos = offset + length
            del buf[:pos]

    def _on_packet(self, kind: int, body: bytes) -> None:
        if kind == _PUBACK and len(body) >= 2:
            packet_id = (body[0] << 8) | body[1]
            if self._inflight.pop(packet_id, None) is not None:
                self.acked += 1
                self._window.release()
                if not self._inflight:
                    self._idle.set()
        # PINGRESP needs no action: any byte from the broker proves the link is alive.

    async def _keepalive_loop(self, writer: asyncio.StreamWriter) -> None:
        if self._keepalive <= 0:
            return
        loop = asyncio.get_running_loop()
        self._last_rx = loop.time()
        while True:
            await asyncio.sleep(self._keepalive / 2)
            now = loop.time()
            if now - self._last_rx > self._keepalive * 1.5:
                # No PINGRESP, no PUBACK: the link is dead (e.g. a cable pulled). Aborting makes
                # the read loop fail and the session reconnect.
                self.last_error = "keepalive timeout"
                writer.transport.abort()
                return
            # The spec wants *some* packet within the keepalive, and a QoS 0 flood gets no replies,
            # so ping when either direction has been quiet.
            if now - min(self._last_io, self._last_rx) >= self._keepalive / 2:
                writer.write(_PINGREQ)
                self._last_io = now
