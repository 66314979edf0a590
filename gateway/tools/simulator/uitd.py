"""``parkwatch simulate --uitd HOST:PORT``: the park's fire-alarm panels over GB/T 26875.3.

One :class:`~gateway.tools.simulator.uitdclient.UitdClient` per UITD address of the point map
(``--points`` or the config's ``uitd.points``). Each heartbeats (command 2, empty ADU) every
20-30 s, jittered so 200 devices do not beat together, and the scenarios play on a cycle of
``--uitd-cycle`` seconds (default 300; ``--speed`` shortens it):

| at (s) | scenario | frames |
|---|---|---|
| 5, 15 | ``fire`` | type 2, fire bit, two fire points of one zone (fp-0001 L1-D023 then L1-D024) |
| 30 | ``fault`` | type 2, fault bit, a point of the second UITD |
| 40 | ``isolate`` | type 2, 屏蔽 (disabled) bit, another point of that UITD |
| 50, then every 60 | ``analog`` | type 3, kPa pressure of a pump-room pressure point |
| 90 | ``reset`` | type 4, 复位 (reset) flag, on the fire's panel |
| 100 | ``restore`` | type 2, fault and 屏蔽 points back to normal (status 0x0001) |

Points are chosen from the map: the sample park's own ones when present, else the first that fit
(two fire-class points sharing a zone, and so on). A scenario the map cannot play is skipped with a
message. Every frame sent, resent or lost is printed on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.tools.simulator.uitdadu import (
    Component,
    analog_adu,
    component_status_adu,
    facility_operation_adu,
)
from gateway.tools.simulator.uitdclient import ClientStats, Say, UitdClient, parse_address
from sensors.gb26875.bits import ComponentStatusBits, FacilityOperationFlags
from sensors.gb26875.codes import SignalClass
from sensors.pointmap import MappedPoint, PointMap, load_point_map
from sensors.registry import Registry

DEFAULT_CENTRE = "000000000001"
_SHANGHAI = ZoneInfo("Asia/Shanghai")
_CENTRE = bytes.fromhex(DEFAULT_CENTRE)
HEARTBEAT_S = (20.0, 30.0)
CYCLE_S = 300.0
ANALOG_EVERY_S = 60.0
SCENARIOS = ("fire", "fault", "isolate", "analog", "reset", "restore")
KPA = 5  # analog type: pressure in kPa at 0.1 kPa (Table 6)

Build = Callable[[datetime], bytes]


@dataclass(frozen=True)
class Step:
    """One upload of a scenario: at ``at_s`` into the cycle, ``uitd`` sends ``build(now)``."""

    at_s: float
    scenario: str
    uitd: bytes
    what: str
    build: Build


def component_of(point: MappedPoint) -> Component:
    if point.address is None:
        raise ValueError(f"point {point.panel}/{point.point} has no UITD address")
    a = point.address
    return Component(a.sys_type, a.sys_addr, point.component_type, a.comp_addr)


def _status(point: MappedPoint, status: int) -> Build:
    component = component_of(point)
    # What a panel would print on its own display: the point label, then as much place as fits.
    text = f"{point.point} {point.location}"
    return lambda now: component_status_adu([(component, status, text)], now)


def _addressed(points: PointMap) -> list[MappedPoint]:
    return [p for p in points if p.address is not None]


def _pick_fire_pair(points: list[MappedPoint]) -> tuple[MappedPoint, MappedPoint] | None:
    by_label = {(p.panel, p.point): p for p in points}
    first, second = by_label.get(("fp-0001", "L1-D023")), by_label.get(("fp-0001", "L1-D024"))
    if first is not None and second is not None:
        return first, second
    zones: dict[tuple[str, str, str], list[MappedPoint]] = {}
    for p in points:
        if p.signal_class is SignalClass.FIRE:
            zones.setdefault((p.panel, p.building, p.zone), []).append(p)
    for members in zones.values():
        if len(members) >= 2:
            return members[0], members[1]
    return None


def _pick_analog(points: list[MappedPoint]) -> MappedPoint | None:
    pressure = [p for p in points if p.component_type in (99, 91, 95, 98)]
    pump_room = [p for p in pressure if "pump" in p.zone]
    candidates = pump_room or pressure
    return candidates[0] if candidates else None


def build_timeline(points: PointMap, scenarios: Sequence[str],
                   say: Say | None = None) -> list[Step]:
    """The steps of one cycle for the chosen scenarios, in time order."""
    say = say or (lambda _t: None)
    mapped = _addressed(points)
    steps: list[Step] = []
    fire = _pick_fire_pair(mapped)
    fire_bits = int(ComponentStatusBits.FIRE)
    if "fire" in scenarios:
        if fire is None:
            say("uitd: no zone with two addressed fire points: fire scenario skipped")
        else:
            for at, p in zip((5.0, 15.0), fire, strict=True):
                steps.append(Step(at, "fire", _uitd(p), f"type 2 FIRE {p.panel}/{p.point} "
                                  f"zone {p.zone} ({p.location})",
                                  _status(p, fire_bits)))
    # Fault and 屏蔽 on another UITD than the fire, so the demo shows two panels at once.
    fire_uitd = _uitd(fire[0]) if fire else None
    others = [p for p in mapped if _uitd(p) != fire_uitd] or mapped
    detectors = [p for p in others if p.signal_class is SignalClass.FIRE]
    faulty = detectors[0] if detectors else None
    isolated = detectors[1] if len(detectors) > 1 else None
    for name, point, bits, at, label in (
            ("fault", faulty, ComponentStatusBits.FAULT, 30.0, "FAULT"),
            ("isolate", isolated, ComponentStatusBits.DISABLED, 40.0, "ISOLATED (屏蔽)")):
        if name not in scenarios:
            continue
        if point is None:
            say(f"uitd: no point for the {name} scenario: skipped")
            continue
        steps.append(Step(at, name, _uitd(point), f"type 2 {label} {point.panel}/{point.point}",
                          _status(point, int(bits))))
        if "restore" in scenarios:
            steps.append(Step(100.0 + (at - 30.0) / 10, "restore", _uitd(point),
                              f"type 2 NORMAL (restored) {point.panel}/{point.point}",
                              _status(point, int(ComponentStatusBits.NORMAL))))
    if "analog" in scenarios:
        gauge = _pick_analog(mapped)
        if gauge is None:
            say("uitd: no pump or pressure point: analog scenario skipped")
        else:
            component = component_of(gauge)
            rng = random.Random(gauge.point)
            for at in _every(50.0, ANALOG_EVERY_S, CYCLE_S):
                kpa = round(350 + rng.uniform(-15, 15), 1)
                steps.append(Step(at, "analog", _uitd(gauge),
                                  f"type 3 pressure {kpa} kPa {gauge.panel}/{gauge.point}",
                                  _analog(component, kpa)))
    if "reset" in scenarios and fire is not None:
        component = component_of(fire[0])
        steps.append(Step(90.0, "reset", _uitd(fire[0]), f"type 4 RESET (复位) {fire[0].panel}",
                          lambda now: facility_operation_adu(
                              component.sys_type, component.sys_addr,
                              FacilityOperationFlags.RESET, 1, now)))
    return sorted(steps, key=lambda s: s.at_s)


def _analog(component: Component, kpa: float) -> Build:
    return lambda now: analog_adu(component, KPA, kpa, now)


def _every(start: float, step: float, end: float) -> list[float]:
    out, t = [], start
    while t < end:
        out.append(t)
        t += step
    return out


def _uitd(point: MappedPoint) -> bytes:
    assert point.address is not None  # only addressed points get here
    return point.address.uitd_address


# --------------------------------------------------------------------------- running


@dataclass
class UitdSimStats:
    clients: dict[str, ClientStats]

    def line(self) -> str:
        total = ClientStats()
        for s in self.clients.values():
            total.sent += s.sent
            total.resent += s.resent
            total.acked += s.acked
            total.lost += s.lost
            total.duty_checks += s.duty_checks
        return (f"{len(self.clients)} UITD(s): sent {total.sent} acked {total.acked} "
                f"resent {total.resent} lost {total.lost} duty checks {total.duty_checks}")


async def run_uitd_simulation(points: PointMap, host: str, port: int, *,
                              centre: bytes = _CENTRE,
                              tz: ZoneInfo = _SHANGHAI,
                              scenarios: Sequence[str] = SCENARIOS, speed: float = 1.0,
                              cycle_s: float = CYCLE_S, duration_s: float | None = None,
                              heartbeat_s: tuple[float, float] = HEARTBEAT_S,
                              ack_timeout_s: float = 10.0, retries: int = 3, seed: int = 1,
                              say: Say | None = None,
                              stop: asyncio.Event | None = None) -> UitdSimStats:
    """Play the map's UITDs against ``host:port`` until ``duration_s`` or ``stop``."""
    stop = stop or asyncio.Event()
    say = say or (lambda _t: None)
    addresses = sorted({p.address.uitd_address for p in points if p.address is not None})
    if not addresses:
        raise ValueError(f"point map {points.source} has no UITD addresses")
    clients = {a: UitdClient(a, host, port, centre=centre, tz=tz, ack_timeout_s=ack_timeout_s,
                             retries=retries, say=say) for a in addresses}
    timeline = build_timeline(points, scenarios, say)
    rng = random.Random(f"uitd:{seed}")
    tasks = [asyncio.create_task(c.run(stop), name=f"uitd-{c.name}") for c in clients.values()]
    tasks += [asyncio.create_task(_heartbeats(c, heartbeat_s, speed, rng, stop))
              for c in clients.values()]
    tasks.append(asyncio.create_task(_play(clients, timeline, speed, cycle_s, stop)))
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration_s)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return UitdSimStats({c.name: c.stats for c in clients.values()})


