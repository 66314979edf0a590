"""End to end on a real mosquitto and a real influxd: readings land once, rejects are counted.

The gateway runs in-process (or as a subprocess where it must be killed); messages go through the
broker exactly as a device would send them.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from gateway.tools.devservices import Influxd, Mosquitto
from gateway.tools.simulator.publisher import MqttPublisher
from sensors.base import RejectReason
from sensors.registry import Device, Registry
from tests.support.gateway import make_settings, running_gateway
from tests.support.ids import unique
from tests.support.influx import influx_count, influx_rows
from tests.support.paths import ROOT
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

# Device time a day ago: inside the trusted window (7 days back, 5 minutes ahead).
BASE_TS = int(time.time()) - 86400
_METRIC = {"water_pressure": ("pressure_mpa", 0.30), "heat": ("temperature_c", 25.0),
           "gas": ("lel_pct", 1.0), "water_level": ("level_m", 4.0)}


def _devices(registry: Registry) -> list[Device]:
    return [d for d in registry if d.kind in _METRIC]


def _message(root: str, dev: Device, seq: int) -> tuple[str, bytes]:
    metric, base = _METRIC[dev.kind]
    value = round(base + (seq % 17) * 0.001, 3)
    payload = {"ts": BASE_TS + seq, "seq": seq, "values": {metric: value}, "battery_pct": 80}
    return f"{root}/{dev.park}/{dev.building}/{dev.device}/telemetry", json.dumps(payload).encode()


def _plan(registry: Registry, root: str, total: int) -> list[tuple[str, bytes]]:
    devs = _devices(registry)
    return [_message(root, devs[i % len(devs)], i // len(devs)) for i in range(total)]


async def _publish(port: int, messages: list[tuple[str, bytes]],
                   on_progress: Any = None) -> None:
    async with MqttPublisher("127.0.0.1", port, client_id=unique("pub")) as pub:
        for i, (topic, payload) in enumerate(messages):
            await pub.publish(topic, payload, qos=1)
            if on_progress is not None:
                await on_progress(i)
        await pub.flush(60)


def _per_device_counts(influxd: Influxd, db: str, kind: str) -> dict[str, int]:
    result: Any = influxd.query(f'SELECT count("seq") FROM "{kind}" GROUP BY "device"', db)
    return {s["tags"]["device"]: int(s["values"][0][1])
            for s in result["results"][0].get("series", [])}


def _expected_counts(registry: Registry, total: int) -> dict[str, dict[str, int]]:
    devs = _devices(registry)
    out: dict[str, dict[str, int]] = {}
    for i in range(total):
        dev = devs[i % len(devs)]
        out.setdefault(dev.kind, {}).setdefault(dev.device, 0)
        out[dev.kind][dev.device] += 1
    return out


def _assert_all_landed(influxd: Influxd, db: str, registry: Registry, total: int) -> None:
    for kind, expected in _expected_counts(registry, total).items():
        assert _per_device_counts(influxd, db, kind) == expected, kind


async def _await_landed(influxd: Influxd, db: str, registry: Registry, total: int,
                        timeout_s: float = 90) -> None:
    expected = _expected_counts(registry, total)

    def landed() -> bool:
        try:
            return all(_per_device_counts(influxd, db, kind) == counts
                       for kind, counts in expected.items())
        except OSError:
            return False

    await wait_for(lambda: asyncio.to_thread(landed), timeout_s=timeout_s,
                   what=f"{total} readings in InfluxDB", interval=0.5)


async def test_ten_thousand_readings_land_exactly_once(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry) -> None:
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url)
    root, db = settings.mqtt.topic_root, settings.influx.database
    total = 10_000
    async with running_gateway(settings, sample_registry) as gw:
        await _publish(mosquitto.port, _plan(sample_registry, root, total))
        await _await_landed(influxd, db, sample_registry, total)
        assert gw.metrics.value("parkwatch_messages_accepted_total", type="telemetry") == total
    _assert_all_landed(influxd, db, sample_registry, total)

    # One point checked field by field: measurement, every tag, field types, timestamp.
    dev = _devices(sample_registry)[0]
    metric, base = _METRIC[dev.kind]
    rows = influx_rows(influxd, db, f'SELECT * FROM "{dev.kind}" WHERE "device" = '
                                    f"'{dev.device}' AND time = {(BASE_TS + 5) * 1000}ms")
    result: Any = influxd.query(f'SELECT * FROM "{dev.kind}" WHERE "device" = '
                                f"'{dev.device}' AND time = {(BASE_TS + 5) * 1000}ms", db)
    columns = result["results"][0]["series"][0]["columns"]
    row = dict(zip(columns, rows[0], strict=True))
    assert row["time"] == (BASE_TS + 5) * 1000
    assert row["park"] == dev.park
    assert row["building"] == dev.building
    assert row["floor"] == dev.floor
    assert row["zone"] == dev.zone
    assert row["tenant"] == dev.tenant
    assert math.isclose(row[metric], round(base + 5 * 0.001, 3))
    assert row["seq"] == 5
    assert row["battery_pct"] == 80
    fields: Any = influxd.query(f'SHOW FIELD KEYS FROM "{dev.kind}"', db)
    types = dict(fields["results"][0]["series"][0]["values"])
    assert types == {metric: "float", "battery_pct": "float", "seq": "integer"}


def _garbage(registry: Registry, root: str) -> list[tuple[str, bytes, RejectReason]]:
    wp = next(d for d in registry if d.kind == "water_pressure")
    other_building = next(d.building for d in registry if d.building != wp.building)
    tel = f"{root}/{wp.park}/{wp.building}/{wp.device}/telemetry"
    ok = b'{"values": {"pressure_mpa": 0.3}}'
    return [
        (tel, b'{"values": {"pressure_mpa": 0.3}, "pad": "' + b"x" * 2_000_000 + b'"}',
         RejectReason.OVERSIZE),
        (tel, b'{"values": {"pressure_mpa": 0.3\xff}}', RejectReason.BAD_UTF8),
        (tel, b'{"values": {"pressure_mpa": 0.32}', RejectReason.BAD_JSON),
        (f"{root}/{wp.park}/{wp.building}/{wp.device}/telemetri", ok, RejectReason.BAD_TOPIC),
        (f"{root}/{wp.park}/{wp.building}/wp,0017/telemetry", ok, RejectReason.BAD_ID),
        (f"{root}/{wp.park}/{wp.building}/wp-9999/telemetry", ok, RejectReason.UNKNOWN_DEVICE),
        (f"{root}/{wp.park}/{other_building}/{wp.device}/telemetry", ok,
         RejectReason.TOPIC_MISMATCH),
        (tel, b'{"values": [1, 2]}', RejectReason.SCHEMA),
        (tel, b'{"values": {"pressure_psi": 46.4}}', RejectReason.UNKNOWN_METRIC),
        (tel, b'{"values": {"pressure_mpa": "0.32"}}', RejectReason.TYPE),
        (tel, b'{"pressure": 3.2, "unit": "atm"}', RejectReason.UNIT),
        (tel, b'{"values": {"pressure_mpa": 99.0}}', RejectReason.RANGE),
        (tel, b'{"values": {"pressure_mpa": NaN}}', RejectReason.NAN),
    ]


class _Collector:
    """A paho subscriber in its own thread: test-side only, the gateway never uses threads."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.first_seen: dict[str, float] = {}  # topic -> wall time of its first message
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("col"))
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self.first_seen.setdefault(msg.topic, time.time())

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def deadletters(mosquitto: Mosquitto) -> Iterator[_Collector]:
    collector = _Collector(mosquitto.port, "parkwatch/deadletter/#")
    yield collector
    collector.close()


