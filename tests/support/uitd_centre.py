"""A tiny GB/T 26875.3 monitoring centre for tests and the UITD benchmark's self-test.

It speaks only what the standard asks of a centre, with the project's codec: deframe each
connection with ``Deframer``, ACK every command 2 frame with ``ack_for`` (unless ``withhold``
says not to), and send control frames (clock sync, duty check) to a connected UITD. It keeps
every frame it received, with the receive time, so a test can check what a client sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sensors.gb26875.frame import Command, Deframer, Frame, ack_for, encode
from sensors.gb26875.timelabel import encode_time_label

CENTRE = bytes.fromhex("000000000001")


@dataclass(frozen=True)
class Received:
    frame: Frame
    at: float  # time.monotonic() when it was deframed
    peer: str


@dataclass
class FakeCentre:
    """``async with FakeCentre() as centre``: listens on 127.0.0.1, a free port."""

    address: bytes = CENTRE
    #: ACK a frame only when this returns False; e.g. ``lambda f: f.serial == 3``.
    withhold: Callable[[Frame], bool] = lambda _frame: False
    received: list[Received] = field(default_factory=list)
    acks_sent: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: dict[bytes, asyncio.StreamWriter] = field(default_factory=dict)
    _serial: int = 0

    async def __aenter__(self) -> FakeCentre:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers.values():
            writer.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def uploads(self, command: int = Command.SEND_DATA) -> list[Frame]:
        return [r.frame for r in self.received if r.frame.command == command]

    def connected(self) -> set[bytes]:
        return set(self._writers)

    async def control(self, uitd: bytes, adu: bytes) -> Frame:
        """Send a command 1 frame (e.g. ``duty_check_adu()``) to a connected UITD."""
        self._serial = (self._serial + 1) & 0xFFFF
        frame = Frame(serial=self._serial, version=(1, 1), time_label=encode_time_label(_label()),
                      source=self.address,
                      destination=uitd, command=Command.CONTROL, adu=adu)
        writer = self._writers[uitd]
        writer.write(encode(frame))
        await writer.drain()
        return frame

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername"))
        deframer = Deframer()
        try:
            while data := await reader.read(65536):
                for item in deframer.feed(data):
                    if isinstance(item, Frame):
                        self._on_frame(item, peer, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            for uitd, w in list(self._writers.items()):
                if w is writer:
                    del self._writers[uitd]
            writer.close()

    def _on_frame(self, frame: Frame, peer: str, writer: asyncio.StreamWriter) -> None:
        self.received.append(Received(frame, time.monotonic(), peer))
        self._writers[frame.source] = writer
        if frame.command == Command.SEND_DATA and not self.withhold(frame):
            writer.write(encode(ack_for(frame, _label())))
            self.acks_sent += 1


def _label() -> datetime:
    return datetime.now().replace(microsecond=0)
