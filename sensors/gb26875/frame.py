"""Frames of GB/T 26875.3-2011 (brief §2.2-2.3): encode one, and cut a TCP byte stream into
frames with :class:`Deframer`.

Layout: ``@@`` | serial u16 LE | version major, user | time label 6 | source 6 | destination 6 |
ADU length u16 LE | command | ADU | checksum | ``##``. The checksum is the sum mod 256 of every
byte from the serial to the command and of the ADU. Addresses are kept as the 6 bytes in frame
order; what they mean is up to the device.

Rejections. Nothing here raises on input: each bad frame or run of garbage becomes a
:class:`FrameRejection` with a :class:`RejectReason` and, when the 27-byte header was readable,
that header, so the caller can NAK with the right serial and addresses (standard 6.5.3 NAKs a bad
checksum, an unknown command, an ADU over 1024 bytes and bad start or end characters).

Commands. 1-6 are the standard's. 0 and 7-127 are reserved and 128-255 user-defined; no device we
support defines one, so both are rejected as ``BAD_COMMAND`` (the caller NAKs, as 6.5.3 asks for
an unknown command) rather than passed up as frames nobody can act on. They are decided only
after the end characters and checksum are good, so the whole frame is skipped at once.

Resynchronisation. A candidate starts at ``@@``. When its end characters are missing or its
length is over 1024, its length cannot be trusted, so only its first byte is dropped and the
search for ``@@`` resumes (the real start may be the second ``@`` of ``@@@``). When the end is
right but the checksum or command is wrong, the length was consistent, so the whole frame is
skipped: a corrupted frame's body must not be searched for frames. A stray ``@@`` followed by a
plausible length (≤ 1024) makes the deframer wait for that many bytes before it can tell; random
bytes give a plausible length about 2% of the time, and the next bytes resolve it.

Memory. :meth:`Deframer.feed` works through its input in pieces of at most one maximum frame and
drops garbage as soon as it is seen, so between calls the buffer holds less than one maximum frame
(1054 bytes) and during a call at most :data:`MAX_BUFFER`, whatever a peer sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum

from sensors.gb26875.timelabel import TIME_LABEL_SIZE, encode_time_label

START = b"@@"
END = b"##"
ADDRESS_SIZE = 6
HEADER_SIZE = 27  # start to command byte, inclusive
MAX_ADU = 1024
MIN_FRAME = HEADER_SIZE + 3  # + checksum + end
MAX_FRAME = MIN_FRAME + MAX_ADU  # 1054
#: The most a Deframer ever buffers: a partial frame plus one piece of input being scanned.
MAX_BUFFER = 2 * MAX_FRAME


class Command(IntEnum):
    """Command byte (Table 2)."""

    CONTROL = 1  # centre -> UITD: initialise, clock sync, duty check
    SEND_DATA = 2  # UITD -> centre uploads; an empty ADU is the vendor heartbeat
    CONFIRM = 3  # ACK
    REQUEST = 4  # centre -> UITD queries
    RESPONSE = 5  # UITD -> centre answers to a request
    DENY = 6  # NAK


@dataclass(frozen=True)
class Header:
    """The fixed 27 bytes before the ADU, as read; enough to NAK a frame that failed."""

    serial: int
    version: tuple[int, int]
    time_label: bytes
    source: bytes
    destination: bytes
    adu_length: int
    command: int


@dataclass(frozen=True)
class Frame:
    """One frame. ``version`` is (major, user); ``time_label`` the raw 6-byte send time (see
    ``timelabel.decode_time_label``); ``source``/``destination`` 6 bytes in frame order;
    ``command`` a :class:`Command` value for frames that came out of a Deframer."""

    serial: int
    version: tuple[int, int]
    time_label: bytes
    source: bytes
    destination: bytes
    command: int
    adu: bytes = b""

    def __post_init__(self) -> None:
        # Frames built by our own code: a bad field is a bug, so it fails loudly here.
        problems = []
        if not 0 <= self.serial <= 0xFFFF:
            problems.append(f"serial {self.serial} is not 0-65535")
        if len(self.version) != 2 or not all(0 <= v <= 255 for v in self.version):
            problems.append(f"version {self.version} is not two bytes")
        if len(self.time_label) != TIME_LABEL_SIZE:
            problems.append("time_label must be 6 bytes")
        if len(self.source) != ADDRESS_SIZE or len(self.destination) != ADDRESS_SIZE:
            problems.append("source and destination must be 6 bytes")
        if not 0 <= self.command <= 255:
            problems.append(f"command {self.command} is not a byte")
        if len(self.adu) > MAX_ADU:
            problems.append(f"ADU of {len(self.adu)} bytes is over {MAX_ADU}")
        if problems:
            raise ValueError("; ".join(problems))


class RejectReason(StrEnum):
    GARBAGE = "garbage"  # bytes before a start '@@', dropped
    TOO_LONG = "too_long"  # ADU length over 1024
    BAD_END = "bad_end"  # no '##' where the length says the frame ends
    BAD_CHECKSUM = "bad_checksum"
    BAD_COMMAND = "bad_command"  # 0, reserved 7-127 or user-defined 128-255


@dataclass(frozen=True)
class FrameRejection:
    """Bytes the deframer could not turn into a frame. ``size`` is how many bytes it dropped
    (every byte fed ends up in exactly one frame or rejection); ``header`` is set when a 27-byte
    header was read (every reason but GARBAGE). For TOO_LONG and BAD_END it is read at a
    candidate ``@@`` that turned out wrong, so it may be misaligned; 6.5.3 still asks for a NAK."""

    reason: RejectReason
    detail: str
    size: int
    header: Header | None = None


def checksum(body: bytes) -> int:
    """Sum mod 256 of ``body``: the bytes from the serial through the command, then the ADU."""
    return sum(body) & 0xFF


def encode(frame: Frame) -> bytes:
    """The bytes of ``frame`` on the wire."""
    body = b"".join((
        frame.serial.to_bytes(2, "little"), bytes(frame.version), frame.time_label,
        frame.source, frame.destination, len(frame.adu).to_bytes(2, "little"),
        bytes((frame.command,)), frame.adu))
    return START + body + bytes((checksum(body),)) + END


def _reply(to: Frame | Header, command: Command, now_label: bytes | datetime) -> Frame:
    label = encode_time_label(now_label) if isinstance(now_label, datetime) else now_label
    # The confirmer echoes the initiator's serial and version; source and destination swap.
    return Frame(serial=to.serial, version=to.version, time_label=label, source=to.destination,
                 destination=to.source, command=command)


def ack_for(frame: Frame | Header, now_label: bytes | datetime) -> Frame:
    """The confirm (command 3) for ``frame``: empty ADU, serial echoed, addresses swapped."""
    return _reply(frame, Command.CONFIRM, now_label)


def nak_for(frame: Frame | Header, now_label: bytes | datetime) -> Frame:
    """The deny (command 6) for a frame or a rejection's ``header``; same shape as the ACK."""
    return _reply(frame, Command.DENY, now_label)


