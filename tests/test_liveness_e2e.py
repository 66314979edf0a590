"""Device liveness through the real pipeline (mosquitto, influxd, SQLite): telemetry-only
devices are online, silence and Wills take them offline, never-seen devices are reported, and a
restart within the grace keeps every state."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import Settings
from gateway.tools.devservices import Influxd, Mosquitto
from gateway.tools.simulator.publisher import MqttPublisher
from sensors.registry import Registry, load_registry
from tests.support.gateway import make_settings, running_gateway
from tests.support.ids import unique
from tests.support.influx import influx_rows
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

#: (device, kind, report_interval_s); the rule pack's factor is 3.
DEVICES = [("tp-fast", "water_pressure", 1), ("sm-will", "smoke", 1),
           ("lv-never", "water_level", 0.5), ("tp-slow", "water_pressure", 10)]


def _registry(tmp_path: Path) -> Registry:
    rows = [{"device": d, "park": "xz01", "building": "b1", "floor": "1", "zone": "z",
             "kind": k, "tenant": "acme", "report_interval_s": s} for d, k, s in DEVICES]
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"devices": rows}))
    return load_registry(path)


def _settings(tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd) -> Settings:
    return make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                         registry=str(tmp_path / "registry.yaml"),
                         alarms={"tick_s": 0.2, "state_save_s": 0.5},
                         observe={"gateway_interval_s": 1.0, "liveness_snapshot_s": 1.0})


def _points(influxd: Influxd, db: str, device: str, source: str | None = None
            ) -> list[dict[str, Any]]:
    where = f" AND \"source\" = '{source}'" if source else ""
    rows = influx_rows(influxd, db, 'SELECT "online", "reason", "source", "never_seen", "kind", '
                       f"\"tenant\" FROM \"device_status\" WHERE \"device\" = '{device}'{where}")
    keys = ("time", "online", "reason", "source", "never_seen", "kind", "tenant")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def _has(influxd: Influxd, db: str, device: str, **want: Any) -> bool:
    return any(all(p[k] == v for k, v in want.items()) for p in _points(influxd, db, device))


async def _telemetry(pub: MqttPublisher, root: str, device: str, kind: str) -> None:
    values = {"pressure_mpa": 0.3} if kind == "water_pressure" else {}
    payload = json.dumps({"ts": time.time(), "values": values, "battery_pct": 90}).encode()
    await pub.publish(f"{root}/xz01/b1/{device}/telemetry", payload, qos=1)


async def test_liveness_from_traffic_wills_and_silence(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd) -> None:
    registry = _registry(tmp_path)
    settings = _settings(tmp_path, mosquitto, influxd)
    root, db = settings.mqtt.topic_root, settings.influx.database
    async with running_gateway(settings, registry), \
            MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("dev")) as pub:
        for device in ("tp-fast", "sm-will", "tp-slow"):
            await _telemetry(pub, root, device, dict((d, k) for d, k, _ in DEVICES)[device])
        await pub.flush(10)
        # Telemetry only, never a status message: online, from traffic.
        await wait_for(lambda: _has(influxd, db, "tp-fast", online=True, source="traffic",
                                    reason="heard"), timeout_s=10, what="tp-fast online")
        # A Will flips at once, long before the allowance (3 s) could run out.
        sent = time.time()
        await pub.publish(f"{root}/xz01/b1/sm-will/status", b"offline", qos=1)
        await pub.flush(10)
        await wait_for(lambda: _has(influxd, db, "sm-will", online=False, source="will",
                                    reason="reported"), timeout_s=10, what="sm-will Will")
        assert time.time() - sent < 3
        # Silence: tp-fast is offline after 3 x 1 s; tp-slow (30 s) stays online meanwhile.
        await wait_for(lambda: _has(influxd, db, "tp-fast", online=False, source="traffic",
                                    reason="silent"), timeout_s=15, what="tp-fast silent")
        # Never heard since start: offline after its allowance (1.5 s), marked never seen.
        await wait_for(lambda: _has(influxd, db, "lv-never", online=False, source="startup",
                                    never_seen=True), timeout_s=10, what="lv-never offline")
        # Snapshots: one point per device, so a dashboard reads the latest of each.
        await wait_for(lambda: all(_has(influxd, db, d, source="snapshot") for d, _, _ in DEVICES),
                       timeout_s=10, what="a snapshot of every device")
    assert not _has(influxd, db, "tp-slow", online=False)
    fast = _points(influxd, db, "tp-fast", "traffic")
    assert [(p["online"], p["kind"], p["tenant"]) for p in fast] == [
        (True, "water_pressure", "acme"), (False, "water_pressure", "acme")]
    snap = _points(influxd, db, "lv-never", "snapshot")[-1]
    assert (snap["online"], snap["never_seen"], snap["reason"]) == (False, True, "never_seen")


async def test_a_restart_within_the_grace_keeps_every_state(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd) -> None:
    registry = _registry(tmp_path)
    settings = _settings(tmp_path, mosquitto, influxd)
    root, db = settings.mqtt.topic_root, settings.influx.database
    async with running_gateway(settings, registry), \
            MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("dev")) as pub:
        await _telemetry(pub, root, "tp-slow", "water_pressure")
        await pub.publish(f"{root}/xz01/b1/sm-will/status", b"offline", qos=1)
        await pub.flush(10)
        await wait_for(lambda: _has(influxd, db, "tp-slow", online=True, source="traffic")
                       and _has(influxd, db, "lv-never", never_seen=True),
                       timeout_s=10, what="states before the restart")
    restarted_ms = time.time_ns() // 1_000_000
    async with running_gateway(settings, registry):
        def snapshot_after_restart() -> dict[str, dict[str, Any]]:
            rows = influx_rows(influxd, db, 'SELECT "online", "never_seen", "device" FROM '
                               f"\"device_status\" WHERE \"source\" = 'snapshot' AND "
                               f"time >= {restarted_ms}ms")
            return {r[3]: {"online": r[1], "never_seen": r[2]} for r in rows}
        await wait_for(lambda: {"tp-slow", "sm-will", "lv-never"} <= set(
            snapshot_after_restart()), timeout_s=10, what="the first snapshot after restart")
        snap = snapshot_after_restart()
        # tp-slow was heard before the restart: online until its grace (30 s) has passed.
        assert snap["tp-slow"] == {"online": True, "never_seen": False}
        assert snap["sm-will"]["online"] is False
        assert snap["lv-never"] == {"online": False, "never_seen": True}
    after = influx_rows(influxd, db, 'SELECT "online" FROM "device_status" WHERE '
                        f"\"device\" = 'tp-slow' AND time >= {restarted_ms}ms")
    assert all(r[1] is True for r in after)
