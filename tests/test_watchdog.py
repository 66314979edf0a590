"""The "connected but nothing arrives" watchdog and the signs of life outside the broker."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.ingest.mqttcodec import encode_unsubscribe
from gateway.ingest.watchdog import IngestWatchdog
from gateway.runtime.heartbeat import Heartbeat
from gateway.tools.devservices import Influxd, Mosquitto
from gateway.tools.simulator.publisher import MqttPublisher
from rules.system import INGEST_STALLED
from sensors.registry import Registry
from tests.support.faultproxy import FaultProxy
from tests.support.gateway import make_settings, running_gateway
from tests.support.ids import unique
from tests.support.influx import influx_count
from tests.support.notify_servers import ProviderServer
from tests.support.waiting import wait_for


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Session:
    def __init__(self) -> None:
        self.connected = True
        self.log: list[str] = []

    def resubscribe(self) -> None:
        self.log.append("resubscribe")

    async def reconnect(self) -> None:
        self.log.append("reconnect")


async def test_watchdog_resubscribes_then_reconnects_then_alarms_and_clears() -> None:
    clock, session, reports = _Clock(), _Session(), []
    dog = IngestWatchdog(interval_s=10, probe=lambda _: None,
                         connected=lambda: session.connected, resubscribe=session.resubscribe,
                         reconnect=session.reconnect,
                         stalled=lambda on, why: reports.append((on, why)), clock=clock)
    asked = clock.now
    clock.now += 10
    dog.heard()                                   # the probe came back: all is well
    await dog.check(asked)
    assert (session.log, reports) == ([], [])
    for _ in range(3):                            # then silence, round after round
        asked = clock.now
        clock.now += 10
        await dog.check(asked)
    assert session.log == ["resubscribe", "reconnect", "reconnect"]
    assert len(reports) == 1                      # one alarm, not one per round
    assert reports[0][0] is True
    assert "connected but nothing arrived" in reports[0][1]
    asked = clock.now
    clock.now += 10
    dog.heard()
    await dog.check(asked)
    assert reports[-1] == (False, "messages arrive again")
    assert dog.misses == 0


async def test_not_connected_for_two_rounds_alarms_without_resubscribing() -> None:
    clock, session, reports = _Clock(), _Session(), []
    session.connected = False
    dog = IngestWatchdog(interval_s=10, probe=lambda _: None,
                         connected=lambda: session.connected, resubscribe=session.resubscribe,
                         reconnect=session.reconnect,
                         stalled=lambda on, why: reports.append((on, why)), clock=clock)
    for _ in range(2):
        asked = clock.now
        clock.now += 10
        await dog.check(asked)
    assert session.log == []
    assert len(reports) == 1
    assert "not connected to the broker" in reports[0][1]


async def test_heartbeat_pings_the_url_and_tells_systemd(tmp_path: Path) -> None:
    pings: list[str] = []

    async def ping(request: web.Request) -> web.Response:
        pings.append(request.path)
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_get("/ping/{uuid}", ping)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    notify = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.setblocking(False)
    alive = True
    beat = Heartbeat(url=f"http://127.0.0.1:{port}/ping/0b8f", interval_s=0.1,
                     notify_socket=str(notify))
    task = asyncio.create_task(beat.run(lambda: alive))
    try:
        await wait_for(lambda: len(pings) >= 2, timeout_s=10, what="two pings")
        got = listener.recv(100)
        assert got == b"WATCHDOG=1"
        alive = False                             # a stuck pipeline: the pings stop
        await asyncio.sleep(0.3)
        before = len(pings)
        await asyncio.sleep(0.5)
        assert len(pings) == before
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        listener.close()
        await runner.cleanup()


def _reading(root: str, dev: Any, seq: int) -> tuple[str, bytes]:
    return (f"{root}/{dev.park}/{dev.building}/{dev.device}/telemetry",
            json.dumps({"ts": time.time() - 1 + seq * 0.1, "seq": seq,
                        "level_m": 3.2}).encode())


@pytest.mark.integration
async def test_a_lost_subscription_is_healed_by_resubscribing(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd,
        sample_registry: Registry) -> None:
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                             mqtt={"watchdog_s": 0.5})
    root = settings.mqtt.topic_root
    tank = next(d for d in sample_registry if d.kind == "water_level")
    async with running_gateway(settings, sample_registry) as gw, \
            MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("w")) as pub:
        assert gw.session is not None
        # The broker forgets our subscription while the connection stays up (what a broker
        # restart without persistence or an ACL reload can do): keepalives still flow.
        conn = gw.session._conn
        assert conn is not None
        conn.write(encode_unsubscribe(60000, gw.session._subscriptions,
                                      version=gw.session.protocol_version))
        await wait_for(lambda: gw.watchdog is not None and gw.watchdog.resubscribes >= 1,
                       timeout_s=15, what="the watchdog resubscribed")
        for seq in range(5):
            await pub.publish(*_reading(root, tank, seq))
        await pub.flush(10)
        await wait_for(lambda: influx_count(influxd, settings.influx.database, "water_level",
                                            "level_m") >= 5,
                       timeout_s=20, what="readings flow again after the resubscribe")
        assert gw.watchdog is not None
        assert not gw.watchdog.alarmed


@pytest.mark.integration
async def test_a_stalled_broker_path_raises_ingest_stalled_over_http_and_it_clears(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd,
        sample_registry: Registry) -> None:
    async with FaultProxy(mosquitto.port) as proxy, ProviderServer() as hook:
        settings = make_settings(
            tmp_path, mqtt_url=f"mqtt://127.0.0.1:{proxy.port}", influx_url=influxd.url,
            mqtt={"watchdog_s": 1.0, "keepalive_s": 60},
            notify={"webhook_url": f"{hook.url}/parkwatch"})

        def stalled_docs() -> list[dict[str, Any]]:
            return [r.json() for r in hook.of("webhook") if r.json()["rule"] == INGEST_STALLED]

        async with running_gateway(settings, sample_registry) as gw:
            proxy.stall()           # connected, keepalive far away, nothing arrives
            await wait_for(lambda: any(d["state"] == "firing" for d in stalled_docs()),
                           timeout_s=30, what="ingest_stalled delivered over HTTP")
            firing = next(d for d in stalled_docs() if d["state"] == "firing")
            assert firing["severity"] == "critical"
            assert firing["park"] == "xz01"
            assert gw.watchdog is not None
            assert gw.watchdog.resubscribes >= 1
            assert gw.watchdog.reconnects >= 1
            proxy.resume()
            await wait_for(lambda: any(d["state"] == "resolved" for d in stalled_docs()),
                           timeout_s=60, what="ingest_stalled resolved once messages flow")


async def test_a_full_wal_pauses_the_watchdog() -> None:
    clock, session, reports = _Clock(), _Session(), []
    full = True
    dog = IngestWatchdog(interval_s=10, probe=lambda _: None,
                         connected=lambda: session.connected, resubscribe=session.resubscribe,
                         reconnect=session.reconnect,
                         stalled=lambda on, why: reports.append((on, why)),
                         paused=lambda: full, clock=clock)
    for _ in range(3):
        asked = clock.now
        clock.now += 10
        await dog.check(asked)
    assert (session.log, reports) == ([], [])     # silence was expected: storage_full says why
    full = False
    asked = clock.now
    clock.now += 10
    await dog.check(asked)
    assert session.log == ["resubscribe"]