def _header(data: bytes | bytearray) -> Header:
    return Header(
        serial=int.from_bytes(data[2:4], "little"), version=(data[4], data[5]),
        time_label=bytes(data[6:12]), source=bytes(data[12:18]),
        destination=bytes(data[18:24]), adu_length=int.from_bytes(data[24:26], "little"),
        command=data[26])


_COMMANDS = frozenset(c.value for c in Command)


class Deframer:
    """Cuts one connection's byte stream into frames; one instance per TCP connection.

    ``garbage_bytes`` counts every byte dropped outside a frame candidate over its lifetime;
    ``peak_buffered`` is the most bytes it ever held (never above :data:`MAX_BUFFER`).
    """

    def __init__(self) -> None:
        self.garbage_bytes = 0
        self.peak_buffered = 0
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held, waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | FrameRejection]:
        """Take the next bytes of the stream; return the frames and rejections they complete,
        in stream order."""
        out: list[Frame | FrameRejection] = []
        view = memoryview(data)
        for start in range(0, len(view), MAX_FRAME):
            self._buf += view[start:start + MAX_FRAME]
            self.peak_buffered = max(self.peak_buffered, len(self._buf))
            self._drain(out)
        return out

    def _drain(self, out: list[Frame | FrameRejection]) -> None:
        while True:
            self._drop_to_start(out)
            if len(self._buf) < HEADER_SIZE:
                return
            header = _header(self._buf)
            if header.adu_length > MAX_ADU:
                out.append(self._reject(RejectReason.TOO_LONG, 1, header,
                                        f"ADU length {header.adu_length} is over {MAX_ADU}"))
                continue
            total = MIN_FRAME + header.adu_length
            if len(self._buf) < total:
                return
            result = self._check(header, total)
            if isinstance(result, Frame):
                del self._buf[:total]
            out.append(result)

    def _check(self, header: Header, total: int) -> Frame | FrameRejection:
        buf = self._buf
        if buf[total - 2:total] != END:
            return self._reject(RejectReason.BAD_END, 1, header,
                                f"no '##' at bytes {total - 2}-{total - 1}")
        body = bytes(buf[2:total - 3])
        if checksum(body) != buf[total - 3]:
            return self._reject(RejectReason.BAD_CHECKSUM, total, header,
                                f"checksum {buf[total - 3]:#04x}, computed {checksum(body):#04x}")
        if header.command not in _COMMANDS:
            return self._reject(RejectReason.BAD_COMMAND, total, header,
                                f"command byte {header.command} is not 1-6")
        return Frame(serial=header.serial, version=header.version,
                     time_label=header.time_label, source=header.source,
                     destination=header.destination, command=header.command,
                     adu=body[HEADER_SIZE - 2:])

    def _reject(self, reason: RejectReason, size: int, header: Header | None,
                detail: str) -> FrameRejection:
        del self._buf[:size]
        return FrameRejection(reason, detail, size, header)

    def _drop_to_start(self, out: list[Frame | FrameRejection]) -> None:
        at = self._buf.find(START)
        if at < 0:
            # Keep a trailing '@': it may be the first half of the next start.
            at = len(self._buf) - 1 if self._buf.endswith(b"@") else len(self._buf)
        if at > 0:
            self.garbage_bytes += at
            out.append(self._reject(RejectReason.GARBAGE, at, None,
                                    f"{at} byte(s) before a '@@' start"))
