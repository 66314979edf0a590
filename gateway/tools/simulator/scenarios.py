"""Scenario overlays: what goes wrong in the park, on top of normal traffic.

A scenario picks its targets from the registry at start-up (deterministically from the seed), then
acts through four hooks the scheduler calls with simulated time ``t`` (seconds since start):

* ``adjust``: bend a target's canonical values (a pressure collapses, a cable heats up);
* ``interval``: make targets report faster while something happens, as real units do on a
  threshold crossing;
* ``silenced``: a dead device publishes nothing at all (it cannot even say ``offline``; its Last
  Will only fires if it had a session, which NB-IoT units do not);
* ``due``: discrete messages in a time window (panel and call-point events, malformed traffic).

Scenarios combine freely: ``--scenario fire --scenario garbage``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence

from gateway.tools.simulator.traffic import Message, TrafficGenerator, Values, topic_for
from sensors.base import RejectReason
from sensors.registry import Device, Registry

__all__ = [
    "SCENARIO_NAMES",
    "ElectricalFault",
    "Fire",
    "Garbage",
    "Overlays",
    "PipeBurst",
    "Scenario",
    "Silent",
    "build_scenarios",
    "garbage_messages",
]

SCENARIO_NAMES = ("normal", "fire", "pipe-burst", "electrical-fault", "silent", "garbage")

Timed = tuple[float, Message]


class Scenario:
    """The no-op base: ``normal`` traffic is this with no overrides."""

    name = "normal"
    start_s = 0.0

    def adjust(self, device: Device, t: float, values: Values) -> Values | None:
        """New values for a target device, or None when this scenario leaves it alone."""
        return None

    def interval(self, device: Device, t: float) -> float | None:
        """A shorter reporting interval (simulated seconds) while active, else None."""
        return None

    def silenced(self, device: Device, t: float) -> bool:
        return False

    def due(self, t0: float, t1: float, gen: TrafficGenerator) -> list[Timed]:
        """Messages whose time falls in ``(t0, t1]``."""
        return []

    def wakeups(self) -> list[tuple[float, str]]:
        """(time, device) at which a target must report now, whatever its schedule says."""
        return []


def _ramp(t: float, start: float, duration: float) -> float:
    """0 before ``start``, rising linearly to 1 over ``duration`` seconds."""
    return min(1.0, max(0.0, (t - start) / duration))


def _events_in(schedule: Iterable[tuple[float, Device, str, str, str]], t0: float, t1: float,
               gen: TrafficGenerator, scenario: str) -> list[Timed]:
    return [(t, gen.event(dev, t, kind, point=point, detail=detail, scenario=scenario))
            for t, dev, kind, point, detail in schedule if t0 < t <= t1]


class Fire(Scenario):
    """A fire in one zone: smoke, then heat, a call point pressed, the panel in alarm."""

    name = "fire"

    def __init__(self, registry: Registry, rng: random.Random, start_s: float = 5.0) -> None:
        zones: dict[tuple[str, str, str], list[Device]] = {}
        for dev in registry:
            zones.setdefault((dev.building, dev.floor, dev.zone), []).append(dev)
        panels = {d.building: d for d in registry if d.kind == "fire_panel"}
        candidates = sorted(key for key, devs in zones.items() if key[0] in panels
                            and {"smoke", "heat", "manual_call_point"} <= {d.kind for d in devs})
        if not candidates:
            raise ValueError("fire scenario: no zone has smoke, heat and a manual call point "
                             "in a building with a fire_panel")
        self.zone = rng.choice(candidates)
        self.start_s = start_s
        self.devices = zones[self.zone]
        self._ids = frozenset(d.device for d in self.devices)
        self.panel = panels[self.zone[0]]
        building = self.zone[0]
        self._released_doors = {d.device for d in registry if d.building == building
                                and d.kind == "fire_door" and d.mode == "normally_open"}
        self.schedule = self._schedule(sorted(panels).index(building) + 1)

    def _schedule(self, panel_no: int) -> list[tuple[float, Device, str, str, str]]:
        s, floor = self.start_s, self.zone[1]
        loop = int(floor) if floor.isdigit() else 1
        events: list[tuple[float, Device, str, str, str]] = []
        for i, dev in enumerate(self.devices):
            point = f"{panel_no}-{loop:02d}-{30 + i:03d}"  # panel-loop-address, as on the panel
            what = {"smoke": "photoelectric smoke", "heat": "heat detector",
                    "manual_call_point": "manual call point"}.get(dev.kind)
            if what is None:
                continue
            # Detector alarm time: smoke first, heat once it passes its ~70 °C class A2 limit,
            # then a person who sees the fire presses the call point.
            at = {"smoke": 10.0 + i, "heat": 22.0, "manual_call_point": 30.0}[dev.kind]
            detail = f"loop {loop} addr {30 + i} {what} ({dev.device}, {dev.location})"[:256]
            if dev.kind == "smoke":
                events.append((s + at - 4, self.panel, "pre_alarm", point, detail))
            events.append((s + at, dev, "fire_alarm", "", f"{what} alarm"))
            events.append((s + at + 1, self.panel, "fire_alarm", point, detail))
        return sorted(events, key=lambda e: e[0])

    def adjust(self, device: Device, t: float, values: Values) -> Values | None:
        if t < self.start_s:
            return None
        if device.device in self._released_doors:
            return {"open": False}  # the panel drops the hold-open magnets on fire alarm
        if device.device not in self._ids:
            return None
        tau = t - self.start_s
        out = dict(values)
        if device.kind == "smoke":
            out["obscuration_pct_m"] = round(min(25.0, 0.1 + 0.6 * tau), 2)
            out["temperature_c"] = round(min(110.0, 25.0 + 1.2 * tau), 1)
        elif device.kind == "heat":
            out["temperature_c"] = round(min(160.0, 25.0 + 2.2 * tau), 1)  # 70 °C at ~20 s
        elif device.kind == "environment":
            out["temperature_c"] = round(min(84.0, 25.0 + 0.8 * tau), 1)
        elif device.kind == "co":  # smouldering fires make CO before much heat
            out["co_ppm"] = round(min(800.0, float(values["co_ppm"]) + 12.0 * tau), 1)
        else:
            return None
        return out

    def interval(self, device: Device, t: float) -> float | None:
        return 5.0 if t >= self.start_s and device.device in self._ids else None

    def due(self, t0: float, t1: float, gen: TrafficGenerator) -> list[Timed]:
        return _events_in(self.schedule, t0, t1, gen, self.name)

    def wakeups(self) -> list[tuple[float, str]]:
        return [(self.start_s, d.device) for d in self.devices]


class PipeBurst(Scenario):
    """One pressure point collapses from ~0.35 to ~0.02 MPa in 30 s; its building's others dip."""

    name = "pipe-burst"

    def __init__(self, registry: Registry, rng: random.Random, start_s: float = 10.0) -> None:
        points = [d for d in registry if d.kind == "water_pressure"]
        if not points:
            raise ValueError("pipe-burst scenario: the registry has no water_pressure device")
        self.target = rng.choice(points)
        self.start_s = start_s
        self.neighbours = {d.device: rng.uniform(0.06, 0.10) for d in points
                           if d.building == self.target.building and d != self.target}

    def adjust(self, device: Device, t: float, values: Values) -> Values | None:
        if t < self.start_s or "pressure_mpa" not in values:
            return None
        p = float(values["pressure_mpa"])
        if device == self.target:
            f = _ramp(t, self.start_s, 30.0)
            return {"pressure_mpa": round(p * (1 - f) + 0.02 * f, 3)}
        dip = self.neighbours.get(device.device)
        if dip is None:
            return None
        # The network sags, then the jockey pump wins half of it back after a minute.
        depth = _ramp(t, self.start_s, 20.0) * (1 - 0.5 * _ramp(t, self.start_s + 60, 60.0))
        return {"pressure_mpa": round(p - dip * depth, 3)}

    def interval(self, device: Device, t: float) -> float | None:
        affected = device == self.target or device.device in self.neighbours
        return 2.0 if affected and self.start_s <= t <= self.start_s + 120 else None

    def wakeups(self) -> list[tuple[float, str]]:
        return [(self.start_s, d) for d in (self.target.device, *self.neighbours)]


