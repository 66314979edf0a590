"""Alarms end to end on a real mosquitto and influxd, driven by the simulator's scenarios.

The gateway runs in-process with the default rule pack; outputs are checked where users see
them: the retained MQTT documents, the `alarms` measurement, the HTTP API and the alarm store.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.http.app import start_http
from gateway.http.auth import client_headers
from gateway.runtime.gateway import Gateway
from gateway.tools.devservices import Influxd, Mosquitto, free_port
from gateway.tools.simulator.publisher import MqttPublisher
from gateway.tools.simulator.runner import iter_messages
from gateway.tools.simulator.traffic import Message
from rules.alarm import Alarm, AlarmState
from sensors.registry import Registry, load_registry
from tests.support.alarmstores import StoreTarget
from tests.support.gateway import make_settings, running_gateway, spawn_gateway
from tests.support.ids import unique
from tests.support.influx import influx_rows
from tests.support.mqtt import Collector
from tests.support.paths import ROOT
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SIGNAL_RULES = {"fire_alarm", "heat_high", "smoke_obscuration_high"}


def _ts_ms(payload: bytes) -> int | None:
    try:
        ts = json.loads(payload).get("ts")
    except (ValueError, AttributeError):
        return None
    return round(ts * 1000) if isinstance(ts, int | float) else None


async def _play(port: int, timed: list[tuple[float, Message]]) -> dict[tuple[str, int], float]:
    """Publish at the simulator's wall offsets; return when each (device, ts) was sent."""
    sent: dict[tuple[str, int], float] = {}
    async with MqttPublisher("127.0.0.1", port, client_id=unique("sim")) as pub:
        start = time.monotonic()
        for at, msg in timed:
            delay = start + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await pub.publish(msg.topic, msg.payload, qos=1, retain=msg.retain)
            ts = _ts_ms(msg.payload)
            if ts is not None:
                sent[(msg.device, ts)] = time.time()
        await pub.flush(30)
    return sent


def _scenario(registry: Registry, root: str, scenario: str, wall_s: float,
              speed: float) -> list[tuple[float, Message]]:
    return list(iter_messages(registry, root=root, scenarios=("normal", scenario), seed=7,
                              start_ts=time.time(), speed=speed, duration_s=wall_s,
                              include_status=False))


def _all_alarms(gw: Gateway) -> list[Alarm]:
    assert gw.alarms is not None
    assert gw.alarms.engine is not None
    return gw.alarms.engine.active()


async def _stored(gw: Gateway, **filters: Any) -> list[Alarm]:
    assert gw.alarms is not None
    return await gw.alarms.store.list(**filters)


@pytest.fixture
def alarm_docs(mosquitto: Mosquitto) -> Iterator[Collector]:
    collector = Collector(mosquitto.port, "parkwatch/alarms/#")
    yield collector
    collector.close()


async def test_fire_scenario_confirms_within_2s_of_the_second_signal(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry,
        alarm_docs: Collector, alarm_target: StoreTarget) -> None:
    # On both alarm-store backends: the whole pipeline, PostgreSQL store included.
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                             alarms=alarm_target.settings())

    async with running_gateway(settings, sample_registry) as gw:
        # 60 simulated seconds at 10x: the fire's signals come 15-35 s in.
        sent = await _play(mosquitto.port, _scenario(sample_registry, settings.mqtt.topic_root,
                                                     "fire", 6.0, 10.0))
        await wait_for(lambda: any(a.rule == "fire_confirmed" for a in _all_alarms(gw)),
                       timeout_s=10, what="fire_confirmed")
        confirmed = next(a for a in _all_alarms(gw) if a.rule == "fire_confirmed")
        zone = confirmed.subject.zone
        assert confirmed.severity.value == "critical"
        signals = sorted((a for a in await _stored(gw, active=None)
                          if a.rule in SIGNAL_RULES and a.subject.zone == zone
                          and a.subject.building == confirmed.subject.building
                          and a.fired_at_ms is not None),
                         key=lambda a: a.fired_at_ms or 0)
        # The second signal is the first one from a second distinct device.
        first_device = signals[0].subject.device
        second = next(a for a in signals if a.subject.device != first_device)
        # The engine raises fire_confirmed in the same step as the second signal ...
        assert confirmed.fired_at_ms == second.fired_at_ms
        # ... and end to end it is out within 2 s of that signal being published.
        assert second.fired_at_ms is not None
        published = sent.get((second.subject.device, second.fired_at_ms))
        assert published is not None, "second signal not found among published messages"
        topic_fc = (f"parkwatch/alarms/{confirmed.subject.park}/{confirmed.subject.building}/"
                    f"zone-{zone}/fire_confirmed")
        await wait_for(lambda: topic_fc in alarm_docs.first_seen, timeout_s=5,
                       what="retained fire_confirmed document")
        assert alarm_docs.first_seen[topic_fc] - published < 2.0
        doc = json.loads(dict(alarm_docs.snapshot())[topic_fc])
        assert doc["state"] == "firing"
        assert doc["rule"] == "fire_confirmed"


