"""Application data units of GB/T 26875.3-2011 (brief §2.4): parse what a UITD uploads
(command 2, or 5 in answer to a request) and build what the centre sends (command 1).

An ADU is type flag (1 byte), object count n (1 byte), then n objects of a fixed size per type;
most objects end in a 6-byte time label (the event time). Every type is checked strictly:
``2 + n * size == len(adu)`` and ``1 <= n <= max n`` of Table 3, else an :class:`AduRejection`.
Types this module does not know the layout of (configuration texts 6, 7, 26, the centre's own
request and control types, reserved and user-defined types) parse as :class:`Unknown`; §2.9 asks
the caller to ACK those too and keep them for a person to look at.

A bad object time label does not lose the object: its ``time`` is None, ``time_label`` keeps the
bytes, and the caller uses the receive time. Parsing never raises on input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum

from sensors.gb26875.bits import (
    ComponentStatusBits,
    FacilityOperationFlags,
    SystemStatusBits,
    UitdOperationFlags,
    UitdStatusBits,
)
from sensors.gb26875.codes import ANALOG_TYPES
from sensors.gb26875.timelabel import (
    TIME_LABEL_SIZE,
    BadTimeLabel,
    decode_time_label,
    encode_time_label,
)

DESCRIPTION_SIZE = 31


class AduType(IntEnum):
    """The type flags this module parses or builds (Table 3)."""

    SYSTEM_STATUS = 1
    COMPONENT_STATUS = 2
    ANALOG_VALUE = 3
    FACILITY_OPERATION = 4
    FACILITY_SOFTWARE_VERSION = 5
    FACILITY_TIME = 8
    UITD_STATUS = 21
    UITD_OPERATION = 24
    UITD_SOFTWARE_VERSION = 25
    UITD_TIME = 28
    INITIALISE = 89
    CLOCK_SYNC = 90
    DUTY_CHECK = 91


def _time(raw: bytes) -> datetime | None:
    value = decode_time_label(raw)
    return None if isinstance(value, BadTimeLabel) else value


@dataclass(frozen=True)
class SystemStatus:
    """Type 1: a facility system's status word at ``time``."""

    sys_type: int
    sys_addr: int
    status: int
    time_label: bytes
    time: datetime | None

    @property
    def flags(self) -> SystemStatusBits:
        return SystemStatusBits(self.status)


@dataclass(frozen=True)
class ComponentStatus:
    """Type 2: one component's status word; ``comp_addr`` is the 4 bytes read little-endian."""

    sys_type: int
    sys_addr: int
    comp_type: int
    comp_addr: int
    status: int
    description: str
    time_label: bytes
    time: datetime | None

    @property
    def flags(self) -> ComponentStatusBits:
        return ComponentStatusBits(self.status)


@dataclass(frozen=True)
class AnalogValue:
    """Type 3: a sampled value. ``value`` and ``unit`` follow Table 6; both are None for a
    reserved or user-defined analog type, whose scaling only the vendor knows (``raw`` stays)."""

    sys_type: int
    sys_addr: int
    comp_type: int
    comp_addr: int
    analog_type: int
    raw: int
    value: float | None
    unit: str | None
    time_label: bytes
    time: datetime | None


@dataclass(frozen=True)
class FacilityOperation:
    """Type 4: an operation on a facility (reset, mute, ...) by operator number ``operator``."""

    sys_type: int
    sys_addr: int
    flags: FacilityOperationFlags
    operator: int
    time_label: bytes
    time: datetime | None


@dataclass(frozen=True)
class FacilitySoftwareVersion:
    """Type 5."""

    sys_type: int
    sys_addr: int
    major: int
    minor: int


@dataclass(frozen=True)
class FacilityTime:
    """Type 8: a facility's clock."""

    sys_type: int
    sys_addr: int
    time_label: bytes
    time: datetime | None


@dataclass(frozen=True)
class UitdStatus:
    """Type 21: the UITD's own run status."""

    flags: UitdStatusBits
    time_label: bytes
    time: datetime | None