async def test_every_rejection_is_deadlettered_and_counted_and_flow_continues(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry,
        deadletters: _Collector) -> None:
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url)
    root, db = settings.mqtt.topic_root, settings.influx.database
    garbage = _garbage(sample_registry, root)
    # rate_limited needs a flood: tests/test_hostile_input.py covers it.
    assert {reason for *_, reason in garbage} == set(RejectReason) - {RejectReason.RATE_LIMITED}
    good = _plan(sample_registry, root, 200)
    # Garbage interleaved with good traffic: the good must all land regardless.
    mixed: list[tuple[str, bytes]] = []
    for i, msg in enumerate(good):
        mixed.append(msg)
        if i % 15 == 0 and i // 15 < len(garbage):
            topic, payload, _ = garbage[i // 15]
            mixed.append((topic, payload))
    async with running_gateway(settings, sample_registry) as gw:
        await _publish(mosquitto.port, mixed)
        await _await_landed(influxd, db, sample_registry, 200)
        mine = settings.instance.encode()
        await wait_for(lambda: sum(mine in payload for _, payload in deadletters.snapshot())
                       >= len(garbage), timeout_s=20, what="a dead letter for every reason")
        for _, _, reason in garbage:
            assert gw.metrics.value("parkwatch_messages_rejected_total",
                                    reason=reason.value) == 1, reason
        await wait_for(lambda: gw.metrics.value("parkwatch_deadletter_published_total")
                       == len(garbage), timeout_s=10, what="dead letters acknowledged")
        assert gw.metrics.value("parkwatch_unacked_in_flight") == 0
    docs = [(t, json.loads(p)) for t, p in deadletters.snapshot()]
    by_reason = {doc["reason"]: (topic, doc) for topic, doc in docs
                 if doc.get("instance") == settings.instance}
    assert set(by_reason) == {r.value for r in RejectReason} - {"rate_limited"}
    topic, doc = by_reason["range"]
    assert topic == "parkwatch/deadletter/range"
    assert set(doc) >= {"reason", "detail", "topic", "received_at", "payload_b64"}
    assert "pressure_mpa" in doc["detail"]
    oversize = by_reason["oversize"][1]
    assert oversize["payload_truncated"] is True
    assert oversize["payload_bytes"] > 2_000_000


async def test_broker_restart_mid_run_loses_nothing(
        tmp_path: Path, influxd: Influxd, sample_registry: Registry) -> None:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    try:
        settings = make_settings(tmp_path, mqtt_url=broker.url, influx_url=influxd.url)
        total = 4000

        async def restart_halfway(i: int) -> None:
            if i == total // 2:
                await asyncio.to_thread(broker.restart)

        async with running_gateway(settings, sample_registry) as gw:
            await _publish(broker.port, _plan(sample_registry, settings.mqtt.topic_root, total),
                           on_progress=restart_halfway)
            await _await_landed(influxd, settings.influx.database, sample_registry, total)
            assert gw.metrics.value("parkwatch_mqtt_reconnects_total") >= 1
    finally:
        broker.stop()


async def test_influx_restart_mid_run_loses_nothing(
        tmp_path: Path, mosquitto: Mosquitto, sample_registry: Registry) -> None:
    server = Influxd(tmp_path / "influx")
    server.start()
    try:
        settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=server.url)
        total = 4000

        async def outage(i: int) -> None:
            if i == total // 4:
                await asyncio.to_thread(server.stop)
            if i == 3 * total // 4:
                await asyncio.to_thread(server.start)

        async with running_gateway(settings, sample_registry):
            await _publish(mosquitto.port, _plan(sample_registry, settings.mqtt.topic_root,
                                                 total), on_progress=outage)
            await _await_landed(server, settings.influx.database, sample_registry, total)
    finally:
        server.stop()