async def test_pipe_burst_raises_pressure_alarms_everywhere_users_look(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry,
        alarm_docs: Collector) -> None:
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url)
    port = free_port()
    async with running_gateway(settings, sample_registry) as gw:
        runner = await start_http(gw, "127.0.0.1", port)
        try:
            # 80 simulated seconds at 10x: the collapse takes 30 s.
            await _play(mosquitto.port, _scenario(sample_registry, settings.mqtt.topic_root,
                                                  "pipe-burst", 8.0, 10.0))
            pressure_rules = {"water_pressure_low", "water_pressure_drop"}
            await wait_for(lambda: {a.rule for a in _all_alarms(gw)} >= pressure_rules,
                           timeout_s=30, what="low-pressure and pressure-drop alarms")
            # The burst point is the one that collapsed (neighbours with a per-point low
            # limit may alarm too, at higher pressures).
            await wait_for(lambda: any(a.rule == "water_pressure_low" and (a.value or 1) < 0.1
                                       for a in _all_alarms(gw)), timeout_s=30,
                           what="the burst point's low-pressure alarm")
            burst = min((a for a in _all_alarms(gw) if a.rule == "water_pressure_low"),
                        key=lambda a: a.value or 1.0)
            async with aiohttp.ClientSession() as http, \
                    http.get(f"http://127.0.0.1:{port}/alarms") as resp:
                listed = await resp.json()
            assert resp.status == 200
            assert {d["rule"] for d in listed} >= pressure_rules
            doc = next(d for d in listed if d["alarm_id"] == burst.alarm_id)
            assert doc["device"] == burst.subject.device
            assert doc["kind"] == "water_pressure"
            assert doc["value"] is not None
            assert doc["value"] < 0.15
            topic = (f"parkwatch/alarms/{burst.subject.park}/{burst.subject.building}/"
                     f"{burst.subject.device}/water_pressure_low")
            await wait_for(lambda: topic in dict(alarm_docs.snapshot()), timeout_s=5,
                           what="retained low-pressure document")
        finally:
            await runner.cleanup()
    rows = influx_rows(influxd, settings.influx.database,
                       "SELECT \"state\", \"alarm_id\" FROM \"alarms\" WHERE \"rule\" = "
                       "'water_pressure_low'")
    assert [r[2] for r in rows if r[1] == "firing"].count(burst.alarm_id) == 1


def _silent_registry(tmp_path: Path) -> Registry:
    devices = [{"device": f"sx-{b}{i}", "park": "xz01", "building": b, "floor": "1",
                "zone": "z", "kind": "smoke", "report_interval_s": 1}
               for b in ("b1", "b2") for i in range(4)]
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"devices": devices}))
    return load_registry(path)


async def _heartbeats(pub: MqttPublisher, root: str, registry: Registry,
                      silent: set[str]) -> None:
    for d in registry:
        if d.device not in silent:
            payload = json.dumps({"ts": time.time(), "values": {}, "battery_pct": 90})
            await pub.publish(f"{root}/{d.park}/{d.building}/{d.device}/telemetry",
                              payload.encode())


async def test_silent_device_then_silent_building(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd) -> None:
    registry = _silent_registry(tmp_path)
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                             registry=str(tmp_path / "registry.yaml"))
    root = settings.mqtt.topic_root
    silent: set[str] = set()
    async with running_gateway(settings, registry) as gw, \
            MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("hb")) as pub:

        async def beat_until(condition: Any, what: str, timeout_s: float) -> None:
            deadline = time.monotonic() + timeout_s
            while not condition():
                assert time.monotonic() < deadline, f"timed out waiting for: {what}"
                await _heartbeats(pub, root, registry, silent)
                await asyncio.sleep(0.3)

        await beat_until(lambda: gw.metrics.value("parkwatch_readings_accepted_total") >= 8,
                         "first heartbeats", 10)
        silent.add("sx-b10")
        stopped = time.monotonic()
        await beat_until(lambda: any(a.rule == "device_offline" and a.state is AlarmState.FIRING
                                     for a in _all_alarms(gw)), "device_offline", 15)
        offline = [a for a in _all_alarms(gw) if a.rule == "device_offline"]
        assert [a.subject.device for a in offline] == ["sx-b10"]
        # k x interval = 3 x 1 s: not before, and not much after (ticks are 1 s).
        assert 3.0 <= time.monotonic() - stopped < 8.0
        # Now the whole of b1 goes quiet: one building alarm, children inhibited, b2 untouched.
        silent.update({"sx-b11", "sx-b12", "sx-b13"})
        await beat_until(lambda: any(a.rule == "building_silent" for a in _all_alarms(gw)),
                         "building_silent", 20)
        await beat_until(lambda: len([a for a in _all_alarms(gw)
                                      if a.rule == "device_offline"]) >= 4,
                         "children accounted for", 10)
        active = _all_alarms(gw)
        parents = [a for a in active if a.rule == "building_silent"]
        assert len(parents) == 1
        assert parents[0].subject.building == "b1"
        children = [a for a in active if a.rule == "device_offline"]
        assert {a.subject.device for a in children} == {"sx-b10", "sx-b11", "sx-b12", "sx-b13"}
        assert all(a.inhibited_by == parents[0].fingerprint and not a.paged
                   for a in children if a.subject.device != "sx-b10")
        assert not any(a.subject.building == "b2" for a in active)