class ElectricalFault(Scenario):
    """One circuit: residual current 300 → 500+ mA and L1 past 85 °C within about a minute."""

    name = "electrical-fault"

    def __init__(self, registry: Registry, rng: random.Random, start_s: float = 10.0) -> None:
        circuits = [d for d in registry if d.kind == "electrical_fire"]
        if not circuits:
            raise ValueError("electrical-fault scenario: no electrical_fire device")
        self.target = rng.choice(circuits)
        self.start_s = start_s

    def adjust(self, device: Device, t: float, values: Values) -> Values | None:
        if device != self.target or t < self.start_s:
            return None
        f = _ramp(t, self.start_s, 60.0)
        out = dict(values)
        residual = float(values["residual_current_ma"])
        out["residual_current_ma"] = round(residual + (560.0 - residual) * f, 1)
        if "temp_l1_c" in values:
            l1 = float(values["temp_l1_c"])
            out["temp_l1_c"] = round(l1 + (95.0 - l1) * f, 1)
        return out

    def interval(self, device: Device, t: float) -> float | None:
        return 5.0 if device == self.target and t >= self.start_s else None

    def wakeups(self) -> list[tuple[float, str]]:
        return [(self.start_s, self.target.device)]


class Silent(Scenario):
    """Named devices or whole buildings go quiet after a short healthy start."""

    name = "silent"

    def __init__(self, registry: Registry, devices: Sequence[str], buildings: Sequence[str],
                 start_s: float = 20.0) -> None:
        unknown = [d for d in devices if registry.get(d) is None]
        known_buildings = {d.building for d in registry}
        unknown += [b for b in buildings if b not in known_buildings]
        if unknown:
            raise ValueError(f"silent scenario: not in the registry: {', '.join(unknown)}")
        if not devices and not buildings:
            raise ValueError("silent scenario needs --silent-device or --silent-building")
        self.devices = frozenset(devices)
        self.buildings = frozenset(buildings)
        self.start_s = start_s

    def silenced(self, device: Device, t: float) -> bool:
        return t >= self.start_s and (device.device in self.devices
                                      or device.building in self.buildings)


