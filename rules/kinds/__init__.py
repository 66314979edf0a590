"""One module per rule kind, and :func:`bind`: rules bound to devices once, at start-up.

Each kind's class is built once per (rule, device) — or per zone / building for group kinds —
with the device's limits and subject already resolved, so ``Engine.observe()`` does no scope
matching and no lookups beyond one dict access per device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from rules.alarm import Subject
from rules.kinds.base import DeviceClock, building_key, zone_key
from rules.kinds.coincidence import ZoneCoincidence
from rules.kinds.duration import DurationCheck
from rules.kinds.event import EventCheck
from rules.kinds.flood import EventGuard
from rules.kinds.plausibility import PlausibilityCheck
from rules.kinds.rate import RateCheck
from rules.kinds.silent import Member, SilentGroup
from rules.kinds.threshold import ThresholdCheck
from rules.model import (
    CoincidenceRule,
    EventRule,
    PlausibilityRule,
    RateRule,
    RuleSet,
    SilentRule,
    StateDurationRule,
    ThresholdRule,
)
from rules.placement import coincidence_kind, point_device
from sensors.base import EventType
from sensors.pointmap import PointMap
from sensors.registry import Device, Registry

#: Evaluators that read one metric and may need the clock (for-durations, clears).
Timed = ThresholdCheck | RateCheck | DurationCheck
#: Signal rule name -> (devices in scope, zone key -> coincidence) per coincidence rule.
Listeners = dict[str, list[tuple[frozenset[str], dict[str, ZoneCoincidence]]]]


class Stateful(Protocol):
    """Kind memory that survives a restart (EngineState.memory, keyed by ``key``)."""

    def dump(self) -> Any: ...
    def load(self, data: dict[str, Any]) -> None: ...


@dataclass(slots=True)
class Plan:
    """Everything that runs for one device."""

    clock: DeviceClock
    plaus: tuple[PlausibilityCheck, ...] = ()
    readers: tuple[Timed, ...] = ()
    events: dict[EventType, tuple[EventCheck, ...]] | None = None
    guard: EventGuard | None = None    # set when the device has event rules
    silent: tuple[tuple[SilentGroup, Member], ...] = ()


@dataclass(slots=True)
class Bound:
    plans: dict[str, Plan]
    memory: dict[str, Stateful] = field(default_factory=dict)
    groups: list[SilentGroup] = field(default_factory=list)
    listeners: Listeners = field(default_factory=dict)
    guards: dict[str, EventGuard] = field(default_factory=dict)


def bind(rules: RuleSet, registry: Registry, clocks: dict[str, DeviceClock],
         points: PointMap | None = None) -> Bound:
    """Bind every rule to the devices in its scope; ``points`` (the point map) places panel
    points for zone coincidence and sets a mapped panel's point cap."""
    bound = Bound(plans={})
    readers: dict[str, list[Timed]] = {d: [] for d in clocks}
    plaus: dict[str, list[PlausibilityCheck]] = {d: [] for d in clocks}
    events: dict[str, dict[EventType, list[EventCheck]]] = {d: {} for d in clocks}
    silent: dict[str, list[tuple[SilentGroup, Member]]] = {d: [] for d in clocks}
    for rule in rules.rules:
        devices = [d for d in registry if rule.match.applies(d)]
        if isinstance(rule, ThresholdRule | RateRule | StateDurationRule):
            for d in devices:
                check = _reader(rule, d)
                if check is not None:
                    readers[d.device].append(check)
                    bound.memory[check.key] = check
        elif isinstance(rule, PlausibilityRule):
            for d in devices:
                p = PlausibilityCheck.build(rule, d)
                plaus[d.device].append(p)
                bound.memory[p.key] = p
        elif isinstance(rule, EventRule):
            for d in devices:
                guard = bound.guards.get(d.device)
                if guard is None:
                    mapped = points.points_of(d.device) if points is not None else 0
                    guard = bound.guards[d.device] = EventGuard(d, mapped or None)
                    bound.memory[guard.key] = guard
                e = EventCheck.build(rule, d, guard)
                bound.memory[e.key] = e
                for t in e.types:
                    events[d.device].setdefault(t, []).append(e)
        elif isinstance(rule, SilentRule):
            _bind_silent(rule, devices, clocks, bound, silent)
        else:
            _bind_coincidence(rule, devices, bound, _fire_points(rule, registry, points))
    bound.plans = {d: Plan(clock=clocks[d], plaus=tuple(plaus[d]), readers=tuple(readers[d]),
                           events={t: tuple(c) for t, c in events[d].items()} or None,
                           guard=bound.guards.get(d),
                           silent=tuple(silent[d])) for d in clocks}
    return bound


def _reader(rule: ThresholdRule | RateRule | StateDurationRule, d: Device) -> Timed | None:
    if isinstance(rule, ThresholdRule):
        return ThresholdCheck.build(rule, d)
    if isinstance(rule, RateRule):
        return RateCheck.build(rule, d)
    return DurationCheck.build(rule, d)


def _bind_silent(rule: SilentRule, devices: list[Device], clocks: dict[str, DeviceClock],
                 bound: Bound, silent: dict[str, list[tuple[SilentGroup, Member]]]) -> None:
    by_building: dict[str, list[Device]] = {}
    for d in devices:
        by_building.setdefault(building_key(d), []).append(d)
    for key, members in by_building.items():
        group = SilentGroup(rule, members, clocks)
        bound.groups.append(group)
        bound.memory[f"{rule.name}|building:{key}"] = group
        for m in group.members:
            silent[m.device.device].append((group, m))


def _fire_points(rule: CoincidenceRule, registry: Registry,
                 points: PointMap | None) -> dict[str, Device]:
    """Mapped FIRE-class panel points in the rule's scope, as "panel:point" → the panel placed
    at the point (with the sensor kind the point stands for, rules/placement.py)."""
    out: dict[str, Device] = {}
    for p in points or ():
        panel = registry.get(p.panel)
        kind = coincidence_kind(p)
        if panel is None or kind is None:
            continue
        placed = point_device(panel, p, kind)
        if rule.match.applies(placed):
            out[f"{p.panel}:{p.point}"] = placed
    return out


def _bind_coincidence(rule: CoincidenceRule, devices: list[Device], bound: Bound,
                      fire_points: dict[str, Device]) -> None:
    zones: dict[str, ZoneCoincidence] = {}
    # Zones only panel points cover get their coincidence too.
    for d in [*devices, *fire_points.values()]:
        key = zone_key(d)
        if key not in zones:
            subject = Subject(park=d.park, building=d.building, floor=d.floor, zone=d.zone,
                              kind="zone")
            zones[key] = zc = ZoneCoincidence(rule, subject, key)
            bound.memory[zc.key] = zc
    scope = frozenset([*(d.device for d in devices), *fire_points])
    for signal in rule.signals:
        bound.listeners.setdefault(signal, []).append((scope, zones))