async def test_oscillating_value_gives_one_alarm_and_duplicates_give_one(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry) -> None:
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url)
    root = settings.mqtt.topic_root
    gas = next(d for d in sample_registry if d.kind == "gas")
    panel = next(d for d in sample_registry if d.kind == "fire_panel")
    gas_topic = f"{root}/{gas.park}/{gas.building}/{gas.device}/telemetry"
    panel_topic = f"{root}/{panel.park}/{panel.building}/{panel.device}/event"
    base = time.time() - 50
    fire = json.dumps({"ts": time.time(), "type": "fire_alarm", "point": "3-01-007"}).encode()
    async with running_gateway(settings, sample_registry) as gw:
        async with MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("a")) as pub_a, \
                MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("b")) as pub_b:
            for i in range(40):  # 24 / 26 %LEL around the 25 %LEL level, 40 times
                value = 26.0 if i % 2 else 24.0
                await pub_a.publish(gas_topic, json.dumps(
                    {"ts": base + i, "values": {"lel_pct": value}}).encode())
            # The same fire alarm, 30 times from two connections at once.
            await asyncio.gather(*(p.publish(panel_topic, fire) for p in (pub_a, pub_b)
                                   for _ in range(15)))
            await pub_a.flush(10)
            await pub_b.flush(10)
        # The gas readings come on the telemetry session, the fires on the priority one:
        # wait for both lanes.
        def accepted(kind: str) -> float:
            return gw.metrics.value("parkwatch_messages_accepted_total", type=kind)

        await wait_for(lambda: accepted("event") == 30 and accepted("telemetry") == 40,
                       timeout_s=10, what="all readings and duplicates processed")
        stored = await _stored(gw, active=None)
    gas_alarms = [a for a in stored if a.rule == "gas_lel_high"]
    fire_alarms = [a for a in stored if a.rule == "fire_alarm"]
    assert len(gas_alarms) == 1
    assert gas_alarms[0].state is AlarmState.FIRING
    assert len(fire_alarms) == 1
    assert fire_alarms[0].severity.value == "critical"