def _write_config(tmp_path: Path, mqtt_url: str, influx_url: str) -> tuple[Path, str, str]:
    settings = make_settings(tmp_path, mqtt_url=mqtt_url, influx_url=influx_url)
    doc = json.loads(settings.model_dump_json())
    doc["http"] = {"enabled": False}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, settings.mqtt.topic_root, settings.influx.database


def _spawn_gateway(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "gateway.tools.cli", "run", "--config",
                                 str(config)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def test_kill_9_mid_run_then_restart_loses_nothing(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry) -> None:
    config, root, db = _write_config(tmp_path, mosquitto.url, influxd.url)
    log = tmp_path / "gateway.log"
    total = 6000
    proc = _spawn_gateway(config, log)
    try:
        # Let the gateway create its persistent session before anything is published.
        await wait_for(lambda: b"mqtt connected" in log.read_bytes(), timeout_s=30,
                       what="gateway subprocess connected")
        killed = False

        async def kill_midway(i: int) -> None:
            nonlocal killed, proc
            if i == total // 2:
                await wait_for(lambda: influx_count(influxd, db, "water_pressure", "seq") > 0,
                               timeout_s=30, what="some readings stored before the kill")
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                killed = True
                proc = _spawn_gateway(config, log)

        await _publish(mosquitto.port, _plan(sample_registry, root, total),
                       on_progress=kill_midway)
        assert killed
        await _await_landed(influxd, db, sample_registry, total)
        # Per-device seq is contiguous: 0..n-1 with no gap and no duplicate series.
        for dev in _devices(sample_registry)[:5]:
            seqs = [int(r[1]) for r in influx_rows(
                influxd, db, f'SELECT "seq" FROM "{dev.kind}" WHERE "device" = \'{dev.device}\'')]
            assert seqs == list(range(len(seqs))), dev.device
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_qos0_flood_with_a_tiny_inbox_pauses_reading_and_loses_nothing(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry) -> None:
    # QoS 0 has no broker-side window, so the inbox bound is what protects memory: reading
    # pauses when it is full and resumes as it drains.
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                             ingest={"queue_size": 50, "commit_batch": 20})
    total = 3000
    async with running_gateway(settings, sample_registry):
        async with MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("pub")) as pub:
            for topic, payload in _plan(sample_registry, settings.mqtt.topic_root, total):
                await pub.publish(topic, payload, qos=0)
        await _await_landed(influxd, settings.influx.database, sample_registry, total)