@dataclass(frozen=True)
class UitdOperation:
    """Type 24: an operation on the UITD; ``DUTY_CHECK_ANSWER`` answers a 查岗."""

    flags: UitdOperationFlags
    operator: int
    time_label: bytes
    time: datetime | None


@dataclass(frozen=True)
class UitdSoftwareVersion:
    """Type 25."""

    major: int
    minor: int


@dataclass(frozen=True)
class UitdTime:
    """Type 28: the UITD's clock (compare with the receive time to see drift)."""

    time_label: bytes
    time: datetime | None


AduObject = (SystemStatus | ComponentStatus | AnalogValue | FacilityOperation
             | FacilitySoftwareVersion | FacilityTime | UitdStatus | UitdOperation
             | UitdSoftwareVersion | UitdTime)


@dataclass(frozen=True)
class Heartbeat:
    """An empty ADU: the vendor heartbeat (command 2) or a bare confirm."""


@dataclass(frozen=True)
class Adu:
    """A parsed ADU: its type flag and its objects, in order (at least one)."""

    type_flag: AduType
    objects: tuple[AduObject, ...]


@dataclass(frozen=True)
class Unknown:
    """An ADU of a type this module does not parse; ``raw`` is the whole ADU."""

    type_flag: int
    raw: bytes


class AduRejectReason(StrEnum):
    BAD_LENGTH = "bad_length"  # not 2 + n * size, or a 1-byte ADU
    BAD_COUNT = "bad_count"  # n is 0 or over the type's maximum


@dataclass(frozen=True)
class AduRejection:
    reason: AduRejectReason
    type_flag: int
    detail: str


