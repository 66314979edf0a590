"""Schedule the park's devices and publish their traffic: ``parkwatch simulate``.

Two schedules:

* by interval (default): each device reports every ``report_interval_s`` simulated seconds
  (first report staggered at random within one interval), scenarios may shorten that; ``speed``
  runs simulated time faster than the wall clock;
* by rate (``rate`` msgs/s in total): devices take turns round-robin at that aggregate rate,
  which is what the benchmark uses.

:func:`iter_messages` is the pure part (no I/O, no sleeping; the wall clock is read only when no
``start_ts`` is given), so tests run simulated minutes instantly and a benchmark can pre-generate
payloads. :func:`run_simulation` paces it against the event loop's clock and publishes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import itertools
import math
import os
import random
import signal
import ssl
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.tools.simulator.publisher import MqttPublisher, MqttPublishError
from gateway.tools.simulator.scenarios import SCENARIO_NAMES, Overlays, build_scenarios
from gateway.tools.simulator.traffic import Message, TrafficGenerator
from sensors.registry import Registry

__all__ = ["SimStats", "add_arguments", "iter_messages", "main_from_args", "run_simulation"]

Timed = tuple[float, Message]

_WAKE = -1  # heap entry that restarts a device's schedule (see _by_interval)
_SHANGHAI = ZoneInfo("Asia/Shanghai")


@dataclass(slots=True)
class SimStats:
    """Counters of a simulation run, handed to the progress callback and returned at the end."""

    elapsed_s: float = 0.0
    generated: int = 0  # messages taken from the schedule
    sent: int = 0       # handed to the broker connection
    acked: int = 0      # QoS 1 acknowledgements received
    resent: int = 0     # re-sent after a reconnect
    inflight: int = 0
    per_kind: Counter[str] = field(default_factory=Counter)
    per_scenario: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        rate = self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0
        scen = " ".join(f"{k}={v}" for k, v in sorted(self.per_scenario.items()))
        return (f"[simulate {self.elapsed_s:7.1f}s] sent {self.sent} acked {self.acked} "
                f"inflight {self.inflight} resent {self.resent} ({rate:,.0f} msg/s)"
                + (f" | {scen}" if scen else ""))


# --------------------------------------------------------------------------- schedule


def iter_messages(registry: Registry, *, root: str = "parks",
                  scenarios: Sequence[str] = ("normal",), seed: int = 1,
                  start_ts: float | None = None, speed: float = 1.0, rate: float | None = None,
                  duration_s: float | None = None, count: int | None = None,
                  silent_devices: Sequence[str] = (), silent_buildings: Sequence[str] = (),
                  include_status: bool = True,
                  timezone: ZoneInfo = _SHANGHAI) -> Iterator[Timed]:
    """``(wall seconds since start, message)`` in publishing order; infinite without a limit.

    ``duration_s`` is wall-clock seconds (``duration_s * speed`` simulated); ``count`` counts every
    message, including the retained ``online`` status each device announces first.
    """
    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0")
    overlays = build_scenarios(scenarios, registry, root=root, seed=seed,
                               silent_devices=silent_devices, silent_buildings=silent_buildings)
    gen = TrafficGenerator(registry, root=root, seed=seed, speed=speed, timezone=timezone,
                           start_ts=time.time() if start_ts is None else start_ts,
                           overlay=overlays)
    t_end = None if duration_s is None else duration_s * speed
    rng = random.Random(f"schedule:{seed}")
    # Everything above runs now, so a bad scenario option fails before anything connects.
    source = (_by_rate(registry, gen, overlays, rng, rate, t_end) if rate is not None
              else _by_interval(registry, gen, overlays, rng, t_end))
    status = (gen.status(d) for d in registry) if include_status else iter(())
    messages = itertools.chain(((0.0, m) for m in status),
                               ((t / speed, m) for t, m in source))
    return itertools.islice(messages, count)


def _by_interval(registry: Registry, gen: TrafficGenerator, overlays: Overlays,
                 rng: random.Random, t_end: float | None) -> Iterator[Timed]:
    tie = itertools.count()  # heap tie-breaker: never compare devices
    generation = {d.device: 0 for d in registry}
    # (t, tie, device, generation): an entry whose generation is stale belongs to a schedule a
    # wake-up replaced, so a device never runs two report chains at once.
    heap = [(rng.uniform(0, d.report_interval_s), next(tie), d.device, 0) for d in registry]
    heap += [(t, next(tie), dev, _WAKE) for t, dev in overlays.wakeups()]
    heapq.heapify(heap)
    last = -math.inf
    while heap and (t_end is None or heap[0][0] <= t_end):
        t, _, dev_id, gen_no = heapq.heappop(heap)
        yield from overlays.due(last, t, gen)
        last = t
        if gen_no == _WAKE:
            generation[dev_id] += 1
            heapq.heappush(heap, (t, next(tie), dev_id, generation[dev_id]))
            continue
        device = registry.devices[dev_id]
        if gen_no != generation[dev_id] or overlays.silenced(device, t):
            continue  # silence is for good: the device's chain ends here
        yield t, gen.telemetry(device, t)
        heapq.heappush(heap, (t + overlays.interval(device, t), next(tie), dev_id, gen_no))
    if t_end is not None:
        yield from overlays.due(last, t_end, gen)


def _by_rate(registry: Registry, gen: TrafficGenerator, overlays: Overlays, rng: random.Random,
             rate: float, t_end: float | None) -> Iterator[Timed]:
    order = list(registry)
    rng.shuffle(order)
    last = -math.inf
    slot = index = skipped = 0
    while skipped < len(order):  # stops only if every device has gone silent
        t = slot / rate * gen.speed
        if t_end is not None and t > t_end:
            break
        yield from overlays.due(last, t, gen)
        last = t
        device = order[index % len(order)]
        index += 1
        if overlays.silenced(device, t):
            skipped += 1  # a silent device gives its slot to the next one
            continue
        skipped = 0
        slot += 1
        yield t, gen.telemetry(device, t)
    if t_end is not None:
        yield from overlays.due(last, t_end, gen)


# --------------------------------------------------------------------------- publishing


async def run_simulation(*, registry: Registry, mqtt_host: str, mqtt_port: int,
                         root: str = "parks", rate: float | None, duration_s: float | None,
                         count: int | None, scenarios: Sequence[str], speed: float = 1.0,
                         seed: int = 1, qos: int = 1, silent_devices: Sequence[str] = (),
                         silent_buildings: Sequence[str] = (),
                         progress: Callable[[SimStats], None] | None = None,
                         username: str | None = None, password: str | None = None,
                         tls: ssl.SSLContext | None = None, client_id: str | None = None,
                         timezone: ZoneInfo = _SHANGHAI,
                         stop: asyncio.Event | None = None) -> SimStats:
    """Publish the simulated park until ``duration_s``/``count`` (or ``stop``); print nothing."""
    messages = iter_messages(registry, root=root, scenarios=scenarios, seed=seed, speed=speed,
                             rate=rate, duration_s=duration_s, count=count,
                             silent_devices=silent_devices, silent_buildings=silent_buildings,
                             timezone=timezone)
    stats = SimStats()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with MqttPublisher(mqtt_host, mqtt_port, username=username, password=password,
                             tls=tls, client_id=client_id or f"parkwatch-sim-{os.getpid()}",
                             ) as pub:

        def refresh() -> SimStats:
            stats.elapsed_s = loop.time() - t0
            stats.sent, stats.acked, stats.resent = pub.sent, pub.acked, pub.resent
            stats.inflight = pub.inflight
            return stats

        reporter = asyncio.create_task(_report(refresh, progress), name="simulate-progress")
        try:
            for wall, msg in messages:
                if stop is not None and stop.is_set():
                    break
                delay = t0 + wall - loop.time()
                if delay > 0.001:
                    await asyncio.sleep(delay)
                elif stats.generated % 1000 == 0:
                    await asyncio.sleep(0)  # let PUBACKs and progress run when flat out
                # Status stays QoS 1 even in a QoS 0 run: a retained 'online' must not be lost.
                await pub.publish(msg.topic, msg.payload, qos=1 if msg.retain else qos,
                                  retain=msg.retain)
                stats.generated += 1
                stats.per_kind[msg.kind or msg.channel] += 1
                for name in msg.scenarios:
                    stats.per_scenario[name] += 1
            with contextlib.suppress(TimeoutError):
                await pub.flush(10.0)
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        return refresh()


async def _report(refresh: Callable[[], SimStats],
                  progress: Callable[[SimStats], None] | None) -> None:
    if progress is None:
        return
    while True:
        await asyncio.sleep(1.0)
        progress(refresh())


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``parkwatch simulate`` (the registry itself comes from the caller)."""
    parser.add_argument("--mqtt-url", default=None,
                        help="mqtt://[user:pass@]host[:port] or mqtts://... (default: "
                             "$PARKWATCH_MQTT__URL or mqtt://127.0.0.1:1883)")
    parser.add_argument("--root", default=None,
                        help="topic root (default: the config's mqtt.topic_root, or parks)")
    parser.add_argument("--scenario", action="append", choices=SCENARIO_NAMES, dest="scenarios",
                        metavar="NAME", help=f"repeatable; one of: {', '.join(SCENARIO_NAMES)} "
                                             "(default: normal)")
    parser.add_argument("--rate", type=float, default=None,
                        help="total msgs/s, devices round-robin (default: each device at its "
                             "report_interval_s)")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="stop after this many wall-clock seconds")
    parser.add_argument("--count", type=int, default=None, help="stop after this many messages")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="simulated seconds per wall second: intervals and scenarios run "
                             "faster, device clocks stay real (default: 1)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1, help="default: 1")
    parser.add_argument("--silent-device", action="append", default=[], metavar="ID",
                        help="repeatable; this device stops publishing (implies --scenario "
                             "silent)")
    parser.add_argument("--silent-building", action="append", default=[], metavar="ID",
                        help="repeatable; every device of this building stops publishing")
    parser.add_argument("--client-id", default=None, help="MQTT client id")
    parser.add_argument("--timezone", default="Asia/Shanghai",
                        help="park time zone for vendor local-time stamps")


