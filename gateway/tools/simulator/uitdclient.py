"""One simulated user information transmission device (用户信息传输装置, UITD): a GB/T 26875.3
TCP client that uploads frames and waits for the centre's confirm.

Send/confirm as the standard has it (6.5.4, 6.5.5): one upload outstanding at a time; a frame
with no ACK within ``ack_timeout_s`` (10 s) is sent again, the very same bytes and serial, up to
``retries`` (3) more times, then logged as lost. A NAK is answered by the same resend. That is the
behaviour the gateway's dedup (UITD address, serial, content) must absorb.

The serial number starts at 0 when the client is made and goes up by one per new frame (it is not
reset on reconnect, so a frame resent on a new connection still carries its own serial).

From the centre: command 1 type 90 (clock sync) moves this device's clock, type 91 (查岗, duty
check) is confirmed and answered with a type 24 upload carrying the duty-check-answer bit, type 89
(initialise) is confirmed; every command 1 frame gets its ACK. Requests (command 4) are logged and
left unanswered: no simulated panel has configuration to report.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any

from gateway.tools.simulator.uitdadu import uitd_operation_adu
from sensors.gb26875.adu import AduType
from sensors.gb26875.bits import UitdOperationFlags
from sensors.gb26875.frame import Command, Deframer, Frame, ack_for, encode
from sensors.gb26875.timelabel import BadTimeLabel, decode_time_label, encode_time_label

ACK_TIMEOUT_S = 10.0  # standard 6.5.4: "should not exceed 10 s"
RETRIES = 3  # standard 6.5.5: "should be 3"
VERSION = (1, 1)
Say = Callable[[str], None]


def parse_address(text: str) -> bytes:
    """12 hex digits, the 6 address bytes in frame order (as in the point map)."""
    text = text.strip()
    if len(text) != 12:
        raise ValueError(f"address {text!r} is not 12 hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise ValueError(f"address {text!r} is not 12 hex digits") from exc


@dataclass
class ClientStats:
    """What one UITD did; ``ack_latency_s[kind]`` is first send to ACK of each confirmed frame
    of that kind (the ``kind`` given to :meth:`UitdClient.send`)."""

    sent: int = 0  # new frames
    resent: int = 0  # repeats of a frame that got no ACK (or a NAK)
    acked: int = 0
    lost: int = 0  # no ACK after every retry
    naks: int = 0
    duty_checks: int = 0
    clock_syncs: int = 0
    connects: int = 0
    ack_latency_s: dict[str, list[float]] = field(default_factory=dict)
    #: kind -> time.monotonic() of each new frame's first send (benchmarks match later events).
    first_sent: dict[str, list[float]] = field(default_factory=dict)


class UitdClient:
    """One UITD. ``run(stop)`` keeps a connection (reconnecting); ``send`` uploads one ADU."""

    def __init__(self, address: bytes, host: str, port: int, *, centre: bytes, tz: tzinfo,
                 ack_timeout_s: float = ACK_TIMEOUT_S, retries: int = RETRIES,
                 reconnect_s: float = 2.0, say: Say | None = None) -> None:
        self.address = address
        self.name = address.hex().upper()
        self.host, self.port = host, port
        self.centre = centre
        self.tz = tz
        self.ack_timeout_s = ack_timeout_s
        self.retries = retries
        self.reconnect_s = reconnect_s
        self.stats = ClientStats()
        self.connected = asyncio.Event()
        self._say = say or (lambda _text: None)
        self._serial = -1
        self._clock_offset = timedelta()
        self._lock = asyncio.Lock()
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task[bool]] = set()

    # ------------------------------------------------------------------ clock and frames

    def now(self) -> datetime:
        """This device's wall clock: park-local time, moved by the centre's clock sync."""
        return datetime.now(self.tz).replace(tzinfo=None, microsecond=0) + self._clock_offset

    def _next_serial(self) -> int:
        self._serial = (self._serial + 1) & 0xFFFF
        return self._serial

    def frame(self, adu: bytes, command: Command = Command.SEND_DATA) -> Frame:
        """A new frame from this UITD to the centre: fresh serial, current time label."""
        return Frame(serial=self._next_serial(), version=VERSION,
                     time_label=encode_time_label(self.now()), source=self.address,
                     destination=self.centre, command=command, adu=adu)

    # ------------------------------------------------------------------ sending

    async def send(self, adu: bytes, what: str, kind: str = "upload") -> bool:
        """Upload ``adu`` and wait for its confirm, resending as the standard says; True once
        ACKed, False when every try went unanswered (logged)."""
        async with self._lock:
            frame = self.frame(adu)
            data = encode(frame)
            self.stats.sent += 1
            loop = asyncio.get_running_loop()
            first = time.monotonic()
            self.stats.first_sent.setdefault(kind, []).append(first)
            for attempt in range(1 + self.retries):
                done: asyncio.Future[int] = loop.create_future()
                self._pending[frame.serial] = done
                try:
                    if attempt:
                        self.stats.resent += 1
                    if await self._write(data):
                        self._say(f"{self.name} -> serial {frame.serial} {what}"
                                  + (f" (resend {attempt}/{self.retries})" if attempt else "")
                                  + f" [{len(data)} bytes]")
                    reply = await asyncio.wait_for(done, self.ack_timeout_s)
                except TimeoutError:
                    self._say(f"{self.name} no ACK for serial {frame.serial} in "
                              f"{self.ack_timeout_s:g}s")
                    continue
                finally:
                    self._pending.pop(frame.serial, None)
                if reply == Command.CONFIRM:
                    self.stats.acked += 1
                    self.stats.ack_latency_s.setdefault(kind, []).append(
                        time.monotonic() - first)
                    return True
                self.stats.naks += 1
                self._say(f"{self.name} NAK for serial {frame.serial}; resending")
            self.stats.lost += 1
            self._say(f"{self.name} LOST serial {frame.serial} {what}: no ACK after "
                      f"{1 + self.retries} tries")
            return False

    async def _write(self, data: bytes) -> bool:
        writer = self._writer
        if writer is None:
            return False  # not connected: this try times out and the next one resends
        try:
            writer.write(data)
            await writer.drain()
        except (ConnectionError, OSError):
            return False
        return True

    # ------------------------------------------------------------------ connection

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop``; reconnect after ``reconnect_s`` when the link drops."""
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                self._say(f"{self.name} cannot connect to {self.host}:{self.port}: {exc}")
            else:
                self.stats.connects += 1
                self._writer = writer
                self.connected.set()
                try:
                    await self._read(reader, stop)
                finally:
                    self.connected.clear()
                    self._writer = None
                    writer.close()
                    with contextlib.suppress(ConnectionError, OSError):
                        await writer.wait_closed()
                if not stop.is_set():
                    self._say(f"{self.name} connection closed; reconnecting")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.reconnect_s)
        for task in list(self._tasks):
            task.cancel()

    async def _read(self, reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
        deframer = Deframer()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                chunk = asyncio.ensure_future(reader.read(4096))
                await asyncio.wait({chunk, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not chunk.done():
                    chunk.cancel()
                    return
                data = chunk.result()
                if not data:
                    return
                for item in deframer.feed(data):
                    if isinstance(item, Frame):
                        self._handle(item)
                    else:
                        self._say(f"{self.name} dropped bytes from the centre: {item.detail}")
        except (ConnectionError, OSError):
            return
        finally:
            stopping.cancel()

    def _handle(self, frame: Frame) -> None:
        if frame.command in (Command.CONFIRM, Command.DENY):
            waiting = self._pending.get(frame.serial)
            if waiting is not None and not waiting.done():
                waiting.set_result(frame.command)
            return
        if frame.command == Command.CONTROL:
            self._control(frame)
            return
        self._say(f"{self.name} ignores command {frame.command} (serial {frame.serial})")

    def _control(self, frame: Frame) -> None:
        # Confirm first (the centre's send/confirm), then act on it.
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(ConnectionError, OSError):
                writer.write(encode(ack_for(frame, self.now())))
        kind = frame.adu[0] if frame.adu else None
        if kind == AduType.CLOCK_SYNC and len(frame.adu) >= 8:
            when = decode_time_label(frame.adu[2:8])
            if isinstance(when, BadTimeLabel):
                self._say(f"{self.name} clock sync with a bad time: {when.detail}")
                return
            self._clock_offset = when - datetime.now(self.tz).replace(tzinfo=None,
                                                                      microsecond=0)
            self.stats.clock_syncs += 1
            self._say(f"{self.name} <- clock sync to {when:%Y-%m-%d %H:%M:%S}")
        elif kind == AduType.DUTY_CHECK:
            self.stats.duty_checks += 1
            self._say(f"{self.name} <- duty check (查岗) serial {frame.serial}; answering")
            self._spawn(self.send(uitd_operation_adu(UitdOperationFlags.DUTY_CHECK_ANSWER, 1,
                                                     self.now()), "type 24 duty-check answer"))
        elif kind == AduType.INITIALISE:
            self._say(f"{self.name} <- initialise")
        else:
            self._say(f"{self.name} <- control type {kind} (confirmed, not acted on)")

    def _spawn(self, coro: Coroutine[Any, Any, bool]) -> None:
        # Not awaited in the reader: the answer waits for its own ACK, which the reader reads.
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
