"""A partitioned ParkWatch on this box: instances, kills, and the exactly-once proof.

::

    load (QoS 1, retries until PUBACK)
      │ parks pa, pb
      ▼
    mosquitto (own, persistent) ──{root}/pa/#──▶ partition a: a1 (active), a2 (standby)
                                └─{root}/pb/#──▶ partition b: b1
    PostgreSQL: lease rows (and the shared alarm store when the backend exists)
    influxd (own) ◀── every instance, tag instance=…   webhook receiver ◀── every active

Each instance is a real ``parkwatch run`` process with its own state dir and HTTP port, so it
can be killed with SIGKILL and restarted as a supervisor would (it comes back as the standby).
The proofs are the chaos suite's (tests/support/chaos.py): every acknowledged reading in
InfluxDB exactly once, every fire raised once, every alarm change notified once.

Used by tests/test_partitions_failover.py and bench/failover.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.config import AlarmSettings
from gateway.tools.devservices import Influxd, Mosquitto, free_port
from tests.support.chaos import (
    KINDS,
    WEBHOOK_SECRET,
    GatewayProcess,
    Load,
    SimDevice,
    WebhookReceiver,
    alarm_problems,
    notification_problems,
    telemetry_problems,
)
from tests.support.paths import ROOT

ROOT_TOPIC = "cluster/parks"
DATABASE = "cluster"

#: Whether this checkout has the shared PostgreSQL alarm store (issue 16 point 3).
HAS_PG_STORE = "backend" in AlarmSettings.model_fields


class ClusterError(RuntimeError):
    """The harness could not go on (a wait ran out, an instance died on its own)."""


@dataclass(frozen=True)
class ParkDevice(SimDevice):
    park: str = ""

    def topic(self, suffix: str) -> str:
        return f"{ROOT_TOPIC}/{self.park}/{self.building}/{self.device}/{suffix}"


def write_registry(path: Path, parks: list[str], devices: int, alarm_devices: int
                   ) -> tuple[list[ParkDevice], list[ParkDevice]]:
    """Per park ``devices`` telemetry devices and ``alarm_devices`` smoke detectors, each
    detector alone in its zone; report intervals of a day (nobody looks silent)."""
    kinds = list(KINDS)
    tele: list[ParkDevice] = []
    smoke: list[ParkDevice] = []
    rows: list[dict[str, Any]] = []
    for park in parks:
        for i in range(devices):
            kind = kinds[i % len(kinds)]
            dev = ParkDevice(f"{park}-{kind[:2]}-{i:04d}", f"b{i % 4}", kind, park)
            tele.append(dev)
            rows.append({"device": dev.device, "park": park, "building": dev.building,
                         "floor": "1", "zone": f"z{i % 10}", "kind": kind,
                         "report_interval_s": 86400})
        for i in range(alarm_devices):
            dev = ParkDevice(f"{park}-sm-{i:04d}", f"b{i % 4}", "smoke", park)
            smoke.append(dev)
            rows.append({"device": dev.device, "park": park, "building": dev.building,
                         "floor": "2", "zone": f"fz{i}", "kind": "smoke",
                         "report_interval_s": 86400})
    path.write_text(yaml.safe_dump({"devices": rows}, sort_keys=False))
    return tele, smoke


@dataclass
class Instance:
    name: str
    partition: str
    http_port: int
    process: GatewayProcess

    def status(self) -> dict[str, Any] | None:
        """/healthz (the standby's or the active's); None while nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz",
                                        timeout=1) as r:
                body: dict[str, Any] = json.loads(r.read())
        except OSError as exc:
            if hasattr(exc, "read"):     # HTTPError 503 (degraded) still has the body
                with contextlib.suppress(Exception):
                    return dict(json.loads(exc.read()))
            return None
        return body

    def role(self) -> str | None:
        body = self.status()
        cluster = body.get("cluster") if body else None
        return str(cluster["role"]) if isinstance(cluster, dict) else None


@dataclass
class ClusterConfig:
    partitions: dict[str, list[str]] = field(
        default_factory=lambda: {"a": ["pa"], "b": ["pb"]})
    #: instance name -> partition; the first of a partition starts first (the active).
    instances: dict[str, str] = field(
        default_factory=lambda: {"a1": "a", "a2": "a", "b1": "b"})
    devices: int = 40               # telemetry devices per park
    alarm_devices: int = 6          # smoke detectors per park
    rate: float = 200.0             # telemetry messages per second, all parks together
    lease_s: float = 3.0
    renew_s: float = 0.75
    ack_after: str = "influx"
    single_box: bool = False        # one instance, no partitions (the throughput baseline)


