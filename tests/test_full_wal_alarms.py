"""InfluxDB down for days, the telemetry log full (block policy): alarms still move.

Telemetry waits for room in the ack stage, so the broker holds it; but an acknowledgement made
through the API, an escalation or a timer alarm must not wait behind it. They are written to
the priority log and the alarm store by the commit stage, which telemetry never blocks.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.tools.devservices import Influxd, Mosquitto
from gateway.tools.simulator.publisher import MqttPublisher
from rules.alarm import AlarmState, Disposition
from rules.system import STORAGE_FULL
from sensors.registry import Registry
from tests.support.gateway import make_settings, running_gateway
from tests.support.ids import unique
from tests.support.readings import plan
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


async def test_an_api_acknowledgement_is_durable_while_the_telemetry_log_is_full(
        tmp_path: Path, mosquitto: Mosquitto, sample_registry: Registry) -> None:
    influx = Influxd(tmp_path / "influx")
    influx.start()
    try:
        settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influx.url,
                                 wal={"max_bytes": 1 << 20, "segment_bytes": 1 << 16})
        root = settings.mqtt.topic_root
        panel = next(d for d in sample_registry if d.kind == "fire_panel")
        async with running_gateway(settings, sample_registry) as gw, \
                MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("f")) as pub:
            await pub.publish(f"{root}/{panel.park}/{panel.building}/{panel.device}/event",
                              json.dumps({"ts": time.time(), "type": "fire_alarm",
                                          "point": "1-01-001"}).encode())
            await pub.flush(10)
            assert gw.alarms is not None
            book = gw.alarms

            def fire() -> list[str]:
                return [a.alarm_id for a in (book.engine.active() if book.engine else [])
                        if a.rule == "fire_alarm"]

            await wait_for(lambda: bool(fire()), timeout_s=15, what="the fire alarm")
            influx.stop()                        # from now on nothing leaves the WAL
            for topic, payload in plan(sample_registry, root, 15_000):
                await pub.publish(topic, payload)
            await pub.flush(60)
            assert gw.wal is not None
            wal = gw.wal
            await wait_for(lambda: wal.full, timeout_s=60, what="the telemetry log full")
            # The duty officer acknowledges through the API while ingest is paused.
            service = gw.alarm_service
            assert service is not None
            acked = await asyncio.wait_for(
                service.acknowledge(fire()[0], by="王值班", disposition=Disposition.REAL,
                                    channel="api"), timeout=10)
            assert acked.state is AlarmState.ACKNOWLEDGED
            assert wal.full                      # still full: the ack did not need room
            db = settings.state_dir / "alarms.sqlite3"
            with sqlite3.connect(db) as conn:
                row = conn.execute("SELECT state, acknowledged_by FROM alarms WHERE alarm_id = ?",
                                   (acked.alarm_id,)).fetchone()
            assert row == ("acknowledged", "王值班")
            # The full log is itself an alarm (critical under block: ingest is paused).

            def storage() -> list[AlarmState]:
                return [a.state for a in (book.engine.active() if book.engine else [])
                        if a.rule == STORAGE_FULL]

            await wait_for(lambda: storage() == [AlarmState.FIRING], timeout_s=10,
                           what="storage_full raised")
            influx.start()                       # InfluxDB back: the backlog drains
            await wait_for(lambda: not wal.full, timeout_s=60, what="the log drains")
            await wait_for(lambda: storage() == [], timeout_s=10, what="storage_full resolved")
    finally:
        influx.stop()


async def test_a_fire_event_still_alarms_while_the_main_session_is_held_up_by_telemetry(
        tmp_path: Path, mosquitto: Mosquitto, sample_registry: Registry) -> None:
    """Telemetry waiting for room holds up the main session: its inbox fills, reading pauses,
    and a broker that enforces our Receive Maximum stops sending too. Events come through the
    priority lane's own session and are evaluated, stored and acknowledged all the same."""
    influx = Influxd(tmp_path / "influx")
    influx.start()
    try:
        settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influx.url,
                                 wal={"max_bytes": 1 << 20, "segment_bytes": 1 << 16},
                                 ingest={"queue_size": 100, "commit_batch": 50})
        root = settings.mqtt.topic_root
        smoke = next(d for d in sample_registry if d.kind == "smoke")
        async with running_gateway(settings, sample_registry) as gw, \
                MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("f")) as pub:
            influx.stop()
            for topic, payload in plan(sample_registry, root, 15_000):
                await pub.publish(topic, payload)
            await pub.flush(60)
            assert gw.wal is not None
            wal = gw.wal
            await wait_for(lambda: wal.full, timeout_s=60, what="the telemetry log full")
            assert gw.session is not None
            main = gw.session
            await wait_for(lambda: main._reading_paused, timeout_s=30,
                           what="the main session's reading paused behind telemetry")
            await pub.publish(f"{root}/{smoke.park}/{smoke.building}/{smoke.device}/event",
                              json.dumps({"ts": time.time(), "type": "fire_alarm"}).encode())
            await pub.flush(10)

            def stored() -> list[tuple[str]]:
                with sqlite3.connect(settings.state_dir / "alarms.sqlite3") as conn:
                    return conn.execute("SELECT state FROM alarms WHERE rule = 'fire_alarm'"
                                        " AND device = ?", (smoke.device,)).fetchall()

            await wait_for(lambda: bool(stored()), timeout_s=15,
                           what="the fire alarm durable, through the priority lane")
            assert stored() == [("firing",)]      # and only once
            assert wal.full                       # all of this while telemetry still waits
            assert main._reading_paused
            influx.start()
            await wait_for(lambda: not wal.full, timeout_s=90, what="the log drains")
            # The main session's copy of the event arrives late and is only acknowledged.
            await wait_for(lambda: main.unacked == 0, timeout_s=90, what="everything acked")
            assert stored() == [("firing",)]
    finally:
        influx.stop()
