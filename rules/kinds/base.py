"""What every rule kind shares: the alarm book, per-device clocks, subjects and messages.

The :class:`Ledger` holds the one active alarm per fingerprint and records a
:class:`~rules.alarm.Transition` for every change, so the kinds never build transitions
themselves and can never create a second alarm for a fingerprint.
"""

from __future__ import annotations

import string
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from rules.alarm import Alarm, AlarmState, Maintenance, Severity, Subject, Transition
from sensors.registry import Device

#: Passed as ``inhibited_by`` to leave an existing alarm's inhibition as it is.
KEEP = "\x00keep"

#: Resolved alarms kept for get()/acknowledge() answers (a bounded memory, not a history).
RECENT_RESOLVED = 10_000


class DeviceClock:
    """Per device: the newest reading time (event time) and the last receive time (any message)."""

    __slots__ = ("last_rx", "newest_ts")

    def __init__(self, newest_ts: int | None = None, last_rx: int | None = None) -> None:
        self.newest_ts = newest_ts
        self.last_rx = last_rx


def subject_of(d: Device) -> Subject:
    return Subject(park=d.park, building=d.building, floor=d.floor, zone=d.zone,
                   device=d.device, tenant=d.tenant, kind=d.kind, location=d.location)


def zone_key(s: Subject | Device) -> str:
    return f"{s.park}/{s.building}/{s.floor}/{s.zone}"


def building_key(s: Subject | Device) -> str:
    return f"{s.park}/{s.building}"


def device_fp(rule: str, device: str, point: str = "") -> str:
    return f"{rule}|device:{device}:{point}" if point else f"{rule}|device:{device}"


def fmt(value: Any) -> str:
    """Numbers as people read them: 0.1 not 0.1000000001, True as 'true'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def render(template: string.Template, subject: Subject, rule: str, severity: Severity,
           **extra: Any) -> str:
    fields: dict[str, Any] = {
        "rule": rule, "severity": severity.value, "device": subject.device or "-",
        "kind": subject.kind, "location": subject.location or "-", "park": subject.park,
        "building": subject.building, "floor": subject.floor, "zone": subject.zone,
        "tenant": subject.tenant or "-",
    }
    fields.update({k: fmt(v) for k, v in extra.items()})
    return " ".join(template.safe_substitute(fields).split())


class Ledger:
    """Active alarms by fingerprint; every change appends one Transition to ``out``."""

    def __init__(self, *, new_id: Callable[[], str],
                 maintenance_for: Callable[[Subject], Maintenance]) -> None:
        self._new_id = new_id
        self._maintenance_for = maintenance_for
        self.active: dict[str, Alarm] = {}
        self.fp_by_id: dict[str, str] = {}
        self.recent: OrderedDict[str, Alarm] = OrderedDict()
        self.out: list[Transition] = []

    def get(self, fp: str) -> Alarm | None:
        return self.active.get(fp)

    def by_id(self, alarm_id: str) -> Alarm | None:
        fp = self.fp_by_id.get(alarm_id)
        return self.active.get(fp) if fp is not None else self.recent.get(alarm_id)

    def restore(self, alarm: Alarm) -> None:
        self.active[alarm.fingerprint] = alarm
        self.fp_by_id[alarm.alarm_id] = alarm.fingerprint

    def put(self, before: Alarm | None, after: Alarm) -> Alarm:
        self.out.append(Transition(before, after))
        if after.state is AlarmState.RESOLVED:
            del self.active[after.fingerprint]
            del self.fp_by_id[after.alarm_id]
            self.recent[after.alarm_id] = after
            if len(self.recent) > RECENT_RESOLVED:
                self.recent.popitem(last=False)
        else:
            self.active[after.fingerprint] = after
            self.fp_by_id[after.alarm_id] = after.fingerprint
        return after

    def open(self, fp: str, *, rule: str, subject: Subject, severity: Severity, message: str,
             at_ms: int, firing: bool = True, value: float | None = None,
             started_ms: int | None = None, inhibited_by: str | None = KEEP,
             labels: Mapping[str, str] | None = None,
             maintenance: Maintenance | None = None) -> Alarm:
        """Create the alarm for ``fp`` or move it forward: pending→firing, severity changes.

        A firing alarm never goes back to pending. Escalating an acknowledged alarm puts it back
        to firing so people are told; the previous ack stays in the acknowledged_* fields.
        """
        cur = self.active.get(fp)
        if cur is None:
            return self.put(None, Alarm(
                alarm_id=self._new_id(), fingerprint=fp, rule=rule, severity=severity,
                state=AlarmState.FIRING if firing else AlarmState.PENDING, subject=subject,
                message=message, started_at_ms=at_ms if started_ms is None else started_ms,
                updated_at_ms=at_ms, value=value, fired_at_ms=at_ms if firing else None,
                maintenance=(self._maintenance_for(subject) if maintenance is None
                             else maintenance),
                inhibited_by=None if inhibited_by == KEEP else inhibited_by,
                labels=dict(labels or {})))
        changes: dict[str, Any] = {}
        if firing and cur.state is AlarmState.PENDING:
            changes.update(state=AlarmState.FIRING, fired_at_ms=at_ms)
        if severity is not cur.severity:
            changes["severity"] = severity
            if severity.rank > cur.severity.rank and cur.state is AlarmState.ACKNOWLEDGED:
                changes["state"] = AlarmState.FIRING
                changes["labels"] = {**cur.labels, "escalated_from": cur.severity.value}
        if inhibited_by != KEEP and inhibited_by != cur.inhibited_by:
            changes["inhibited_by"] = inhibited_by
        if not changes:
            return cur
        return self.put(cur, cur.evolve(updated_at_ms=at_ms, value=value, message=message,
                                        **changes))

    def resolve(self, fp: str, at_ms: int, message: str | None = None) -> Alarm | None:
        cur = self.active.get(fp)
        if cur is None:
            return None
        return self.put(cur, cur.evolve(state=AlarmState.RESOLVED, resolved_at_ms=at_ms,
                                        updated_at_ms=at_ms, message=message or cur.message))

    def inhibit(self, fp: str, parent: str | None, at_ms: int) -> None:
        cur = self.active.get(fp)
        if cur is not None and cur.inhibited_by != parent:
            self.put(cur, cur.evolve(inhibited_by=parent, updated_at_ms=at_ms))

    def mark(self, fp: str, mode: Maintenance, at_ms: int) -> None:
        cur = self.active.get(fp)
        if cur is not None and cur.maintenance is not mode:
            self.put(cur, cur.evolve(maintenance=mode, updated_at_ms=at_ms))