class Cluster:
    """Starts broker, InfluxDB, receiver and the instances in ``workdir``; kills; proves."""

    def __init__(self, workdir: Path, config: ClusterConfig, *, pg_dsn: str) -> None:
        self.workdir, self.cfg, self.pg_dsn = workdir, config, pg_dsn
        self.broker = Mosquitto(workdir / "mosquitto")
        self.influxd = Influxd(workdir / "influxd")
        parks = sorted({p for ps in config.partitions.values() for p in ps})
        self.registry = workdir / "registry.yaml"
        self.tele, self.smoke = write_registry(self.registry, parks, config.devices,
                                               config.alarm_devices)
        self.receiver = WebhookReceiver(flaky_every=0)
        self.instances: dict[str, Instance] = {}
        self.load: Load | None = None
        self.resumed_s = 0.0

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Cluster:
        await asyncio.to_thread(self.broker.start)
        await asyncio.to_thread(self.influxd.start)
        await self.receiver.start()
        seen: set[str] = set()
        for name, partition in self.cfg.instances.items():
            self.instances[name] = self._instance(name, partition)
            self.instances[name].process.start()
            if partition not in seen:
                # The first of each partition becomes its active before the standby starts.
                seen.add(partition)
                await self.until(lambda n=name: self.instances[n].role() == "active"
                                 or (self.cfg.single_box and self._logged(n, "mqtt connected")),
                                 60, f"{name} active")
        for name in self.instances:
            await self.until(lambda n=name: self.cfg.single_box
                             or self.instances[n].role() in ("active", "standby"),
                             60, f"{name} up")
        self.load = Load(self.broker.port, list(self.tele), list(self.smoke), self.cfg.rate)
        return self

    async def start_load(self) -> None:
        assert self.load is not None
        await self.load.start()

    async def __aexit__(self, *exc: object) -> None:
        if self.load is not None:
            await self.load.close()
        for inst in self.instances.values():
            if inst.process.alive:
                await asyncio.to_thread(inst.process.stop, 30)
        await self.receiver.close()
        await asyncio.to_thread(self.broker.stop)
        await asyncio.to_thread(self.influxd.stop)

    def emergency_stop(self) -> None:
        for inst in self.instances.values():
            if inst.process.alive:
                inst.process.kill9()
        self.broker.kill()
        self.influxd.kill()

    def _instance(self, name: str, partition: str) -> Instance:
        port = free_port()
        doc: dict[str, Any] = {
            "instance": name,
            "registry": str(self.registry),
            "rules": str(ROOT / "config" / "rules"),
            "state_dir": str(self.workdir / f"state-{name}"),
            "shutdown_timeout_s": 5.0,
            "mqtt": {"url": self.broker.url, "topic_root": ROOT_TOPIC, "keepalive_s": 5,
                     "reconnect_min_s": 0.2, "reconnect_max_s": 2.0, "watchdog_s": 0},
            "influx": {"url": self.influxd.url, "version": "1", "database": DATABASE,
                       "max_backoff_s": 2.0, "batch_lines": 1000},
            "ingest": {"ack_after": self.cfg.ack_after},
            "observe": {"gateway_interval_s": 1.0},
            "http": {"enabled": True, "host": "127.0.0.1", "port": port},
            "notify": {"webhook_url": self.receiver.url, "webhook_secret": WEBHOOK_SECRET},
        }
        if not self.cfg.single_box:
            doc["cluster"] = {"partition": partition, "parks": self.cfg.partitions[partition],
                              "lease_s": self.cfg.lease_s, "renew_s": self.cfg.renew_s,
                              "lease_dsn": self.pg_dsn}
            if HAS_PG_STORE:
                doc["alarms"] = {"backend": "postgres", "postgres_dsn": self.pg_dsn}
        config = self.workdir / f"{name}.yaml"
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
        return Instance(name, partition, port,
                        GatewayProcess(config, self.workdir / f"{name}.log"))

    # -- faults --------------------------------------------------------------------------------

    def active_of(self, partition: str) -> Instance:
        for inst in self.instances.values():
            if inst.partition == partition and inst.process.alive and inst.role() == "active":
                return inst
        raise ClusterError(f"partition {partition} has no active")

    async def kill_active(self, partition: str, *, fire: Sequence[SimDevice] = (),
                          resumed: Callable[[Instance], bool] | None = None
                          ) -> tuple[Instance, Instance, float]:
        """kill -9 the partition's active (with fire alarms published around the kill);
        returns (killed, successor, seconds from the kill until the successor holds the
        lease). With ``resumed``, also waits until ``resumed(successor)`` and keeps the
        seconds from the kill in :attr:`resumed_s` — before the killed one restarts, whose
        start would otherwise be counted too."""
        assert self.load is not None
        victim = self.active_of(partition)
        standbys = [i for i in self.instances.values() if i.partition == partition
                    and i is not victim and i.process.alive]
        if not standbys:
            raise ClusterError(f"partition {partition} has no standby to take over")
        for dev in fire[:len(fire) // 2]:
            await self.load.event(dev, "fire_alarm")   # just before the kill
        await asyncio.to_thread(victim.process.kill9)
        killed_at = time.monotonic()
        for dev in fire[len(fire) // 2:]:
            await self.load.event(dev, "fire_alarm")   # while nobody is active
        successor: list[Instance] = []

        def taken_over() -> bool:
            for inst in standbys:
                if inst.role() == "active":
                    successor.append(inst)
                    return True
            return False
        await self.until(taken_over, 60, f"a standby of {partition} taking over", poll_s=0.05)
        took = time.monotonic() - killed_at
        if resumed is not None:
            await self.until(lambda: resumed(successor[0]), 60, "the new active resuming",
                             poll_s=0.05)
            self.resumed_s = time.monotonic() - killed_at
        # The supervisor restarts the killed instance: it comes back as the standby.
        victim.process.start()
        await self.until(lambda: victim.role() == "standby", 60, f"{victim.name} standby")
        return victim, successor[0], took

    async def pause_active(self, partition: str, paused_s: float) -> tuple[Instance, Instance]:
        """SIGSTOP the active for ``paused_s`` (a GC pause, a frozen VM), then SIGCONT: the
        standby takes over meanwhile, and the woken instance must neither acknowledge nor
        write anything (fenced), and exit non-zero. Returns (paused, successor)."""
        victim = self.active_of(partition)
        assert victim.process.proc is not None
        victim.process.proc.send_signal(signal.SIGSTOP)
        try:
            others = [i for i in self.instances.values()
                      if i.partition == partition and i is not victim]
            await self.until(lambda: any(i.role() == "active" for i in others), 60,
                             f"a standby of {partition} taking over from a paused active")
            await asyncio.sleep(max(0.0, paused_s))
        finally:
            victim.process.proc.send_signal(signal.SIGCONT)
        successor = next(i for i in others if i.role() == "active")
        return victim, successor

    # -- waiting -------------------------------------------------------------------------------

    async def until(self, cond: Any, timeout_s: float, what: str, poll_s: float = 0.2) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            result = await asyncio.to_thread(cond)
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {timeout_s:.0f}s waiting for {what}; "
                                   + self._tails())
            await asyncio.sleep(poll_s)

    def _logged(self, name: str, text: str) -> bool:
        log = self.instances[name].process.log
        return log.exists() and text in log.read_text(errors="replace")

    def _tails(self) -> str:
        out = []
        for inst in self.instances.values():
            lines = inst.process.log_since(0).splitlines()[-8:] if inst.process.log.exists() \
                else []
            out.append(f"--- {inst.name} (alive {inst.process.alive}):\n" + "\n".join(lines))
        return "\n".join(out)

    # -- the proof -----------------------------------------------------------------------------

    async def drain(self, timeout_s: float = 120) -> int:
        """Stop the load, wait for every PUBACK from the broker and for InfluxDB to hold every
        reading; returns how many were sent."""
        assert self.load is not None
        await self.load.stop_and_flush(timeout_s)
        total = sum(self.load.sent.values())
        await self.until(lambda: self.stored() >= total, timeout_s,
                         f"all {total} readings in InfluxDB")
        return total

    def query(self, q: str) -> list[dict[str, Any]]:
        result: Any = self.influxd.query(q, DATABASE)
        series: list[dict[str, Any]] = result["results"][0].get("series", [])
        return series

    def stored(self) -> int:
        try:
            series = self.query(f'SELECT count("seq") FROM '
                                f'{", ".join(chr(34) + k + chr(34) for k in KINDS)}')
        except OSError:
            return -1
        return sum(int(s["values"][0][1]) for s in series)

    def telemetry_problems(self) -> list[str]:
        assert self.load is not None
        seen: dict[str, tuple[int, int, int, int]] = {}
        for kind in KINDS:
            for s in self.query(f'SELECT count("seq"), count(distinct("seq")), min("seq"), '
                                f'max("seq") FROM "{kind}" GROUP BY "device"'):
                _, count, distinct, lo, hi = s["values"][0]
                seen[s["tags"]["device"]] = (int(count), int(distinct), int(lo), int(hi))
        return telemetry_problems(seen, self.load.sent, list(self.tele))

    def instances_in_influx(self) -> set[str]:
        return {str(row[1]) for s in self.query(
            'SHOW TAG VALUES FROM "gateway" WITH KEY = "instance"') for row in s["values"]}

    def alarm_problems(self) -> list[str]:
        """From the shared PostgreSQL store and the receiver (HAS_PG_STORE only)."""
        import psycopg

        assert self.load is not None
        with psycopg.connect(self.pg_dsn) as conn:
            alarms = conn.execute(
                "SELECT alarm_id, fingerprint, rule, device, state FROM alarms").fetchall()
            history = conn.execute("SELECT alarm_id, to_state FROM alarm_history").fetchall()
        changes = {(str(a), str(s)) for a, s in history}
        fired = {d: k for d, k in self.load.events.items()}
        return (alarm_problems(alarms, history, fired)
                + notification_problems(self.receiver.deliveries,
                                        {str(a[0]) for a in alarms}, changes))

    def fire_notifications(self) -> Counter[str]:
        """Delivered fire-alarm notifications per device (each must be 1)."""
        return Counter(d.device for d in self.receiver.delivered() if d.rule == "fire_alarm"
                       and d.state == "firing")
