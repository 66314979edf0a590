"""Device timestamps → epoch milliseconds, with the trust rules of docs/device-protocol.md
(Timestamps).

Accepted forms of ``ts``:

* absent / ``None`` → the receive time (trusted: it is our own clock);
* a number below 10^12 → epoch seconds (fractions allowed);
* a number at or above 10^12 → epoch milliseconds;
* an RFC 3339 string (``T``, ``t`` or a space between date and time) → that instant; without an
  offset it is wall-clock time in the park's timezone.

Anything else (booleans, lists, unparseable strings) is a :class:`Rejection` with reason
``SCHEMA``; an infinite number is ``NAN``. A well-formed timestamp that is too far in the future or
too old is *not* a rejection: the reading is still worth keeping, so the receive time replaces it
and ``clock_trusted`` is False for the caller to count.

Sub-millisecond parts are rounded half away from zero. Truncating would be wrong for floats:
``1764059400.123 * 1000`` is ``1764059400122.9998`` in binary floating point.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone
from datetime import tzinfo as tzinfo_t

from sensors.base import Rejection, RejectReason, TimeContext

__all__ = ["numeric_ts", "resolve_ts", "within_window"]

#: Numbers at or above this are milliseconds (2001-09-09 in seconds, 1970-01-12 in ms).
_MS_THRESHOLD = 10**12

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# RFC 3339 with the two liberties devices actually take: a space separator and no offset.
# Stricter than datetime.fromisoformat, which would also take week dates and compact forms.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))?",
    re.ASCII,
)

# Longest valid form is 35 characters; checking length first keeps the regex off junk.
_MAX_TS_CHARS = 40


def resolve_ts(raw: object, ctx: TimeContext) -> tuple[int, bool]:
    """Return ``(epoch_ms, clock_trusted)`` for a device-supplied ``ts`` value."""
    if raw is None:
        return ctx.received_at_ms, True
    if isinstance(raw, bool):  # before int: bool is an int subclass
        raise Rejection(RejectReason.SCHEMA, f"ts={raw!r} is not a timestamp")
    if isinstance(raw, int):
        ms = raw * 1000 if raw < _MS_THRESHOLD else raw
    elif isinstance(raw, float):
        ms_or_none = _float_to_ms(raw)
        if ms_or_none is None:
            return ctx.received_at_ms, False
        ms = ms_or_none
    elif isinstance(raw, str):
        ms = _parse_string(raw, ctx)
    else:
        raise Rejection(RejectReason.SCHEMA, f"ts of type {type(raw).__name__} is not a timestamp")
    return within_window(ms, ctx.received_at_ms, ctx.max_age_s, ctx.max_future_s)


def numeric_ts(raw: int | float, received_at_ms: int, max_age_s: float,
               max_future_s: float) -> tuple[int, bool] | None:
    """:func:`resolve_ts` for a plain ``int`` or a finite ``float`` (the decoder's shortcut,
    sensors/decode.py), with no :class:`TimeContext` to build; None for anything it would
    reject, which the caller then sends the long way to be worded."""
    if type(raw) is int:
        ms = raw * 1000 if raw < _MS_THRESHOLD else raw
    elif type(raw) is float and math.isfinite(raw):
        msf = raw * 1000.0 if raw < _MS_THRESHOLD else raw
        if not math.isfinite(msf):
            return received_at_ms, False
        ms = _round_half_away(msf)
    else:
        return None
    return within_window(ms, received_at_ms, max_age_s, max_future_s)


def _float_to_ms(raw: float) -> int | None:
    """Milliseconds for a float ts, or None when it is too large to be a real instant."""
    if not math.isfinite(raw):
        raise Rejection(RejectReason.NAN, f"ts={raw!r} is not finite")
    msf = raw * 1000.0 if raw < _MS_THRESHOLD else raw
    if not math.isfinite(msf):  # e.g. -1e308 seconds; absurd, so simply untrusted
        return None
    return _round_half_away(msf)


def _round_half_away(x: float) -> int:
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def within_window(ms: int, received_at_ms: int, max_age_s: float,
                  max_future_s: float) -> tuple[int, bool]:
    """``(ms, True)``, or the receive time and False when ``ms`` is too old or too far ahead."""
    if ms > received_at_ms + max_future_s * 1000.0 or ms < received_at_ms - max_age_s * 1000.0:
        return received_at_ms, False
    return ms, True


def _parse_string(raw: str, ctx: TimeContext) -> int:
    match = _RFC3339.fullmatch(raw) if len(raw) <= _MAX_TS_CHARS else None
    if match is None:
        raise Rejection(RejectReason.SCHEMA, f"ts={raw[:_MAX_TS_CHARS]!r} is not RFC 3339")
    year, month, day, hour, minute, second, frac, zulu, sign, off_h, off_m = match.groups()
    tzinfo: tzinfo_t
    try:
        if zulu:
            tzinfo = UTC
        elif sign:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            tzinfo = timezone(-offset if sign == "-" else offset)
        else:
            tzinfo = ctx.timezone
        instant = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=tzinfo
        )
        delta = instant - _EPOCH
    except (ValueError, OverflowError) as exc:
        raise Rejection(RejectReason.SCHEMA, f"ts={raw!r} is not a valid instant: {exc}") from exc
    # Integer nanoseconds so the rounding below is exact, whatever the fraction's length.
    nanos = int((frac or "").ljust(9, "0"))
    total_ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + nanos
    ms, rest = divmod(abs(total_ns), 1_000_000)
    if rest >= 500_000:
        ms += 1
    return ms if total_ns >= 0 else -ms
