"""End-to-end throughput: N devices at full speed through a real mosquitto and a real influxd.

    .venv/bin/python -m bench.throughput [--devices 2000] [--messages 200000] [--record]

Two phases in one run, on the same broker and the same machine:
1. **ceiling**: a bare paho subscriber (QoS 1, auto-ack) that parses and validates each message
   with json + the pydantic model, and does nothing else. Nothing end to end can beat it.
2. **gateway**: the real ParkWatch pipeline in this process (WAL with fsync, manual acks,
   InfluxDB 1.x writes); latency is publish time (the payload's ``ts``) → InfluxDB accepted the
   batch holding it.
The load comes from a separate process using the raw-socket publisher (a paho publisher stalls
near 17k msg/s here). Prints msgs/s, latency percentiles, CPU seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing as mp
import os
import resource
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psutil
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import Settings
from gateway.runtime.gateway import Gateway
from gateway.tools.devservices import Influxd, Mosquitto
from gateway.tools.simulator.publisher import MqttPublisher
from sensors.kinds.water_pressure import WaterPressureValues
from sensors.registry import load_registry

RESULTS = Path(__file__).with_name("RESULTS.md")
RULES = Path(__file__).resolve().parent.parent / "config" / "rules"


def _write_registry(path: Path, devices: int) -> list[str]:
    ids = [f"wp-{i:05d}" for i in range(devices)]
    # A report interval of an hour: with the silence rule, a second made every device go
    # offline while the gateway waited for the publisher, and the run measured that alarm
    # storm (2,000 alarms in the engine's resume state, saved with every commit) instead.
    doc = {"devices": [{"device": d, "park": "bp", "building": f"b{i % 10}", "floor": "1",
                        "zone": "z", "kind": "water_pressure", "report_interval_s": 3600}
                       for i, d in enumerate(ids)]}
    path.write_text(yaml.safe_dump(doc))
    return ids


def topics_for(root: str, ids: Sequence[str], park: str = "bp") -> list[str]:
    """The telemetry topic of each device of :func:`_write_registry`."""
    return [f"{root}/{park}/b{i % 10}/{d}/telemetry" for i, d in enumerate(ids)]


def _publisher(port: int, topics: Sequence[str], total: int, rate: float | None,
               out: Any) -> None:
    """Child process: publish ``total`` QoS 1 messages round-robin over ``topics``, at
    ``rate`` msgs/s or as fast as it can."""
    async def go() -> tuple[float, float]:
        n = len(topics)
        async with MqttPublisher("127.0.0.1", port, client_id=f"bench-pub-{os.getpid()}",
                                 max_inflight=2000) as pub:
            start = time.time()
            for i in range(total):
                payload = (b'{"ts":%.3f,"seq":%d,"values":{"pressure_mpa":%.3f}}'
                           % (time.time(), i // n, 0.3 + (i % 100) / 1000))
                await pub.publish(topics[i % n], payload, qos=1)
                if rate and i % 200 == 0:
                    ahead = start + i / rate - time.time()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            await pub.flush(300)
            return start, time.time()

    out.send(asyncio.run(go()))


def spawn_publisher(port: int, topics: Sequence[str], total: int,
                    rate: float | None = None) -> tuple[Any, Any]:
    """The load in a child process; the pipe gets (first publish, last PUBACK) times."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_publisher, args=(port, list(topics), total, rate, child),
                       daemon=True)
    proc.start()
    return proc, parent


def ceiling(broker: Mosquitto, ids: Sequence[str], total: int) -> dict[str, float]:
    """Receive rate of a bare paho subscriber doing json + pydantic and nothing else."""
    done = threading.Event()
    state = {"n": 0, "first": 0.0, "last": 0.0}

    def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        WaterPressureValues.model_validate(doc["values"])
        if state["n"] == 0:
            state["first"] = time.perf_counter()
        state["n"] += 1
        if state["n"] >= total:
            state["last"] = time.perf_counter()
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-ceiling",
                         protocol=paho.MQTTv311)
    client.on_message = on_message
    client.connect("127.0.0.1", broker.port)
    client.subscribe("ceiling/#", qos=1)
    client.loop_start()
    time.sleep(0.5)  # subscription round trip before the flood
    proc, _ = spawn_publisher(broker.port, topics_for("ceiling", ids), total)
    done.wait(600)
    proc.join(60)
    client.loop_stop()
    client.disconnect()
    elapsed = state["last"] - state["first"]
    return {"msgs": state["n"], "rate": state["n"] / elapsed if elapsed else 0.0}


