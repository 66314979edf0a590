"""The GB/T 26875.3 server end to end: real sockets, the real pipeline, real mosquitto/influxd.

A panel fire from a UITD must reach the API, the retained MQTT document and InfluxDB placed at
its point (building, floor, zone, tenant), be ACKed within a second and only once durable, and
hostile bytes on the port must be counted and bounded without stopping anything.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.alarms.outputs import alarm_topic
from gateway.http.app import start_http
from gateway.runtime.gateway import Gateway
from gateway.tools.cli import main as cli_main
from gateway.tools.devservices import Influxd, Mosquitto, free_port
from rules.alarm import Alarm
from sensors.gb26875.frame import Command, encode
from sensors.registry import Registry
from tests.support.gateway import make_settings, running_gateway
from tests.support.gb26875_vectors import CENTRE, UITD
from tests.support.influx import influx_rows
from tests.support.mqtt import retained_payload
from tests.support.paths import ROOT
from tests.support.uitd import UitdClient, component_adu, frame, now_label, vector1_resigned
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

POINTS = ROOT / "config" / "sample-park" / "points.csv"


def _settings(tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, **uitd: object):  # type: ignore[no-untyped-def]
    return make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                         uitd={"listen": "127.0.0.1:0", "points": str(POINTS), **uitd})


async def _port(gw: Gateway) -> int:
    assert gw.uitd is not None
    await asyncio.wait_for(gw.uitd.ready.wait(), 10)
    assert gw.uitd.port is not None
    return gw.uitd.port


def _active(gw: Gateway, rule: str) -> list[Alarm]:
    assert gw.alarms is not None
    assert gw.alarms.engine is not None
    return [a for a in gw.alarms.engine.active() if a.rule == rule]


async def test_panel_fire_is_acked_placed_and_confirmed(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd,
        sample_registry: Registry) -> None:
    settings = _settings(tmp_path, mosquitto, influxd)
    async with running_gateway(settings, sample_registry) as gw:
        client = await UitdClient.connect(await _port(gw))
        fire = vector1_resigned(serial=7)
        sent = time.monotonic()
        await client.send(fire)
        ack = await client.reply(timeout_s=1.0)
        assert time.monotonic() - sent < 1.0
        assert (ack.command, ack.serial, ack.source, ack.destination, ack.adu) == \
            (Command.CONFIRM, 7, CENTRE, UITD, b"")
        # ACKed only once durable: the alarm is already in the engine and the store.
        (alarm,) = _active(gw, "fire_alarm")
        s = alarm.subject
        assert (s.device, s.building, s.floor, s.zone, s.tenant) == \
            ("fp-0001", "b1", "2", "east", "hs-elec")
        assert alarm.labels["point"] == "L1-D024"
        assert "2F east SMT line" in s.location
        assert gw.alarm_service is not None
        stored = await gw.alarm_service.get_alarm(alarm.alarm_id)
        assert stored is not None
        assert stored.subject.tenant == "hs-elec"
        doc = await asyncio.to_thread(retained_payload, mosquitto.port, alarm_topic(alarm))
        assert doc is not None
        body = json.loads(doc)
        assert (body["building"], body["floor"], body["zone"], body["tenant"]) == \
            ("b1", "2", "east", "hs-elec")

        def in_influx() -> bool:
            rows = influx_rows(influxd, settings.influx.database,
                               "SELECT \"state\" FROM \"alarms\" WHERE \"rule\"='fire_alarm' "
                               "AND \"zone\"='east' AND \"floor\"='2' AND \"tenant\"='hs-elec'")
            return bool(rows)
        await wait_for(in_influx, timeout_s=10, what="alarm in InfluxDB")

        # A second point of the same zone (L1-D023, smoke) confirms the fire.
        await client.send(frame(component_adu(42, 65546, 0x0002), serial=8))
        assert (await client.reply()).command == Command.CONFIRM
        (confirmed,) = _active(gw, "fire_confirmed")
        assert confirmed.subject.zone == "east"
        assert confirmed.subject.floor == "2"

        # The resend of an ACKed frame doubles nothing.
        before = len(gw.alarms.engine.active()) if gw.alarms and gw.alarms.engine else 0
        await client.send(fire)
        assert (await client.reply()).command == Command.CONFIRM
        assert gw.alarms is not None
        assert gw.alarms.engine is not None
        assert len(gw.alarms.engine.active()) == before
        assert gw.metrics.value("parkwatch_uitd_rejected_total", reason="duplicate") == 1

        # A reset (type 4 bit 0) resolves the panel's fire alarms.
        reset = bytes((4, 1, 1, 1, 0x01, 0)) + now_label()
        await client.send(frame(reset, serial=9))
        assert (await client.reply()).command == Command.CONFIRM
        assert _active(gw, "fire_alarm") == []
        await client.close()


async def test_bad_frames_are_naked_counted_and_the_connection_lives(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd,
        sample_registry: Registry) -> None:
    settings = _settings(tmp_path, mosquitto, influxd, max_connections=3, idle_timeout_s=1.5)
    async with running_gateway(settings, sample_registry) as gw:
        port = await _port(gw)
        client = await UitdClient.connect(port)
        good = encode(frame(b"", serial=3))
        bad = bytearray(good)
        bad[-3] ^= 0xFF           # the checksum
        await client.send(bytes(bad))
        nak = await client.reply()
        assert (nak.command, nak.serial) == (Command.DENY, 3)
        # Garbage, then a heartbeat split across two segments: still ACKed.
        await client.send(b"\x00garbage@x" + good[:10])
        await asyncio.sleep(0.05)
        await client.send(good[10:])
        assert (await client.reply()).command == Command.CONFIRM
        # An over-long ADU length and an endless stream without '##' are bounded.
        long_header = bytearray(good[:27])
        long_header[24:26] = (5000).to_bytes(2, "little")
        await client.send(bytes(long_header) + b"\x01" * 20_000)
        await client.send(good)
        assert (await client.reply(commands=(3,))).command == Command.CONFIRM
        m = gw.metrics
        assert m.value("parkwatch_uitd_rejected_total", reason="bad_checksum") == 1
        assert m.value("parkwatch_uitd_rejected_total", reason="garbage") >= 1
        assert m.value("parkwatch_uitd_rejected_total", reason="too_long") >= 1

        # Unmapped point: pages on the panel with its raw address, counted.
        await client.send(frame(component_adu(42, 999, 0x0002), serial=4))
        assert (await client.reply()).command == Command.CONFIRM
        (alarm,) = [a for a in _active(gw, "fire_alarm") if a.labels.get("point") == "1-1-999"]
        assert alarm.subject.zone == "control"
        assert alarm.subject.device == "fp-0001"
        assert m.value("parkwatch_unmapped_points_total") == 1

        # max_connections: 3 open (client + 2), the 4th is closed at once.
        extra = [await UitdClient.connect(port) for _ in range(2)]
        await wait_for(lambda: m.value("parkwatch_uitd_connections") == 3, timeout_s=5,
                       what="3 connections")
        over = await UitdClient.connect(port)
        assert await asyncio.wait_for(over.reader.read(10), 5) == b""
        assert m.value("parkwatch_uitd_rejected_total", reason="too_many_connections") == 1
        # Idle connections (no complete frame for idle_timeout_s) are closed.
        for c in extra:
            assert await asyncio.wait_for(c.reader.read(10), 5) == b""
        assert m.value("parkwatch_uitd_rejected_total", reason="idle_timeout") >= 2
        for c in (client, *extra, over):
            await c.close()


async def test_a_silent_uitd_raises_its_panels_offline_alarm(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd,
        sample_registry: Registry) -> None:
    settings = _settings(tmp_path, mosquitto, influxd, heartbeat_allowance_s=1.5)
    async with running_gateway(settings, sample_registry) as gw:
        client = await UitdClient.connect(await _port(gw))
        await client.send(frame(b""))
        assert (await client.reply()).command == Command.CONFIRM
        assert not [a for a in _active(gw, "uitd_offline") if a.subject.device == "fp-0001"]

        def offline() -> list[Alarm]:
            return [a for a in _active(gw, "uitd_offline") if a.subject.device == "fp-0001"]
        await wait_for(lambda: bool(offline()), timeout_s=10, what="uitd_offline")
        assert offline()[0].severity.value == "major"
        # Heard again: the alarm clears.
        await client.send(frame(b"", serial=2))
        assert (await client.reply()).command == Command.CONFIRM
        await wait_for(lambda: not offline(), timeout_s=5, what="uitd_offline resolved")
        await client.close()


async def test_duty_check_from_the_api_and_the_cli(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd,
        sample_registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path, mosquitto, influxd)
    async with running_gateway(settings, sample_registry) as gw:
        client = await UitdClient.connect(await _port(gw))
        await client.send(frame(b""))
        assert (await client.reply()).command == Command.CONFIRM
        http_port = free_port()
        runner = await start_http(gw, "127.0.0.1", http_port)
        api = f"http://127.0.0.1:{http_port}"
        # A duty check changes state: it needs the generated API token, like every POST.
        token = (settings.state_dir / "http.token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{api}/uitd/fp-0001/duty-check", json={}) as resp:
                    assert resp.status == 401
                async with http.post(f"{api}/uitd/fp-0001/duty-check", data=b"{}",
                                     headers=auth) as resp:
                    assert resp.status == 415            # JSON only, like other POST routes
                async with http.post(f"{api}/uitd/fp-0009/duty-check", json={},
                                     headers=auth) as resp:
                    assert resp.status == 404
                async with http.post(f"{api}/uitd/fp-0001/duty-check",
                                     json={"by": "test"}, headers=auth) as resp:
                    assert resp.status == 202
                    asked = (await resp.json())["duty_check_asked_ms"]
            check = await client.reply(commands=(Command.CONTROL,))
            while check.adu[0] != 91:                      # skip the clock sync (90)
                check = await client.reply(commands=(Command.CONTROL,))
            # The duty officer answers at the UITD: type 24, bit 5.
            await client.send(frame(bytes((24, 1, 0x20, 1)) + now_label(), serial=2))
            assert (await client.reply()).command == Command.CONFIRM
            async with aiohttp.ClientSession() as http, http.get(f"{api}/uitd") as resp:
                rows = await resp.json()
            (row,) = [r for r in rows if r["panel"] == "fp-0001"]
            assert row["connected"] is True
            assert row["duty_check_asked_ms"] == asked
            assert row["duty_check_answered_ms"] >= asked
            # The CLI sends one through the same API.
            monkeypatch.setenv("PARKWATCH_STATE_DIR", str(settings.state_dir))
            rc = await asyncio.to_thread(
                cli_main, ["uitd", "duty-check", "--panel", "fp-0001", "--url", api])
            assert rc == 0
            check = await client.reply(commands=(Command.CONTROL,))
            assert check.adu[0] == 91
        finally:
            await runner.cleanup()
            await client.close()


async def test_a_uitd_frame_makes_its_panel_online_in_device_status(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd,
        sample_registry: Registry) -> None:
    settings = _settings(tmp_path, mosquitto, influxd)
    db = settings.influx.database

    def points() -> list[list[object]]:
        return influx_rows(influxd, db, 'SELECT "online", "source", "kind" FROM "device_status" '
                           "WHERE \"device\" = 'fp-0001'")
    async with running_gateway(settings, sample_registry) as gw:
        client = await UitdClient.connect(await _port(gw))
        await client.send(frame(b""))          # a heartbeat: no MQTT message from the panel
        assert (await client.reply()).command == Command.CONFIRM
        await wait_for(lambda: bool(points()), timeout_s=10, what="fp-0001 in device_status")
        assert points()[0][1:] == [True, "traffic", "fire_panel"]
        await client.close()
