"""Fire alarm to phone: how long from the detector's MQTT publish to the receiver's HTTP request.

    .venv/bin/python -m bench.notify_latency [--fires 50] [--background 2000] [--record]

A real mosquitto and influxd (private, free ports), the gateway in-process with the catch-all
webhook pointed at a local receiver. ``--fires`` smoke detectors go into alarm one after another
(0.2 s apart) while ``--background`` readings per second of ordinary telemetry flow from other
devices. Reported: publish → webhook request latency for each fire alarm (p50 / p95 / max).
The issue's target is "each routed recipient within 2 s".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.config import Settings
from gateway.runtime.gateway import Gateway
from gateway.tools.devservices import Influxd, Mosquitto
from gateway.tools.simulator.publisher import MqttPublisher
from sensors.registry import build_registry

RESULTS = Path(__file__).with_name("RESULTS.md")


def _settings(tmp: Path, broker: Mosquitto, influx: Influxd, hook_url: str,
              registry: Path) -> Settings:
    return Settings.model_validate({
        "instance": "benchnotify", "registry": str(registry), "state_dir": str(tmp / "state"),
        "rules": str(Path(__file__).resolve().parent.parent / "config" / "rules"),
        "mqtt": {"url": broker.url, "topic_root": "parks"},
        "influx": {"url": influx.url, "version": "1", "database": "benchnotify"},
        "http": {"enabled": False},
        "notify": {"webhook_url": hook_url},
    })


async def _run(fires: int, background: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        broker, influx = Mosquitto(tmp / "mq"), Influxd(tmp / "influx")
        broker.start()
        influx.start()
        arrived: dict[str, float] = {}
        all_in = asyncio.Event()

        async def hook(request: web.Request) -> web.Response:
            doc = await request.json()
            if doc.get("rule") == "fire_alarm" and doc.get("state") == "firing":
                arrived.setdefault(str(doc["device"]), time.monotonic())
                if len(arrived) >= fires:
                    all_in.set()
            return web.Response(status=204)

        app = web.Application()
        app.validator.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        rows = [(i + 1, {"device": f"sm-{i:04d}", "park": "xz01", "building": f"b{i % 10}",
                         "floor": "1", "zone": f"z{i % 7}", "kind": "smoke",
                         "location": f"bay {i}", "report_interval_s": 600})
                for i in range(fires)]
        rows += [(fires + i + 1, {"device": f"tp-{i:04d}", "park": "xz01", "building": "b99",
                                  "floor": "1", "zone": "z", "kind": "environment",
                                  "location": f"room {i}", "report_interval_s": 60})
                 for i in range(200)]
        reg_path = tmp / "registry.yaml"
        reg_path.write_text(json.dumps({"devices": [r for _, r in rows]}))
        registry = build_registry(rows, source="bench")
        gw = Gateway(settings=_settings(tmp, broker, influx, f"http://127.0.0.1:{port}/hook",
                                        reg_path), registry=registry)
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        try:
            await asyncio.wait_for(gw.ready.wait(), 30)
            await asyncio.sleep(0.3)     # the subscription follows CONNACK
            sent: dict[str, float] = {}
            async with MqttPublisher("127.0.0.1", broker.port, client_id="bench-fire") as fire, \
                    MqttPublisher("127.0.0.1", broker.port, client_id="bench-bg") as bg:
                async def noise() -> None:
                    i = 0
                    while True:
                        for _ in range(max(1, background // 20)):
                            dev = f"tp-{i % 200:04d}"
                            await bg.publish(f"parks/xz01/b99/{dev}/telemetry", json.dumps(
                                {"ts": time.time(), "temperature_c": 21.5,
                                 "humidity_pct": 45.0}).encode())
                            i += 1
                        await asyncio.sleep(0.05)
                noise_task = asyncio.create_task(noise())
                for i in range(fires):
                    dev = f"sm-{i:04d}"
                    sent[dev] = time.monotonic()
                    await fire.publish(f"parks/xz01/b{i % 10}/{dev}/event", json.dumps(
                        {"ts": time.time(), "type": "fire_alarm"}).encode())
                    await asyncio.sleep(0.2)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_in.wait(), 30)
                noise_task.cancel()
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await runner.cleanup()
            broker.stop()
            influx.stop()
        lat = sorted((arrived[d] - sent[d]) * 1000 for d in sent if d in arrived)
        return {"fires": fires, "delivered": len(lat), "background_per_s": background,
                "p50_ms": statistics.median(lat), "p95_ms": lat[int(0.95 * (len(lat) - 1))],
                "max_ms": lat[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fires", type=int, default=50)
    parser.add_argument("--background", type=int, default=2000, help="telemetry messages/s")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    r = asyncio.run(_run(args.fires, args.background))
    line = (f"fire alarm publish → webhook request: {r['delivered']}/{r['fires']} delivered, "
            f"p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, max {r['max_ms']:.0f} ms "
            f"(background {r['background_per_s']} msg/s)")
    print(line)
    if args.record:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write(f"\n- {time.strftime('%Y-%m-%d')} `python -m bench.notify_latency`: {line}\n")


if __name__ == "__main__":
    main()