def retained_payload(port: int, topic: str, wait_s: float = 2.0) -> bytes | None:
    """The retained message on ``topic`` (None when there is none), from a fresh subscriber."""
    seen = _Collector(port, topic)
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not seen.snapshot():
            time.sleep(0.02)
        messages = seen.snapshot()
        return messages[-1][1] if messages else None
    finally:
        seen.close()


async def test_gateway_status_is_retained_online_then_offline_on_stop_and_on_kill(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd) -> None:
    config, _, _ = _write_config(tmp_path, mosquitto.url, influxd.url)
    instance = yaml.safe_load(config.read_text())["instance"]
    topic = f"parkwatch/gateway/{instance}/status"
    log = tmp_path / "gateway.log"

    def retained() -> bytes | None:
        return retained_payload(mosquitto.port, topic)

    for stop in (signal.SIGTERM, signal.SIGKILL):
        proc = _spawn_gateway(config, log)
        try:
            await wait_for(lambda: asyncio.to_thread(lambda: retained() == b"online"),
                           timeout_s=30, what="retained online status")
        finally:
            proc.send_signal(stop)
            proc.wait(20)
        # SIGTERM: the gateway publishes offline itself; SIGKILL: the broker sends the Will.
        await wait_for(lambda: asyncio.to_thread(lambda: retained() == b"offline"),
                       timeout_s=30, what=f"retained offline status after {stop.name}")


async def test_a_dead_stage_stops_the_gateway_instead_of_hanging(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry) -> None:
    from gateway.runtime.gateway import Gateway, StageFailed

    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url)
    gateway = Gateway(settings=settings, registry=sample_registry)
    broken = RuntimeError("disk on fire")

    async def failing_append(lines: object) -> None:
        raise broken

    task = asyncio.create_task(gateway.run(asyncio.Event()))
    await wait_for(lambda: gateway.ready.is_set(), timeout_s=20, what="gateway ready")
    assert gateway.wal is not None
    # The disk under the telemetry log fails: the ack stage, which writes it, dies.
    gateway.wal.bulk.append = failing_append  # type: ignore[method-assign]
    await _publish(mosquitto.port, _plan(sample_registry, settings.mqtt.topic_root, 5))
    with pytest.raises(StageFailed, match=r"\back\b"):
        await asyncio.wait_for(task, timeout=30)