async def gateway_phase(tmp: Path, broker: Mosquitto, influx: Influxd, registry_path: Path,
                        ids: Sequence[str], total: int, receive_maximum: int,
                        rate: float | None, alarms: bool,
                        ack_after: str = "wal") -> dict[str, Any]:
    latencies: list[float] = []
    delivered = {"n": 0, "last": 0.0, "first_ts_ms": float("inf")}
    all_in = asyncio.Event()

    def on_delivered(lines: Sequence[bytes]) -> None:
        now_ms = time.time() * 1000
        for line in lines:
            if line.startswith(b"water_pressure,"):
                ts_ms = int(line.rsplit(b" ", 1)[1])
                delivered["first_ts_ms"] = min(delivered["first_ts_ms"], ts_ms)
                latencies.append(now_ms - ts_ms)
        delivered["n"] = len(latencies)
        delivered["last"] = now_ms
        if len(latencies) >= total:
            all_in.set()

    settings = Settings(
        instance="bench", registry=registry_path, state_dir=tmp / "state",
        rules=RULES,
        mqtt={"url": broker.url, "topic_root": "parks", "receive_maximum": receive_maximum},
        influx={"url": influx.url, "version": "1", "database": "bench"},
        http={"enabled": False}, observe={"gateway_interval_s": 5},
        alarms={"enabled": alarms}, ingest={"ack_after": ack_after})
    gw = Gateway(settings=settings, registry=load_registry(registry_path),
                 on_delivered=on_delivered)
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    await gw.ready.wait()
    assert gw.session is not None
    await gw.session.wait_connected(30)
    await asyncio.sleep(0.5)  # the subscription's round trip
    cpu0 = time.process_time()
    others = [psutil.Process(p.proc.pid) for p in (broker, influx) if p.proc is not None]
    others_cpu0 = [sum(p.cpu_times()[:2]) for p in others]
    proc, pipe = spawn_publisher(broker.port, topics_for("parks", ids), total, rate)
    await asyncio.wait_for(all_in.wait(), timeout=900)
    # From the first message published to the last one stored: the publisher process's
    # start-up time is not the gateway's.
    elapsed = (delivered["last"] - delivered["first_ts_ms"]) / 1000
    cpu = time.process_time() - cpu0
    others_cpu = [sum(p.cpu_times()[:2]) - c for p, c in zip(others, others_cpu0, strict=True)]
    pub_start, pub_end = pipe.recv()
    proc.join(30)
    stop.set()
    await task
    stored = influx.query('SELECT count("seq") FROM "water_pressure"', "bench")
    count = stored["results"][0]["series"][0]["values"][0][1]  # type: ignore[index]
    latencies.sort()
    return {
        "msgs": total, "stored": count, "rate": total / elapsed,
        "publish_rate": total / (pub_end - pub_start),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "max_ms": latencies[-1],
        "cpu_s": cpu, "cpu_pct": 100 * cpu / elapsed,
        "broker_cpu_s": others_cpu[0], "influx_cpu_s": others_cpu[1],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "fsyncs": gw.wal.fsync_count if gw.wal else 0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--receive-maximum", type=int, default=Settings().mqtt.receive_maximum,
                        help="MQTT 5 receive maximum (the in-flight window)")
    parser.add_argument("--rate", type=float, default=None,
                        help="offered load in msgs/s (default: as fast as the publisher can); "
                             "latency is only meaningful below saturation")
    parser.add_argument("--no-alarms", action="store_true",
                        help="run without the rule engine (to see what it adds)")
    parser.add_argument("--ack-after", choices=("wal", "influx"), default="wal",
                        help="PUBACK after the WAL fsync (default) or after InfluxDB accepted")
    parser.add_argument("--record", action="store_true", help="append the result to RESULTS.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pw-bench-") as tmpname:
        tmp = Path(tmpname)
        broker, influx = Mosquitto(tmp / "mosquitto"), Influxd(tmp / "influxd")
        broker.start()
        influx.start()
        try:
            registry_path = tmp / "registry.yaml"
            ids = _write_registry(registry_path, args.devices)
            print(f"bench: {args.messages} QoS 1 messages from {args.devices} devices", flush=True)
            gw = asyncio.run(gateway_phase(tmp, broker, influx, registry_path, ids,
                                           args.messages, args.receive_maximum, args.rate,
                                           not args.no_alarms, args.ack_after))
            top = ceiling(broker, ids, args.messages)
        finally:
            influx.stop()
            broker.stop()
    report = _report(args, gw, top)
    print(report)
    if args.record:
        with RESULTS.open("a") as fh:
            fh.write(report + "\n")
    return 0 if gw["stored"] == args.messages else 1


def _report(args: argparse.Namespace, gw: dict[str, Any], top: dict[str, float]) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    share = 100 * gw["rate"] / top["rate"] if top["rate"] else 0.0
    return "\n".join([
        f"### {when} — {args.messages} msgs, {args.devices} devices, {os.cpu_count()} cores",
        f"`python -m bench.throughput --devices {args.devices} --messages {args.messages} "
        f"--receive-maximum {args.receive_maximum}"
        + (f" --rate {args.rate:.0f}" if args.rate else "")
        + (" --no-alarms" if args.no_alarms else "")
        + (f" --ack-after {args.ack_after}" if args.ack_after != "wal" else "") + "`",
        "",
        "| measure | value |",
        "|---|---|",
        f"| bare paho subscriber ceiling (json + pydantic) | {top['rate']:,.0f} msg/s |",
        f"| **ParkWatch end to end (landed in InfluxDB)** | **{gw['rate']:,.0f} msg/s** "
        f"({share:.0f} % of ceiling) |",
        f"| publisher offered | {gw['publish_rate']:,.0f} msg/s |",
        f"| stored points / published | {gw['stored']} / {gw['msgs']} |",
        f"| latency publish → stored p50 / p99 / max | {gw['p50_ms']:.0f} / {gw['p99_ms']:.0f}"
        f" / {gw['max_ms']:.0f} ms |",
        f"| gateway CPU | {gw['cpu_s']:.1f} s ({gw['cpu_pct']:.0f} % of one core) |",
        f"| mosquitto / influxd CPU | {gw['broker_cpu_s']:.1f} s / {gw['influx_cpu_s']:.1f} s |",
        f"| gateway peak RSS | {gw['peak_rss_mb']:.0f} MB |",
        f"| WAL fsyncs | {gw['fsyncs']} ({gw['msgs'] / max(gw['fsyncs'], 1):.0f} msgs each) |",
        "",
    ])


if __name__ == "__main__":
    raise SystemExit(main())
