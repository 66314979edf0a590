"""The upload ADUs a simulated UITD sends (GB/T 26875.3-2011 §8.3, brief §2.4).

``sensors.gb26875.adu`` parses uploads and builds only what the centre sends; a simulator and a
benchmark need the other direction. Each builder here is the inverse of that module's parser
(tests check ``parse_adu(build(...))``), so a layout fixed there is fixed here by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sensors.gb26875.adu import DESCRIPTION_SIZE, AduType
from sensors.gb26875.bits import FacilityOperationFlags, UitdOperationFlags
from sensors.gb26875.codes import ANALOG_TYPES
from sensors.gb26875.timelabel import encode_time_label


@dataclass(frozen=True)
class Component:
    """Where a component is in frames: system type and address, component type and address."""

    sys_type: int
    sys_addr: int
    comp_type: int
    comp_addr: int


def description_bytes(text: str) -> bytes:
    """``text`` in GB18030, cut at a character boundary to 31 bytes and padded with NULs."""
    out = b""
    for ch in text:
        enc = ch.encode("gb18030")
        if len(out) + len(enc) > DESCRIPTION_SIZE:
            break
        out += enc
    return out.ljust(DESCRIPTION_SIZE, b"\x00")


def _head(c: Component) -> bytes:
    return bytes((c.sys_type, c.sys_addr, c.comp_type)) + c.comp_addr.to_bytes(4, "little")


def component_status_adu(items: list[tuple[Component, int, str]], when: datetime) -> bytes:
    """Type 2: each (component, status word, description) at ``when``; 1-22 objects."""
    if not 1 <= len(items) <= 22:
        raise ValueError("type 2 carries 1-22 objects")
    label = encode_time_label(when)
    body = b"".join(_head(c) + status.to_bytes(2, "little") + description_bytes(text) + label
                    for c, status, text in items)
    return bytes((AduType.COMPONENT_STATUS, len(items))) + body


def analog_adu(component: Component, analog_type: int, value: float, when: datetime) -> bytes:
    """Type 3: one sampled ``value`` in the engineering unit of ``analog_type`` (Table 6)."""
    kind = ANALOG_TYPES[analog_type]
    raw = round(value * kind.divisor)
    return (bytes((AduType.ANALOG_VALUE, 1)) + _head(component) + bytes((analog_type,))
            + raw.to_bytes(2, "little", signed=True) + encode_time_label(when))


def system_status_adu(sys_type: int, sys_addr: int, status: int, when: datetime) -> bytes:
    """Type 1: one facility system's status word."""
    return (bytes((AduType.SYSTEM_STATUS, 1, sys_type, sys_addr)) + status.to_bytes(2, "little")
            + encode_time_label(when))


def facility_operation_adu(sys_type: int, sys_addr: int, flags: FacilityOperationFlags,
                           operator: int, when: datetime) -> bytes:
    """Type 4: an operation on the panel (复位 reset, 消音 mute, 自检 self-test, ...)."""
    return (bytes((AduType.FACILITY_OPERATION, 1, sys_type, sys_addr, int(flags), operator))
            + encode_time_label(when))


def uitd_operation_adu(flags: UitdOperationFlags, operator: int, when: datetime) -> bytes:
    """Type 24: an operation on the UITD; ``DUTY_CHECK_ANSWER`` answers a 查岗."""
    return bytes((AduType.UITD_OPERATION, 1, int(flags), operator)) + encode_time_label(when)


def uitd_time_adu(when: datetime) -> bytes:
    """Type 28: the UITD's clock."""
    return bytes((AduType.UITD_TIME, 1)) + encode_time_label(when)
