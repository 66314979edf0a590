"""Panel points placed by the point map (sensors/pointmap.py): where a panel's event happened.

A fire-alarm panel is registered in its control room, but its loop points are all over the
building. :func:`place_event` turns a panel event for a mapped point into the event the rules
should see — the point's place (building, floor, zone, tenant, location) and the event type its
component type means — for panel events over MQTT and over GB/T 26875.3 alike:

* a FIRE-class point (detectors, manual call points, hydrant buttons) keeps ``fire_alarm``;
* a SUPERVISORY-class point (water-flow indicators, valves, pressure switches, pumps, fans)
  reports its "fire" as ``supervisory`` with detail ``start`` and its feedback as
  ``supervisory`` with detail ``feedback``: a pump starting is no fire;
* every other event keeps its type; an unmapped point keeps the panel's place (the caller
  counts it as unmapped, and it still pages).

:func:`coincidence_kind` is the sensor kind a FIRE-class point stands for when zone coincidence
decides whether it is in a rule's scope (``match: {kinds: [smoke, heat, manual_call_point]}``).
"""

from __future__ import annotations

from dataclasses import dataclass

from rules.alarm import Subject
from sensors.base import EventType
from sensors.gb26875.codes import SignalClass
from sensors.pointmap import MappedPoint, PointMap
from sensors.registry import Device

#: Component types that are a person's action (GB/T 26875.3 table 5): counted as call points.
_CALL_POINTS = frozenset({23, 24})
_HEAT = frozenset(range(30, 38))


@dataclass(frozen=True, slots=True)
class Placed:
    """What the rules see of a panel event: its type, detail and place (None: the panel's)."""

    type: EventType
    detail: str
    place: Subject | None
    mapped: bool


def point_subject(panel: Device, point: MappedPoint) -> Subject:
    """The alarm subject of a panel point: the panel device, at the point's place."""
    return Subject(park=point.park, building=point.building, floor=point.floor, zone=point.zone,
                   device=panel.device, tenant=point.tenant, kind=panel.kind,
                   location=point.location or panel.location)


def place_event(points: PointMap | None, panel: Device, type_: EventType, point: str,
                detail: str, *, feedback: bool = False) -> Placed:
    """Place one panel event; ``feedback`` marks a component's feedback (反馈) signal."""
    mapped = points.by_point(panel.device, point) if points is not None and point else None
    if mapped is None:
        return Placed(type_, detail, None, False)
    place = point_subject(panel, mapped)
    if mapped.signal_class is SignalClass.SUPERVISORY and (type_ is EventType.FIRE_ALARM
                                                           or feedback):
        what = "feedback" if feedback else "start"
        return Placed(EventType.SUPERVISORY, f"{what} {detail}".strip(), place, True)
    return Placed(type_, detail, place, True)


def coincidence_kind(point: MappedPoint) -> str | None:
    """The sensor kind a mapped point counts as for zone coincidence (None: not a fire signal)."""
    if point.signal_class is not SignalClass.FIRE:
        return None
    if point.component_type in _CALL_POINTS:
        return "manual_call_point"
    if point.component_type in _HEAT:
        return "heat"
    return "smoke"   # smoke, flame, multi-sensor and other fire detectors


def point_device(panel: Device, point: MappedPoint, kind: str) -> Device:
    """The panel as a device at the point's place, for matching a rule's scope."""
    return panel.model_copy(update={"kind": kind, "building": point.building,
                                    "floor": point.floor, "zone": point.zone,
                                    "tenant": point.tenant})
