"""Aggregate throughput: one ParkWatch instance against two partitions, on this box.

    .venv/bin/python -m bench.partitions [--devices 2000] [--messages 100000] [--record]

Two parks, the same devices and the same load (a raw-socket QoS 1 publisher in a child process,
as fast as it can, round-robin over both parks) through one mosquitto into one influxd:

1. **one instance**: ``parkwatch run`` subscribed to ``{root}/#`` (SQLite alarm store);
2. **two partitions**: two ``parkwatch run`` processes, partition a owning park pa and b owning
   pb, each holding its lease in a private PostgreSQL that also holds their shared alarm store.

Throughput is messages published ÷ (first publish → InfluxDB holds all of them), polled every
0.2 s. Both runs use the product defaults (WAL fsync before PUBACK, the default rule pack, the
priority lane), so the only difference is the number of gateway processes and the store.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.throughput import RESULTS, spawn_publisher, topics_for
from gateway.tools.devservices import Influxd, Mosquitto, Postgres
from tests.support.chaos import GatewayProcess

RULES = Path(__file__).resolve().parent.parent / "config" / "rules"
PARKS = ("pa", "pb")


def _registry(path: Path, devices: int) -> dict[str, list[str]]:
    """``devices`` water-pressure devices per park, buildings b0..b9 as topics_for expects."""
    ids = {park: [f"wp-{park}-{i:05d}" for i in range(devices)] for park in PARKS}
    rows = [{"device": d, "park": park, "building": f"b{i % 10}", "floor": "1", "zone": "z",
             "kind": "water_pressure", "report_interval_s": 60}
            for park, devs in ids.items() for i, d in enumerate(devs)]
    path.write_text(yaml.safe_dump({"devices": rows}))
    return ids


def _config(path: Path, *, name: str, registry: Path, state: Path, broker: Mosquitto,
            influx: Influxd, root: str, db: str, cluster: dict[str, Any] | None,
            pg_dsn: str | None) -> None:
    doc: dict[str, Any] = {
        "instance": name, "registry": str(registry), "rules": str(RULES),
        "state_dir": str(state),
        "mqtt": {"url": broker.url, "topic_root": root},
        "influx": {"url": influx.url, "version": "1", "database": db},
        "http": {"enabled": False}, "observe": {"gateway_interval_s": 5},
    }
    if cluster is not None:
        doc["cluster"] = cluster
        doc["alarms"] = {"backend": "postgres", "postgres_dsn": pg_dsn}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _stored(influx: Influxd, db: str) -> int:
    try:
        result: Any = influx.query('SELECT count("seq") FROM "water_pressure"', db)
    except OSError:
        return 0
    series = result["results"][0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


async def _phase(tmp: Path, label: str, *, broker: Mosquitto, influx: Influxd,
                 registry: Path, ids: dict[str, list[str]], total: int,
                 partitions: bool, pg: Postgres | None) -> dict[str, Any]:
    root, db = f"{label}/parks", label
    procs: list[GatewayProcess] = []
    # Each round's partitions are new ones (a0, b0, a1 …): a partition's persistent session is
    # its own, and this run gives each round its own topic root.
    names = [f"a{label[-1]}", f"b{label[-1]}"] if partitions else ["single"]
    pg_dsn = pg.create_database(label) if pg is not None else None
    for i, name in enumerate(names):
        config = tmp / f"{label}-{name}.yaml"
        cluster = ({"partition": name, "parks": [PARKS[i]], "lease_dsn": pg_dsn}
                   if partitions else None)
        _config(config, name=f"{label}-{name}", registry=registry,
                state=tmp / f"state-{label}-{name}", broker=broker, influx=influx, root=root,
                db=db, cluster=cluster, pg_dsn=pg_dsn)
        proc = GatewayProcess(config, tmp / f"{label}-{name}.log")
        proc.start()
        procs.append(proc)
    try:
        for proc in procs:
            deadline = time.monotonic() + 60
            while "mqtt connected" not in (proc.log_since(0) if proc.log.exists() else ""):
                if time.monotonic() > deadline or not proc.alive:
                    raise RuntimeError(f"{proc.log} never connected")
                await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)          # both sessions' subscriptions
        ps = [psutil.Process(p.proc.pid) for p in procs if p.proc is not None]
        cpu0 = [sum(p.cpu_times()[:2]) for p in ps]
        topics = [t for pair in zip(*(topics_for(root, ids[p], p) for p in PARKS), strict=True)
                  for t in pair]
        started = time.time()
        pub, pipe = spawn_publisher(broker.port, topics, total)
        peak_rss = 0.0
        while _stored(influx, db) < total:
            if time.time() - started > 900:
                raise RuntimeError(f"{label}: only {_stored(influx, db)} of {total} stored")
            peak_rss = max(peak_rss, sum(p.memory_info().rss for p in ps) / 2**20)
            await asyncio.sleep(0.2)
        elapsed = time.time() - started
        cpu = sum(sum(p.cpu_times()[:2]) - c for p, c in zip(ps, cpu0, strict=True))
        pub_start, pub_end = pipe.recv()
        pub.join(30)
    finally:
        for proc in procs:
            proc.stop(60)
    return {"label": label, "instances": len(procs), "rate": total / elapsed,
            "elapsed_s": elapsed, "publish_rate": total / (pub_end - pub_start),
            "cpu_s": cpu, "peak_rss_mb": peak_rss, "stored": _stored(influx, db)}


async def run(devices: int, total: int, rounds: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="pw-partitions-") as tmpname:
        tmp = Path(tmpname)
        broker, influx, pg = Mosquitto(tmp / "mq"), Influxd(tmp / "influx"), Postgres(tmp / "pg")
        for svc in (broker, influx, pg):
            svc.start()
        try:
            registry = tmp / "registry.yaml"
            ids = _registry(registry, devices)
            out = []
            for n in range(rounds):       # interleaved: the shared box's noise hits both
                for partitions in (False, True):
                    label = f"{'two' if partitions else 'one'}{n}"
                    result = await _phase(tmp, label, broker=broker, influx=influx,
                                          registry=registry, ids=ids, total=total,
                                          partitions=partitions, pg=pg)
                    print(f"{label}: {result['rate']:,.0f} msg/s "
                          f"({result['stored']}/{total} stored, CPU {result['cpu_s']:.1f} s)",
                          flush=True)
                    out.append(result)
            return out
        finally:
            broker.stop()
            influx.stop()
            pg.remove()


def _report(args: argparse.Namespace, results: Sequence[dict[str, Any]]) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### {when} — partitions (issue 16): one instance vs two partitions, "
             f"{args.messages} msgs, {2 * args.devices} devices in 2 parks, "
             f"{os.cpu_count()} cores",
             f"`python -m bench.partitions --devices {args.devices} --messages {args.messages} "
             f"--rounds {args.rounds}`", "",
             "| run | gateway processes | landed in InfluxDB | publisher offered | "
             "gateway CPU (all processes) | peak RSS (sum) |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['instances']} | **{r['rate']:,.0f} msg/s** "
                     f"({r['stored']} / {args.messages}) | {r['publish_rate']:,.0f} msg/s | "
                     f"{r['cpu_s']:.1f} s | {r['peak_rss_mb']:.0f} MB |")
    return "\n".join([*lines, ""])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000, help="per park")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--record", action="store_true", help="append the result to RESULTS.md")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.devices, args.messages, args.rounds))
    report = _report(args, results)
    print(report)
    if args.record:
        with RESULTS.open("a") as fh:
            fh.write(report + "\n")
    return 0 if all(r["stored"] == args.messages for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
