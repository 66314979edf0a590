"""Cost of a scorecard: a 10,000-device park over 30 days (issue 12, Measure: under 5 s).

    .venv/bin/python -m bench.scorecard [--devices 10000] [--days 30] [--record]

Builds the history first (not timed): ~2 alarms per device in the real alarm store (SQLite,
written by ``AlarmStore.apply``) with dispositions, acknowledgements and fault/offline/limit
lifetimes, and ~5 ``device_status`` transitions per device in a private influxd. Then times what
``parkwatch scorecard --format html`` does: read the alarms and maintenance windows, read
``device_status``, compute the park and every tenant, render the page.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import tempfile
import time
import urllib.request
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.alarms.store import AlarmStore
from gateway.config import InfluxSettings
from gateway.scorecard.alarmsource import read_alarms, read_maintenance
from gateway.scorecard.influxsource import InfluxReader
from gateway.scorecard.model import DeviceRef, Period
from gateway.scorecard.render import as_html
from gateway.scorecard.report import Inputs, as_dict, compute
from gateway.tools.devservices import Influxd
from rules.alarm import Alarm, AlarmState, Disposition, Severity, Subject, Transition

RESULTS = Path(__file__).with_name("RESULTS.md")
TZ = ZoneInfo("Asia/Shanghai")
T0 = 1_793_462_400_000           # 2026-11-01 00:00 +08:00
H = 3_600_000
KINDS = ("smoke", "smoke", "smoke", "heat", "manual_call_point", "water_pressure",
         "water_level", "gas")
RULES = {"smoke": ("fire_alarm", Severity.CRITICAL), "heat": ("device_fault", Severity.MINOR),
         "manual_call_point": ("fire_alarm", Severity.CRITICAL),
         "water_pressure": ("water_pressure_low", Severity.MAJOR),
         "water_level": ("water_level_high", Severity.WARNING),
         "gas": ("device_offline", Severity.MINOR)}


def devices(n: int) -> list[DeviceRef]:
    return [DeviceRef(f"d{i:05d}", "bp", f"b{i // 250}", "1", f"z{i // 25}", KINDS[i % len(KINDS)],
                      f"t{i % 40:02d}") for i in range(n)]


def alarms(devs: list[DeviceRef], days: int, rng: random.Random) -> list[Transition]:
    out: list[Transition] = []
    for n, d in enumerate(devs):
        rule, severity = RULES[d.kind]
        for k in range(2):
            start = T0 + rng.randrange(days * 24 * H)
            ack = start + rng.randrange(1000, 900_000)
            disp = rng.choice(list(Disposition))
            subject = Subject(park=d.park, building=d.building, floor=d.floor, zone=d.zone,
                              device=d.device, tenant=d.tenant, kind=d.kind)
            out.append(Transition(None, Alarm(
                alarm_id=f"a{n}-{k}", fingerprint=f"{rule}|{d.device}|{k}", rule=rule,
                severity=severity, state=AlarmState.RESOLVED, subject=subject, message="bench",
                started_at_ms=start, updated_at_ms=ack + H, fired_at_ms=start,
                acknowledged_by="duty", acknowledged_at_ms=ack, ack_channel="api",
                disposition=disp, resolved_at_ms=ack + rng.randrange(H, 6 * H))))
    return out


def status_lines(devs: list[DeviceRef], days: int, rng: random.Random) -> list[str]:
    lines: list[str] = []
    for d in devs:
        tags = f"device_status,device={d.device},kind={d.kind},park={d.park}"
        lines.append(f'{tags} online=true,source="startup" {T0 - H}')
        for _ in range(2):
            down = T0 + rng.randrange(days * 24 * H)
            lines.append(f'{tags} online=false,source="traffic" {down}')
            lines.append(f'{tags} online=true,source="traffic" {down + rng.randrange(H, 9 * H)}')
    return lines


def prepare(work: Path, influx: Influxd, n: int, days: int) -> list[DeviceRef]:
    rng = random.Random(12)
    devs = devices(n)

    async def store() -> None:
        async with AlarmStore(work / "alarms.sqlite3") as s:
            transitions = alarms(devs, days, rng)
            for i in range(0, len(transitions), 5000):
                await s.apply(transitions[i:i + 5000])
    asyncio.run(store())
    influx.query('CREATE DATABASE "bench"')
    lines = status_lines(devs, days, rng)
    for i in range(0, len(lines), 5000):
        req = urllib.request.Request(f"{influx.url}/write?db=bench&precision=ms",
                                     data="\n".join(lines[i:i + 5000]).encode(), method="POST")
        urllib.request.urlopen(req, timeout=60).close()
    return devs


def timed(work: Path, influx: Influxd, devs: list[DeviceRef], days: int) -> dict[str, float]:
    period = Period(T0, T0 + days * 24 * H)
    as_of = period.end_ms + 24 * H
    t: dict[str, float] = {}
    start = time.perf_counter()
    found = read_alarms(work / "alarms.sqlite3", park="bp", period=period)
    windows = read_maintenance(work / "alarms.sqlite3", as_of_ms=as_of)
    t["read alarm store"] = time.perf_counter() - start
    mark = time.perf_counter()
    reader = InfluxReader(InfluxSettings(url=influx.url, database="bench"))
    status = asyncio.run(reader.device_status(park="bp", period=period))
    t["read device_status"] = time.perf_counter() - mark
    mark = time.perf_counter()
    inputs = Inputs(devices=devs, alarms=found, status=status, maintenance=windows)
    park = as_dict(compute(inputs, park="bp", period=period, as_of_ms=as_of))
    tenants = [as_dict(compute(inputs, park="bp", period=period, as_of_ms=as_of, tenant=x))
               for x in inputs.tenants()]
    as_html(park, TZ, tenants)
    t["compute park + 40 tenants, render"] = time.perf_counter() - mark
    t["total"] = time.perf_counter() - start
    t["alarms"] = len(found)
    t["status points"] = sum(len(v) for v in status.values())
    return t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pw-bench-scorecard-") as tmp:
        influx = Influxd(Path(tmp) / "influxd")
        influx.start()
        try:
            devs = prepare(Path(tmp), influx, args.devices, args.days)
            t = timed(Path(tmp), influx, devs, args.days)
        finally:
            influx.stop()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [f"| {k} | {v:.2f} s |" if k not in ("alarms", "status points") else
            f"| {k} read | {int(v):,} |" for k, v in t.items()]
    table = "\n".join([f"\n### {when} — scorecard, {args.devices} devices, {args.days} days",
                       f"`python -m bench.scorecard --devices {args.devices} --days {args.days}`",
                       "", "| measure | value |", "|---|---|", *rows, ""])
    print(table)
    if args.record:
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write(table)
    return 0 if t["total"] < 5.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