def _u32(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


def _description(raw: bytes) -> str:
    # GB18030, padded with NULs or spaces; a bad byte must not cost the alarm, so replace it.
    return raw.decode("gb18030", errors="replace").strip("\x00 ").strip()


def _system_status(o: bytes) -> SystemStatus:
    return SystemStatus(o[0], o[1], _u32(o[2:4]), o[4:10], _time(o[4:10]))


def _component_status(o: bytes) -> ComponentStatus:
    return ComponentStatus(o[0], o[1], o[2], _u32(o[3:7]), _u32(o[7:9]),
                           _description(o[9:40]), o[40:46], _time(o[40:46]))


def _analog(o: bytes) -> AnalogValue:
    raw = int.from_bytes(o[8:10], "little", signed=True)
    kind = ANALOG_TYPES.get(o[7])
    value = None if kind is None else raw / kind.divisor
    return AnalogValue(o[0], o[1], o[2], _u32(o[3:7]), o[7], raw, value,
                       None if kind is None else kind.unit, o[10:16], _time(o[10:16]))


def _facility_operation(o: bytes) -> FacilityOperation:
    return FacilityOperation(o[0], o[1], FacilityOperationFlags(o[2]), o[3], o[4:10],
                             _time(o[4:10]))


def _facility_version(o: bytes) -> FacilitySoftwareVersion:
    return FacilitySoftwareVersion(o[0], o[1], o[2], o[3])


def _facility_time(o: bytes) -> FacilityTime:
    return FacilityTime(o[0], o[1], o[2:8], _time(o[2:8]))


def _uitd_status(o: bytes) -> UitdStatus:
    return UitdStatus(UitdStatusBits(o[0]), o[1:7], _time(o[1:7]))


def _uitd_operation(o: bytes) -> UitdOperation:
    return UitdOperation(UitdOperationFlags(o[0]), o[1], o[2:8], _time(o[2:8]))


def _uitd_version(o: bytes) -> UitdSoftwareVersion:
    return UitdSoftwareVersion(o[0], o[1])


def _uitd_time(o: bytes) -> UitdTime:
    return UitdTime(o, _time(o))


# Object size includes its time label; max n from Table 3 (it keeps the ADU within 1024 bytes).
_LAYOUTS: dict[AduType, tuple[int, int]] = {
    AduType.SYSTEM_STATUS: (4 + TIME_LABEL_SIZE, 102),
    AduType.COMPONENT_STATUS: (9 + DESCRIPTION_SIZE + TIME_LABEL_SIZE, 22),
    AduType.ANALOG_VALUE: (10 + TIME_LABEL_SIZE, 63),
    AduType.FACILITY_OPERATION: (4 + TIME_LABEL_SIZE, 102),
    AduType.FACILITY_SOFTWARE_VERSION: (4, 1),
    AduType.FACILITY_TIME: (2 + TIME_LABEL_SIZE, 1),
    AduType.UITD_STATUS: (1 + TIME_LABEL_SIZE, 1),
    AduType.UITD_OPERATION: (2 + TIME_LABEL_SIZE, 127),
    AduType.UITD_SOFTWARE_VERSION: (2, 1),
    AduType.UITD_TIME: (TIME_LABEL_SIZE, 1),
}
_PARSERS: dict[AduType, Callable[[bytes], AduObject]] = {
    AduType.SYSTEM_STATUS: _system_status,
    AduType.COMPONENT_STATUS: _component_status,
    AduType.ANALOG_VALUE: _analog,
    AduType.FACILITY_OPERATION: _facility_operation,
    AduType.FACILITY_SOFTWARE_VERSION: _facility_version,
    AduType.FACILITY_TIME: _facility_time,
    AduType.UITD_STATUS: _uitd_status,
    AduType.UITD_OPERATION: _uitd_operation,
    AduType.UITD_SOFTWARE_VERSION: _uitd_version,
    AduType.UITD_TIME: _uitd_time,
}


def parse_adu(adu: bytes) -> Heartbeat | Adu | Unknown | AduRejection:
    """Parse the ADU of an upload (command 2) or a response (command 5)."""
    if not adu:
        return Heartbeat()
    if len(adu) < 2:
        return AduRejection(AduRejectReason.BAD_LENGTH, adu[0], "a 1-byte ADU has no count")
    type_flag, count = adu[0], adu[1]
    if type_flag not in _PARSERS:
        return Unknown(type_flag, bytes(adu))
    kind = AduType(type_flag)
    size, max_count = _LAYOUTS[kind]
    if not 1 <= count <= max_count:
        return AduRejection(AduRejectReason.BAD_COUNT, type_flag,
                            f"{count} objects; type {type_flag} allows 1-{max_count}")
    if len(adu) != 2 + count * size:
        return AduRejection(AduRejectReason.BAD_LENGTH, type_flag,
                            f"{len(adu)} bytes; {count} objects of {size} need {2 + count * size}")
    parse = _PARSERS[kind]
    objects = tuple(parse(bytes(adu[2 + i * size:2 + (i + 1) * size])) for i in range(count))
    return Adu(kind, objects)


def clock_sync_adu(now: datetime | bytes) -> bytes:
    """Type 90 (command 1): set the UITD's clock to ``now`` (a datetime or a 6-byte label)."""
    label = encode_time_label(now) if isinstance(now, datetime) else bytes(now)
    if len(label) != TIME_LABEL_SIZE:
        raise ValueError("a time label is 6 bytes")
    return bytes((AduType.CLOCK_SYNC, 1)) + label


def duty_check_adu(window: int = 10) -> bytes:
    """Type 91 (command 1), 查岗. The byte's meaning is not in the OCR'd standard; the vendor
    sample sends 0x0A, read as an answer window of 10 minutes, hence the default."""
    if not 0 <= window <= 255:
        raise ValueError(f"duty-check byte {window} is not 0-255")
    return bytes((AduType.DUTY_CHECK, 1, window))


def initialise_adu() -> bytes:
    """Type 89 (command 1): initialise the UITD; one reserved byte 0, as the samples send."""
    return bytes((AduType.INITIALISE, 1, 0))
