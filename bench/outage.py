"""Long-outage benchmark: fill a backlog with InfluxDB stopped, start it, watch the replay.

Runs the real gateway in this process against a private mosquitto and a private influxd::

    uv run python -m bench.outage --devices 500 --interval-s 10 --hours 1 --live-rate 200

1. InfluxDB is stopped; ``hours`` worth of the park's traffic (devices / interval_s messages a
   second) is published as fast as the broker takes it and lands in the WAL.
2. InfluxDB is started while live traffic keeps arriving at ``live_rate`` messages a second.
3. Printed: replay rate (lines/s into InfluxDB), time to drain the backlog, peak WAL bytes, and
   how far acknowledged ingest of the live traffic ever fell behind during the replay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.config import IngestSettings, Settings
from gateway.runtime.gateway import Gateway
from gateway.tools.devservices import Influxd, Mosquitto
from gateway.tools.simulator.publisher import MqttPublisher
from sensors.registry import load_registry

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "config" / "sample-park" / "registry.yaml"


def _messages(root: str, devices: list[Any], start: int, n: int,
              ts0: float) -> list[tuple[str, bytes]]:
    out = []
    for i in range(start, start + n):
        dev = devices[i % len(devices)]
        seq = i // len(devices)
        payload = {"ts": round(ts0 + i * 0.001, 3), "seq": seq, "values": {"pressure_mpa": 0.3}}
        out.append((f"{root}/{dev.park}/{dev.building}/{dev.device}/telemetry",
                    json.dumps(payload).encode()))
    return out


async def run(args: argparse.Namespace) -> dict[str, float]:  # noqa: C901 - one linear story
    work = Path(tempfile.mkdtemp(prefix="pw-outage-"))
    broker, influx = Mosquitto(work / "mqtt"), Influxd(work / "influx")
    broker.start()
    influx.start()
    registry = load_registry(REGISTRY)
    devices = [d for d in registry if d.kind == "water_pressure"]
    data: dict[str, Any] = {
        "instance": "bench-outage", "registry": str(REGISTRY),
        "rules": str(ROOT / "config" / "rules"), "state_dir": str(work / "state"),
        "mqtt": {"url": broker.url, "topic_root": "bench/parks"},
        "influx": {"url": influx.url, "version": "1", "database": "outage",
                   "flush_interval_s": 0.1, "max_backoff_s": 1.0},
        "wal": {"max_bytes": 8 << 30}, "http": {"enabled": False},
        "alarms": {"enabled": False}}
    if "device_rate_per_s" in IngestSettings.model_fields:
        # A few simulated devices carry a whole park's traffic here: lift the flood guard.
        data["ingest"] = {"device_rate_per_s": 1e6, "device_burst": 1_000_000}
    settings = Settings(**data)
    delivered = [0]
    gw = Gateway(settings=settings, registry=registry,
                 on_delivered=lambda lines: delivered.__setitem__(0, delivered[0] + len(lines)))
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    peak = [0]

    async def watch() -> None:
        while True:
            if gw.wal is not None:
                peak[0] = max(peak[0], gw.wal.total_bytes)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        while gw.session is None or not gw.session.connected:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(influx.stop)
        backlog = int(args.hours * 3600 * args.devices / args.interval_s)
        ts0 = time.time() - 86400
        print(f"outage: publishing {backlog} messages ({args.hours} h of {args.devices} devices "
              f"every {args.interval_s} s) with InfluxDB stopped", flush=True)
        started = time.monotonic()
        async with MqttPublisher("127.0.0.1", broker.port, client_id="bench-backlog") as pub:
            for start in range(0, backlog, 5000):
                for topic, payload in _messages("bench/parks", devices, start,
                                                min(5000, backlog - start), ts0):
                    await pub.publish(topic, payload, qos=1)
            await pub.flush(600)

        def accepted() -> int:
            return int(gw.metrics.value("parkwatch_messages_accepted_total", type="telemetry"))

        while accepted() < backlog:  # noqa: ASYNC110 - a counter, not an event
            await asyncio.sleep(0.1)
        fill_s = time.monotonic() - started
        assert gw.wal is not None
        print(f"backlog in WAL after {fill_s:.1f} s: {gw.wal.pending_bytes / 1e6:.1f} MB",
              flush=True)

        # Recovery: InfluxDB back, live traffic continues at live_rate.
        await asyncio.to_thread(influx.start)
        recovered = time.monotonic()
        base_delivered = delivered[0]
        live_sent = 0
        max_lag = 0
        drained_at: float | None = None
        async with MqttPublisher("127.0.0.1", broker.port, client_id="bench-live") as pub:
            while drained_at is None or time.monotonic() - drained_at < 2:
                tick = time.monotonic()
                n = max(1, int(args.live_rate / 10))
                for topic, payload in _messages("bench/parks", devices, backlog + live_sent, n,
                                                ts0):
                    await pub.publish(topic, payload, qos=1)
                live_sent += n
                max_lag = max(max_lag, backlog + live_sent - accepted())
                if drained_at is None and delivered[0] - base_delivered >= backlog:
                    drained_at = time.monotonic()
                await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
                if time.monotonic() - recovered > args.max_s:
                    raise SystemExit("backlog did not drain in time")
            await pub.flush(60)
        assert drained_at is not None
        drain_s = drained_at - recovered
        result = {
            "backlog_messages": backlog, "fill_s": fill_s, "peak_wal_bytes": peak[0],
            "drain_s": drain_s, "replay_lines_per_s": backlog / drain_s,
            "live_rate": args.live_rate, "replay_multiple_of_live": backlog / drain_s
            / args.live_rate, "max_live_ingest_lag_msgs": max_lag,
            "max_live_ingest_lag_s": max_lag / args.live_rate,
        }
        for key, value in result.items():
            print(f"{key:28s} {value:,.2f}" if isinstance(value, float) else
                  f"{key:28s} {value:,}", flush=True)
        return result
    finally:
        watcher.cancel()
        stop.set()
        await asyncio.wait_for(task, 60)
        influx.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--interval-s", type=float, default=10.0)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--live-rate", type=float, default=200.0, help="msg/s during replay")
    parser.add_argument("--max-s", type=float, default=900.0, help="give up after this long")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