class Garbage(Scenario):
    """Every ``period_s``, one malformed message per rejection reason."""

    name = "garbage"

    def __init__(self, registry: Registry, root: str, period_s: float = 10.0,
                 start_s: float = 3.0) -> None:
        self.messages = [Message(topic, payload, channel="garbage", scenarios=(self.name,))
                         for topic, payload, _ in garbage_messages(registry, root)]
        self.period_s = period_s
        self.start_s = start_s

    def due(self, t0: float, t1: float, gen: TrafficGenerator) -> list[Timed]:
        out: list[Timed] = []
        # Burst k happens at start + k * period; emit every burst inside (t0, t1].
        k = 0 if t0 < self.start_s else int((t0 - self.start_s) // self.period_s)
        while (at := self.start_s + k * self.period_s) <= t1:
            if at > t0:
                out.extend((at, m) for m in self.messages)
            k += 1
        return out


def garbage_messages(registry: Registry, root: str) -> list[tuple[str, bytes, RejectReason]]:
    """One (topic, payload, expected reason) per :class:`RejectReason`, aimed at a real device.

    Topic-level reasons need a gateway subscription that lets the topic in: a wrong suffix
    (BAD_TOPIC) only arrives with a ``{root}/#`` subscription.
    """
    points = [d for d in registry if d.kind == "water_pressure"]
    if not points:
        raise ValueError("garbage needs a water_pressure device in the registry")
    dev = points[0]
    root = root.rstrip("/")
    good = topic_for(root, dev, "telemetry")
    other = sorted({d.building for d in registry} - {dev.building}) or ["b-nowhere"]
    unknown = "zz-9999"
    while registry.get(unknown) is not None:
        unknown += "9"
    device_path = f"{root}/{dev.park}/{{building}}/{{device}}/telemetry"

    def body(values: str) -> bytes:
        # Built as text, not json.dumps: some cases (NaN, a string number) are the point.
        return b'{"values": {' + values.encode() + b"}}"

    R = RejectReason
    out = [
        (good, json.dumps({"values": {"pressure_mpa": 0.3}, "pad": "x" * 70_000}).encode(),
         R.OVERSIZE),
        (good, b'{"values": {"pressure_mpa": 0.3}, "note": "\xff\xfe"}', R.BAD_UTF8),
        (good, b'{"ts": 1764059400, "values": {"pressure_mpa": 0.32}', R.BAD_JSON),
        (f"{root}/{dev.park}/{dev.building}/{dev.device}/metrics", body('"pressure_mpa": 0.3'),
         R.BAD_TOPIC),
        (device_path.format(building=dev.building, device=dev.device.replace("-", ",", 1)),
         body('"pressure_mpa": 0.3'), R.BAD_ID),
        (device_path.format(building=dev.building, device=unknown), body('"pressure_mpa": 0.3'),
         R.UNKNOWN_DEVICE),
        (device_path.format(building=other[0], device=dev.device), body('"pressure_mpa": 0.3'),
         R.TOPIC_MISMATCH),
        (good, b'[{"pressure_mpa": 0.32}]', R.SCHEMA),
        (good, body('"pressure_psi": 46.4'), R.UNKNOWN_METRIC),
        (good, body('"pressure_mpa": "0.32"'), R.TYPE),
        (good, b'{"time": "2026-11-25 16:30:00", "pressure": 318.5, "unit": "psi2"}', R.UNIT),
        (good, body('"pressure_mpa": 99.0'), R.RANGE),
        (good, body('"pressure_mpa": NaN'), R.NAN),
    ]
    return out


class Overlays:
    """All active scenarios, combined into the hooks the generator and the scheduler call."""

    def __init__(self, scenarios: Sequence[Scenario]) -> None:
        self.scenarios = tuple(scenarios)

    def __call__(self, device: Device, t: float, values: Values) -> tuple[Values, tuple[str, ...]]:
        names: list[str] = []
        for scenario in self.scenarios:
            changed = scenario.adjust(device, t, values)
            if changed is not None:
                values = changed
                names.append(scenario.name)
        return values, tuple(names)

    def interval(self, device: Device, t: float) -> float:
        shorter = [s for sc in self.scenarios if (s := sc.interval(device, t)) is not None]
        return min([device.report_interval_s, *shorter])

    def silenced(self, device: Device, t: float) -> bool:
        return any(sc.silenced(device, t) for sc in self.scenarios)

    def due(self, t0: float, t1: float, gen: TrafficGenerator) -> list[Timed]:
        out = [m for sc in self.scenarios for m in sc.due(t0, t1, gen)]
        return sorted(out, key=lambda item: item[0])

    def wakeups(self) -> list[tuple[float, str]]:
        return sorted(w for sc in self.scenarios for w in sc.wakeups())


def build_scenarios(names: Sequence[str], registry: Registry, *, root: str = "parks",
                    seed: int = 1, silent_devices: Sequence[str] = (),
                    silent_buildings: Sequence[str] = ()) -> Overlays:
    """The overlays for ``--scenario`` names (ValueError naming the problem otherwise)."""
    unknown = [n for n in names if n not in SCENARIO_NAMES]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIO_NAMES)}")
    rng = random.Random(f"scenarios:{seed}")
    built: list[Scenario] = []
    for name in dict.fromkeys(names):  # de-duplicated, in the order given
        if name == "fire":
            built.append(Fire(registry, rng))
        elif name == "pipe-burst":
            built.append(PipeBurst(registry, rng))
        elif name == "electrical-fault":
            built.append(ElectricalFault(registry, rng))
        elif name == "silent":
            built.append(Silent(registry, silent_devices, silent_buildings))
        elif name == "garbage":
            built.append(Garbage(registry, root))
    if (silent_devices or silent_buildings) and "silent" not in names:
        built.append(Silent(registry, silent_devices, silent_buildings))
    return Overlays(built)