async def _heartbeats(client: UitdClient, every: tuple[float, float], speed: float,
                      rng: random.Random, stop: asyncio.Event) -> None:
    await client.connected.wait()
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(*every) / speed)
        await client.send(b"", "heartbeat", "heartbeat")


async def _play(clients: dict[bytes, UitdClient], timeline: list[Step], speed: float,
                cycle_s: float, stop: asyncio.Event) -> None:
    if not timeline:
        return
    loop = asyncio.get_running_loop()
    start = loop.time()
    sending: set[asyncio.Task[bool]] = set()
    try:
        await _cycles(clients, timeline, speed, cycle_s, stop, start, sending)
    finally:
        for task in sending:
            task.cancel()


async def _cycles(clients: dict[bytes, UitdClient], timeline: list[Step], speed: float,
                  cycle_s: float, stop: asyncio.Event, start: float,
                  sending: set[asyncio.Task[bool]]) -> None:
    loop = asyncio.get_running_loop()
    cycle = 0
    while not stop.is_set():
        base = start + cycle * cycle_s / speed
        for step in timeline:
            delay = base + step.at_s / speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            client = clients[step.uitd]
            # Each upload in its own task: a frame awaiting ACK must not delay the schedule of
            # the other panels (the client itself keeps one upload outstanding at a time).
            task = asyncio.create_task(client.send(step.build(client.now()), step.what,
                                                   step.scenario))
            sending.add(task)
            task.add_done_callback(sending.discard)
        cycle += 1


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The UITD options of ``parkwatch simulate`` (the rest are shared with the MQTT mode)."""
    parser.add_argument("--uitd", default=None, metavar="HOST:PORT",
                        help="play the point map's UITDs over GB/T 26875.3 against this centre "
                             "instead of publishing MQTT")
    parser.add_argument("--points", type=Path, default=None,
                        help="point map for --uitd (default: the config's uitd.points)")
    parser.add_argument("--centre", default=DEFAULT_CENTRE, metavar="ADDRESS",
                        help=f"the centre's address, 12 hex digits (default {DEFAULT_CENTRE})")
    parser.add_argument("--uitd-scenario", action="append", choices=SCENARIOS, default=None,
                        dest="uitd_scenarios", metavar="NAME",
                        help=f"repeatable; one of: {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--uitd-cycle", type=float, default=CYCLE_S, metavar="SECONDS",
                        help=f"replay the scenarios this often (default {CYCLE_S:g})")


def split_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--uitd {text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def points_path(args: argparse.Namespace, settings: Any) -> Path | None:
    """``--points``, else the config's ``uitd.points`` when this build has that setting."""
    if args.points is not None:
        return Path(args.points)
    section = getattr(settings, "uitd", None)
    configured = getattr(section, "points", None)
    return Path(configured) if configured else None


async def main_from_args(args: argparse.Namespace, settings: Any, registry: Registry) -> int:
    """Run ``parkwatch simulate --uitd``; every frame on stderr, a summary at the end."""
    def say(text: str) -> None:
        print(f"[uitd {datetime.now():%H:%M:%S}] {text}", file=sys.stderr, flush=True)

    try:
        host, port = split_hostport(args.uitd)
        centre = parse_address(args.centre)
        path = points_path(args, settings)
        if path is None:
            raise ValueError("--uitd needs a point map: --points FILE or uitd.points in the config")
        points = load_point_map(path, registry)
        tz = ZoneInfo(args.timezone)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    say(f"playing {points.source} against {host}:{port} as centre {args.centre}")
    try:
        stats = await run_uitd_simulation(
            points, host, port, centre=centre, tz=tz,
            scenarios=args.uitd_scenarios or SCENARIOS, speed=args.speed,
            cycle_s=args.uitd_cycle, duration_s=args.duration, seed=args.seed, say=say,
            stop=stop)
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    say(f"done. {stats.line()}")
    return 0
