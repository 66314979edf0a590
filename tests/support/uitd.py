"""A minimal UITD for tests: builds GB/T 26875.3 frames and talks to the gateway's server."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from zoneinfo import ZoneInfo

from sensors.gb26875.frame import Command, Deframer, Frame, FrameRejection, encode
from sensors.gb26875.timelabel import encode_time_label
from tests.support.gb26875_vectors import CENTRE, UITD, VECTORS

PARK_TZ = ZoneInfo("Asia/Shanghai")


def now_label() -> bytes:
    return encode_time_label(datetime.now(PARK_TZ))


def component_adu(comp_type: int, comp_addr: int, status: int, *, sys_type: int = 1,
                  sys_addr: int = 1, description: bytes = b"", label: bytes | None = None) -> bytes:
    desc = description.ljust(31, b" ")[:31]
    return (bytes((2, 1, sys_type, sys_addr, comp_type)) + comp_addr.to_bytes(4, "little")
            + status.to_bytes(2, "little") + desc + (label or now_label()))


def frame(adu: bytes, *, serial: int = 1, source: bytes = UITD,
          command: int = Command.SEND_DATA) -> Frame:
    return Frame(serial=serial, version=(1, 1), time_label=now_label(), source=source,
                 destination=CENTRE, command=command, adu=adu)


def vector1_resigned(serial: int = 1) -> Frame:
    """Brief vector #1 (a fire on component 1/1/0x0002000A, type 40) with a fresh header and
    object time label and its checksum recomputed."""
    (original,) = Deframer().feed(VECTORS[1])
    assert isinstance(original, Frame)
    label = now_label()
    return Frame(serial=serial, version=original.version, time_label=label,
                 source=original.source, destination=original.destination,
                 command=original.command, adu=original.adu[:-6] + label)


class UitdClient:
    """One TCP connection to the server; reads whole frames back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._deframer = Deframer()
        self._frames: list[Frame] = []

    @classmethod
    async def connect(cls, port: int) -> UitdClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes | Frame) -> None:
        self.writer.write(encode(data) if isinstance(data, Frame) else data)
        await self.writer.drain()

    async def reply(self, timeout_s: float = 5.0, *, commands: tuple[int, ...] = (3, 6)) -> Frame:
        """The next frame with one of ``commands`` (clock syncs and duty checks are skipped)."""
        async def next_frame() -> Frame:
            while True:
                while self._frames:
                    f = self._frames.pop(0)
                    if f.command in commands:
                        return f
                data = await self.reader.read(4096)
                if not data:
                    raise ConnectionError("closed by the server")
                for item in self._deframer.feed(data):
                    if not isinstance(item, FrameRejection):
                        self._frames.append(item)
        return await asyncio.wait_for(next_frame(), timeout_s)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
