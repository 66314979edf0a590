"""Failover time: ``kill -9`` of a partition's active, ten times, with traffic flowing.

    .venv/bin/python -m bench.failover [--kills 10] [--lease-s 10] [--record]

Three real instances (tests/support/cluster.py: partition a = a1 + a2, partition b = b1) on a
private mosquitto, InfluxDB and PostgreSQL (lease and shared alarm store). Each round kills a's
current active with SIGKILL, with fire alarms published just before and just after the kill,
and measures

* **takeover**: kill → the standby holds the lease (its /healthz says active): the lease's
  remaining time + the standby's poll (0.5 s);
* **resumed**: kill → the new active has started, resumed the session and acknowledged its
  first message (with ack_after influx: once that message is in InfluxDB);

then restarts the killed instance, as a supervisor would (it becomes the standby). At the end
the chaos proofs run: every reading in InfluxDB exactly once, every fire raised and paged once.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.throughput import RESULTS
from gateway.tools.devservices import Postgres
from tests.support.cluster import Cluster, ClusterConfig, Instance


def _accepted(inst: Instance) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{inst.http_port}/status",
                                    timeout=1) as r:
            body: dict[str, Any] = json.loads(r.read())
    except OSError:
        return 0.0
    return float(sum(body.get("accepted", {}).values()))


async def run(kills: int, lease_s: float, ack_after: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pw-failover-") as tmpname:
        tmp = Path(tmpname)
        pg = Postgres(tmp / "pg")
        pg.start()
        cluster = Cluster(tmp, ClusterConfig(lease_s=lease_s, renew_s=lease_s / 4,
                                             ack_after=ack_after, alarm_devices=2 * kills),
                          pg_dsn=pg.create_database("failover"))
        takeovers: list[float] = []
        resumed: list[float] = []
        try:
            async with cluster:
                await cluster.start_load()
                fires = iter([d for d in cluster.smoke if d.park == "pa"])
                for n in range(kills):
                    await asyncio.sleep(lease_s / 2)     # settle, and let the lease renew
                    fire = [next(fires), next(fires)]
                    killed, successor, took = await cluster.kill_active(
                        "a", fire=fire, resumed=lambda s: _accepted(s) > 0)
                    takeovers.append(took)
                    resumed.append(cluster.resumed_s)
                    print(f"kill {n + 1}: {killed.name} → {successor.name} active after "
                          f"{took:.2f} s", flush=True)
                total = await cluster.drain()
                await cluster.until(
                    lambda: len(cluster.fire_notifications()) >= 2 * kills, 120,
                    "every fire paged")
                await asyncio.sleep(3)
                problems = cluster.telemetry_problems() + cluster.alarm_problems()
                doubled = [d for d, n in cluster.fire_notifications().items() if n != 1]
        finally:
            cluster.emergency_stop()
            pg.remove()
    return {"takeovers": takeovers, "resumed": resumed, "total": total,
            "problems": problems + [f"{d} paged more than once" for d in doubled]}


def _report(args: argparse.Namespace, r: dict[str, Any]) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    t, s = sorted(r["takeovers"]), sorted(r["resumed"])
    return "\n".join([
        f"### {when} — failover (issue 16): {len(t)} × kill -9 of a partition's active, "
        f"lease {args.lease_s:g} s, ack_after {args.ack_after}, {os.cpu_count()} cores",
        f"`python -m bench.failover --kills {args.kills} --lease-s {args.lease_s:g} "
        f"--ack-after {args.ack_after}`", "",
        "| measure | p50 | max | all |", "|---|---|---|---|",
        f"| kill → the standby holds the lease | "
        f"{statistics.median(t):.2f} s | {t[-1]:.2f} s | "
        + ", ".join(f"{x:.1f}" for x in r["takeovers"]) + " |",
        f"| kill → the new active acknowledges (started, session resumed, first PUBACK) | "
        f"{statistics.median(s):.2f} s | {s[-1]:.2f} s | "
        + ", ".join(f"{x:.1f}" for x in r["resumed"]) + " |",
        "",
        f"Readings published (all PUBACKed by the broker): {r['total']}; proof: "
        + ("every reading in InfluxDB exactly once, every fire raised once and paged once"
           if not r["problems"] else "PROBLEMS: " + "; ".join(r["problems"][:10])),
        ""])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--lease-s", type=float, default=10.0)
    parser.add_argument("--ack-after", choices=("wal", "influx"), default="influx")
    parser.add_argument("--record", action="store_true", help="append the result to RESULTS.md")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.kills, args.lease_s, args.ack_after))
    report = _report(args, result)
    print(report)
    if args.record:
        with RESULTS.open("a") as fh:
            fh.write(report + "\n")
    return 0 if not result["problems"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
