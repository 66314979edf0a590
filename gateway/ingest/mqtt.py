"""The ingest MQTT session: an asyncio protocol on the transport and a sans-IO codec.

Why our own client and not paho or aiomqtt: a QoS 1 message must be acknowledged to the broker
only once it is durable in ParkWatch's write-ahead log (docs/adr/0001-ack-after-durable.md);
aiomqtt acknowledges on receipt, and paho, which can wait, cost half the gateway's CPU at full
rate (bench/RESULTS.md, "Where the time goes": a packet read per call, an MQTT 5 ``Properties``
object per message, one PUBACK write per message). Here the transport hands over whatever
arrived, :class:`gateway.ingest.mqttcodec.Decoder` turns it into messages in one pass, and the
PUBACKs of a committed batch leave in one write.

What the session keeps doing: an MQTT 5 persistent session (clean start off, a session expiry)
with a Receive Maximum; or MQTT 3.1.1 (``mqtt.protocol``) with a persistent session; TLS with a
password or a client certificate; keepalive; reconnecting forever with jittered backoff; the
Will; resubscribe/reconnect for the stall watchdog; reading paused while the inbox is full.

Flow control: with MQTT 5 the broker sends at most ``receive_maximum`` unacknowledged QoS 1
messages, which bounds what sits in memory; otherwise (QoS 0, MQTT 3.1.1, a broker ignoring the
limit) reading pauses when the inbox is full and the broker buffers. At most one read's worth
(the transport's read size) lands above ``queue_size``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import cast

from gateway.config import MqttSettings
from gateway.errors import MqttError
from gateway.ingest import mqttcodec as codec
from gateway.ingest.mqttcodec import MQTT5, MQTT311, CodecError, Publish
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

_RC_BAD_LOGIN = 0x86      # MQTT 5 CONNACK "Bad user name or password"
_RC_NOT_AUTHORIZED = 0x87  # "Not authorized": mosquitto's answer to a wrong password or user
#: How long the broker may take to answer CONNECT (a TCP or TLS connect has the same limit).
CONNECT_TIMEOUT_S = 10.0
#: The largest packet accepted: the largest payload ``ingest.max_payload_bytes`` allows, plus a
#: topic. Told to an MQTT 5 broker as Maximum Packet Size (it drops bigger messages instead of
#: sending them); an MQTT 3.1.1 broker sending more is dropped as a protocol error.
MAX_PACKET = (16 << 20) + 65_536 + 16

#: One received message; see :class:`gateway.ingest.mqttcodec.Publish` (``mid`` is the packet
#: identifier, ``generation`` the connection it came on).
Inbound = Publish


def connect_hint(exc: BaseException, *, tls: bool) -> str:
    """A pointer to the likely fix for a failed TCP/TLS connect, or ""."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (" (the broker's certificate is not trusted: set mqtt.tls.ca_file to the CA that "
                "signed it, and connect by a name or IP the certificate lists)")
    # A plain listener answers a TLS ClientHello with garbage or by resetting the connection.
    if tls and isinstance(exc, ssl.SSLError | ConnectionResetError | ConnectionAbortedError):
        return (" (TLS handshake failed: is the port a TLS listener, and does the broker want a "
                "client certificate?)")
    return ""


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(slots=True)
class _Outgoing:
    """A QoS 1 publish of ours, kept until its PUBACK (resent after a reconnect)."""

    packet: bytes
    done: asyncio.Future[None]
    sent: bool = False


