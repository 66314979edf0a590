"""Alarm state as data (docs/alarms.md), shared by the rule engine, the store and the outputs.

An alarm is identified by its ``fingerprint`` (rule + device, or rule + zone/building): at most
one alarm per fingerprint is active (not resolved) at any time. Every change is a
:class:`Transition`; outputs (InfluxDB ``alarms`` points, retained MQTT documents, the HTTP API,
later notifications) are driven by transitions only.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field, replace
from typing import Any


class Severity(enum.StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        """Higher is worse: critical 4 … info 0."""
        return _RANK[self]


_RANK = {Severity.CRITICAL: 4, Severity.MAJOR: 3, Severity.MINOR: 2, Severity.WARNING: 1,
         Severity.INFO: 0}


class AlarmState(enum.StrEnum):
    """pending → firing → acknowledged → resolved (an alarm may resolve before any ack).

    ``pending`` is internal (a condition holds but its ``for`` has not elapsed) and is never
    published; the contract's documents show firing / acknowledged / resolved.
    """

    PENDING = "pending"
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Disposition(enum.StrEnum):
    """What the person who acknowledged says the alarm was (for false-alarm KPIs)."""

    REAL = "real"
    FALSE_ALARM = "false_alarm"
    TEST = "test"
    FAULT = "fault"


class Maintenance(enum.StrEnum):
    """A device, zone or building under maintenance: alarms are recorded, marked, not paged."""

    NONE = "none"
    TEST = "test"
    ISOLATED = "isolated"


@dataclass(frozen=True, slots=True)
class Subject:
    """Where an alarm is: the registry identity of a device, or of a zone or building."""

    park: str
    building: str
    floor: str = ""
    zone: str = ""
    device: str = ""          # empty for zone- and building-level alarms
    tenant: str | None = None
    kind: str = ""            # sensor kind, or "zone"/"building" for group alarms
    location: str = ""

    @property
    def topic_device(self) -> str:
        """The {device} level of the alarm topic: the device, else ``zone-<z>`` / ``building``."""
        if self.device:
            return self.device
        return f"zone-{self.zone}" if self.zone else "building"


@dataclass(frozen=True, slots=True)
class Alarm:
    """One alarm instance. Immutable: every change produces a new value (and a Transition)."""

    alarm_id: str
    fingerprint: str
    rule: str
    severity: Severity
    state: AlarmState
    subject: Subject
    message: str
    started_at_ms: int                    # when the condition began (pending start)
    updated_at_ms: int
    value: float | None = None
    fired_at_ms: int | None = None
    acknowledged_by: str | None = None
    acknowledged_at_ms: int | None = None
    ack_channel: str | None = None
    disposition: Disposition | None = None
    resolved_at_ms: int | None = None
    maintenance: Maintenance = Maintenance.NONE
    inhibited_by: str | None = None       # fingerprint of the parent alarm that absorbs this one
    labels: dict[str, str] = field(default_factory=dict)
    # A name typed on the ack page: unverified, so never in acknowledged_by (the link's contact).
    acknowledged_name: str | None = None

    @property
    def active(self) -> bool:
        return self.state is not AlarmState.RESOLVED

    @property
    def acknowledged(self) -> bool:
        """Someone answered and nothing since asks for a new answer. An acknowledged alarm
        that escalated back to firing (Ledger.open) may be acknowledged again."""
        return self.state is AlarmState.ACKNOWLEDGED or (
            self.state is AlarmState.RESOLVED and self.acknowledged_by is not None)

    @property
    def paged(self) -> bool:
        """Whether people should be notified (issue 4 decides how)."""
        return (self.state is not AlarmState.PENDING and self.maintenance is Maintenance.NONE
                and self.inhibited_by is None)

    def evolve(self, **changes: Any) -> Alarm:
        return replace(self, **changes)

    def document(self, ack_url: str | None = None) -> dict[str, Any]:
        """The alarm document of docs/alarms.md (the same everywhere: webhook, MQTT, HTTP API)."""
        s = self.subject
        return {
            "alarm_id": self.alarm_id, "rule": self.rule, "state": self.state.value,
            "severity": self.severity.value, "park": s.park, "building": s.building,
            "floor": s.floor, "zone": s.zone, "device": s.device or None, "tenant": s.tenant,
            "kind": s.kind, "location": s.location, "value": self.value,
            "message": self.message, "started_at": iso(self.started_at_ms),
            "updated_at": iso(self.updated_at_ms),
            "fired_at": iso(self.fired_at_ms) if self.fired_at_ms is not None else None,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_name": self.acknowledged_name,
            "acknowledged_at": (iso(self.acknowledged_at_ms)
                                if self.acknowledged_at_ms is not None else None),
            "disposition": self.disposition.value if self.disposition else None,
            "resolved_at": (iso(self.resolved_at_ms)
                            if self.resolved_at_ms is not None else None),
            "maintenance": self.maintenance.value, "inhibited_by": self.inhibited_by,
            "ack_url": ack_url,
        }


@dataclass(frozen=True, slots=True)
class Reclassification:
    """A person correcting the disposition of an acknowledged alarm: audited on its own."""

    at_ms: int
    by: str
    from_disposition: Disposition | None
    to_disposition: Disposition
    reason: str


class AlreadyAcknowledged(ValueError):
    """A second acknowledgement: refused, the first one stands (``alarm`` says whose it is).
    Correcting the disposition is a reclassification, not another acknowledgement."""

    def __init__(self, alarm: Alarm) -> None:
        super().__init__(f"alarm {alarm.alarm_id} was already acknowledged by "
                         f"{alarm.acknowledged_by} via {alarm.ack_channel} at "
                         + (iso(alarm.acknowledged_at_ms)
                            if alarm.acknowledged_at_ms is not None else "?"))
        self.alarm = alarm


def reclassification(alarm: Alarm, *, by: str, disposition: Disposition, reason: str,
                     now_ms: int) -> Reclassification:
    """The record of correcting ``alarm``'s disposition; ValueError unless it was acknowledged
    (there is nothing to correct before someone answered)."""
    if alarm.acknowledged_by is None or alarm.disposition is None:
        raise ValueError(f"alarm {alarm.alarm_id} is not acknowledged: acknowledge it instead")
    if disposition is alarm.disposition:
        raise ValueError(f"alarm {alarm.alarm_id} is already {disposition.value}")
    return Reclassification(at_ms=now_ms, by=by, from_disposition=alarm.disposition,
                            to_disposition=disposition, reason=reason)


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change of one alarm: ``before`` is None when the alarm is new."""

    before: Alarm | None
    after: Alarm
    #: Set when this change is a reclassification; stored with the transition.
    reclassification: Reclassification | None = None

    @property
    def published(self) -> bool:
        """Pending alarms stay internal; everything from firing on is output.

        A pending alarm whose condition went away before its ``for`` elapsed ends with a
        pending → resolved transition: the store needs it (to forget the pending alarm), the
        outputs do not (nobody was ever told about it).
        """
        if self.before is not None and self.before.state is AlarmState.PENDING \
                and self.after.state is AlarmState.RESOLVED:
            return False
        return self.after.state is not AlarmState.PENDING


def iso(ms: int) -> str:
    return (dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"))
