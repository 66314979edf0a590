"""The chaos harness: a park of simulated devices, a gateway, and faults, then the proof.

::

    load (raw-socket QoS 1 publisher, retries until PUBACK)
      │  N devices, seq-numbered telemetry + fire_alarm/reset events from smoke detectors
      ▼
    mosquitto (own instance, persistence) ◀── FaultProxy "broker" ◀── gateway subprocess
                                                                      │  (kill -9, restart)
    influxd (own instance) ◀──────────── FaultProxy "influx" ◀────────┘
                                                                      │ catch-all webhook
    webhook receiver (aiohttp, checks signatures, records webhook-id) ◀┘

Faults, one after another in each round, each followed by a wait until the gateway has caught
up (which is also how recovery time is measured):

1. ``kill -9`` of the gateway, restart after a few seconds;
2. broker restart (graceful: mosquitto saves its persistent sessions);
3. network cut by the proxy (every connection reset, new ones refused);
4. network stall by the proxy (connected, nothing arrives) — only a keepalive or a watchdog in
   the gateway can notice;
5. InfluxDB stopped for ``influx_outage_s`` with a ``kill -9`` of the gateway in the middle;
6. InfluxDB link stalled while the broker link is cut.

Then it proves, from InfluxDB, the alarm store and the receiver: every PUBACKed message is in
InfluxDB exactly once (per device: count == sent, distinct seq == sent, seq 0..n-1), every
expected alarm fired exactly once (and resolved once when reset), no alarm has a second copy,
and every alarm state change was notified exactly once.

Used by ``tests/test_chaos.py`` (CI size) and ``bench/soak.py`` (longer).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from gateway.notify.channels.webhook import verify
from gateway.tools.devservices import Influxd, Mosquitto, free_port
from gateway.tools.simulator.publisher import MqttPublisher
from tests.support.faultproxy import FaultProxy
from tests.support.paths import ROOT

PARK = "cp"
DATABASE = "chaos"
TOPIC_ROOT = "chaos/parks"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#: Telemetry kinds and a benign reading for each: no threshold, rate or plausibility rule fires,
#: so every alarm in a run is one the harness caused on purpose.
KINDS: dict[str, tuple[str, float]] = {
    "water_pressure": ("pressure_mpa", 0.30), "heat": ("temperature_c", 25.0),
    "gas": ("lel_pct", 1.0), "co": ("co_ppm", 5.0), "water_level": ("level_m", 4.0)}
_POLL_S = 0.25


class ChaosError(RuntimeError):
    """The harness itself could not go on (a service would not start, a wait ran out)."""


@dataclass(frozen=True)
class ChaosConfig:
    devices: int = 500              # telemetry devices, spread over KINDS
    alarm_devices: int = 24         # smoke detectors, each alone in its zone, for fire alarms
    rate: float = 250.0             # telemetry messages per second, all devices together
    rounds: int = 1
    settle_s: float = 5.0           # steady traffic before each fault
    gateway_down_s: float = 3.0
    broker_down_s: float = 3.0
    drop_s: float = 8.0
    stall_s: float = 25.0
    influx_outage_s: float = 60.0
    influx_stall_s: float = 20.0
    keepalive_s: int = 5            # the gateway's MQTT keepalive: what notices a stall
    recover_timeout_s: float = 180.0
    flaky_webhook_every: int = 3    # the receiver answers 503 to the first try of every n-th id


@dataclass
class FaultRecord:
    name: str
    started_s: float                # since the run began
    healed_s: float = 0.0           # when the fault ended (the gateway restarted, link back, …)
    resumed_after_s: float | None = None   # heal → first message published after it stored
    drained_after_s: float | None = None   # heal → everything published before it stored
    backlog: int = 0                # messages published before the heal, not stored at the heal
    replay_rate: float | None = None       # points stored per second while draining
    detected: str = ""              # what the gateway logged about the fault, and when
    replay: bool = False            # the backlog was in the gateway's WAL: time its replay
    finding: str = ""               # non-empty when the gateway did not recover on its own

    @property
    def duration_s(self) -> float:
        return self.healed_s - self.started_s


@dataclass
class ChaosReport:
    config: ChaosConfig
    devices: int = 0
    telemetry_sent: int = 0
    events_sent: int = 0
    publisher_resent: int = 0
    publisher_reconnects: int = 0
    faults: list[FaultRecord] = field(default_factory=list)
    peak_wal_bytes: int = 0
    elapsed_s: float = 0.0
    telemetry_stored: int = 0
    events_stored: int = 0
    alarms_fired: int = 0
    alarms_resolved: int = 0
    webhooks_delivered: int = 0
    webhook_attempts: int = 0
    gateway_starts: int = 0
    problems: list[str] = field(default_factory=list)

    def render(self) -> str:
        c = self.config
        out = [
            f"chaos run: {self.devices} devices ({c.devices} telemetry, {c.alarm_devices} smoke "
            f"detectors), {c.rate:g} msg/s, {c.rounds} round(s), {self.elapsed_s:.0f} s",
            f"messages sent (PUBACKed): {self.telemetry_sent} telemetry + {self.events_sent} "
            f"events; publisher re-sent {self.publisher_resent} with DUP over "
            f"{self.publisher_reconnects} reconnect(s)",
            f"gateway processes started: {self.gateway_starts}",
            "faults injected:",
            f"  {'at':>7}  {'fault':<44} {'length':>7} {'resumed':>8} {'drained':>8}"
            f" {'backlog':>8} {'replay/s':>9}  detected",
        ]
        for f in self.faults:
            finding = f"  FINDING: {f.finding}" if f.finding else ""
            out.append(
                f"  {f.started_s:6.1f}s  {f.name:<44} {f.duration_s:6.1f}s "
                f"{_secs(f.resumed_after_s):>8} {_secs(f.drained_after_s):>8} {f.backlog:>8} "
                f"{_rate(f.replay_rate):>9}  {f.detected}{finding}")
        out += [
            f"peak WAL size on disk: {self.peak_wal_bytes / 1e6:.1f} MB",
            f"stored: telemetry {self.telemetry_stored}/{self.telemetry_sent}, events "
            f"{self.events_stored}/{self.events_sent}; alarms fired {self.alarms_fired}, "
            f"resolved {self.alarms_resolved}; webhooks delivered {self.webhooks_delivered} "
            f"({self.webhook_attempts} attempts)",
            "verdict: " + ("PASS: nothing lost, nothing doubled" if not self.problems
                           else f"FAIL: {len(self.problems)} problem(s)"),
        ]
        out += [f"  - {p}" for p in self.problems[:50]]
        return "\n".join(out)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _points_written(port: int) -> float | None:
    """``parkwatch_points_written_total`` from the gateway's /metrics; None while it is down."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except (OSError, ValueError):
        return None
    for line in text.splitlines():
        if line.startswith("parkwatch_points_written_total "):
            return float(line.split()[1])
    return None