class _Connection(asyncio.Protocol):
    """One TCP/TLS connection: bytes in → the decoder → the session; nothing outlives it."""

    def __init__(self, session: MqttSession, version: int) -> None:
        self.session = session
        self.decoder = codec.Decoder(version=version, max_packet=MAX_PACKET)
        self.transport: asyncio.Transport | None = None
        self.answered = asyncio.Event()     # CONNACK arrived, or the connection is gone
        self.accepted = False               # CONNACK said yes
        self.explained = False              # a refusal or bad packet, logged as such
        self.lost = False
        self.generation = 0
        self.last_in = self.last_out = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.last_in = time.monotonic()
        try:
            packets = self.decoder.feed(data, time.time_ns() // 1_000_000, self.generation)
        except CodecError as exc:
            self.session._protocol_error(self, exc)
            return
        self.session._packets(self, packets)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.answered.set()
        self.session._lost(self, exc)

    def write(self, data: bytes) -> None:
        # is_closing() as well as lost: connection_lost arrives a loop turn after the transport
        # closed, and the stdlib's TLS transport, closed twice, raises AttributeError on write
        # (seen: the session closing while a TLS 1.3 broker refused the client certificate).
        transport = self.transport
        if transport is not None and not self.lost and not transport.is_closing():
            transport.write(data)
            self.last_out = time.monotonic()

    def close(self, *, abort: bool = False) -> None:
        transport = self.transport
        if transport is None or self.lost:
            return
        if abort:
            transport.abort()
        elif not transport.is_closing():   # a second close() detaches the stdlib's TLS protocol
            transport.close()


class MqttSession:
    """A persistent MQTT session that reconnects forever and hands out received messages.

    Use as ``async with MqttSession(...) as session:`` then ``async for batch in
    session.batches()``; call :meth:`puback_all` with the messages once they are durable.
    """

    def __init__(self, *, settings: MqttSettings, client_id: str, subscriptions: list[str],
                 metrics: Metrics, will: Will | None = None,
                 online: tuple[str, bytes] | None = None, queue_size: int = 20_000,
                 primary: bool = True) -> None:
        self._settings = settings
        self._version = MQTT5 if settings.protocol == "5" else MQTT311
        # A secondary session (the gateway's priority lane) leaves the connection and in-flight
        # gauges to the primary one: /healthz reports the main ingest path.
        self._primary = primary
        self._client_id = client_id
        self._will = will
        self._subscriptions = subscriptions
        self._metrics = metrics
        self._online = online
        self._queue_size = queue_size
        # Reading pauses here. A broker that honours our Receive Maximum never fills more than
        # it; mosquitto 2.0.11 does not once PUBACKs flow (bench/RESULTS.md), so the inbox is
        # held to twice the window rather than to ingest.queue_size.
        self._inbox_limit = (min(queue_size, 2 * settings.receive_maximum)
                             if settings.protocol == "5" else queue_size)
        self._inbox: collections.deque[Inbound] = collections.deque()
        self._inbox_ready = asyncio.Event()
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._generation = 0
        self._reading_paused = False
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._conn: _Connection | None = None      # the connection being made or in use
        self._keepalive_s = float(settings.keepalive_s)
        self._outgoing: dict[int, _Outgoing] = {}   # our QoS 1 publishes awaiting PUBACK
        self._unsent: collections.deque[int] = collections.deque()  # of those, not yet sent
        self._sent = 0                              # sent on this connection, no PUBACK yet
        self._next_pid = 0
        self._send_quota = 65535                    # the broker's Receive Maximum
        self._publish_failed_logged = -1e9
        # Counted as a plain int on the hot path; the gauge reads it when scraped.
        self._unacked = 0
        if primary:
            metrics.inflight.set_function(lambda: self._unacked)
        self._tasks: list[asyncio.Task[None]] = []
        self._tls_context = self._make_tls_context() if settings.tls_enabled else None

    # -- public surface ------------------------------------------------------------------------

    async def __aenter__(self) -> MqttSession:
        self._tasks = [
            asyncio.create_task(self._connection_loop(), name="mqtt-connection"),
            asyncio.create_task(self._misc_loop(), name="mqtt-keepalive"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def unacked(self) -> int:
        """QoS 1 messages received and not acknowledged yet."""
        return self._unacked

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def protocol_version(self) -> int:
        """5 (MQTT 5) or 4 (MQTT 3.1.1)."""
        return self._version

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout_s)

    async def batches(self, max_items: int, linger_s: float = 0.0
                      ) -> AsyncIterator[list[Inbound]]:
        """Yield everything received so far (up to ``max_items``), waiting when there is nothing.

        ``linger_s``: when a batch would hold fewer than ``max_items // 8``, wait that long
        first for more. A steady 10k msgs/s otherwise arrives as ~370 batches of ~27 a second,
        and what each batch costs besides its messages (an fsync, a commit, a PUBACK write) was
        a quarter of the gateway's CPU (issue 15). A saturated inbox never waits.
        """
        inbox = self._inbox
        depth = self._metrics.queue_depth.labels(queue="inbox")
        small = max(1, max_items // 8)
        while True:
            while not inbox:
                self._inbox_ready.clear()
                await self._inbox_ready.wait()
            if linger_s > 0 and len(inbox) < small:
                await asyncio.sleep(linger_s)
            if len(inbox) <= max_items:
                batch = list(inbox)
                inbox.clear()
            else:
                batch = [inbox.popleft() for _ in range(max_items)]
            # Received = handed to the pipeline: a message that waited in the inbox must not
            # look old to liveness (a device judged silent because we were busy flaps
            # device_offline; the saturated peer benchmark made 100 such alarms per device).
            now_ms = time.time_ns() // 1_000_000
            for message in batch:
                message.received_at_ms = now_ms
            depth.set(len(inbox))
            if self._reading_paused and len(inbox) < self._inbox_limit // 2:
                self._resume_reading()
            yield batch

    def puback(self, message: Inbound) -> None:
        """Acknowledge a QoS 1 message, unless the connection that delivered it is gone."""
        self.puback_all((message,))

    def puback_all(self, messages: Iterable[Inbound]) -> None:
        """Acknowledge messages in receive order, in one write; metrics updated once per call."""
        generation = self._generation
        conn = self._conn if self.connected else None
        pids: list[int] = []
        stale = 0
        for message in messages:
            if message.qos == 0:
                continue
            if message.generation != generation or conn is None:
                # The broker redelivers it on the new connection; the replay is idempotent.
                stale += 1
            else:
                pids.append(message.mid)
        self._unacked -= len(pids) + stale
        if pids and conn is not None:
            conn.write(codec.encode_pubacks(pids))   # where a PUBACK is sent
            self._metrics.acks.inc(len(pids))
        if stale:
            self._metrics.stale_acks.inc(stale)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                retain: bool = False) -> asyncio.Future[None]:
        """Queue a publish; the future completes on PUBACK (resent after a reconnect)."""
        done: asyncio.Future[None] = self._loop.create_future()
        if qos == 0:
            if self.connected and self._conn is not None:
                self._conn.write(codec.encode_publish(topic, payload, qos=0, retain=retain,
                                                      packet_id=0, version=self._version))
            done.set_result(None)
            return done
        try:
            pid = self._allocate_pid()
            packet = codec.encode_publish(topic, payload, qos=1, retain=retain, packet_id=pid,
                                          version=self._version)
        except (ValueError, MqttError) as exc:
            done.set_exception(MqttError(f"publish to {topic} failed: {exc}"))
            # A caller that awaits still gets it; one that fired and forgot (the retained alarm
            # documents) must not flood the log with "exception never retrieved".
            done.exception()
            now = time.monotonic()
            if now - self._publish_failed_logged > 60:
                self._publish_failed_logged = now
                log.warning("mqtt: publish to %s failed: %s (logged once a minute)", topic, exc)
            return done
        self._outgoing[pid] = _Outgoing(packet, done)
        self._unsent.append(pid)
        self._pump()
        return done

    def resubscribe(self) -> None:
        """Subscribe again (the watchdog's first remedy for a subscription that went quiet)."""
        if self.connected and self._conn is not None:
            self._subscribe(self._conn)

    def unsubscribe(self, topics: list[str]) -> None:
        """Drop filters a resumed persistent session may still hold (a partition whose parks
        changed, docs/scale.md); unknown filters are harmless."""
        conn = self._conn
        if self.connected and conn is not None and topics:
            conn.write(codec.encode_unsubscribe(self._allocate_pid(), topics,
                                                version=self._version))

    async def reconnect(self, timeout_s: float = 5.0) -> None:
        """Drop the connection so the connection loop makes a new one (the watchdog's second
        remedy). Unacked messages are redelivered on the new connection."""
        conn = self._conn
        if not self.connected or conn is None:
            return
        conn.write(codec.DISCONNECT_PACKET)
        conn.close()
        try:
            await asyncio.wait_for(self._disconnected.wait(), timeout_s)
        except TimeoutError:
            # A stalled path may never flush the DISCONNECT: drop the socket ourselves.
            log.warning("mqtt: the broker did not see our disconnect; dropping the socket")
            conn.close(abort=True)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Publish the offline status, disconnect cleanly, stop the background tasks."""
        if self._closing:
            return
        self._closing = True
        if self.connected and self._online is not None:
            topic, _ = self._online
            with contextlib.suppress(MqttError, TimeoutError):
                await asyncio.wait_for(self.publish(topic, b"offline", retain=True), timeout_s)
        conn = self._conn
        if conn is not None and not conn.lost:
            if self.connected:
                conn.write(codec.DISCONNECT_PACKET)   # a normal disconnect: no Will
            conn.close()
            try:
                await asyncio.wait_for(self._disconnected.wait(), timeout_s)
            except TimeoutError:
                conn.close(abort=True)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for out in self._outgoing.values():
            if not out.done.done():
                out.done.set_exception(MqttError("the MQTT session closed before the PUBACK"))
                out.done.exception()   # retrieved: nobody may be waiting any more

    # -- connection management -----------------------------------------------------------------

    def _make_tls_context(self) -> ssl.SSLContext:
        tls = self._settings.tls
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # verifies certificate and host name
        try:
            if tls.ca_file:
                ctx.load_verify_locations(cafile=str(tls.ca_file))
            else:
                ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
            if tls.cert_file:
                ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise MqttError(f"cannot load MQTT TLS files: {exc}") from exc
        if tls.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _connection_loop(self) -> None:
        """Connect, wait for the connection to drop, back off, repeat — forever."""
        s = self._settings
        delay = s.reconnect_min_s
        while not self._closing:
            self._disconnected.clear()
            started = time.monotonic()
            try:
                await self._connect_once()
                await self._disconnected.wait()
            except (OSError, ssl.SSLError, ValueError, TimeoutError) as exc:
                log.warning("mqtt connect to %s failed: %s%s; retrying in %.1fs",
                            s.url, exc or type(exc).__name__,
                            connect_hint(exc, tls=s.tls_enabled), delay)
                if self._conn is not None:
                    self._conn.close(abort=True)
            if self._closing:
                return
            if time.monotonic() - started > 30:
                delay = s.reconnect_min_s  # it was a working connection, not a flapping one
            # Jitter so a park's worth of gateways do not reconnect in lockstep after an outage.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, s.reconnect_max_s)
            self._metrics.reconnects.inc()

    async def _connect_once(self) -> None:
        s = self._settings
        conn = self._conn = _Connection(self, self._version)
        ctx = self._tls_context
        transport, _ = await asyncio.wait_for(self._loop.create_connection(
            lambda: conn, s.host, s.port, ssl=ctx,
            server_hostname=s.host if ctx is not None else None), CONNECT_TIMEOUT_S)
        conn.transport = transport
        will = self._will
        password = s.password.get_secret_value().encode() if s.password is not None else None
        conn.write(codec.encode_connect(
            client_id=self._client_id, version=self._version, keepalive=s.keepalive_s,
            clean_start=False, username=s.username, password=password,
            will=codec.WillMessage(will.topic, will.payload, will.qos, will.retain)
            if will is not None else None,
            session_expiry=s.session_expiry_s, receive_maximum=s.receive_maximum,
            maximum_packet_size=MAX_PACKET))
        try:
            await asyncio.wait_for(conn.answered.wait(), CONNECT_TIMEOUT_S)
        except TimeoutError:
            log.warning("mqtt broker %s did not answer CONNECT within %.0f s; dropping the "
                        "connection", s.url, CONNECT_TIMEOUT_S)
            conn.close(abort=True)

    def _refusal_hint(self, code: int) -> str:
        if code in (_RC_BAD_LOGIN, _RC_NOT_AUTHORIZED):
            who = repr(self._settings.username) if self._settings.username else "no username"
            return (f" (login as {who}; check mqtt.username/mqtt.password or the client "
                    "certificate, and the broker's password file and ACL)")
        if code == 0x84 and self._version == MQTT5:
            return " (an MQTT 3.1.1 broker: set mqtt.protocol to \"3.1.1\")"
        return ""

    def _connack(self, conn: _Connection, ack: codec.ConnAck) -> None:
        conn.answered.set()
        if ack.reason_code >= 0x80 or (ack.reason_code and self._version == MQTT311):
            conn.explained = True
            log.error("mqtt broker %s refused the connection: %s%s; retrying",
                      self._settings.url, codec.reason_text(ack.reason_code),
                      self._refusal_hint(ack.reason_code))
            conn.close()
            return
        conn.accepted = True
        props = ack.properties
        keepalive = props.get(codec.P_SERVER_KEEP_ALIVE)
        self._keepalive_s = float(keepalive if isinstance(keepalive, int) and keepalive
                                  else self._settings.keepalive_s)
        quota = props.get(codec.P_RECEIVE_MAXIMUM)
        self._send_quota = quota if isinstance(quota, int) and quota else 65535
        self._generation += 1
        conn.generation = self._generation
        self._connected.set()
        if self._primary:
            self._metrics.broker_connected.set(1)
        log.info("mqtt connected to %s (session present: %s)", self._settings.url,
                 ack.session_present)
        if not ack.session_present:
            self._subscribe(conn)
        # Our publishes that got no PUBACK go again, in order, before anything new.
        for out in self._outgoing.values():
            if out.sent:
                out.packet, out.sent = codec.with_dup(out.packet), False
        self._unsent = collections.deque(self._outgoing)
        self._sent = 0
        self._pump()
        if self._online is not None:
            topic, payload = self._online
            self.publish(topic, payload, qos=1, retain=True)

    def _subscribe(self, conn: _Connection) -> None:
        if self._subscriptions:
            conn.write(codec.encode_subscribe(self._allocate_pid(), self._subscriptions,
                                              version=self._version))

    def _lost(self, conn: _Connection, exc: Exception | None) -> None:
        if conn is not self._conn:
            return
        reason = str(exc) if exc is not None else "connection closed"
        s = self._settings
        if self._closing:
            log.info("mqtt disconnected (shutting down)")
        elif self._connected.is_set():
            log.warning("mqtt disconnected: %s", reason)
        elif not conn.accepted and not conn.explained:
            # Without a CONNACK the broker never understood us: the classic cause is speaking
            # plain MQTT to a TLS listener (or the broker rejecting our client certificate).
            hint = ("; either the network dropped it, or the port is a TLS listener "
                    "(then use mqtts://)" if not s.tls_enabled else
                    "; either the network dropped it, or the broker requires a client "
                    "certificate (mqtt.tls.cert_file)")
            log.warning("mqtt connection to %s closed before the broker answered (%s)%s",
                        s.url, reason, hint)
        self._connected.clear()
        if self._primary:
            self._metrics.broker_connected.set(0)
        # Everything received on the old connection can no longer be acked (see puback_all).
        self._generation += 1
        if self._reading_paused:
            self._reading_paused = False     # the next connection starts reading
        self._disconnected.set()

    def _protocol_error(self, conn: _Connection, exc: CodecError) -> None:
        conn.explained = True
        log.error("mqtt: the broker %s sent a bad packet: %s; reconnecting",
                  self._settings.url, exc)
        conn.write(codec.encode_disconnect(exc.reason_code, version=self._version))
        conn.close(abort=True)

    # -- packets -------------------------------------------------------------------------------

    def _packets(self, conn: _Connection, packets: list[codec.Packet]) -> None:
        inbox = self._inbox
        n_before = len(inbox)
        if not conn.accepted:
            # The read that carries the CONNACK: messages after it in the same read were
            # stamped before the new generation existed (redeliveries follow the CONNACK at
            # once), so they are stamped again here; a PUBLISH before CONNACK is a violation.
            self._first_read(conn, packets)
            packets = []
        for packet in packets:
            if type(packet) is Publish:
                if packet.qos:
                    self._unacked += 1
                inbox.append(packet)
            else:
                self._control(conn, packet)
        if len(inbox) != n_before:
            self._inbox_ready.set()
            if len(inbox) >= self._inbox_limit and not self._reading_paused:
                self._pause_reading()

    def _first_read(self, conn: _Connection, packets: list[codec.Packet]) -> None:
        for packet in packets:
            if conn.lost:
                return
            if type(packet) is not Publish:
                self._control(conn, packet)
            elif not conn.accepted:
                self._protocol_error(conn, codec.ProtocolViolation("a PUBLISH before CONNACK"))
                return
            else:
                packet.generation = conn.generation
                if packet.qos:
                    self._unacked += 1
                self._inbox.append(packet)

    def _control(self, conn: _Connection, packet: codec.Packet) -> None:
        if isinstance(packet, codec.PubAck):
            out = self._outgoing.pop(packet.packet_id, None)
            if out is not None and out.sent:
                self._sent -= 1
            if out is not None and not out.done.done():
                if packet.reason_code >= 0x80:
                    log.warning("mqtt broker refused a publish of ours: %s",
                                codec.reason_text(packet.reason_code))
                out.done.set_result(None)
            self._pump()
        elif isinstance(packet, codec.ConnAck):
            if conn.accepted:
                self._protocol_error(conn, codec.ProtocolViolation("a second CONNACK"))
            else:
                self._connack(conn, packet)
        elif isinstance(packet, codec.SubAck):
            for topic, code in zip(self._subscriptions, packet.reason_codes, strict=False):
                if code >= 0x80:
                    log.error("mqtt broker refused the subscription to %s: %s", topic,
                              codec.reason_text(code))
        elif isinstance(packet, codec.Disconnect):
            log.warning("mqtt broker %s disconnects us: %s%s", self._settings.url,
                        codec.reason_text(packet.reason_code),
                        f" ({packet.properties[codec.P_REASON_STRING]})"
                        if codec.P_REASON_STRING in packet.properties else "")
            conn.close()
        # PINGRESP and UNSUBACK need nothing: any packet counts as a sign of life.

    def _allocate_pid(self) -> int:
        # Checked first: with every identifier taken the search below would walk all 65535
        # on every call, which is what stalled a saturated gateway (bench/RESULTS.md).
        if len(self._outgoing) >= 65535:
            raise MqttError("65535 publishes await their PUBACK")
        for _ in range(65535):
            self._next_pid = self._next_pid % 65535 + 1
            if self._next_pid not in self._outgoing:
                return self._next_pid
        raise MqttError("65535 publishes await their PUBACK")

    def _pump(self) -> None:
        """Send our queued publishes, in order, within the broker's Receive Maximum."""
        conn = self._conn
        if conn is None or not self.connected:
            return
        unsent, outgoing = self._unsent, self._outgoing
        while unsent and self._sent < self._send_quota:
            out = outgoing.get(unsent.popleft())
            if out is not None and not out.sent:
                conn.write(out.packet)
                out.sent = True
                self._sent += 1

    # -- reading and keepalive -----------------------------------------------------------------

    def _pause_reading(self) -> None:
        conn = self._conn
        if conn is not None and conn.transport is not None and not conn.lost:
            conn.transport.pause_reading()
        self._reading_paused = True

    def _resume_reading(self) -> None:
        self._reading_paused = False
        conn = self._conn
        if conn is not None and conn.transport is not None and not conn.lost:
            conn.last_in = time.monotonic()    # silence while paused was ours, not the broker's
            conn.transport.resume_reading()

    async def _misc_loop(self) -> None:
        """PINGREQ when we have been quiet for a keepalive; drop a connection on which the
        broker has been silent for 1.5 keepalives (it answers every PINGREQ)."""
        while True:
            await asyncio.sleep(1.0)
            conn = self._conn
            if conn is None or not self.connected or conn.lost:
                continue
            now = time.monotonic()
            if now - conn.last_out >= self._keepalive_s:
                conn.write(codec.PINGREQ_PACKET)
            if self._reading_paused:
                conn.last_in = now
            elif now - conn.last_in > 1.5 * self._keepalive_s:
                log.warning("mqtt: nothing from the broker %s for %.0f s (keepalive %.0f s); "
                            "reconnecting", self._settings.url, now - conn.last_in,
                            self._keepalive_s)
                conn.close(abort=True)
