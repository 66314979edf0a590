"""ParkWatch against its peer, Node-RED with a tuned batch flow, under the same load (issue 15).

    .venv/bin/python -m bench.peer [--devices 500] [--messages 300000] [--rounds 2] [--record]

One private mosquitto and one private influxd (gateway/tools/devservices.py) serve the whole run.
Each round runs ParkWatch, then Node-RED (interleaved: PW, NR, PW, NR, …), each on its own topic
root and its own database, each fed the same load by a separate process: the raw-socket publisher
(gateway/tools/simulator/publisher.py) sending ``--messages`` QoS 1 contract payloads from
``--devices`` devices of five kinds, as fast as the broker takes them.

- **ParkWatch** runs as ``parkwatch run --config …`` in its own process with its full guarantees:
  registry validation, the default rule pack (config/rules), the WAL fsynced before every PUBACK,
  the priority lane. The only change from the defaults is ``ingest.device_rate_per_s: 0``: 500
  devices carrying 15k+ msgs/s are 30+ msgs/s each, which the per-device limit (20/s) exists to
  reject.
- **Node-RED** 4.1 (bench/peer/, pinned, installed with ``npm ci --prefix bench/peer``) runs
  bench/peer/flows.json: mqtt in (QoS 1) → json → function (measurement = kind, tags
  park/building/device, fields the values plus seq/battery/rssi: what ParkWatch writes) →
  join 1,000 messages / 1 s → influxdb batch. It validates nothing and acks on receipt.

Measured per system: **landed msgs/s** = messages / (first publish → the moment InfluxDB counts
all of them; the count is polled every 0.2 s), CPU of that one process (psutil, user + system)
over the same interval, and its peak RSS (VmHWM). Then, in the same process, a paced load
(``--steady-rate`` msgs/s for ``--steady-seconds``): **freshness** = now − the newest point in
InfluxDB, sampled every 0.25 s, and the process's CPU at that rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from gateway.tools.devservices import Influxd, Mosquitto, free_port
from gateway.tools.simulator.publisher import MqttPublisher

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).with_name("RESULTS.md")
PEER = Path(__file__).with_name("peer")
RULES = ROOT / "config" / "rules"

#: (device ID prefix, kind, healthy values) — the five kinds of the load, canonical units.
KINDS: tuple[tuple[str, str, str], ...] = (
    ("wp", "water_pressure", '"pressure_mpa":0.350'),
    ("wl", "water_level", '"level_m":4.20'),
    ("gs", "gas", '"lel_pct":0.8'),
    ("co", "co", '"co_ppm":3.0'),
    ("ef", "electrical_fire", '"residual_current_ma":120.0,"temp_l1_c":38.5,"temp_l2_c":37.9,'
                              '"temp_l3_c":38.1,"temp_n_c":33.0'),
)
MEASUREMENTS = ",".join(f'"{kind}"' for _, kind, _ in KINDS)


@dataclass(frozen=True)
class Device:
    device: str
    kind: str
    building: str
    values: str


def devices(n: int) -> list[Device]:
    out = []
    for i in range(n):
        prefix, kind, values = KINDS[i % len(KINDS)]
        out.append(Device(f"{prefix}-{i:05d}", kind, f"b{i % 10}", values))
    return out


def write_registry(path: Path, devs: Sequence[Device]) -> None:
    doc = {"devices": [{"device": d.device, "park": "bp", "building": d.building, "floor": "1",
                        "zone": "z", "kind": d.kind, "report_interval_s": 1} for d in devs]}
    path.write_text(yaml.safe_dump(doc))


# ---------------------------------------------------------------------------- the load


def _publisher(port: int, root: str, devs: Sequence[Device], total: int, rate: float,
               seq0: int, out: Any) -> None:
    """Child process: ``total`` QoS 1 telemetry messages round-robin over ``devs``, at ``rate``
    msgs/s (0: flat out).

    A device's timestamps go up by at least 1 ms per message, so no two of its points share a
    timestamp in InfluxDB (which would overwrite one with the other and spoil the count).
    """
    async def go() -> tuple[float, float]:
        topics = [f"{root}/bp/{d.building}/{d.device}/telemetry" for d in devs]
        values = [d.values.encode() for d in devs]
        last = [0.0] * len(devs)
        n = len(devs)
        async with MqttPublisher("127.0.0.1", port, client_id=f"peer-pub-{os.getpid()}",
                                 max_inflight=2000) as pub:
            start = time.time()
            for i in range(total):
                if rate and i % 100 == 0:
                    ahead = start + i / rate - time.time()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                k = i % n
                ts = max(time.time(), last[k] + 0.001)
                last[k] = ts
                payload = (b'{"ts":%.3f,"seq":%d,"values":{%s},"battery_pct":87.5,'
                           b'"rssi_dbm":-71}' % (ts, seq0 + i // n, values[k]))
                await pub.publish(topics[k], payload, qos=1)
            await pub.flush(600)
            return start, time.time()

    out.send(asyncio.run(go()))


def _spawn_publisher(port: int, root: str, devs: Sequence[Device], total: int,
                     rate: float = 0.0, seq0: int = 0) -> tuple[Any, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_publisher, args=(port, root, devs, total, rate, seq0, child),
                       daemon=True)
    proc.start()
    return proc, parent


# ---------------------------------------------------------------------------- the systems


@dataclass
class Result:
    system: str
    round: int
    published: int
    landed: int
    rate: float
    publish_rate: float
    cpu_s: float
    cpu_pct: float
    peak_rss_mb: float
    broker_cpu_s: float
    influx_cpu_s: float
    shape: str = ""
    steady_rate: float = 0.0
    fresh_p50_s: float = float("nan")
    fresh_p90_s: float = float("nan")
    steady_cpu_pct: float = float("nan")
    steady_landed: int = 0


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def _landed(influx: Influxd, db: str) -> int:
    doc: Any = influx.query(f'SELECT count("seq") FROM {MEASUREMENTS}', db)
    series = doc["results"][0].get("series") or []
    return sum(int(s["values"][0][1]) for s in series)


def _wait_for_log(path: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float,
                  count: int = 1) -> None:
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited ({proc.returncode}):\n"
                               + path.read_text(errors="replace")[-3000:])
        if path.exists() and len(rx.findall(path.read_text(errors="replace"))) >= count:
            return
        time.sleep(0.1)
    raise RuntimeError(f"no {pattern!r} in {path} after {timeout:.0f} s:\n"
                       + path.read_text(errors="replace")[-3000:])


def start_parkwatch(run_dir: Path, registry: Path, broker: Mosquitto, influx: Influxd,
                    root: str, db: str, profile: Path | None = None
                    ) -> subprocess.Popen[bytes]:
    config = run_dir / "parkwatch.yaml"
    config.write_text(yaml.safe_dump({
        "instance": root, "registry": str(registry), "rules": str(RULES),
        "state_dir": str(run_dir / "state"),
        "mqtt": {"url": broker.url, "topic_root": root},
        "influx": {"url": influx.url, "version": "1", "database": db},
        "http": {"enabled": False},
        "ingest": {"device_rate_per_s": 0},
    }))
    exe = [str(Path(sys.executable).with_name("parkwatch"))]
    if profile is not None:
        # cProfile writes its file when the gateway exits (SIGTERM: a clean shutdown).
        exe = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "gateway.tools.cli"]
    log = run_dir / "parkwatch.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([*exe, "run", "--config", str(config)], cwd=run_dir,
                                stdout=fh, stderr=subprocess.STDOUT)
    # Two sessions: telemetry and the priority lane.
    _wait_for_log(log, r"mqtt connected to", proc, 60, count=2)
    return proc


def node_red_command() -> list[str]:
    red = PEER / "node_modules" / "node-red" / "red.js"
    if not red.exists():
        subprocess.run(["npm", "ci", "--prefix", str(PEER), "--no-audit", "--no-fund"],
                       check=True)
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("Node.js is not installed (apt-get install nodejs npm)")
    return [node, str(red), "--settings", str(PEER / "settings.js")]


def start_node_red(run_dir: Path, broker: Mosquitto, influx: Influxd, root: str, db: str
                   ) -> subprocess.Popen[bytes]:
    user_dir = run_dir / "node-red"
    user_dir.mkdir()
    flows: list[dict[str, Any]] = json.loads((PEER / "flows.json").read_text())
    for node in flows:
        if node["type"] == "mqtt-broker":
            node["port"] = str(broker.port)
        elif node["type"] == "mqtt in":
            node["topic"] = f"{root}/+/+/+/telemetry"
        elif node["type"] == "influxdb":
            node["port"] = str(influx.port)
            node["url"] = influx.url
            node["database"] = db
    (user_dir / "flows.json").write_text(json.dumps(flows))
    env = {**os.environ, "PW_PEER_USERDIR": str(user_dir), "PW_PEER_PORT": str(free_port()),
           "NODE_ENV": "production"}
    log = run_dir / "node-red.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(node_red_command(), cwd=user_dir, env=env, stdout=fh,
                                stderr=subprocess.STDOUT)
    _wait_for_log(log, r"Connected to broker", proc, 60)
    return proc


def _newest_ms(influx: Influxd, db: str) -> float:
    doc: Any = influx.query(f'SELECT last("seq") FROM {MEASUREMENTS}', db)
    series = doc["results"][0].get("series") or []
    return max((float(s["values"][0][0]) for s in series), default=0.0)


def steady(proc: subprocess.Popen[bytes], root: str, db: str, devs: Sequence[Device],
           broker: Mosquitto, influx: Influxd, rate: float, seconds: float, before: int
           ) -> tuple[float, float, float, int]:
    """Freshness (now − newest point in InfluxDB) p50/p90, CPU % at a steady ``rate``, and how
    many of its messages landed (``before``: the count in the database when it starts)."""
    me = psutil.Process(proc.pid)
    total = int(rate * seconds)
    pub, pipe = _spawn_publisher(broker.port, root, devs, total, rate,
                                 seq0=before // len(devs) + 1)
    time.sleep(min(3.0, seconds / 4))  # the publisher's start and the pipeline's ramp
    cpu0, t0 = _cpu(me), time.monotonic()
    fresh: list[float] = []
    while pub.is_alive() and not pipe.poll():
        fresh.append(time.time() - _newest_ms(influx, db) / 1000)
        time.sleep(0.25)
    cpu_pct = 100 * (_cpu(me) - cpu0) / (time.monotonic() - t0)
    pipe.recv()
    pub.join(30)
    deadline = time.monotonic() + 30
    while (landed := _landed(influx, db) - before) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    fresh.sort()
    if not fresh:
        return float("nan"), float("nan"), cpu_pct, landed
    return statistics.median(fresh), fresh[int(len(fresh) * 0.9)], cpu_pct, landed


def measure(system: str, rnd: int, tmp: Path, registry: Path, devs: Sequence[Device],
            broker: Mosquitto, influx: Influxd, total: int, steady_rate: float,
            steady_s: float, profile: Path | None = None) -> Result:
    root = db = f"{'pw' if system == 'ParkWatch' else 'nr'}{rnd}"
    run_dir = tmp / root
    run_dir.mkdir()
    influx.query(f'CREATE DATABASE "{db}"')
    proc = (start_parkwatch(run_dir, registry, broker, influx, root, db, profile)
            if system == "ParkWatch"
            else start_node_red(run_dir, broker, influx, root, db))
    try:
        time.sleep(1.0)  # the subscription's round trip
        me = psutil.Process(proc.pid)
        others = [psutil.Process(p.proc.pid) for p in (broker, influx) if p.proc is not None]
        cpu0, others0 = _cpu(me), [_cpu(p) for p in others]
        pub, pipe = _spawn_publisher(broker.port, root, devs, total)
        landed, progress_at, last_seen = 0, time.monotonic(), -1
        while landed < total:
            time.sleep(0.2)
            landed = _landed(influx, db)
            if landed != last_seen:
                last_seen, progress_at = landed, time.monotonic()
            elif time.monotonic() - progress_at > 60:
                break  # stuck: report what landed
            if proc.poll() is not None:
                raise RuntimeError(f"{system} exited ({proc.returncode}); see {run_dir}")
        done = time.time()
        cpu = _cpu(me) - cpu0
        others_cpu = [_cpu(p) - c for p, c in zip(others, others0, strict=True)]
        pub_start, pub_end = pipe.recv()
        pub.join(30)
        shape = _shape(influx, db)
        nan = float("nan")
        fresh = (steady(proc, root, db, devs, broker, influx, steady_rate, steady_s, landed)
                 if steady_rate else (nan, nan, nan, 0))
        rss = _peak_rss_mb(proc.pid)  # over the process's whole life
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    elapsed = done - pub_start
    return Result(system, rnd, total, landed, total / elapsed if landed >= total else 0.0,
                  total / (pub_end - pub_start), cpu, 100 * cpu / elapsed, rss,
                  others_cpu[0], others_cpu[1], shape, steady_rate, *fresh)


def _shape(influx: Influxd, db: str) -> str:
    """Tag and field keys of the ``gas`` measurement: both systems must store the same shape."""
    tags: Any = influx.query('SHOW TAG KEYS FROM "gas"', db)
    fields: Any = influx.query('SHOW FIELD KEYS FROM "gas"', db)

    def keys(doc: Any) -> list[str]:
        series = doc["results"][0].get("series") or [{"values": []}]
        return sorted(str(v[0]) for v in series[0]["values"])

    return f"gas tags {','.join(keys(tags))}; fields {','.join(keys(fields))}"



# ---------------------------------------------------------------------------- report


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "gateway", "sensors", "rules", "bench"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report(args: argparse.Namespace, results: Sequence[Result]) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    pw = [r for r in results if r.system == "ParkWatch"]
    nr = [r for r in results if r.system == "Node-RED"]

    def runs(rs: Sequence[Result], fmt: str, attr: str, mean: bool = True) -> str:
        vals = [getattr(r, attr) for r in rs]
        return " / ".join(fmt.format(v) for v in vals) + (
            f" (mean {fmt.format(statistics.mean(vals))})" if mean and len(vals) > 1 else "")

    pw_rate = statistics.mean(r.rate for r in pw)
    nr_rate = statistics.mean(r.rate for r in nr)
    ratio = pw_rate / nr_rate if nr_rate else 0.0
    complete = all(r.landed >= r.published for r in results)
    return "\n".join([
        f"### {when} — ParkWatch vs Node-RED (issue 15), {args.messages} msgs, {args.devices} "
        f"devices, {args.rounds} interleaved rounds, {os.cpu_count()} cores, commit {_commit()}",
        f"`python -m bench.peer --devices {args.devices} --messages {args.messages} "
        f"--rounds {args.rounds} --steady-rate {args.steady_rate:.0f} "
        f"--steady-seconds {args.steady_seconds:.0f}`",
        "",
        "| measure (each run, in order) | Node-RED 4.1.8, tuned batch flow | ParkWatch |",
        "|---|---|---|",
        f"| **landed msgs/s, max rate** | {runs(nr, '{:,.0f}', 'rate')} "
        f"| {runs(pw, '{:,.0f}', 'rate')} (**{ratio:.2f}×**) |",
        f"| landed of {args.messages:,} published | {runs(nr, '{:,}', 'landed', False)} "
        f"| {runs(pw, '{:,}', 'landed', False)} |",
        f"| publisher offered msgs/s | {runs(nr, '{:,.0f}', 'publish_rate')} "
        f"| {runs(pw, '{:,.0f}', 'publish_rate')} |",
        f"| CPU of the process at max rate, % of one core | {runs(nr, '{:.0f}', 'cpu_pct')} "
        f"| {runs(pw, '{:.0f}', 'cpu_pct')} |",
        f"| CPU of the process at max rate, s | {runs(nr, '{:.1f}', 'cpu_s')} "
        f"| {runs(pw, '{:.1f}', 'cpu_s')} |",
        f"| peak RSS (whole run), MB | {runs(nr, '{:.0f}', 'peak_rss_mb')} "
        f"| {runs(pw, '{:.0f}', 'peak_rss_mb')} |",
        f"| freshness p50 at a steady {args.steady_rate:,.0f} msgs/s "
        f"(now − newest point in InfluxDB), s | {runs(nr, '{:.2f}', 'fresh_p50_s')} "
        f"| {runs(pw, '{:.2f}', 'fresh_p50_s')} |",
        f"| freshness p90 at {args.steady_rate:,.0f} msgs/s, s "
        f"| {runs(nr, '{:.2f}', 'fresh_p90_s')} | {runs(pw, '{:.2f}', 'fresh_p90_s')} |",
        f"| CPU at a steady {args.steady_rate:,.0f} msgs/s, % of one core "
        f"| {runs(nr, '{:.0f}', 'steady_cpu_pct')} | {runs(pw, '{:.0f}', 'steady_cpu_pct')} |",
        f"| landed of {int(args.steady_rate * args.steady_seconds):,} at the steady rate "
        f"| {runs(nr, '{:,}', 'steady_landed', False)} "
        f"| {runs(pw, '{:,}', 'steady_landed', False)} |",
        f"| mosquitto CPU at max rate, s | {runs(nr, '{:.1f}', 'broker_cpu_s')} "
        f"| {runs(pw, '{:.1f}', 'broker_cpu_s')} |",
        f"| influxd CPU at max rate, s | {runs(nr, '{:.1f}', 'influx_cpu_s')} "
        f"| {runs(pw, '{:.1f}', 'influx_cpu_s')} |",
        "",
        f"ParkWatch / Node-RED landed rate: **{ratio:.2f}×**"
        + ("" if complete else " — NOT every message landed in some run; the rate of such a "
                               "run is shown as 0"),
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=2,
                        help="ParkWatch then Node-RED, this many times")
    parser.add_argument("--steady-rate", type=float, default=10_000,
                        help="then, in the same process, a paced load at this rate for "
                             "freshness and CPU (0: skip)")
    parser.add_argument("--steady-seconds", type=float, default=20)
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="run in DIR (created, must not exist) and keep it: logs, configs")
    parser.add_argument("--record", action="store_true", help="append the result to RESULTS.md")
    parser.add_argument("--profile", type=Path, default=None, metavar="FILE",
                        help="ParkWatch only, one round, under cProfile: the stats go to FILE "
                             "(read them with python -m pstats FILE)")
    args = parser.parse_args(argv)
    if args.profile is not None:
        args.rounds, args.profile = 1, args.profile.resolve()
    node_red_command()  # install the peer before anything is started
    devs = devices(args.devices)
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True)
            tmp = args.keep.resolve()
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pw-peer-")))
        broker, influx = Mosquitto(tmp / "mosquitto"), Influxd(tmp / "influxd")
        broker.start()
        influx.start()
        try:
            registry = tmp / "registry.yaml"
            write_registry(registry, devs)
            print(f"peer bench: {args.messages} QoS 1 messages from {args.devices} devices, "
                  f"{args.rounds} rounds", flush=True)
            for rnd in range(1, args.rounds + 1):
                for system in ("ParkWatch",) if args.profile else ("ParkWatch", "Node-RED"):
                    r = measure(system, rnd, tmp, registry, devs, broker, influx, args.messages,
                                args.steady_rate, args.steady_seconds, args.profile)
                    print(f"  {system} round {rnd}: {r.rate:,.0f} msgs/s landed "
                          f"({r.landed}/{r.published}), CPU {r.cpu_pct:.0f} %, "
                          f"peak RSS {r.peak_rss_mb:.0f} MB; steady {r.steady_rate:.0f}/s: "
                          f"freshness p50 {r.fresh_p50_s:.2f} s, "
                          f"CPU {r.steady_cpu_pct:.0f} %, "
                          f"{r.steady_landed:,}/{int(r.steady_rate * args.steady_seconds):,} "
                          f"landed; {r.shape}",
                          flush=True)
                    results.append(r)
        finally:
            influx.stop()
            broker.stop()
    if args.profile is not None:
        print(f"profile: {args.profile}")
        return 0
    text = report(args, results)
    print(text)
    if args.record:
        with RESULTS.open("a") as fh:
            fh.write(text + "\n")
    steady_total = int(args.steady_rate * args.steady_seconds)
    return 0 if all(r.landed >= r.published and r.steady_landed >= steady_total
                    for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