def _replay_rate(samples: list[tuple[float, float]], backlog: int) -> float | None:
    """Points written per second while the backlog went out: from the last sample before the
    counter moved to the first sample covering the backlog (or its last move, if some of the
    backlog was written before the first sample)."""
    start: tuple[float, float] | None = None
    last: tuple[float, float] | None = None
    for (ta, pa), (tb, pb) in itertools.pairwise(samples):
        if pb < pa:
            return None   # the gateway restarted while draining: no clean measurement
        if pb > pa:
            start = start or (ta, pa)
            last = (tb, pb)
            if pb - start[1] >= backlog:
                break
    if start is None or last is None:
        return None
    return (last[1] - start[1]) / max(last[0] - start[0], 1e-3)


_NOTICES = ("mqtt disconnected", "watchdog:")
_LOG_TS = re.compile(r"ts=(\S+)Z")


def _first_notice(log: str, since: float) -> str:
    """The gateway's first log line saying it lost the broker, and how long after ``since``."""
    for line in log.splitlines():
        if any(n in line for n in _NOTICES) and (m := _LOG_TS.search(line)):
            at = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.UTC).timestamp()
            msg = line.split('msg="', 1)[-1].split('"', 1)[0]
            return f"after {at - since:.1f}s: {msg[:60]}"
    return "the gateway logged nothing"


# -- the park ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SimDevice:
    device: str
    building: str
    kind: str

    def topic(self, suffix: str) -> str:
        return f"{TOPIC_ROOT}/{PARK}/{self.building}/{self.device}/{suffix}"


def write_registry(path: Path, devices: int, alarm_devices: int
                   ) -> tuple[list[SimDevice], list[SimDevice]]:
    """A registry of ``devices`` telemetry devices and ``alarm_devices`` smoke detectors.

    Every report interval is a day, so no device ever looks silent during a run; each smoke
    detector has a zone of its own, so its fire alarm is never "confirmed" by a neighbour's.
    """
    kinds = list(KINDS)
    tele = [SimDevice(f"{kinds[i % len(kinds)][:2]}-{i:05d}", f"b{i % 8}", kinds[i % len(kinds)])
            for i in range(devices)]
    smoke = [SimDevice(f"sm-{i:05d}", f"b{i % 8}", "smoke") for i in range(alarm_devices)]
    rows = [{"device": d.device, "park": PARK, "building": d.building, "floor": "1",
             "zone": f"z{i % 20}", "kind": d.kind, "report_interval_s": 86400}
            for i, d in enumerate(tele)]
    rows += [{"device": d.device, "park": PARK, "building": d.building, "floor": "2",
              "zone": f"fz{i}", "kind": "smoke", "report_interval_s": 86400}
             for i, d in enumerate(smoke)]
    path.write_text(yaml.safe_dump({"devices": rows}, sort_keys=False))
    return tele, smoke


