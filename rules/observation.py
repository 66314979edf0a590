"""What the rule engine is fed: accepted readings, device events and status changes.

Built by the gateway from messages that are already validated; times are epoch milliseconds.
``ts_ms`` is the trusted device time (or the receive time when the clock was not trusted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rules.alarm import Subject
from sensors.base import EventType


# Not frozen, though nothing changes one: one is made per reading, and a frozen dataclass's
# ``__init__`` costs several times a plain one's (issue 15).
@dataclass(slots=True)
class Reading:
    device: str
    ts_ms: int
    values: Mapping[str, float | bool]
    received_at_ms: int
    clock_trusted: bool = True


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    device: str
    ts_ms: int
    type: EventType
    received_at_ms: int
    point: str = ""
    detail: str = ""
    #: Identity of this message for redelivery dedup (device, seq, payload hash), set by the
    #: gateway when the event carries a seq; None means "never treat as a repeat".
    dedup_key: str | None = None
    #: Where a panel's point is (rules/placement.py): its alarm is placed there instead of at
    #: the panel. None: the device's own place (not a panel point, or one not in the map).
    place: Subject | None = None


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A device's own online/offline announcement (e.g. its Last Will)."""

    device: str
    online: bool
    received_at_ms: int


Observation = Reading | DeviceEvent | StatusChange
