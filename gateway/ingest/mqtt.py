"""An asyncio MQTT session on paho-mqtt 2.x with manual acknowledgement.

Why paho and not aiomqtt: a QoS 1 message must be acknowledged to the broker only once it is
durable in ParkWatch's write-ahead log. paho 2.x offers ``manual_ack=True`` + ``Client.ack``;
aiomqtt 2.x acknowledges on receipt (see docs/adr/0001-ack-after-durable.md).

paho is driven by the event loop (``add_reader``/``add_writer`` on its socket), never by its own
thread, so all paho state is touched from the loop thread. The single exception is the blocking
TCP/TLS connect, which runs in a worker thread while nothing else uses the client; the socket
callbacks it triggers hop back to the loop with ``call_soon_threadsafe``.

Flow control: with MQTT 5 the broker sends at most ``receive_maximum`` unacknowledged QoS 1
messages, which bounds what sits in memory; QoS 0 messages are bounded by pausing socket reads
when the inbox is full (the broker then buffers).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.config import MqttSettings
from gateway.errors import MqttError
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

_RC_BAD_LOGIN = 134      # MQTT 5 CONNACK "Bad user name or password"
_RC_NOT_AUTHORIZED = 135  # "Not authorized": mosquitto's answer to a wrong password or user


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


class _TrackingContext(ssl.SSLContext):
    """An SSLContext that remembers the last socket it wrapped, so a failed connect can close it."""

    _last: ssl.SSLSocket | None = None

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        sock = super().wrap_socket(*args, **kwargs)
        self._last = sock
        return sock

    def forget(self) -> None:
        self._last = None

    def close_last(self) -> None:
        sock, self._last = self._last, None
        if sock is not None:
            sock.close()


@dataclass(slots=True)
class Inbound:
    """One received message and what is needed to acknowledge it later."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    retain: bool
    received_at_ms: int
    generation: int


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class MqttSession:
    """A persistent MQTT 5 session that reconnects forever and hands out received messages.

    Use as ``async with MqttSession(...) as session:`` then ``async for batch in
    session.batches()``; call :meth:`ack` for each message once it is durable.
    """

    def __init__(self, *, settings: MqttSettings, client_id: str, subscriptions: list[str],
                 metrics: Metrics, will: Will | None = None,
                 online: tuple[str, bytes] | None = None, queue_size: int = 20_000,
                 primary: bool = True) -> None:
        self._settings = settings
        # A secondary session (the gateway's priority lane) leaves the connection and in-flight
        # gauges to the primary one: /healthz reports the main ingest path.
        self._primary = primary
        self._subscriptions = subscriptions
        self._metrics = metrics
        self._online = online
        self._queue_size = queue_size
        self._inbox: collections.deque[Inbound] = collections.deque()
        self._inbox_ready = asyncio.Event()
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._generation = 0
        self._reading_paused = False
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._publish_waiters: dict[int, asyncio.Future[None]] = {}
        # Counted as a plain int on the hot path; the gauge reads it when scraped.
        self._unacked = 0
        if primary:
            metrics.inflight.set_function(lambda: self._unacked)
        self._tasks: list[asyncio.Task[None]] = []
        self._sock: Any = None
        self._answered = False  # a CONNACK arrived on the current attempt
        self._tls_context: _TrackingContext | None = None
        self._client = self._make_client(client_id, will)

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

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout_s)

    async def batches(self, max_items: int) -> AsyncIterator[list[Inbound]]:
        """Yield everything received so far (up to ``max_items``), waiting when there is nothing."""
        while True:
            while not self._inbox:
                self._inbox_ready.clear()
                await self._inbox_ready.wait()
            n = min(max_items, len(self._inbox))
            batch = [self._inbox.popleft() for _ in range(n)]
            self._metrics.queue_depth.labels(queue="inbox").set(len(self._inbox))
            if self._reading_paused and len(self._inbox) < self._queue_size // 2:
                self._resume_reading()
            yield batch

    def puback(self, message: Inbound) -> None:
        """Acknowledge a QoS 1 message, unless the connection that delivered it is gone."""
        self.puback_all((message,))

    def puback_all(self, messages: Iterable[Inbound]) -> None:
        """Acknowledge messages in receive order; metrics are updated once per call."""
        acked = stale = 0
        generation, connected = self._generation, self.connected
        for message in messages:
            if message.qos == 0:
                continue
            self._unacked -= 1
            if message.generation != generation or not connected:
                # The broker redelivers it on the new connection; the replay is idempotent.
                stale += 1
                continue
            self._client.ack(message.mid, message.qos)
            acked += 1
        if acked:
            self._metrics.acks.inc(acked)
        if stale:
            self._metrics.stale_acks.inc(stale)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                retain: bool = False) -> asyncio.Future[None]:
        """Queue a publish; the future completes on PUBACK (paho resends it after a reconnect)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        done: asyncio.Future[None] = self._loop.create_future()
        if qos == 0 or info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS,
                                       MQTTErrorCode.MQTT_ERR_NO_CONN):
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or qos == 0:
                done.set_result(None)
            else:
                done.set_exception(MqttError(f"publish to {topic} failed: {info.rc.name}"))
            return done
        self._publish_waiters[info.mid] = done
        return done

    def resubscribe(self) -> None:
        """Subscribe again (the watchdog's first remedy for a subscription that went quiet)."""
        if self.connected:
            opts = SubscribeOptions(qos=1)
            self._client.subscribe([(topic, opts) for topic in self._subscriptions])

    def unsubscribe(self, topics: list[str]) -> None:
        """Drop filters a resumed persistent session may still hold (a partition whose parks
        changed, docs/scale.md); unknown filters are harmless."""
        if self.connected and topics:
            self._client.unsubscribe(topics)

    async def reconnect(self, timeout_s: float = 5.0) -> None:
        """Drop the connection so the connection loop makes a new one (the watchdog's second
        remedy). Unacked messages are redelivered on the new connection."""
        if not self.connected:
            return
        self._client.disconnect()
        try:
            await asyncio.wait_for(self._disconnected.wait(), timeout_s)
        except TimeoutError:
            # A stalled path may never complete the DISCONNECT: drop the socket ourselves.
            log.warning("mqtt: the broker did not see our disconnect; dropping the socket")
            self._remove_socket()
            self._handle_disconnect(ReasonCode(PacketTypes.DISCONNECT, "Unspecified error"))

    async def close(self, timeout_s: float = 5.0) -> None:
        """Publish the offline status, disconnect cleanly, stop the background tasks."""
        if self._closing:
            return
        self._closing = True
        if self.connected and self._online is not None:
            topic, _ = self._online
            with contextlib.suppress(MqttError, TimeoutError):
                await asyncio.wait_for(self.publish(topic, b"offline", retain=True), timeout_s)
        if self.connected:
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._disconnected.wait(), timeout_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._remove_socket()

    # -- connection management -----------------------------------------------------------------

    def _make_client(self, client_id: str, will: Will | None) -> paho.Client:
        s = self._settings
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True,
                             reconnect_on_failure=False)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        if s.username is not None:
            pw = s.password.get_secret_value() if s.password is not None else None
            client.username_pw_set(s.username, pw)
        if s.tls_enabled:
            self._configure_tls(client)
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    def _configure_tls(self, client: paho.Client) -> None:
        tls = self._settings.tls
        ctx = _TrackingContext(ssl.PROTOCOL_TLS_CLIENT)   # verifies certificate and host name
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
        self._tls_context = ctx
        client.tls_set_context(ctx)
        if tls.insecure_skip_verify:
            # Else paho checks the host name itself against the (unverified, empty) certificate.
            client.tls_insecure_set(True)

    async def _connection_loop(self) -> None:
        """Connect, wait for the connection to drop, back off, repeat — forever."""
        s = self._settings
        delay = s.reconnect_min_s
        while not self._closing:
            self._disconnected.clear()
            started = time.monotonic()
            self._answered = False
            try:
                await asyncio.to_thread(self._blocking_connect)
                await self._disconnected.wait()
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.warning("mqtt connect to %s failed: %s%s; retrying in %.1fs",
                            s.url, exc, connect_hint(exc, tls=s.tls_enabled), delay)
                self._remove_socket()
            if self._closing:
                return
            if time.monotonic() - started > 30:
                delay = s.reconnect_min_s  # it was a working connection, not a flapping one
            # Jitter so a park's worth of gateways do not reconnect in lockstep after an outage.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, s.reconnect_max_s)
            self._metrics.reconnects.inc()

    def _blocking_connect(self) -> None:
        s = self._settings
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = s.session_expiry_s
        props.ReceiveMaximum = s.receive_maximum
        if self._tls_context is not None:
            self._tls_context.forget()  # the previous connection's socket is paho's to close
        try:
            self._client.connect(s.host, s.port, keepalive=s.keepalive_s, clean_start=False,
                                 properties=props)
        except BaseException:
            # paho leaves a socket whose TLS handshake failed open; one leaked per retry adds up.
            if self._tls_context is not None:
                self._tls_context.close_last()
            raise

    def _on_connect(self, client: paho.Client, userdata: Any, flags: paho.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        self._answered = True
        if reason.is_failure:
            log.error("mqtt broker %s refused the connection: %s%s; retrying",
                      self._settings.url, reason, self._refusal_hint(reason))
            return
        self._generation += 1
        self._connected.set()
        if self._primary:
            self._metrics.broker_connected.set(1)
        log.info("mqtt connected to %s (session present: %s)", self._settings.url,
                 flags.session_present)
        if not flags.session_present:
            opts = SubscribeOptions(qos=1)
            client.subscribe([(topic, opts) for topic in self._subscriptions])
        if self._online is not None:
            topic, payload = self._online
            client.publish(topic, payload, qos=1, retain=True)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: paho.DisconnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
        self._in_loop(self._handle_disconnect, reason)

    def _refusal_hint(self, reason: ReasonCode) -> str:
        if reason.value in (_RC_BAD_LOGIN, _RC_NOT_AUTHORIZED):
            who = repr(self._settings.username) if self._settings.username else "no username"
            return (f" (login as {who}; check mqtt.username/mqtt.password or the client "
                    "certificate, and the broker's password file and ACL)")
        return ""

    def _handle_disconnect(self, reason: ReasonCode) -> None:
        if self._closing:
            log.info("mqtt disconnected (shutting down)")
        elif self._connected.is_set():
            log.warning("mqtt disconnected: %s", reason)
        elif not self._answered:
            # Without a CONNACK the broker never understood us: the classic cause is speaking
            # plain MQTT to a TLS listener (or the broker rejecting our client certificate).
            hint = ("; either the network dropped it, or the port is a TLS listener "
                    "(then use mqtts://)" if not self._settings.tls_enabled else
                    "; either the network dropped it, or the broker requires a client "
                    "certificate (mqtt.tls.cert_file)")
            log.warning("mqtt connection to %s closed before the broker answered (%s)%s",
                        self._settings.url, reason, hint)
        self._connected.clear()
        if self._primary:
            self._metrics.broker_connected.set(0)
        # Everything received on the old connection can no longer be acked (see ack()).
        self._generation += 1
        self._disconnected.set()

    # -- messages ------------------------------------------------------------------------------

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = msg._topic.decode("utf-8", "replace")  # the validator rejects it as bad_topic
        self._inbox.append(Inbound(topic, bytes(msg.payload), msg.qos, msg.mid, bool(msg.retain),
                                   time.time_ns() // 1_000_000, self._generation))
        if msg.qos:
            self._unacked += 1
        self._inbox_ready.set()
        if len(self._inbox) >= self._queue_size and not self._reading_paused:
            self._pause_reading()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int,
                    reason: ReasonCode, properties: Properties | None) -> None:
        waiter = self._publish_waiters.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- socket plumbing (paho's "external event loop" API) -------------------------------------

    def _in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._add_socket, sock)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._remove_socket)

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._add_writer, sock)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._remove_writer, sock)

    def _add_socket(self, sock: Any) -> None:
        self._sock = sock
        self._loop.add_reader(sock, self._readable)
        self._reading_paused = False

    def _remove_socket(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._sock)
                self._loop.remove_writer(self._sock)
            self._sock = None

    def _add_writer(self, sock: Any) -> None:
        if self._sock is sock:
            self._loop.add_writer(sock, self._client.loop_write)

    def _remove_writer(self, sock: Any) -> None:
        if self._sock is sock:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(sock)

    def _readable(self) -> None:
        # paho reads one packet per loop_read(); keep reading while messages keep coming, so a
        # busy socket costs one wake-up per burst instead of one per message.
        for _ in range(512):
            before = len(self._inbox)
            if self._client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            if len(self._inbox) == before or self._reading_paused:
                break
        sock = self._sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            # TLS may hold decrypted bytes the selector cannot see; come back for them.
            self._loop.call_soon(self._readable)

    def _pause_reading(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._sock)
        self._reading_paused = True

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if self._sock is not None:
            self._loop.add_reader(self._sock, self._readable)

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._sock is not None:
                self._client.loop_misc()
