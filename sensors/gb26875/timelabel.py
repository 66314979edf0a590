"""The 6-byte time label of GB/T 26875.3-2011 (brief §2.6).

Bytes: second, minute, hour, day, month, year - 2000, each a plain binary byte (not BCD). The
standard names no time zone; devices send park-local wall time, so the label maps to a *naive*
``datetime`` and the caller applies the park's zone.

A device clock can send any six bytes, so decoding never raises: an impossible date comes back as
a :class:`BadTimeLabel` the caller can log while it falls back to the receive time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

TIME_LABEL_SIZE = 6
_BASE_YEAR = 2000
_MAX_YEAR = 99  # the standard's range for the year byte (2000-2099)


@dataclass(frozen=True)
class BadTimeLabel:
    """Six bytes that are not a calendar date and time (e.g. month 13, 31 February)."""

    raw: bytes
    detail: str


def decode_time_label(raw: bytes) -> datetime | BadTimeLabel:
    """The naive local ``datetime`` of a 6-byte label, or why it is not one."""
    if len(raw) != TIME_LABEL_SIZE:
        return BadTimeLabel(bytes(raw), f"expected {TIME_LABEL_SIZE} bytes, got {len(raw)}")
    second, minute, hour, day, month, year = raw
    if year > _MAX_YEAR:
        return BadTimeLabel(bytes(raw), f"year byte {year} is outside 0-{_MAX_YEAR}")
    try:
        return datetime(_BASE_YEAR + year, month, day, hour, minute, second)
    except ValueError as exc:
        return BadTimeLabel(bytes(raw), str(exc))


def encode_time_label(when: datetime) -> bytes:
    """The label of ``when`` (its wall-clock fields; any tzinfo is ignored, microseconds dropped).

    Raises ValueError outside 2000-2099: that is a programming error on our side, never input.
    """
    year = when.year - _BASE_YEAR
    if not 0 <= year <= _MAX_YEAR:
        raise ValueError(f"year {when.year} cannot be sent in a GB/T 26875.3 time label")
    return bytes((when.second, when.minute, when.hour, when.day, when.month, year))
