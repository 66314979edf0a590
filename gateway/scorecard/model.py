"""The plain data a scorecard is computed from, whatever store it was read from.

Times are epoch milliseconds. Every adapter (alarm store, InfluxDB, a future tenant register or
liveness tracker) produces these types, so :mod:`gateway.scorecard.kpis` never sees a database.
"""

from __future__ import annotations

from dataclasses import dataclass

MINUTE_MS = 60_000
HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Period:
    """The half-open interval [start_ms, end_ms) a scorecard covers."""

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.end_ms <= self.start_ms:
            raise ValueError("a period must end after it starts")

    @property
    def length_ms(self) -> int:
        return self.end_ms - self.start_ms


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """A registered device: the denominator of every per-device figure."""

    device: str
    park: str
    building: str
    floor: str
    zone: str
    kind: str
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class AlarmFact:
    """One alarm as the alarm store keeps it (the current row: the latest disposition, after
    any reclassification)."""

    alarm_id: str
    rule: str
    severity: str
    park: str
    device: str                  # "" for zone- and building-level alarms
    tenant: str | None
    kind: str
    started_at_ms: int           # when the condition began (pending start)
    fired_at_ms: int | None      # None: never left pending
    acknowledged_at_ms: int | None
    disposition: str | None
    resolved_at_ms: int | None
    maintenance: str = "none"    # none | test | isolated when raised or last marked
    inhibited_by: str | None = None


@dataclass(frozen=True, slots=True)
class StatusPoint:
    """A ``device_status`` point: the device is ``online`` (or not) from ``at_ms`` on."""

    device: str
    at_ms: int
    online: bool


@dataclass(frozen=True, slots=True)
class MaintenanceSpan:
    """A maintenance window (test or isolated) over one scope, as the engine keeps it.

    ``scope`` is device | zone | building; ``target`` a device ID, ``park/building/floor/zone``
    or ``park/building`` (docs/alarms.md, Maintenance).
    """

    scope: str
    target: str
    mode: str
    since_ms: int
    until_ms: int

    def covers(self, d: DeviceRef) -> bool:
        if self.scope == "device":
            return self.target == d.device
        if self.scope == "zone":
            return self.target == f"{d.park}/{d.building}/{d.floor}/{d.zone}"
        return self.target == f"{d.park}/{d.building}"