# -- the load ------------------------------------------------------------------------------------

class Load:
    """Publishes telemetry round-robin at a fixed rate, and events on request.

    A message counts as sent once it is handed to the publisher, which keeps it in its window
    and re-sends it after every reconnect until the broker PUBACKs it; the run ends with a flush
    that waits for every PUBACK, so at the end "sent" means "accepted by the broker".
    """

    def __init__(self, port: int, tele: list[SimDevice], smoke: list[SimDevice],
                 rate: float) -> None:
        self._pub = MqttPublisher("127.0.0.1", port, client_id=f"chaos-load-{os.getpid()}",
                                  max_inflight=1000, reconnect_max_s=1.0)
        self.tele, self.smoke, self.rate = tele, smoke, rate
        self.sent: Counter[str] = Counter()          # device -> telemetry messages
        self.events: dict[str, list[str]] = defaultdict(list)   # device -> event types sent
        self.telemetry_ts: list[int] = []            # device time of every telemetry message
        self._last_ts: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._lock = asyncio.Lock()                  # one publish at a time keeps seq in order

    @property
    def publisher(self) -> MqttPublisher:
        return self._pub

    async def start(self) -> None:
        await self._pub.connect()
        self._task = asyncio.create_task(self._run(), name="chaos-load")

    async def stop_and_flush(self, timeout_s: float) -> None:
        """Stop producing, then wait until the broker has acknowledged every message."""
        # A flag, not cancel(): a publish cancelled half-way may still go out uncounted.
        self._stopping = True
        if self._task is not None:
            await self._task
            self._task = None
        try:
            await self._pub.flush(timeout_s)
        except TimeoutError as exc:
            raise ChaosError(f"{self._pub.inflight} messages still not PUBACKed after "
                             f"{timeout_s:.0f}s (last error {self._pub.last_error})") from exc

    async def close(self) -> None:
        await self._pub.close()

    def _ts(self, device: str) -> int:
        # Device time in ms, strictly increasing per device: one point per message, so a lost
        # message is a missing point and a doubled one can only overwrite itself.
        ts = max(time.time_ns() // 1_000_000, self._last_ts.get(device, 0) + 1)
        self._last_ts[device] = ts
        return ts

    async def _run(self) -> None:
        started = time.monotonic()
        created = 0
        while not self._stopping:
            due = int((time.monotonic() - started) * self.rate)
            while created < due and not self._stopping:
                dev = self.tele[created % len(self.tele)]
                metric, base = KINDS[dev.kind]
                async with self._lock:
                    seq = self.sent[dev.device]
                    ts = self._ts(dev.device)
                    payload = {"ts": ts, "seq": seq,
                               "values": {metric: round(base + (seq % 17) * 0.001, 3)}}
                    # Stamped before the publish, which may wait for a window slot while the
                    # broker is down: the recovery measurement must count this message too.
                    self.telemetry_ts.append(ts)
                    await self._pub.publish(dev.topic("telemetry"), json.dumps(payload).encode())
                    self.sent[dev.device] += 1
                created += 1
            await asyncio.sleep(0.02)

    async def event(self, dev: SimDevice, kind: str) -> None:
        async with self._lock:
            seq = len(self.events[dev.device])
            payload: dict[str, object] = {"ts": self._ts(dev.device), "seq": seq, "type": kind,
                                          "detail": "chaos"}
            if kind != "reset":
                # A reset is panel-wide: it names no point, and clears the alarm of any point.
                payload["point"] = "L1-001"
            await self._pub.publish(dev.topic("event"), json.dumps(payload).encode())
            self.events[dev.device].append(kind)

    def sent_before(self, ts_ms: int) -> int:
        return sum(1 for ts in self.telemetry_ts if ts < ts_ms)


# -- the webhook receiver ------------------------------------------------------------------------

@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    alarm_id: str
    state: str
    rule: str
    device: str
    status: int
    signature_ok: bool


class WebhookReceiver:
    """Records every delivery attempt; answers 503 to the first try of every n-th id."""

    def __init__(self, flaky_every: int) -> None:
        self.deliveries: list[Delivery] = []
        self._flaky_every = flaky_every
        self._seen_ids: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        webhook_id = request.headers.get("webhook-id", "")
        doc = json.loads(body)
        first = webhook_id not in self._seen_ids
        self._seen_ids.setdefault(webhook_id, len(self._seen_ids))
        status = 200
        if first and self._flaky_every and self._seen_ids[webhook_id] % self._flaky_every == 0:
            status = 503      # a receiver having a bad moment: the gateway must retry
        self.deliveries.append(Delivery(
            webhook_id, str(doc.get("alarm_id")), str(doc.get("state")), str(doc.get("rule")),
            str(doc.get("device")), status, verify(WEBHOOK_SECRET, headers, body, time.time())))
        return web.Response(status=status)

    def delivered(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.status == 200]


# -- the gateway process -------------------------------------------------------------------------

class GatewayProcess:
    """``parkwatch run`` as a child process, so that it can be killed with SIGKILL."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        # A developer's PARKWATCH_* variables would override the chaos config.
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PARKWATCH_")}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.tools.cli", "run", "--config", str(self.config)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.starts += 1

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM and wait: the gateway drains, flushes and exits on its own."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def log_since(self, offset: int) -> str:
        with self.log.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")


def write_gateway_config(path: Path, *, registry: Path, state_dir: Path, mqtt_port: int,
                         influx_port: int, webhook_url: str, keepalive_s: int,
                         http_port: int) -> None:
    """The gateway's config: product defaults except where a CI run cannot wait for them."""
    doc: dict[str, Any] = {
        "instance": f"chaos{os.getpid()}",
        "registry": str(registry),
        "rules": str(ROOT / "config" / "rules"),
        "state_dir": str(state_dir),
        "mqtt": {"url": f"mqtt://127.0.0.1:{mqtt_port}", "topic_root": TOPIC_ROOT,
                 "keepalive_s": keepalive_s, "reconnect_min_s": 0.2, "reconnect_max_s": 5.0},
        "influx": {"url": f"http://127.0.0.1:{influx_port}", "version": "1",
                   "database": DATABASE, "max_backoff_s": 5.0},
        # /metrics (loopback only): the harness reads points written to time the replay.
        "http": {"enabled": True, "host": "127.0.0.1", "port": http_port},
        "notify": {"webhook_url": webhook_url, "webhook_secret": WEBHOOK_SECRET},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


# -- the harness ---------------------------------------------------------------------------------

class Chaos:
    """Starts everything in ``workdir``, runs the faults, proves the outcome."""

    def __init__(self, workdir: Path, config: ChaosConfig,
                 say: Callable[[str], None] = lambda line: None) -> None:
        self.workdir, self.cfg, self.say = workdir, config, say
        self.report = ChaosReport(config=config)
        self.broker = Mosquitto(workdir / "mosquitto")
        self.influxd = Influxd(workdir / "influxd")
        self.state_dir = workdir / "state"
        registry = workdir / "registry.yaml"
        self.tele, self.smoke = write_registry(registry, config.devices, config.alarm_devices)
        self.report.devices = len(self.tele) + len(self.smoke)
        self._registry = registry
        self.receiver = WebhookReceiver(config.flaky_webhook_every)
        self.broker_proxy: FaultProxy | None = None
        self.influx_proxy: FaultProxy | None = None
        self.gateway: GatewayProcess | None = None
        self.load: Load | None = None
        self._t0 = time.monotonic()
        self._monitor: asyncio.Task[None] | None = None
        self._alarm_queue = list(self.smoke)   # smoke detectors that have not alarmed yet
        self._to_reset: list[SimDevice] = []
        # Events go out in order from one task, so a fault step never waits on the broker.
        self._events: asyncio.Queue[tuple[SimDevice, str]] = asyncio.Queue()
        self._event_task: asyncio.Task[None] | None = None
        self.http_port = free_port()

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Chaos:
        await asyncio.to_thread(self.broker.start)
        await asyncio.to_thread(self.influxd.start)
        self.broker_proxy = FaultProxy(self.broker.port, name="broker")
        await self.broker_proxy.start()
        self.influx_proxy = FaultProxy(self.influxd.port, name="influx")
        await self.influx_proxy.start()
        await self.receiver.start()
        config = self.workdir / "gateway.yaml"
        write_gateway_config(config, registry=self._registry, state_dir=self.state_dir,
                             mqtt_port=self.broker_proxy.port, influx_port=self.influx_proxy.port,
                             webhook_url=self.receiver.url, keepalive_s=self.cfg.keepalive_s,
                             http_port=self.http_port)
        self.gateway = GatewayProcess(config, self.workdir / "gateway.log")
        self.gateway.start()
        # The gateway's persistent session must exist before devices publish, or the broker
        # has nowhere to keep their messages.
        await self._until(lambda: "mqtt connected" in self.gateway_log(0), 60,
                          "the gateway connected to the broker")
        self.load = Load(self.broker.port, self.tele, self.smoke, self.cfg.rate)
        await self.load.start()
        self._event_task = asyncio.create_task(self._publish_events(), name="chaos-events")
        self._t0 = time.monotonic()
        self._monitor = asyncio.create_task(self._watch_wal(), name="chaos-wal-monitor")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in (self._monitor, self._event_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.load is not None:
            await self.load.close()
        if self.gateway is not None and self.gateway.alive:
            await asyncio.to_thread(self.gateway.stop)
        for proxy in (self.broker_proxy, self.influx_proxy):
            if proxy is not None:
                await proxy.close()
        await self.receiver.close()
        await asyncio.to_thread(self.broker.stop)
        await asyncio.to_thread(self.influxd.stop)

    def emergency_stop(self) -> None:
        """Kill every child process, synchronously: for a run cut short by a timeout, when the
        event loop that would have stopped them gracefully is gone."""
        if self.gateway is not None and self.gateway.alive:
            self.gateway.kill9()
        self.broker.kill()
        self.influxd.kill()

    def gateway_log(self, offset: int) -> str:
        assert self.gateway is not None
        return self.gateway.log_since(offset) if self.gateway.log.exists() else ""

    def _now(self) -> float:
        return time.monotonic() - self._t0

    async def _until(self, cond: Callable[[], bool | Awaitable[bool]], timeout_s: float,
                     what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_gateway()
            result = cond()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            if time.monotonic() > deadline:
                raise ChaosError(f"timed out after {timeout_s:.0f}s waiting for {what}")
            await asyncio.sleep(_POLL_S)

    def _check_gateway(self) -> None:
        """A gateway that exits on its own is a finding, not something to wait out."""
        if self.gateway is None or self.gateway.proc is None:
            return
        code = self.gateway.proc.poll()
        if code is not None:
            tail = "\n".join(self.gateway_log(0).splitlines()[-20:])
            raise ChaosError(f"the gateway exited on its own with code {code}; its log ends:\n"
                             f"{tail}")

    async def _watch_wal(self) -> None:
        wal = self.state_dir / "wal"
        while True:
            total = 0
            # Walked, not listed: the log may keep one directory per priority stream.
            for folder, _, files in os.walk(wal):
                for name in files:
                    with contextlib.suppress(OSError):   # a segment deleted under our feet
                        total += os.stat(os.path.join(folder, name)).st_size
            self.report.peak_wal_bytes = max(self.report.peak_wal_bytes, total)
            await asyncio.sleep(_POLL_S)

    # -- InfluxDB queries (direct, never through the proxy) ------------------------------------

    async def _query(self, q: str) -> list[dict[str, Any]]:
        result: Any = await asyncio.to_thread(self.influxd.query, q, DATABASE)
        first = result["results"][0]
        if "error" in first:
            raise ChaosError(f"InfluxDB: {first['error']} for {q}")
        series: list[dict[str, Any]] = first.get("series", [])
        return series

    async def stored(self, *, before_ms: int | None = None, after_ms: int | None = None) -> int:
        """Telemetry points in InfluxDB with device time in [after_ms, before_ms)."""
        where = []
        if before_ms is not None:
            where.append(f"time < {before_ms}ms")
        if after_ms is not None:
            where.append(f"time >= {after_ms}ms")
        q = (f'SELECT count("seq") FROM {", ".join(chr(34) + k + chr(34) for k in KINDS)}'
             + (f" WHERE {' AND '.join(where)}" if where else ""))
        try:
            series = await self._query(q)
        except OSError:
            return -1   # InfluxDB is down (a fault of this run): unknown, not zero
        return sum(int(s["values"][0][1]) for s in series)

    # -- faults --------------------------------------------------------------------------------

    async def run(self) -> ChaosReport:
        """All rounds of faults, then the drain and the proof."""
        for n in range(self.cfg.rounds):
            self.say(f"round {n + 1}/{self.cfg.rounds}")
            for fault in (self.kill_gateway, self.restart_broker, self.cut_network,
                          self.stall_network, self.influx_outage_with_kill,
                          self.stall_influx_and_cut_broker):
                await asyncio.sleep(self.cfg.settle_s)
                self._alarm_step()
                record = await fault()
                await self._recover(record)
                self.say(f"  {record.name}: resumed {_secs(record.resumed_after_s)}, "
                         f"drained {_secs(record.drained_after_s)}, backlog {record.backlog}, "
                         f"replay {_rate(record.replay_rate)}/s {record.detected}"
                         + (f", FINDING {record.finding}" if record.finding else ""))
        await self._finish()
        return self.report

    def _alarm_step(self) -> None:
        """Two new fire alarms, and a reset for one earlier alarm, around every fault."""
        for _ in range(2):
            if self._alarm_queue:
                dev = self._alarm_queue.pop(0)
                self._events.put_nowait((dev, "fire_alarm"))
                self._to_reset.append(dev)
        if len(self._to_reset) > 2:
            self._events.put_nowait((self._to_reset.pop(0), "reset"))

    async def _publish_events(self) -> None:
        assert self.load is not None
        while True:
            dev, kind = await self._events.get()
            await self.load.event(dev, kind)
            self._events.task_done()

    def _begin(self, name: str) -> FaultRecord:
        record = FaultRecord(name=name, started_s=self._now())
        self.report.faults.append(record)
        self.say(f"  t+{record.started_s:.0f}s {name}")
        return record

    async def _restart_gateway_after(self, down_s: float) -> None:
        assert self.gateway is not None
        await asyncio.to_thread(self.gateway.kill9)
        await asyncio.sleep(down_s)
        self.gateway.start()

    async def kill_gateway(self) -> FaultRecord:
        record = self._begin(f"kill -9 gateway, restart after {self.cfg.gateway_down_s:g}s")
        await self._restart_gateway_after(self.cfg.gateway_down_s)
        record.healed_s = self._now()
        return record

    async def restart_broker(self) -> FaultRecord:
        record = self._begin(f"broker restart ({self.cfg.broker_down_s:g}s down)")
        await asyncio.to_thread(self.broker.stop)
        await asyncio.sleep(self.cfg.broker_down_s)
        self._alarm_step()   # queued in the publisher until the broker is back
        await asyncio.to_thread(self.broker.start)
        record.healed_s = self._now()
        return record

    async def cut_network(self) -> FaultRecord:
        assert self.broker_proxy is not None
        record = self._begin(f"network cut gateway-broker ({self.cfg.drop_s:g}s)")
        self.broker_proxy.drop()
        await asyncio.sleep(self.cfg.drop_s)
        self.broker_proxy.resume()
        record.healed_s = self._now()
        return record

    async def stall_network(self) -> FaultRecord:
        assert self.broker_proxy is not None
        assert self.gateway is not None
        record = self._begin(f"network stall gateway-broker ({self.cfg.stall_s:g}s)")
        offset = self.gateway.log_size()
        stalled_at = time.time()
        self.broker_proxy.stall()
        await asyncio.sleep(self.cfg.stall_s / 2)
        self._alarm_step()   # fire alarms published while the gateway hears nothing
        await asyncio.sleep(self.cfg.stall_s / 2)
        self.broker_proxy.resume()
        record.healed_s = self._now()
        record.detected = _first_notice(self.gateway_log(offset), stalled_at)
        return record

    async def influx_outage_with_kill(self) -> FaultRecord:
        cfg = self.cfg
        record = self._begin(f"InfluxDB stopped {cfg.influx_outage_s:g}s, kill -9 gateway "
                             "midway")
        record.replay = True
        await asyncio.to_thread(self.influxd.stop)
        started = time.monotonic()
        await asyncio.sleep(cfg.influx_outage_s / 2)
        self._alarm_step()
        await self._restart_gateway_after(cfg.gateway_down_s)
        await asyncio.sleep(max(0.0, cfg.influx_outage_s - (time.monotonic() - started)))
        await asyncio.to_thread(self.influxd.start)
        record.healed_s = self._now()
        return record

    async def stall_influx_and_cut_broker(self) -> FaultRecord:
        assert self.influx_proxy is not None
        assert self.broker_proxy is not None
        cfg = self.cfg
        record = self._begin(f"InfluxDB link stalled {cfg.influx_stall_s:g}s + broker link "
                             f"cut {cfg.drop_s:g}s")
        record.replay = True
        self.influx_proxy.stall()
        await asyncio.sleep(max(0.0, (cfg.influx_stall_s - cfg.drop_s) / 2))
        self.broker_proxy.drop()
        await asyncio.sleep(cfg.drop_s)
        self.broker_proxy.resume()
        await asyncio.sleep(max(0.0, (cfg.influx_stall_s - cfg.drop_s) / 2))
        self.influx_proxy.resume()
        record.healed_s = self._now()
        return record

    # -- recovery ------------------------------------------------------------------------------

    async def _recover(self, record: FaultRecord) -> None:
        """Measure how long the gateway takes to catch up; rescue it if it never does."""
        healed_at = time.monotonic()
        samples: list[tuple[float, float]] = []
        sampler = asyncio.create_task(self._sample_points_written(samples))
        try:
            await self._catch_up(record, healed_at, time.time_ns() // 1_000_000)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        record.drained_after_s = time.monotonic() - healed_at
        if record.replay and record.backlog:
            record.replay_rate = _replay_rate(samples, record.backlog)

    async def _catch_up(self, record: FaultRecord, healed_at: float, heal_ms: int) -> None:
        assert self.load is not None
        # Let the load stamp its last message before the heal, then count what is owed.
        await asyncio.sleep(0.05)
        expected = self.load.sent_before(heal_ms)
        record.backlog = max(0, expected - await self._stored_when_up(heal_ms, healed_at))

        async def drained() -> bool:
            if record.resumed_after_s is None and await self.stored(after_ms=heal_ms) > 0:
                record.resumed_after_s = time.monotonic() - healed_at
            return await self.stored(before_ms=heal_ms) >= expected

        try:
            await self._until(drained, self.cfg.recover_timeout_s,
                              f"recovery from {record.name}")
        except ChaosError:
            assert self.gateway is not None
            record.finding = (
                f"not caught up {self.cfg.recover_timeout_s:.0f}s after the fault ended "
                f"(stored {await self.stored(before_ms=heal_ms)} of {expected}); gateway "
                f"alive: {self.gateway.alive}; rescued by kill -9 and restart")
            self.report.problems.append(f"{record.name}: {record.finding}")
            await self._restart_gateway_after(0)
            await self._until(drained, self.cfg.recover_timeout_s,
                              f"recovery from {record.name} after a rescue restart")

    async def _sample_points_written(self, out: list[tuple[float, float]]) -> None:
        while True:
            value = await asyncio.to_thread(_points_written, self.http_port)
            if value is not None:
                out.append((time.monotonic(), value))
            await asyncio.sleep(0.1)

    async def _stored_when_up(self, heal_ms: int, healed_at: float) -> int:
        """Points stored before the heal, at the first moment InfluxDB answers."""
        while True:
            before = await self.stored(before_ms=heal_ms)
            if before >= 0:
                return before
            if time.monotonic() - healed_at > self.cfg.recover_timeout_s:
                raise ChaosError("InfluxDB did not answer after the fault ended")
            await asyncio.sleep(_POLL_S)

    # -- the end: drain and prove --------------------------------------------------------------

    async def _finish(self) -> None:
        assert self.load is not None
        assert self.gateway is not None
        # Every smoke detector still waiting gets its alarm now, so each run covers all of them.
        while self._alarm_queue:
            self._alarm_step()
        await self._events.join()
        self.say("draining: waiting for every PUBACK, then for InfluxDB to hold everything")
        await self.load.stop_and_flush(self.cfg.recover_timeout_s)
        total = sum(self.load.sent.values())
        await self._until(lambda: self._stored_all(total), self.cfg.recover_timeout_s,
                          f"all {total} telemetry messages in InfluxDB")
        expected_changes = sum(1 + (kinds.count("reset") > 0)
                               for kinds in self.load.events.values())
        await self._until(lambda: len({(d.alarm_id, d.state) for d in self.receiver.delivered()
                                       if d.rule == "fire_alarm"}) >= expected_changes,
                          self.cfg.recover_timeout_s, "every fire alarm change notified")
        # Proving an absence needs a window: a duplicate would come within a retry or two.
        await asyncio.sleep(5)
        code = await asyncio.to_thread(self.gateway.stop)
        if code != 0:
            self.report.problems.append(f"gateway exit code on SIGTERM: {code}")
        self.report.elapsed_s = self._now()
        self.report.gateway_starts = self.gateway.starts
        pub = self.load.publisher
        self.report.telemetry_sent = total
        self.report.events_sent = sum(len(v) for v in self.load.events.values())
        self.report.publisher_resent = pub.resent
        self.report.publisher_reconnects = pub.reconnects
        await self._prove_telemetry()
        await self._prove_events()
        self._prove_alarms()
        await self._prove_alarm_points()

    async def _stored_all(self, total: int) -> bool:
        return await self.stored() >= total

    async def _prove_telemetry(self) -> None:
        assert self.load is not None
        seen: dict[str, tuple[int, int, int, int]] = {}
        for kind in KINDS:
            series = await self._query(
                f'SELECT count("seq"), count(distinct("seq")), min("seq"), max("seq") '
                f'FROM "{kind}" GROUP BY "device"')
            for s in series:
                _, count, distinct, lo, hi = s["values"][0]
                seen[s["tags"]["device"]] = (int(count), int(distinct), int(lo), int(hi))
        self.report.telemetry_stored = sum(v[0] for v in seen.values())
        self.report.problems += telemetry_problems(seen, self.load.sent, self.tele)

    async def _prove_events(self) -> None:
        assert self.load is not None
        series = await self._query(
            'SELECT count("seq"), count(distinct("seq")) FROM "events" GROUP BY "device"')
        got = {s["tags"]["device"]: (int(s["values"][0][1]), int(s["values"][0][2]))
               for s in series}
        self.report.events_stored = sum(v[0] for v in got.values())
        for device, kinds in self.load.events.items():
            n = len(kinds)
            if got.get(device) != (n, n):
                self.report.problems.append(f"events {device}: sent {n}, stored "
                                            f"{got.get(device)}")

    def _prove_alarms(self) -> None:
        """From the gateway's own store, read after it stopped, and the receiver's record."""
        assert self.load is not None
        conn = sqlite3.connect(f"file:{self.state_dir / 'alarms.sqlite3'}?mode=ro", uri=True)
        try:
            alarms = conn.execute(
                "SELECT alarm_id, fingerprint, rule, device, state FROM alarms").fetchall()
            history = conn.execute("SELECT alarm_id, to_state FROM alarm_history").fetchall()
        finally:
            conn.close()
        self.report.problems += alarm_problems(alarms, history, self.load.events)
        changes = Counter((str(a), str(s)) for a, s in history)
        self.report.alarms_fired = sum(1 for (_, s) in changes if s == "firing")
        self.report.alarms_resolved = sum(1 for (_, s) in changes if s == "resolved")
        self.report.webhooks_delivered = len(self.receiver.delivered())
        self.report.webhook_attempts = len(self.receiver.deliveries)
        self.report.problems += notification_problems(
            self.receiver.deliveries, {str(a[0]) for a in alarms}, set(changes))

    async def _prove_alarm_points(self) -> None:
        """The `alarms` measurement: one alarm_id per fire alarm, one point per state change."""
        series = await self._query('SELECT "alarm_id", "state" FROM "alarms" '
                                   'WHERE "rule" = \'fire_alarm\' GROUP BY "device"')
        for s in series:
            ids = {row[1] for row in s["values"]}
            states = Counter(row[2] for row in s["values"])
            if len(ids) != 1 or states["firing"] != 1 or states["resolved"] > 1:
                self.report.problems.append(
                    f"alarms measurement for {s['tags']['device']}: ids {sorted(ids)}, "
                    f"states {dict(states)}")


# -- the proofs, shared with the partitioned runs (tests/support/cluster.py) -----------------------

def telemetry_problems(seen: dict[str, tuple[int, int, int, int]], sent: Counter[str],
                       devices: list[SimDevice]) -> list[str]:
    """Per device, InfluxDB's (count, distinct seq, min, max) must be (n, n, 0, n-1): every
    acknowledged message once, none twice, none from nowhere."""
    problems = []
    for dev in devices:
        n = sent[dev.device]
        got = seen.get(dev.device, (0, 0, -1, -1))
        if got != (n, n, 0, n - 1) and not (n == 0 and got[0] == 0):
            problems.append(f"telemetry {dev.device}: sent seq 0..{n - 1}, stored count "
                            f"{got[0]}, distinct {got[1]}, min {got[2]}, max {got[3]}")
    extra = set(seen) - {d.device for d in devices}
    if extra:
        problems.append(f"telemetry from devices never simulated: {extra}")
    return problems


def alarm_problems(alarms: list[tuple[Any, ...]], history: list[tuple[Any, ...]],
                   events: dict[str, list[str]]) -> list[str]:
    """From the alarm store's rows (alarm_id, fingerprint, rule, device, state) and history
    (alarm_id, to_state): one alarm per fingerprint, each state once, every fire raised (and
    resolved if reset), no fire nobody raised."""
    problems = []
    for fp, n in Counter(a[1] for a in alarms).items():
        if n > 1:
            problems.append(f"alarm {fp} exists {n} times")
    for (alarm_id, state), n in Counter((a, s) for a, s in history).items():
        if n > 1:
            problems.append(f"alarm {alarm_id} went {state} {n} times")
    fire = {a[3]: a for a in alarms if a[2] == "fire_alarm"}
    for device, kinds in events.items():
        alarm = fire.get(device)
        want = "resolved" if "reset" in kinds else "firing"
        if alarm is None:
            problems.append(f"fire alarm of {device} lost")
        elif alarm[4] != want:
            problems.append(f"fire alarm of {device} is {alarm[4]}, not {want}")
    unexpected = set(fire) - set(events)
    if unexpected:
        problems.append(f"fire alarms nobody raised: {sorted(unexpected)}")
    return problems


def notification_problems(deliveries: list[Delivery], alarm_ids: set[str],
                          changes: set[tuple[str, str]]) -> list[str]:
    """Each alarm state change reached the receiver exactly once, under one webhook-id."""
    problems = []
    delivered = [d for d in deliveries if d.status == 200]
    for wid, n in Counter(d.webhook_id for d in delivered).items():
        if n > 1:
            problems.append(f"webhook {wid} delivered {n} times")
    ids_per_change: dict[tuple[str, str], set[str]] = defaultdict(set)
    for d in delivered:
        ids_per_change[(d.alarm_id, d.state)].add(d.webhook_id)
        if d.alarm_id not in alarm_ids:
            problems.append(f"webhook for unknown alarm {d.alarm_id}")
    for d in deliveries:
        if not d.signature_ok:
            problems.append(f"webhook {d.webhook_id}: bad signature")
    for (alarm_id, state) in changes:
        ids = ids_per_change.get((alarm_id, state), set())
        if len(ids) != 1:
            problems.append(f"alarm {alarm_id} {state}: notified {len(ids)} times (want 1)")
    return problems
