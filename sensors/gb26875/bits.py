"""Status and operation bit fields of GB/T 26875.3-2011 (brief §2.4.5).

The flags are ``IntFlag``s, so reserved bits a device sets survive a round trip instead of being
dropped. Figures 6, 7, 9 and 14 of the standard have no OCR text; the assignments of system and
component status and of both operation flags come from implementations that agree (brief §2.4.5).

Bit 0 of a status word is "normal operation" in some panels and "test" in others, and the vendor
sample sends a fire as 0x0002 (bit 0 clear). So ``NORMAL`` is exposed but never means "no alarm":
decide on :data:`ALARM_BITS` (fire, fault, disabled, supervisory, power) alone, via
:func:`alarm_bits`.
"""

from __future__ import annotations

from enum import IntFlag


class SystemStatusBits(IntFlag):
    """Facility system status, type 1 (2 bytes, little-endian)."""

    NORMAL = 1 << 0  # polarity unreliable in the field: never read 0 as "no alarm" or "test"
    FIRE = 1 << 1
    FAULT = 1 << 2
    DISABLED = 1 << 3
    SUPERVISORY = 1 << 4
    STARTED = 1 << 5
    FEEDBACK = 1 << 6
    DELAY = 1 << 7
    MAINS_POWER_FAULT = 1 << 8
    BACKUP_POWER_FAULT = 1 << 9
    BUS_FAULT = 1 << 10
    MANUAL_MODE = 1 << 11
    CONFIG_CHANGED = 1 << 12
    RESET = 1 << 13


class ComponentStatusBits(IntFlag):
    """Component status, type 2 (2 bytes, little-endian); bits 9-15 reserved."""

    NORMAL = 1 << 0  # polarity unreliable, as for SystemStatusBits
    FIRE = 1 << 1
    FAULT = 1 << 2
    DISABLED = 1 << 3
    SUPERVISORY = 1 << 4
    STARTED = 1 << 5
    FEEDBACK = 1 << 6
    DELAY = 1 << 7
    POWER_FAULT = 1 << 8


class UitdStatusBits(IntFlag):
    """UITD run status, type 21 (1 byte; Fig. 13 of the standard)."""

    NORMAL = 1 << 0  # 1 = normal monitoring, 0 = test, per the standard's own figure
    FIRE = 1 << 1
    FAULT = 1 << 2
    MAINS_POWER_FAULT = 1 << 3
    BACKUP_POWER_FAULT = 1 << 4
    CENTRE_LINK_FAULT = 1 << 5
    MONITORED_LINE_FAULT = 1 << 6


class FacilityOperationFlags(IntFlag):
    """Facility operation record flags, type 4 (1 byte)."""

    RESET = 1 << 0
    MUTE = 1 << 1
    MANUAL_ALARM = 1 << 2
    ALARM_CLEARED = 1 << 3
    SELF_TEST = 1 << 4
    CONFIRM = 1 << 5
    TEST = 1 << 6


class UitdOperationFlags(IntFlag):
    """UITD operation record flags, type 24 (1 byte); bit 5 answers a duty check (查岗应答)."""

    RESET = 1 << 0
    MUTE = 1 << 1
    MANUAL_ALARM = 1 << 2
    ALARM_CLEARED = 1 << 3
    SELF_TEST = 1 << 4
    DUTY_CHECK_ANSWER = 1 << 5
    TEST = 1 << 6


#: The system/component status bits that are a condition someone must act on. Bit 0 is left out
#: on purpose (see the module docstring); component bit 8 and system bit 8 are both power faults.
ALARM_BITS = 0b1_0001_1110


def alarm_bits(status: int) -> ComponentStatusBits:
    """The alarm conditions in a system or component status word (fire, fault, disabled,
    supervisory, power fault), ignoring bit 0 and the informational bits."""
    return ComponentStatusBits(status & ALARM_BITS)


def is_fire(status: int) -> bool:
    """Bit 1 (火警) of a system, component or UITD status: the only fire signal, whatever bit 0."""
    return bool(status & SystemStatusBits.FIRE)