async def main_from_args(args: argparse.Namespace, registry: Registry) -> int:
    """Run ``parkwatch simulate``: progress on stderr every second, a summary at the end."""
    url = args.mqtt_url or os.environ.get("PARKWATCH_MQTT__URL") or "mqtt://127.0.0.1:1883"
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        # Scheme and host only: the URL may carry a password.
        shown = f"{parts.scheme}://{parts.hostname or '?'}"
        print(f"simulate: unsupported MQTT URL {shown!r} (mqtt:// or mqtts://)", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        stats = await run_simulation(
            registry=registry, mqtt_host=parts.hostname,
            mqtt_port=parts.port or (8883 if parts.scheme == "mqtts" else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=ssl.create_default_context() if parts.scheme == "mqtts" else None,
            root=args.root or "parks", rate=args.rate, duration_s=args.duration, count=args.count,
            scenarios=args.scenarios or ["normal"], speed=args.speed, seed=args.seed,
            qos=args.qos, silent_devices=args.silent_device,
            silent_buildings=args.silent_building, client_id=args.client_id,
            timezone=_zone(args.timezone), stop=stop,
            progress=lambda s: print(s.line(), file=sys.stderr, flush=True))
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    except MqttPublishError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    kinds = ", ".join(f"{k}={v}" for k, v in sorted(stats.per_kind.items()))
    print(f"simulate: done. {stats.line()}\n  per kind: {kinds}", file=sys.stderr)
    return 0


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc
