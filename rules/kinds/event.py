"""event: device events become alarms; later events resolve them.

Fingerprint per (rule, device, point): a panel reports many loop points, and each point in
alarm is its own alarm (acknowledged, reset and counted on its own). A manual call point's
``fire_alarm`` is always critical, whatever the rule says: a person pressed it.

Resolution: an event listed in ``resolve_on`` (``restored`` for faults, ``reset`` for fire and
pre-alarms) resolves this rule's alarms of that device, only the same point when it names
one, and only alarms that started before it (a late reset must not clear a newer fire).
Events are facts: they are evaluated even when they arrive late.

Points with an alarm of one rule are capped per device (``flood.py``): beyond the cap the
device's :class:`~rules.kinds.flood.EventGuard` counts the event into one ``too_many_points``
alarm instead of opening another, so neither alarms nor saved state grow with what a device
invents.
"""

from __future__ import annotations

from typing import Any

from rules.alarm import Severity, Subject
from rules.kinds.base import Ledger, device_fp, render, subject_of
from rules.kinds.flood import EventGuard
from rules.model import EventRule
from sensors.base import EventType
from sensors.registry import Device

ALWAYS_CRITICAL_KIND = "manual_call_point"


class EventCheck:
    __slots__ = ("_critical", "_device", "_guard", "_points", "_raise", "_resolve", "_rule",
                 "_subject", "key")

    def __init__(self, rule: EventRule, device: Device, guard: EventGuard) -> None:
        self._rule = rule
        self._guard = guard
        self._device = device.device
        self._subject = subject_of(device)
        self._raise = frozenset(rule.events)
        self._resolve = frozenset(rule.resolve_on)
        self._critical = device.kind == ALWAYS_CRITICAL_KIND
        self._points: set[str] = set()   # points (or "") with an alarm of this rule
        self.key = f"{rule.name}|{device.device}"

    @classmethod
    def build(cls, rule: EventRule, device: Device, guard: EventGuard) -> EventCheck:
        return cls(rule, device, guard)

    @property
    def types(self) -> frozenset[EventType]:
        return self._raise | self._resolve

    def on_event(self, type_: EventType, point: str, detail: str, ts: int, book: Ledger,
                 place: Subject | None = None) -> None:
        rule = self._rule
        if type_ in self._raise:
            severity = rule.severity
            if self._critical and type_ is EventType.FIRE_ALARM:
                severity = Severity.CRITICAL
            fp = device_fp(rule.name, self._device, point)
            if not rule.auto_resolve and point not in self._points and book.get(fp) is None \
                    and len(self._points) >= self._guard.max_points:
                self._guard.refuse(rule.name, type_, severity, ts, book)
                return
            # A mapped panel point is placed where it is (rules/placement.py), so the alarm
            # names that floor, zone and tenant and is routed to the tenant; the fingerprint
            # stays (rule, panel, point).
            subject = place if place is not None else self._subject
            message = render(rule.message_template, subject, rule.name, severity,
                             event=type_.value, point=point, detail=detail)
            labels = {"event": type_.value, **({"point": point} if point else {})}
            book.open(fp, rule=rule.name, subject=subject, severity=severity,
                      message=message, at_ms=ts, labels=labels)
            if rule.auto_resolve:
                book.resolve(fp, ts)
            else:
                self._points.add(point)
        if type_ in self._resolve:
            for p in list(self._points) if not point else [point]:
                fp = device_fp(rule.name, self._device, p)
                cur = book.get(fp)
                if cur is None:
                    self._points.discard(p)
                elif cur.started_at_ms <= ts:
                    book.resolve(fp, ts, f"{cur.message} ({type_.value})")
                    self._points.discard(p)
            if not point:
                self._guard.cleared(rule.name, ts, book)

    def dump(self) -> dict[str, Any] | None:
        return {"points": sorted(self._points)} if self._points else None

    def load(self, data: dict[str, Any]) -> None:
        # A state saved before the cap (or with a larger one) may list more: they stay, since
        # their alarms are active, and new points wait until they fall below it.
        self._points = set(data["points"])
