"""End to end on a real mosquitto and a real influxd: readings land once, rejects are counted.

The gateway runs in-process (or as a subprocess where it must be killed); messages go through the
broker exactly as a device would send them.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.tools.devservices import Influxd, Mosquitto
from gateway.tools.simulator.publisher import MqttPublisher
from sensors.base import RejectReason
from sensors.registry import Registry
from tests.support.gateway import make_settings, running_gateway, spawn_gateway, write_config
from tests.support.ids import unique
from tests.support.influx import influx_count, influx_rows
from tests.support.mqtt import Collector, retained_payload
from tests.support.readings import (
    BASE_TS,
    METRIC,
    assert_all_landed,
    await_landed,
    devices,
    plan,
    publish,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


async def test_ten_thousand_readings_land_exactly_once(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry) -> None:
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url)
    root, db = settings.mqtt.topic_root, settings.influx.database
    total = 10_000
    async with running_gateway(settings, sample_registry) as gw:
        await publish(mosquitto.port, plan(sample_registry, root, total))
        await await_landed(influxd, db, sample_registry, total)
        assert gw.metrics.value("parkwatch_messages_accepted_total", type="telemetry") == total
    assert_all_landed(influxd, db, sample_registry, total)

    # One point checked field by field: measurement, every tag, field types, timestamp.
    dev = devices(sample_registry)[0]
    metric, base = METRIC[dev.kind]
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


@pytest.fixture
def deadletters(mosquitto: Mosquitto) -> Iterator[Collector]:
    collector = Collector(mosquitto.port, "parkwatch/deadletter/#")
    yield collector
    collector.close()


async def test_every_rejection_is_deadlettered_and_counted_and_flow_continues(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry,
        deadletters: Collector) -> None:
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url)
    root, db = settings.mqtt.topic_root, settings.influx.database
    garbage = _garbage(sample_registry, root)
    # rate_limited needs a flood: tests/test_hostile_input.py covers it; other_partition a
    # partitioned gateway: tests/test_partitions.py.
    assert {reason for *_, reason in garbage} == set(RejectReason) - {
        RejectReason.RATE_LIMITED, RejectReason.OTHER_PARTITION}
    good = plan(sample_registry, root, 200)
    # Garbage interleaved with good traffic: the good must all land regardless.
    mixed: list[tuple[str, bytes]] = []
    for i, msg in enumerate(good):
        mixed.append(msg)
        if i % 15 == 0 and i // 15 < len(garbage):
            topic, payload, _ = garbage[i // 15]
            mixed.append((topic, payload))
    async with running_gateway(settings, sample_registry) as gw:
        await publish(mosquitto.port, mixed)
        await await_landed(influxd, db, sample_registry, 200)
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
    assert set(by_reason) == {r.value for r in RejectReason} - {"rate_limited",
                                                                "other_partition"}
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
            await publish(broker.port, plan(sample_registry, settings.mqtt.topic_root, total),
                           on_progress=restart_halfway)
            await await_landed(influxd, settings.influx.database, sample_registry, total)
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
            await publish(mosquitto.port, plan(sample_registry, settings.mqtt.topic_root,
                                                 total), on_progress=outage)
            await await_landed(server, settings.influx.database, sample_registry, total)
    finally:
        server.stop()


async def test_kill_9_mid_run_then_restart_loses_nothing(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry) -> None:
    config, root, db = write_config(tmp_path, mosquitto.url, influxd.url)
    log = tmp_path / "gateway.log"
    total = 6000
    proc = spawn_gateway(config, log)
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
                proc = spawn_gateway(config, log)

        await publish(mosquitto.port, plan(sample_registry, root, total),
                       on_progress=kill_midway)
        assert killed
        await await_landed(influxd, db, sample_registry, total)
        # Per-device seq is contiguous: 0..n-1 with no gap and no duplicate series.
        for dev in devices(sample_registry)[:5]:
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
            for topic, payload in plan(sample_registry, settings.mqtt.topic_root, total):
                await pub.publish(topic, payload, qos=0)
        await await_landed(influxd, settings.influx.database, sample_registry, total)


async def test_gateway_status_is_retained_online_then_offline_on_stop_and_on_kill(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd) -> None:
    config, _, _ = write_config(tmp_path, mosquitto.url, influxd.url)
    instance = yaml.safe_load(config.read_text())["instance"]
    topic = f"parkwatch/gateway/{instance}/status"
    log = tmp_path / "gateway.log"

    def retained() -> bytes | None:
        return retained_payload(mosquitto.port, topic)

    for stop in (signal.SIGTERM, signal.SIGKILL):
        proc = spawn_gateway(config, log)
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
    # The disk under the telemetry log fails: the puback stage, which writes it, dies.
    gateway.wal.bulk.append = failing_append  # type: ignore[method-assign]
    await publish(mosquitto.port, plan(sample_registry, settings.mqtt.topic_root, 5))
    with pytest.raises(StageFailed, match=r"\bpuback\b"):
        await asyncio.wait_for(task, timeout=30)
