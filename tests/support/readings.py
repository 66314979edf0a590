"""A known load of telemetry: which messages, publishing them, and checking that all landed.

Every device of a measured kind gets readings with seq 0, 1, 2, … in turn, so what InfluxDB
should hold per device follows from the registry and the total alone.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.tools.devservices import Influxd
from gateway.tools.simulator.publisher import MqttPublisher
from sensors.registry import Device, Registry
from tests.support.ids import unique
from tests.support.waiting import wait_for

# Device time a day ago: inside the trusted window (7 days back, 5 minutes ahead).
BASE_TS = int(time.time()) - 86400
METRIC = {"water_pressure": ("pressure_mpa", 0.30), "heat": ("temperature_c", 25.0),
          "gas": ("lel_pct", 1.0), "water_level": ("level_m", 4.0)}


def devices(registry: Registry) -> list[Device]:
    """The registry's devices that get readings, in registry order."""
    return [d for d in registry if d.kind in METRIC]


def _message(root: str, dev: Device, seq: int) -> tuple[str, bytes]:
    metric, base = METRIC[dev.kind]
    value = round(base + (seq % 17) * 0.001, 3)
    payload = {"ts": BASE_TS + seq, "seq": seq, "values": {metric: value}, "battery_pct": 80}
    return f"{root}/{dev.park}/{dev.building}/{dev.device}/telemetry", json.dumps(payload).encode()


def plan(registry: Registry, root: str, total: int) -> list[tuple[str, bytes]]:
    """``total`` (topic, payload) pairs, round-robin over ``devices(registry)``."""
    devs = devices(registry)
    return [_message(root, devs[i % len(devs)], i // len(devs)) for i in range(total)]


async def publish(port: int, messages: list[tuple[str, bytes]],
                  on_progress: Callable[[int], Awaitable[None]] | None = None) -> None:
    """Publish at QoS 1 and wait for every PUBACK; ``on_progress(i)`` after message i."""
    async with MqttPublisher("127.0.0.1", port, client_id=unique("pub")) as pub:
        for i, (topic, payload) in enumerate(messages):
            await pub.publish(topic, payload, qos=1)
            if on_progress is not None:
                await on_progress(i)
        await pub.flush(60)


def per_device_counts(influxd: Influxd, db: str, kind: str) -> dict[str, int]:
    result: Any = influxd.query(f'SELECT count("seq") FROM "{kind}" GROUP BY "device"', db)
    return {s["tags"]["device"]: int(s["values"][0][1])
            for s in result["results"][0].get("series", [])}


def _expected_counts(registry: Registry, total: int) -> dict[str, dict[str, int]]:
    devs = devices(registry)
    out: dict[str, dict[str, int]] = {}
    for i in range(total):
        dev = devs[i % len(devs)]
        out.setdefault(dev.kind, {}).setdefault(dev.device, 0)
        out[dev.kind][dev.device] += 1
    return out


def assert_all_landed(influxd: Influxd, db: str, registry: Registry, total: int) -> None:
    """Every device has exactly its share of ``plan(registry, _, total)`` in InfluxDB."""
    for kind, expected in _expected_counts(registry, total).items():
        assert per_device_counts(influxd, db, kind) == expected, kind


async def await_landed(influxd: Influxd, db: str, registry: Registry, total: int,
                       timeout_s: float = 90) -> None:
    """Wait until every device has exactly its share; fail after ``timeout_s``."""
    expected = _expected_counts(registry, total)

    def landed() -> bool:
        try:
            return all(per_device_counts(influxd, db, kind) == counts
                       for kind, counts in expected.items())
        except OSError:
            return False

    await wait_for(lambda: asyncio.to_thread(landed), timeout_s=timeout_s,
                   what=f"{total} readings in InfluxDB", interval=0.5)
