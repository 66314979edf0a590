"""Long InfluxDB outages on a real mosquitto and a private influxd that the tests stop and start.

The WAL cap is made tiny (1 MiB) so "hours of outage" fill it in seconds; what matters is what
happens at the cap: ``block`` stops acknowledging and loses nothing, ``drop_oldest_telemetry``
keeps acknowledging and evicts only telemetry, counted exactly; alarms and events are delivered
before the telemetry backlog; a kill -9 in the middle of a backlog loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings
from gateway.runtime.gateway import Gateway
from gateway.tools.devservices import Influxd, Mosquitto
from gateway.tools.simulator.publisher import MqttPublisher
from sensors.registry import Registry
from tests.support.gateway import make_settings, spawn_gateway, write_config
from tests.support.ids import unique
from tests.support.influx import influx_count, influx_rows
from tests.support.readings import await_landed, devices, per_device_counts, plan, publish
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SMALL_WAL = {"max_bytes": 1 << 20, "segment_bytes": 1 << 16}


@pytest.fixture
def influx(tmp_path: Path) -> Any:
    server = Influxd(tmp_path / "influx")
    server.start()
    yield server
    server.stop()


@asynccontextmanager
async def gateway_recording(settings: Settings, registry: Registry,
                            delivered: list[bytes]) -> AsyncIterator[Gateway]:
    """An in-process gateway whose writer reports every line it got into InfluxDB, in order."""
    gw = Gateway(settings=settings, registry=registry, on_delivered=delivered.extend)
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    try:
        await wait_for(lambda: gw.session is not None and gw.session.connected, timeout_s=30,
                       what="gateway connected", task=task)
        await asyncio.sleep(0.2)
        yield gw
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


def _event(root: str, registry: Registry, seq: int) -> tuple[str, bytes]:
    panel = next(d for d in registry if d.kind == "fire_panel")
    # Distinct device times: two events of one series at the same millisecond are one point.
    payload = {"ts": round(time.time()) - 100 + seq, "seq": seq, "type": "fire_alarm",
               "point": f"1-01-{seq:03d}"}
    return (f"{root}/{panel.park}/{panel.building}/{panel.device}/event",
            json.dumps(payload).encode())


def _seqs_in_order(delivered: Sequence[bytes], registry: Registry) -> dict[str, list[int]]:
    """Per telemetry device, the seq field of its lines in delivery order."""
    kinds = {d.kind for d in devices(registry)}
    out: dict[str, list[int]] = {}
    for line in delivered:
        text = line.decode()
        if text.split(",", 1)[0] not in kinds:
            continue
        device = text.split("device=", 1)[1].split(",", 1)[0].split(" ", 1)[0]
        seq = int(text.split("seq=", 1)[1].split("i", 1)[0])
        out.setdefault(device, []).append(seq)
    return out


async def test_block_policy_stops_acks_then_everything_lands_once_alarms_first(
        tmp_path: Path, mosquitto: Mosquitto, influx: Influxd, sample_registry: Registry) -> None:
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influx.url,
                             wal=SMALL_WAL)
    root, db = settings.mqtt.topic_root, settings.influx.database
    total = 9000
    planned = plan(sample_registry, root, total)
    # Two fire alarms early in the outage, behind 1000 telemetry messages each.
    messages = [*planned[:1000], _event(root, sample_registry, 1), *planned[1000:2000],
                _event(root, sample_registry, 2), *planned[2000:]]
    delivered: list[bytes] = []
    async with gateway_recording(settings, sample_registry, delivered) as gw:
        assert gw.wal is not None
        await asyncio.to_thread(influx.stop)
        await publish(mosquitto.port, messages)   # the broker has them all
        await wait_for(lambda: gw.wal is not None and gw.wal.bulk.full, timeout_s=60,
                       what="telemetry filled its share of the WAL")
        assert gw.metrics.value("parkwatch_wal_full_events_total", stream="bulk") >= 1
        assert gw.metrics.value("parkwatch_wal_full", stream="bulk") == 1
        # Acks stopped: the broker still holds part of what was published.
        accepted = gw.metrics.value("parkwatch_messages_accepted_total", type="telemetry")
        assert accepted < total
        assert gw.metrics.value("parkwatch_wal_evicted_lines_total", stream="bulk") == 0
        assert gw.metrics.value("parkwatch_messages_accepted_total", type="event") == 2
        await asyncio.to_thread(influx.start)
        await await_landed(influx, db, sample_registry, total, timeout_s=120)
        await wait_for(lambda: influx_count(influx, db, "events", "seq") == 2, timeout_s=30,
                       what="both events in InfluxDB")
    # Every reading exactly once (per-device seq contiguous), in order per device.
    for dev in devices(sample_registry)[:5]:
        seqs = [int(r[1]) for r in influx_rows(
            influx, db, f'SELECT "seq" FROM "{dev.kind}" WHERE "device" = \'{dev.device}\'')]
        assert seqs == list(range(len(seqs))), dev.device
    for device, seqs in _seqs_in_order(delivered, sample_registry).items():
        assert seqs == sorted(seqs), device
    # The alarms (events + `alarms` points) overtook the telemetry backlog: both events were
    # delivered before the telemetry accepted ahead of them had all reached InfluxDB.
    names = [line.split(b",", 1)[0] for line in delivered]
    last_event = max(i for i, n in enumerate(names) if n == b"events")
    telemetry_before_events = 2000
    assert sum(1 for n in names[:last_event] if n not in (b"events", b"alarms", b"gateway",
                                                           b"device_status")) \
        < telemetry_before_events


async def test_drop_oldest_telemetry_keeps_acking_and_counts_every_evicted_line(
        tmp_path: Path, mosquitto: Mosquitto, influx: Influxd, sample_registry: Registry) -> None:
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influx.url,
                             wal={**SMALL_WAL, "full_policy": "drop_oldest_telemetry"})
    root, db = settings.mqtt.topic_root, settings.influx.database
    total = 12_000
    planned = plan(sample_registry, root, total)
    events = [_event(root, sample_registry, i) for i in range(1, 13)]
    messages: list[tuple[str, bytes]] = []
    for i in range(12):   # a fire alarm every 1000 readings, the oldest ones included
        messages += [*planned[i * 1000:(i + 1) * 1000], events[i]]
    delivered: list[bytes] = []
    async with gateway_recording(settings, sample_registry, delivered) as gw:
        await asyncio.to_thread(influx.stop)
        await publish(mosquitto.port, messages)
        # Nothing waits: every message is acknowledged although InfluxDB is down.
        await wait_for(lambda: gw.metrics.value("parkwatch_messages_accepted_total",
                                                type="telemetry") == total,
                       timeout_s=60, what="every reading acknowledged")
        evicted = gw.metrics.value("parkwatch_wal_evicted_lines_total", stream="bulk")
        assert evicted > 0
        assert gw.metrics.value("parkwatch_wal_evicted_lines_total", stream="priority") == 0
        assert gw.metrics.value("parkwatch_wal_evicted_bytes_total", stream="bulk") > 0
        await asyncio.to_thread(influx.start)
        assert gw.writer is not None
        assert await gw.writer.flush(120)
    counts = {kind: per_device_counts(influx, db, kind)
              for kind in {d.kind for d in devices(sample_registry)}}
    landed = sum(sum(c.values()) for c in counts.values())
    assert landed + int(evicted) == total   # delivered or counted as evicted, exactly
    assert influx_count(influx, db, "events", "seq") == 12   # no event is ever evicted
    # What survived is the newest telemetry: the last reading of every device is there.
    for dev in devices(sample_registry)[:5]:
        last = max(int(r[1]) for r in influx_rows(
            influx, db, f'SELECT "seq" FROM "{dev.kind}" WHERE "device" = \'{dev.device}\''))
        assert last == max(i // len(devices(sample_registry))
                           for i in range(total)
                           if devices(sample_registry)[i % len(devices(sample_registry))]
                           == dev)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


async def test_kill_9_during_the_outage_and_again_during_replay_loses_nothing(
        tmp_path: Path, mosquitto: Mosquitto, influx: Influxd, sample_registry: Registry) -> None:
    config, root, db = write_config(tmp_path, mosquitto.url, influx.url,
                                   wal={"max_bytes": 64 << 20, "segment_bytes": 1 << 16})
    log = tmp_path / "gateway.log"
    total = 8000
    planned = plan(sample_registry, root, total)
    proc = spawn_gateway(config, log)
    try:
        await wait_for(lambda: b"mqtt connected" in log.read_bytes(), timeout_s=30,
                       what="gateway subprocess connected")
        await asyncio.to_thread(influx.stop)
        bulk = tmp_path / "state" / "wal" / "bulk"

        def backlog() -> int:
            return sum(p.stat().st_size for p in bulk.glob("*.wal"))

        await publish(mosquitto.port, planned[:total // 2])
        await wait_for(lambda: backlog() > 100_000, timeout_s=30, what="a backlog in the WAL")
        _kill(proc)                                    # kill -9 in the middle of the outage
        proc = spawn_gateway(config, log)
        await publish(mosquitto.port, planned[total // 2:])
        await asyncio.to_thread(influx.start)
        await wait_for(lambda: influx_count(influx, db, "water_pressure", "seq") > 0,
                       timeout_s=60, what="replay under way")
        _kill(proc)                                    # and again in the middle of the replay
        proc = spawn_gateway(config, log)
        await await_landed(influx, db, sample_registry, total, timeout_s=120)
        for dev in devices(sample_registry)[:5]:
            seqs = [int(r[1]) for r in influx_rows(
                influx, db, f'SELECT "seq" FROM "{dev.kind}" WHERE "device" = \'{dev.device}\'')]
            assert seqs == list(range(len(seqs))), dev.device
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---- duplicates (issue 6, item 3) --------------------------------------------------------------

async def test_a_redelivered_event_opens_no_second_alarm_even_after_a_restart(
        tmp_path: Path, mosquitto: Mosquitto, influx: Influxd, sample_registry: Registry) -> None:
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influx.url)
    root, db = settings.mqtt.topic_root, settings.influx.database
    topic, fire = _event(root, sample_registry, 41)
    reset = json.dumps({"ts": time.time() + 1, "seq": 42, "type": "reset"}).encode()
    panel = next(d for d in sample_registry if d.kind == "fire_panel")

    async def publish(*payloads: bytes) -> None:
        async with MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("dup")) as pub:
            for payload in payloads:
                await pub.publish(topic, payload, qos=1)
            await pub.flush(10)

    async def fire_alarms(gw: Gateway) -> list[Any]:
        assert gw.alarms is not None
        return [a for a in await gw.alarms.store.list(active=None) if a.rule == "fire_alarm"
                and a.subject.device == panel.device]

    delivered: list[bytes] = []
    async with gateway_recording(settings, sample_registry, delivered) as gw:
        # Fire, reset (the alarm resolves), then the same fire message again, twice: without
        # dedup the repeat would open a new alarm and notify people a second time.
        await publish(fire, reset, fire, fire)
        await wait_for(lambda: gw.metrics.value("parkwatch_duplicate_events_total") == 2,
                       timeout_s=20, what="both repeats recognised")

        async def resolved() -> bool:
            alarms = await fire_alarms(gw)
            return bool(alarms) and alarms[-1].state.value == "resolved"

        await wait_for(resolved, timeout_s=20, what="the fire alarm stored, resolved")
        assert len(await fire_alarms(gw)) == 1
    async with gateway_recording(settings, sample_registry, delivered) as gw:
        await publish(fire)                     # redelivered after a restart: still a repeat
        await wait_for(lambda: gw.metrics.value("parkwatch_duplicate_events_total") == 1,
                       timeout_s=20, what="the repeat recognised after a restart")
        assert len(await fire_alarms(gw)) == 1
        assert gw.writer is not None
        assert await gw.writer.flush(30)
    states = [r[1] for r in influx_rows(influx, db, 'SELECT "state" FROM "alarms" WHERE '
                                        f"\"device\" = '{panel.device}' AND \"rule\" = "
                                        "'fire_alarm'")]
    assert states == ["firing", "resolved"]
    assert influx_count(influx, db, "events", "seq") == 2   # the fire and the reset
