"""Fire panels over GB/T 26875.3: frame → ACK and frame → webhook latency under load.

    .venv/bin/python -m bench.uitd --target 127.0.0.1:9000 [--webhook-listen 127.0.0.1:18991]
    .venv/bin/python -m bench.uitd --gateway [--record]      # starts everything itself
    .venv/bin/python -m bench.uitd --self-test               # against a fake centre
    .venv/bin/python -m bench.uitd --write-site DIR          # registry + point map, then exits

``--clients`` UITDs (default 200) heartbeat every ``--heartbeat`` s (default 20, first beats
spread over one interval) while a burst of fire frames (type 2, fire bit) arrives at ``--rate``
per second (default 50) for ``--duration`` s (default 30), round-robin over the UITDs and over
each panel's points, so every frame is a new point in alarm. Each client is the simulator's
:class:`UitdClient`: one upload outstanding, a resend after 10 s without ACK.

Measured:
* **frame → ACK**: first write of a frame to its confirm, per frame kind (the issue's target:
  alarm frames p99 < 100 ms; an ACK means the gateway made the frame durable);
* **frame → webhook**: first write of a fire frame to the gateway's catch-all webhook request
  for that point (target p99 < 1 s). Needs the gateway's ``notify.webhook_url`` pointed at
  ``--webhook-listen``; the point is found by (panel, location) in the alarm document, which is
  why the site written by ``--write-site`` gives every point a unique location.

Modes: ``--target`` measures a gateway you started (with the site from ``--write-site``:
``PARKWATCH_UITD__POINTS=DIR/points.csv``, ``registry: DIR/registry.yaml``); ``--gateway``
starts a private mosquitto, influxd and the gateway in this process as bench/notify_latency.py
does (needs a gateway with the ``uitd`` settings); ``--self-test`` runs against the fake centre
of tests/support (ACK latency only: the harness itself, not ParkWatch).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import json
import os
import resource
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from aiohttp import web

from gateway.tools.simulator.uitdadu import Component, component_status_adu
from gateway.tools.simulator.uitdclient import UitdClient
from sensors.gb26875.bits import ComponentStatusBits
from sensors.pointmap import CSV_HEADER

RESULTS = Path(__file__).with_name("RESULTS.md")
RULES = Path(__file__).resolve().parent.parent / "config" / "rules"
CENTRE = bytes.fromhex("000000000001")
PARK = "bp"
SMOKE = 42  # point photoelectric smoke detector: a fire-class component


@dataclass(frozen=True)
class Point:
    comp_addr: int
    point: str
    zone: str
    location: str


@dataclass(frozen=True)
class Panel:
    address: bytes
    device: str
    building: str
    points: tuple[Point, ...]


def make_site(clients: int, points_per_panel: int) -> list[Panel]:
    """One panel per UITD, ``points_per_panel`` smoke points each in zones of four, every point
    with a location of its own (the webhook is matched on it)."""
    panels = []
    for i in range(clients):
        device = f"fp-{i:04d}"
        points = tuple(Point(comp_addr=0x10000 + k, point=f"P{k:03d}", zone=f"z{k // 4}",
                             location=f"bench {device} P{k:03d}")
                       for k in range(points_per_panel))
        panels.append(Panel((0x7904_0000_0000 + i).to_bytes(6, "big"), device, f"b{i % 10}",
                            points))
    return panels


def write_site(directory: Path, panels: Sequence[Panel]) -> tuple[Path, Path]:
    """``registry.yaml`` (the panels as fire_panel devices) and ``points.csv`` for the gateway."""
    directory.mkdir(parents=True, exist_ok=True)
    registry = directory / "registry.yaml"
    registry.write_text(yaml.safe_dump({"devices": [
        {"device": p.device, "park": PARK, "building": p.building, "floor": "1",
         "zone": "control", "kind": "fire_panel", "location": f"bench panel {p.device}",
         "report_interval_s": 30} for p in panels]}), encoding="utf-8")
    points = directory / "points.csv"
    with points.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(CSV_HEADER)
        for p in panels:
            for pt in p.points:
                out.writerow([p.device, pt.point, p.building, "1", pt.zone, "", pt.location,
                              SMOKE, p.address.hex().upper(), 1, 1, pt.comp_addr])
    return registry, points


# --------------------------------------------------------------------------- measuring


@dataclass
class Webhooks:
    """Arrival times of fire_alarm webhook requests by (device, location)."""

    arrived: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    requests: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        doc = await request.json()
        self.requests += 1
        if doc.get("rule") == "fire_alarm" and doc.get("state") == "firing":
            key = (str(doc.get("device")), str(doc.get("location")))
            self.arrived.setdefault(key, deque()).append(time.monotonic())
            self.changed.set()
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def webhook_receiver(host: str, port: int) -> AsyncIterator[tuple[Webhooks, str]]:
    hooks = Webhooks()
    app = web.Application()
    app.router.add_post("/hook", hooks.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield hooks, f"http://{host}:{bound}/hook"
    finally:
        await runner.cleanup()


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


REPO = Path(__file__).resolve().parent.parent
#: How the child process of ``--gateway`` hands its figures back.
RESULT_PREFIX = "bench-result: "


@dataclass
class Load:
    clients: int = 200
    heartbeat_s: float = 20.0
    rate: float = 50.0
    duration_s: float = 30.0
    drain_s: float = 15.0  # after the burst: wait this long at most for ACKs and webhooks


async def run_load(host: str, port: int, panels: Sequence[Panel], load: Load,
                   hooks: Webhooks | None) -> dict[str, Any]:
    tz = ZoneInfo("Asia/Shanghai")
    clients = [UitdClient(p.address, host, port, centre=CENTRE, tz=tz, reconnect_s=0.5)
               for p in panels]
    stop = asyncio.Event()
    runners = [asyncio.create_task(c.run(stop)) for c in clients]
    work: set[asyncio.Task[Any]] = set()
    sent_keys: list[list[tuple[str, str]]] = [[] for _ in panels]
    cpu0 = time.process_time()
    try:
        await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clients)), 30)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        beats = [asyncio.create_task(_beat(c, load.heartbeat_s, i / len(clients), stop))
                 for i, c in enumerate(clients)]
        total = int(load.rate * load.duration_s)
        for j in range(total):
            delay = t0 + j / load.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            i = j % len(clients)
            panel = panels[i]
            point = panel.points[(j // len(clients)) % len(panel.points)]
            sent_keys[i].append((panel.device, point.location))
            adu = component_status_adu([(Component(1, 1, SMOKE, point.comp_addr),
                                         int(ComponentStatusBits.FIRE), point.point)],
                                       clients[i].now())
            task = asyncio.create_task(clients[i].send(adu, f"fire {point.point}", "alarm"))
            work.add(task)
            task.add_done_callback(work.discard)
        burst_s = loop.time() - t0
        deadline = loop.time() + load.drain_s
        if work:
            await asyncio.wait(set(work), timeout=load.drain_s)
        while hooks is not None and _matched(hooks, clients, sent_keys)[1] < total:
            hooks.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hooks.changed.wait(), max(0.0, deadline - loop.time()))
            if loop.time() >= deadline:
                break
        for beat in beats:
            beat.cancel()
    finally:
        stop.set()
        for task in [*work, *runners]:
            task.cancel()
        await asyncio.gather(*work, *runners, return_exceptions=True)
    cpu_s = time.process_time() - cpu0
    alarm = [x for c in clients for x in c.stats.ack_latency_s.get("alarm", [])]
    beat_lat = [x for c in clients for x in c.stats.ack_latency_s.get("heartbeat", [])]
    result: dict[str, Any] = {
        "alarms": total, "burst_s": burst_s, "alarm_acked": len(alarm), "alarm_ack": alarm,
        "heartbeats": sum(len(c.stats.first_sent.get("heartbeat", [])) for c in clients),
        "heartbeat_ack": beat_lat,
        "resent": sum(c.stats.resent for c in clients),
        "lost": sum(c.stats.lost for c in clients),
        "naks": sum(c.stats.naks for c in clients), "cpu_s": cpu_s,
    }
    if hooks is not None:
        result["webhook"], result["webhook_matched"] = _matched(hooks, clients, sent_keys)
    return result


def _matched(hooks: Webhooks, clients: Sequence[UitdClient],
             sent_keys: Sequence[Sequence[tuple[str, str]]]) -> tuple[list[float], int]:
    """frame → webhook latencies: a client's n-th fire frame is the n-th first send of kind
    "alarm" (one upload outstanding, the lock is FIFO), matched to that point's webhook."""
    arrived = {k: list(v) for k, v in hooks.arrived.items()}
    out = []
    for client, keys in zip(clients, sent_keys, strict=True):
        for key, first in zip(keys, client.stats.first_sent.get("alarm", []), strict=False):
            times = arrived.get(key)
            if times:
                out.append(times.pop(0) - first)
    return out, len(out)