async def test_kill_9_with_active_alarms_keeps_them_none_lost_none_doubled(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd) -> None:
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                             http={"enabled": True, "port": free_port()})
    doc = json.loads(settings.model_dump_json())
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(doc))
    registry = load_registry(settings.registry)
    root, api = settings.mqtt.topic_root, f"http://127.0.0.1:{settings.http.port}"
    log = tmp_path / "gateway.log"

    async def active_docs() -> list[dict[str, Any]]:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{api}/alarms") as resp:
                docs: list[dict[str, Any]] = await resp.json()
                return docs
        except aiohttp.ClientError:
            return []

    proc = spawn_gateway(config, log)
    try:
        await wait_for(lambda: b"mqtt connected" in log.read_bytes(), timeout_s=30,
                       what="gateway connected")
        gas = [d for d in registry if d.kind == "gas"][:3]
        async with MqttPublisher("127.0.0.1", settings.mqtt.port,
                                 client_id=unique("k")) as pub:
            for d in gas:
                await pub.publish(f"{root}/{d.park}/{d.building}/{d.device}/telemetry",
                                  json.dumps({"ts": time.time(),
                                              "values": {"lel_pct": 55.0}}).encode())
            await pub.flush(10)

        async def three_firing() -> bool:
            return len([d for d in await active_docs() if d["rule"] == "gas_lel_high"]) == 3

        await wait_for(three_firing, timeout_s=20, what="three gas alarms firing")
        before = sorted(d["alarm_id"] for d in await active_docs())
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = spawn_gateway(config, log)
        # The same messages again (as a broker redelivery would bring them): still no doubles.
        async with MqttPublisher("127.0.0.1", settings.mqtt.port,
                                 client_id=unique("k2")) as pub:
            for d in gas:
                await pub.publish(f"{root}/{d.park}/{d.building}/{d.device}/telemetry",
                                  json.dumps({"ts": time.time(),
                                              "values": {"lel_pct": 56.0}}).encode())
            await pub.flush(10)
        await wait_for(three_firing, timeout_s=30, what="alarms back after restart")
        await asyncio.sleep(1.0)  # let the redelivered readings pass the engine
        after = sorted(d["alarm_id"] for d in await active_docs())
        assert after == before
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_check_rules_validates_the_pack_and_dry_runs_a_recording(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.tools.cli import main

    recording = tmp_path / "rec.jsonl"
    t0 = int(time.time() * 1000)
    lines = [{"t_ms": t0 + i * 1000, "device": "gs-0101", "values": {"lel_pct": v}}
             for i, v in enumerate([3.0, 27.0, 27.5, 52.0, 10.0])]
    recording.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"registry: {ROOT / 'config/sample-park/registry.yaml'}\n"
                      f"rules: {ROOT / 'config/rules'}\n")
    assert main(["check-rules", "--config", str(config), "--recording", str(recording)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: ")
    assert "gas_lel_high" in out
    assert "critical" in out
    assert "resolved" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: x\n    type: threshold\n    metric: lel_pct\n"
                   "    tiers: [{severity: major, op: '=~', value: 1, source: s}]\n")
    assert main(["check-rules", "--config", str(config), "--rules", str(bad)]) == 2
    assert f"{bad}:" in capsys.readouterr().err



async def test_ack_and_maintenance_through_the_api_show_everywhere(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry,
        alarm_docs: Collector, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.tools.alarmcli import main as alarm_cli

    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url)
    root = settings.mqtt.topic_root
    gas = [d for d in sample_registry if d.kind == "gas"]
    first, other = gas[0], next(d for d in gas if d.building != gas[0].building)
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    async with running_gateway(settings, sample_registry) as gw:
        runner = await start_http(gw, "127.0.0.1", port)
        # Writes need the token the gateway generated at start; the CLI finds it via --config.
        cli_config = tmp_path / "cli.yaml"
        cli_config.write_text(f"state_dir: {settings.state_dir}\n")
        try:
            async with aiohttp.ClientSession(headers=client_headers(config=cli_config)) as http:
                # Isolate the other gas detector's building for an hour.
                async with http.post(f"{api}/maintenance", json={
                        "scope": "building", "target": f"{other.park}/{other.building}",
                        "mode": "isolated", "until":
                        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600)),
                        "by": "alice"}) as resp:
                    assert resp.status == 200, await resp.text()
                async with MqttPublisher("127.0.0.1", mosquitto.port,
                                         client_id=unique("m")) as pub:
                    for d in (first, other):
                        await pub.publish(f"{root}/{d.park}/{d.building}/{d.device}/telemetry",
                                          json.dumps({"ts": time.time(),
                                                      "values": {"lel_pct": 30.0}}).encode())
                    await pub.flush(10)
                await wait_for(lambda: len([a for a in _all_alarms(gw)
                                            if a.rule == "gas_lel_high"]) == 2,
                               timeout_s=10, what="two gas alarms")
                alarms = {a.subject.device: a for a in _all_alarms(gw) if a.rule == "gas_lel_high"}
                assert alarms[first.device].paged
                assert alarms[other.device].maintenance.value == "isolated"
                assert not alarms[other.device].paged

                # Acknowledge the first one with the CLI, as a duty officer would.
                target = alarms[first.device].alarm_id
                code = await asyncio.to_thread(alarm_cli, [
                    "alarms", "ack", target, "--by", "duty-officer", "--disposition", "real",
                    "--url", api, "--config", str(cli_config)])
                assert code == 0, capsys.readouterr()
                async with http.get(f"{api}/alarms/{target}") as resp:
                    shown = await resp.json()
                assert shown["state"] == "acknowledged"
                assert shown["acknowledged_by"] == "duty-officer"
                assert shown["disposition"] == "real"
            topic = (f"parkwatch/alarms/{first.park}/{first.building}/{first.device}/"
                     "gas_lel_high")

            def retained_state() -> str | None:
                docs = [p for t, p in alarm_docs.snapshot() if t == topic and p]
                return str(json.loads(docs[-1])["state"]) if docs else None

            await wait_for(lambda: retained_state() == "acknowledged", timeout_s=5,
                           what="retained document acknowledged")
        finally:
            await runner.cleanup()

    def states_in_influx() -> list[str]:
        rows = influx_rows(influxd, settings.influx.database,
                           f"SELECT \"state\" FROM \"alarms\" WHERE \"alarm_id\" = '{target}'")
        return [str(r[1]) for r in rows]

    await wait_for(lambda: states_in_influx() == ["firing", "acknowledged"], timeout_s=10,
                   what="alarms points firing then acknowledged")
