"""Crash safety of the UITD server: ``kill -9`` between a fire frame and its ACK loses nothing,
and the UITD's resend after the restart doubles nothing (one alarm, one page)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway.tools.devservices import Influxd, Mosquitto, free_port
from sensors.gb26875.frame import Command
from sensors.registry import Registry
from tests.support.gateway import make_settings, spawn_gateway
from tests.support.notify_servers import ProviderServer
from tests.support.paths import ROOT
from tests.support.uitd import UitdClient, vector1_resigned
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXVpdGQtY3Jhc2g="


async def _connect(port: int) -> UitdClient:
    for _ in range(200):
        try:
            return await UitdClient.connect(port)
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError("UITD port never opened")


async def test_kill_before_ack_then_resend_gives_one_alarm_and_one_page(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd,
        sample_registry: Registry) -> None:
    port = free_port()
    async with ProviderServer(webhook_secret=SECRET) as hook:
        settings = make_settings(
            tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
            notify={"webhook_url": f"{hook.url}/parkwatch", "webhook_secret": SECRET},
            uitd={"listen": f"127.0.0.1:{port}",
                  "points": str(ROOT / "config" / "sample-park" / "points.csv")})
        doc = json.loads(settings.model_dump_json())
        doc["notify"]["webhook_secret"] = SECRET   # model_dump masks secrets
        config = tmp_path / "gateway.yaml"
        config.write_text(yaml.safe_dump(doc))
        log = tmp_path / "gateway.log"
        fire = vector1_resigned(serial=41)
        proc = spawn_gateway(config, log)
        try:
            await wait_for(lambda: b"GB/T 26875.3 server on" in log.read_bytes(), timeout_s=30,
                           what="UITD server up")
            client = await _connect(port)
            await client.send(fire)
            proc.send_signal(signal.SIGKILL)     # before (or while) the ACK is written
            proc.wait(10)
            await client.close()
            proc = spawn_gateway(config, log)
            client = await _connect(port)
            await client.send(fire)              # the UITD resends what got no ACK
            ack = await client.reply(timeout_s=10)
            assert (ack.command, ack.serial) == (Command.CONFIRM, 41)
            await client.close()

            def fire_pages() -> list[dict[str, object]]:
                return [r.json() for r in hook.of("webhook")
                        if r.json().get("rule") == "fire_alarm"
                        and r.json().get("state") == "firing"]
            await wait_for(lambda: len(fire_pages()) >= 1, timeout_s=30, what="the page")
            await asyncio.sleep(2.0)   # time for a second page, if one were coming
            pages = fire_pages()
            assert len(pages) == 1
            assert (pages[0]["zone"], pages[0]["floor"], pages[0]["tenant"]) == \
                ("east", "2", "hs-elec")
            assert len({p["alarm_id"] for p in pages}) == 1
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