async def _beat(client: UitdClient, every_s: float, phase: float, stop: asyncio.Event) -> None:
    await asyncio.sleep(phase * every_s)  # spread the first beats over one interval
    while not stop.is_set():
        await client.send(b"", "heartbeat", "heartbeat")
        await asyncio.sleep(every_s)


# --------------------------------------------------------------------------- modes


async def _against(target: str, panels: Sequence[Panel], load: Load,
                   webhook_listen: str | None) -> dict[str, Any]:
    host, _, port = target.rpartition(":")
    if webhook_listen is None:
        return await run_load(host or "127.0.0.1", int(port), panels, load, None)
    hhost, _, hport = webhook_listen.rpartition(":")
    async with webhook_receiver(hhost or "127.0.0.1", int(hport)) as (hooks, url):
        print(f"bench: webhook receiver at {url}", flush=True)
        return await run_load(host or "127.0.0.1", int(port), panels, load, hooks)


async def _self_test(panels: Sequence[Panel], load: Load) -> dict[str, Any]:
    from tests.support.uitd_centre import FakeCentre

    async with FakeCentre() as centre:
        return await run_load("127.0.0.1", centre.port, panels, load, None)


async def _with_gateway(panels: Sequence[Panel], load: Load,
                        per_panel: int) -> dict[str, Any]:
    """Private mosquitto + influxd + the gateway in this process (as bench/notify_latency.py),
    the UITDs in a child process."""
    from gateway.config import Settings
    from gateway.runtime.gateway import Gateway
    from gateway.tools.devservices import Influxd, Mosquitto
    from sensors.registry import load_registry

    with tempfile.TemporaryDirectory(prefix="pw-bench-uitd-") as tmpname:
        tmp = Path(tmpname)
        registry_path, points_path = write_site(tmp / "site", panels)
        broker, influx = Mosquitto(tmp / "mq"), Influxd(tmp / "influx")
        broker.start()
        influx.start()
        try:
            hook_port = _free_port()
            url = f"http://127.0.0.1:{hook_port}/hook"
            settings = Settings.model_validate({
                "instance": "benchuitd", "registry": str(registry_path),
                "state_dir": str(tmp / "state"),
                "rules": str(RULES),
                "mqtt": {"url": broker.url, "topic_root": "parks"},
                "influx": {"url": influx.url, "version": "1", "database": "benchuitd"},
                "http": {"enabled": False}, "notify": {"webhook_url": url},
                "uitd": {"listen": "127.0.0.1:0", "points": str(points_path),
                         "max_connections": max(1000, 2 * len(panels))},
            })
            gw = Gateway(settings=settings, registry=load_registry(registry_path))
            stop = asyncio.Event()
            task = asyncio.create_task(gw.run(stop))
            try:
                await asyncio.wait_for(gw.ready.wait(), 30)
                port = await _uitd_port(gw)
                # The UITDs and the webhook receiver run in a child process, as the publisher
                # of bench/throughput.py does: on two cores the load must not share the
                # gateway's event loop, or the figures measure the load generator.
                cpu0 = time.process_time()
                result = await _load_in_child(port, hook_port, load, per_panel)
                result["cpu_s"] = time.process_time() - cpu0
                return result
            finally:
                stop.set()
                await asyncio.wait_for(task, 60)
        finally:
            influx.stop()
            broker.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _load_in_child(port: int, hook_port: int, load: Load,
                         per_panel: int) -> dict[str, Any]:
    """``--target`` in a child process; its result comes back as one JSON line."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.uitd", "--target", f"127.0.0.1:{port}",
        "--webhook-listen", f"127.0.0.1:{hook_port}", "--clients", str(load.clients),
        "--heartbeat", str(load.heartbeat_s), "--rate", str(load.rate),
        "--duration", str(load.duration_s), "--drain", str(load.drain_s),
        "--points-per-panel", str(per_panel), "--emit-json",
        stdout=asyncio.subprocess.PIPE, cwd=str(REPO))
    out, _ = await child.communicate()
    for line in out.decode().splitlines():
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX):])
            return result
    raise SystemExit(f"bench: the load process gave no result (exit {child.returncode})")


async def _uitd_port(gw: Any) -> int:
    """The UITD listener's bound port (``uitd.listen`` asks for port 0)."""
    for _ in range(200):
        if gw.uitd is not None and gw.uitd.port is not None:
            return int(gw.uitd.port)
        await asyncio.sleep(0.05)
    raise SystemExit("bench: the gateway's UITD server did not start listening")


