"""The GB/T 26875.3 TCP server: UITD connections → frames → the pipeline → ACK after durability.

::

    UITD ──TCP──▶ connection (≤ max_connections, allow_from, idle_timeout_s, reads ≤ 4 KiB)
                     │ Deframer (sensors/gb26875/frame.py; buffer ≤ 2 frames): resync on '@@'
                     ├─ rejection ──▶ counted by reason; NAK when a header was read
                     └─ frame ──▶ any frame: a sign of life of its UITD's panel
                          command 2 ─▶ parse_adu ─┬─ heartbeat, unknown type ─▶ ACK at once
                                                  ├─ bad ADU, unknown UITD ─▶ NAK (counted)
                                                  └─ ADU ─▶ translate.py ─▶ Pipeline.commit
                                                       (priority WAL fsync, alarm store, bulk
                                                        WAL fsync) ─▶ ACK

A frame is ACKed only after what it caused is durable, so a UITD that got no ACK resends it and
the resend's events are recognised (dedup key: UITD address + serial + ADU hash) and change
nothing. Frames of one connection are handled in order. Commands out: clock sync (90) after a
UITD's first frame and every ``clock_sync_s``; duty check (91) on request.

Nothing here raises into the gateway: a connection's failure closes that connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from gateway.config import UitdSettings, split_listen
from gateway.ingest.uitd.session import UitdSession
from gateway.ingest.uitd.translate import Context, EventLineFn, PlaceFn, Translated, translate
from gateway.metrics import Metrics
from rules.observation import DeviceEvent, Observation
from sensors.gb26875.adu import (
    Adu,
    AduRejection,
    Heartbeat,
    Unknown,
    clock_sync_adu,
    duty_check_adu,
    parse_adu,
)
from sensors.gb26875.frame import (
    Command,
    Deframer,
    Frame,
    FrameRejection,
    ack_for,
    encode,
    nak_for,
)
from sensors.gb26875.timelabel import encode_time_label
from sensors.pointmap import PointMap
from sensors.registry import Registry

log = logging.getLogger(__name__)

#: Bytes read per call: a frame is at most 1054 bytes, and a flood must not buy big buffers.
READ_SIZE = 4096
#: A peer that does not read its ACKs for this long is dropped.
WRITE_TIMEOUT_S = 10.0
#: How long a frame may wait for durability before the connection gives up on it (no ACK:
#: the UITD resends, and the resend is recognised).
COMMIT_TIMEOUT_S = 30.0
VERSION = (1, 1)


class Pipeline(Protocol):
    """What the server needs of the gateway (gateway/runtime/gateway.py)."""

    async def commit_observed(self, lines: list[str],
                              observations: Sequence[Observation]) -> None:
        """Returns once the lines and the alarm changes they cause are durable."""

    def seen_event(self, dedup_key: str) -> bool: ...

    def panel_heard(self, panel: str, received_at_ms: int) -> None: ...

    def panel_link(self, panel: str, up: bool, silent_s: float) -> None: ...


class UitdServer:
    def __init__(self, *, settings: UitdSettings, points: PointMap, registry: Registry,
                 pipeline: Pipeline, metrics: Metrics, place: PlaceFn, event_line: EventLineFn,
                 timezone_for: Callable[[str], ZoneInfo], max_age_s: float,
                 max_future_s: float, owns_panel: Callable[[str], bool] | None = None) -> None:
        self._s = settings
        self._points = points
        self._registry = registry
        self._pipeline = pipeline
        self._metrics = metrics
        self._place = place
        self._event_line = event_line
        self._timezone_for = timezone_for
        self._max_age_s = max_age_s
        self._max_future_s = max_future_s
        self._centre = bytes.fromhex(settings.centre_address)
        self._allow = [ipaddress.ip_network(a, strict=False) for a in settings.allow_from]
        self._connections: set[asyncio.Task[Any]] = set()
        self._started = time.monotonic()
        owns = owns_panel or (lambda panel: True)
        #: One session per mapped UITD of this partition's panels (bounded by the point map,
        #: not by what connects).
        self.sessions: dict[bytes, UitdSession] = {
            addr: UitdSession(addr, panel) for addr, panel in points.uitd_panels.items()
            if owns(panel)}
        #: UITDs of panels another partition owns (docs/scale.md): refused by name, never
        #: taken for unknown, and never watched for silence here.
        self._foreign = {addr for addr, panel in points.uitd_panels.items() if not owns(panel)}
        self.port: int | None = None
        self.ready = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        host, port = split_listen(self._s.listen or "")
        server = await asyncio.start_server(self._accept, host, port, limit=READ_SIZE)
        self.port = server.sockets[0].getsockname()[1]
        log.info("uitd: GB/T 26875.3 server on %s:%d, %d UITD(s) mapped", host, self.port,
                 len(self.sessions))
        self.ready.set()
        try:
            async with server:
                await self._watch()
        finally:
            server.close()
            for task in list(self._connections):
                task.cancel()
            for task in list(self._connections):
                with contextlib.suppress(BaseException):
                    await task

    async def _watch(self) -> None:
        """Liveness (a silent UITD raises its panel's offline alarm) and periodic clock sync."""
        step = min(1.0, self._s.heartbeat_allowance_s / 4)
        while True:
            await asyncio.sleep(step)
            now = time.monotonic()
            for session in self.sessions.values():
                try:
                    self._check(session, now)
                except Exception:
                    log.exception("uitd: liveness check of %s failed", session.panel)

    def _check(self, session: UitdSession, now: float) -> None:
        since = session.last_frame_mono if session.last_frame_mono is not None else self._started
        silent = now - since
        if silent > self._s.heartbeat_allowance_s and session.offline is not True:
            session.offline = True
            log.warning("uitd: %s (panel %s) silent for %.0f s", session.address.hex(),
                        session.panel, silent)
            self._pipeline.panel_link(session.panel, False, silent)
        if session.writer is not None and session.last_clock_sync_mono is not None and \
                now - session.last_clock_sync_mono >= self._s.clock_sync_s:
            self._clock_sync(session)

    # -- connections -------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._allowed(ip):
            self._reject("not_allowed")
            writer.close()
            return
        if len(self._connections) >= self._s.max_connections:
            self._reject("too_many_connections")
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._metrics.uitd_connections.set(len(self._connections))
        here: set[UitdSession] = set()
        try:
            await self._serve(reader, writer, here)
        except (ConnectionError, OSError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass   # the server stops: the frame in hand gets no ACK, and the UITD resends it
        except Exception:
            log.exception("uitd: connection from %s failed", ip)
        finally:
            self._connections.discard(task)
            self._metrics.uitd_connections.set(len(self._connections))
            for session in here:
                session.connected = max(0, session.connected - 1)
                if session.writer is writer:
                    session.writer = None
            writer.close()

    def _allowed(self, ip: str) -> bool:
        if not self._allow:
            return True
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self._allow)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     here: set[UitdSession]) -> None:
        deframer = Deframer()
        last = time.monotonic()
        while True:
            left = self._s.idle_timeout_s - (time.monotonic() - last)
            try:
                if left <= 0:
                    raise TimeoutError
                data = await asyncio.wait_for(reader.read(READ_SIZE), left)
            except TimeoutError:
                # No complete frame for idle_timeout_s: a dead or slow (loris) peer.
                self._reject("idle_timeout")
                return
            if not data:
                return
            for item in deframer.feed(data):
                if isinstance(item, FrameRejection):
                    self._reject(item.reason.value)
                    if item.header is not None:
                        await self._send(writer, encode(nak_for(item.header, self._now_label())))
                    continue
                last = time.monotonic()
                await self._frame(item, writer, here)

    # -- frames ------------------------------------------------------------------------------

    async def _frame(self, frame: Frame, writer: asyncio.StreamWriter,
                     here: set[UitdSession]) -> None:
        self._metrics.uitd_frames.labels(command=str(frame.command)).inc()
        rx_ms = time.time_ns() // 1_000_000
        session = self.sessions.get(frame.source)
        if session is not None:
            self._alive(session, writer, here, rx_ms)
        if frame.command != Command.SEND_DATA:
            return   # confirms of our commands, responses: a sign of life, nothing to answer
        parsed = parse_adu(frame.adu)
        if isinstance(parsed, Heartbeat | Unknown):
            # Heartbeats and types we do not interpret are acknowledged at once (§2.9).
            if isinstance(parsed, Unknown):
                log.info("uitd: %s sent ADU type %d (not interpreted), acknowledged",
                         frame.source.hex(), parsed.type_flag)
            await self._send(writer, encode(ack_for(frame, self._now_label(session))))
            return
        if isinstance(parsed, AduRejection):
            self._reject(f"adu_{parsed.reason.value}")
            await self._send(writer, encode(nak_for(frame, self._now_label(session))))
            return
        if session is None and frame.source in self._foreign:
            # Its panel's park belongs to another partition: NAK (it keeps the frame) and hang
            # up, so it reconnects, through its address list or DNS, to the right instance.
            self._reject("other_partition")
            await self._send(writer, encode(nak_for(frame, self._now_label())))
            writer.close()
            return
        if session is None:
            # Data from a UITD the point map does not know: nobody to place it on. NAK, so
            # it keeps it and resends once the map knows it.
            self._reject("unknown_uitd")
            await self._send(writer, encode(nak_for(frame, self._now_label())))
            return
        await self._data(self._translate(parsed, frame, session, rx_ms), session)
        await self._send(writer, encode(ack_for(frame, self._now_label(session))))

    async def _data(self, result: Translated, session: UitdSession) -> None:
        """Make what a frame caused durable (before its ACK) and note what it told us."""
        if result.observations or result.lines:
            fresh = [o for o in result.observations if not (
                isinstance(o, DeviceEvent) and o.dedup_key is not None
                and self._pipeline.seen_event(o.dedup_key))]
            if result.observations and not fresh:
                # A resend of a frame whose effects are durable: ACK it, change nothing.
                self._reject("duplicate")
            else:
                await asyncio.wait_for(
                    self._pipeline.commit_observed(result.lines, result.observations),
                    COMMIT_TIMEOUT_S)
        if result.duty_answer_ms is not None:
            session.duty_answered_ms = result.duty_answer_ms
        if result.clock_offset_s is not None:
            session.clock(result.clock_offset_s)
            if session.clock_untrusted:
                self._reject("untrusted_clock")
        if result.untrusted:
            self._metrics.untrusted_clock.inc(result.untrusted)

    def _translate(self, adu: Adu, frame: Frame, session: UitdSession, rx_ms: int) -> Translated:
        panel = self._registry.get(session.panel)
        assert panel is not None   # the point map checked it against the registry
        ctx = Context(panel=panel, uitd_address=frame.source, serial=frame.serial,
                      received_at_ms=rx_ms, timezone=self._timezone_for(panel.park),
                      max_age_s=self._max_age_s, max_future_s=self._max_future_s,
                      points=self._points, place=self._place, event_line=self._event_line,
                      clock_untrusted=session.clock_untrusted)
        return translate(adu, frame.adu, ctx)

    def _alive(self, session: UitdSession, writer: asyncio.StreamWriter,
               here: set[UitdSession], rx_ms: int) -> None:
        session.last_frame_mono = time.monotonic()
        session.last_frame_ms = rx_ms
        if session not in here:
            here.add(session)
            session.connected += 1
        first = session.writer is not writer
        session.writer = writer
        self._pipeline.panel_heard(session.panel, rx_ms)
        if session.offline is not False:
            if session.offline:
                log.info("uitd: %s (panel %s) heard again", session.address.hex(),
                         session.panel)
            session.offline = False
            self._pipeline.panel_link(session.panel, True, 0.0)
        if first:
            self._clock_sync(session)

    # -- commands out ------------------------------------------------------------------------

    def _command(self, session: UitdSession, adu: bytes) -> bool:
        writer = session.writer
        if writer is None or writer.is_closing():
            return False
        frame = Frame(serial=session.next_serial(), version=VERSION,
                      time_label=self._now_label(session), source=self._centre,
                      destination=session.address, command=Command.CONTROL, adu=adu)
        writer.write(encode(frame))
        return True

    def _clock_sync(self, session: UitdSession) -> None:
        tz = self._timezone_for(self._park_of(session))
        if self._command(session, clock_sync_adu(datetime.now(tz))):
            session.last_clock_sync_mono = time.monotonic()

    def duty_check(self, panel: str) -> dict[str, Any]:
        """Send a duty check (查岗, command 1 type 91) to the panel's UITD; LookupError when
        the panel has no UITD, ConnectionError when it is not connected."""
        session = next((s for s in self.sessions.values() if s.panel == panel), None)
        if session is None:
            raise LookupError(f"panel {panel!r} has no UITD in the point map")
        if not self._command(session, duty_check_adu()):
            raise ConnectionError(f"the UITD of panel {panel!r} is not connected")
        session.duty_asked_ms = time.time_ns() // 1_000_000
        session.duty_answered_ms = None
        return session.view()

    def uitds(self) -> list[dict[str, Any]]:
        return [s.view() for s in self.sessions.values()]

    # -- helpers -----------------------------------------------------------------------------

    def _park_of(self, session: UitdSession) -> str:
        panel = self._registry.get(session.panel)
        return panel.park if panel is not None else ""

    def _now_label(self, session: UitdSession | None = None) -> bytes:
        park = self._park_of(session) if session is not None else ""
        return encode_time_label(datetime.now(self._timezone_for(park)))

    def _reject(self, reason: str) -> None:
        self._metrics.uitd_rejected.labels(reason=reason).inc()

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