# --------------------------------------------------------------------------- report


def report(args: argparse.Namespace, mode: str, r: dict[str, Any]) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    ack, beat = r["alarm_ack"], r["heartbeat_ack"]

    def ms(values: Sequence[float], q: float) -> str:
        return f"{pct(values, q) * 1000:.1f}"

    rows = [
        f"### {when} — UITD load ({mode}), {args.clients} UITDs, {os.cpu_count()} cores",
        f"`python -m bench.uitd {' '.join(args.argv)}`",
        "",
        "| measure | value |",
        "|---|---|",
        f"| UITDs heartbeating every {args.heartbeat:g} s | {args.clients} "
        f"({r['heartbeats']} heartbeats, {len(beat)} ACKed) |",
        f"| fire frames at {args.rate:g}/s for {args.duration:g} s | {r['alarms']} sent in "
        f"{r['burst_s']:.1f} s, {r['alarm_acked']} ACKed, {r['resent']} resent, "
        f"{r['lost']} lost, {r['naks']} NAKs |",
        f"| **fire frame → ACK p50 / p95 / p99 / max** | **{ms(ack, .5)} / {ms(ack, .95)} / "
        f"{ms(ack, .99)} / {ms(ack, 1)} ms** (target p99 < 100 ms) |",
        f"| heartbeat → ACK p50 / p99 / max | {ms(beat, .5)} / {ms(beat, .99)} / "
        f"{ms(beat, 1)} ms |",
    ]
    if "webhook" in r:
        hook = r["webhook"]
        rows.append(f"| **fire frame → webhook p50 / p95 / p99 / max** | **{ms(hook, .5)} / "
                    f"{ms(hook, .95)} / {ms(hook, .99)} / {ms(hook, 1)} ms** "
                    f"({r['webhook_matched']}/{r['alarms']} matched; target p99 < 1000 ms) |")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    who = "gateway process" if mode == "gateway" else "this process"
    rows.append(f"| {who} CPU / peak RSS | {r['cpu_s']:.1f} s / {rss_mb:.0f} MB |")
    return "\n".join([*rows, ""])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--target", metavar="HOST:PORT", help="a running gateway's UITD port")
    mode.add_argument("--gateway", action="store_true",
                      help="start mosquitto, influxd and the gateway here")
    mode.add_argument("--self-test", action="store_true", help="against a fake centre")
    mode.add_argument("--write-site", type=Path, metavar="DIR",
                      help="write registry.yaml and points.csv for the gateway, then exit")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--heartbeat", type=float, default=20.0, metavar="SECONDS")
    parser.add_argument("--rate", type=float, default=50.0, help="fire frames per second")
    parser.add_argument("--duration", type=float, default=30.0, metavar="SECONDS")
    parser.add_argument("--points-per-panel", type=int, default=None,
                        help="default: enough for every fire frame to be a new point")
    parser.add_argument("--webhook-listen", metavar="HOST:PORT", default=None,
                        help="with --target: receive the gateway's webhook here")
    parser.add_argument("--drain", type=float, default=15.0, metavar="SECONDS",
                        help="after the burst, wait at most this long for ACKs and webhooks")
    parser.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    parser.add_argument("--emit-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    per_panel = args.points_per_panel or max(
        1, -(-int(args.rate * args.duration) // args.clients))
    panels = make_site(args.clients, per_panel)
    if args.write_site is not None:
        registry, points = write_site(args.write_site, panels)
        print(f"bench: wrote {registry} and {points} ({args.clients} panels, {per_panel} "
              f"points each)")
        return 0
    load = Load(args.clients, args.heartbeat, args.rate, args.duration, args.drain)
    if args.self_test:
        name, result = "fake centre", asyncio.run(_self_test(panels, load))
    elif args.gateway:
        name, result = "gateway", asyncio.run(_with_gateway(panels, load, per_panel))
    else:
        name = f"gateway at {args.target}"
        result = asyncio.run(_against(args.target, panels, load, args.webhook_listen))
    if args.emit_json:     # the child of --gateway: hand the figures to the parent
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0
    table = report(args, name, result)
    print(table)
    if args.record:
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write("\n" + table)
    return 0 if result["lost"] == 0 and result["alarm_acked"] == result["alarms"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
