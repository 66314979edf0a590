"""The HTTP API against a hostile web page and a lying Host (issue 13, point 1).

With the default setup (loopback, no token configured) a page in a browser on the gateway's
machine could POST ``text/plain`` to /maintenance without a preflight, and a DNS-rebinding name
reached the API as if same-origin. Now: writes need the token generated into
``state_dir/http.token``, take JSON only, and Host/Origin must name this gateway."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.config import load_settings
from gateway.http.app import build_app, start_http
from gateway.http.auth import client_headers, ensure_generated_token
from gateway.runtime.gateway import Gateway
from gateway.tools import alarmcli
from gateway.tools.devservices import Influxd, Mosquitto, free_port
from gateway.tools.simulator.publisher import MqttPublisher
from rules.alarm import AlarmState
from sensors.errors import ConfigError
from sensors.registry import Registry
from tests.support.gateway import make_settings, running_gateway
from tests.support.ids import unique
from tests.support.waiting import wait_for

TOKEN = "api-token-0123456789abcdef"
EVIL = "https://evil.example"
MAINTENANCE = {"scope": "building", "target": "xz01/b1", "mode": "test",
               "until": "2099-01-01T00:00:00Z", "by": "mallory"}


async def _gateway(tmp_path: Path, registry: Registry, **settings: Any) -> Gateway:
    """A gateway that is not running (no broker needed) with its alarm store open."""
    http = settings.pop("http", {})
    built = make_settings(tmp_path, mqtt_url="mqtt://127.0.0.1:1",
                          influx_url="http://127.0.0.1:1",
                          http={"enabled": True, "port": 0, **http},
                          notify={"ack_secret": "ack-secret-for-the-tests"}, **settings)
    gateway = Gateway(settings=built, registry=registry)
    assert gateway.alarms is not None
    await gateway.alarms.open()
    return gateway


@pytest.fixture
async def default_api(tmp_path: Path, sample_registry: Registry
                      ) -> AsyncIterator[tuple[TestClient[Any, Any], Gateway]]:
    gateway = await _gateway(tmp_path, sample_registry)
    async with TestClient(TestServer(build_app(gateway))) as client:
        yield client, gateway
    assert gateway.alarms is not None
    await gateway.alarms.close()


def _generated(gateway: Gateway) -> str:
    return (gateway.settings.state_dir / "http.token").read_text().strip()


async def test_cross_origin_text_plain_post_is_refused(
        default_api: tuple[TestClient[Any, Any], Gateway]) -> None:
    client, gateway = default_api
    body = json.dumps(MAINTENANCE)
    # What the hostile page sends: a "simple" request, no preflight.
    async with client.post("/maintenance", data=body, headers={
            "Content-Type": "text/plain;charset=UTF-8", "Origin": EVIL}) as resp:
        assert resp.status == 403, await resp.text()
    # Without Origin (a non-browser local process): still needs the token...
    async with client.post("/maintenance", data=body,
                           headers={"Content-Type": "text/plain"}) as resp:
        assert resp.status == 401
    async with client.post("/alarms/a1/ack", json={"by": "m", "disposition": "test"}) as resp:
        assert resp.status == 401
    # ... and with it, JSON only.
    auth = {"Authorization": f"Bearer {_generated(gateway)}"}
    async with client.post("/maintenance", data=body,
                           headers={**auth, "Content-Type": "text/plain"}) as resp:
        assert resp.status == 415
        assert "application/json" in (await resp.json())["error"]
    async with client.get("/maintenance") as resp:
        assert await resp.json() == []                      # nothing was changed
    # Token and JSON pass the guards and reach the handler (which judges the body; a valid one
    # would wait for the commit stage of a running gateway, see the integration test).
    async with client.post("/maintenance", json={"scope": "x"}, headers=auth) as resp:
        assert resp.status == 400, await resp.text()


async def test_dns_rebinding_host_is_refused(
        default_api: tuple[TestClient[Any, Any], Gateway]) -> None:
    client, gateway = default_api
    auth = {"Authorization": f"Bearer {_generated(gateway)}"}
    for path in ("/alarms", "/status", "/healthz", "/ack/AAAAAAAAAAAAAAAAAAAAAAAA"):
        async with client.get(path, headers={"Host": "rebind.evil.example:8080"}) as resp:
            assert resp.status == 421, path
    async with client.post("/maintenance", json=MAINTENANCE,
                           headers={**auth, "Host": "rebind.evil.example"}) as resp:
        assert resp.status == 421
    for host in ("127.0.0.1:8080", "localhost", "[::1]:80", "127.1.2.3"):
        async with client.get("/alarms", headers={"Host": host}) as resp:
            assert resp.status == 200, host
    async with client.get("/alarms", headers={"Origin": EVIL}) as resp:
        assert resp.status == 403
    async with client.get("/alarms", headers={"Origin": "null"}) as resp:
        assert resp.status == 403


async def test_reads_stay_open_on_loopback_with_a_generated_token(
        default_api: tuple[TestClient[Any, Any], Gateway]) -> None:
    client, _ = default_api
    for path in ("/alarms", "/status", "/metrics", "/maintenance", "/healthz"):
        async with client.get(path) as resp:
            assert resp.status in (200, 503), path


async def test_generated_token_file_is_private_and_reused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = ensure_generated_token(state).get_secret_value()
    path = state / "http.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert len(first) >= 32
    assert ensure_generated_token(state).get_secret_value() == first
    assert [p.name for p in state.iterdir()] == ["http.token"]   # no temporary left behind
    path.write_text("short")
    with pytest.raises(ConfigError, match="at least 16"):
        ensure_generated_token(state)


async def test_allowed_hosts_and_public_url_host(tmp_path: Path,
                                                 sample_registry: Registry) -> None:
    gateway = await _gateway(tmp_path, sample_registry,
                             http={"token": TOKEN, "allowed_hosts": ["gw.park.example"]})
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with TestClient(TestServer(build_app(gateway))) as client:
            async with client.get("/alarms", headers={**auth, "Host": "gw.park.example:8080",
                                                      "Origin": "https://gw.park.example"}) as r:
                assert r.status == 200
            async with client.get("/alarms", headers={**auth, "Host": "other.example"}) as r:
                assert r.status == 421
        assert not (gateway.settings.state_dir / "http.token").exists()  # configured: none made
    finally:
        assert gateway.alarms is not None
        await gateway.alarms.close()


def test_public_url_without_a_token_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "pw.yaml"
    cfg.write_text("notify:\n  public_url: https://pw.park.example\n")
    with pytest.raises(ConfigError, match=r"http\.token.*only /ack/"):
        load_settings(cfg)
    cfg.write_text(f"notify:\n  public_url: https://pw.park.example\nhttp:\n  token: {TOKEN}\n")
    assert load_settings(cfg).notify.public_url == "https://pw.park.example"
    cfg.write_text("notify:\n  public_url: https://pw.park.example\nhttp:\n  enabled: false\n")
    assert load_settings(cfg).http.enabled is False


def test_client_headers_find_the_token(tmp_path: Path) -> None:
    state = tmp_path / "st"
    token = ensure_generated_token(state).get_secret_value()
    cfg = tmp_path / "pw.yaml"
    cfg.write_text(f"state_dir: {state}\n")
    bearer = {"Authorization": f"Bearer {token}"}
    assert client_headers({}, config=cfg) == bearer
    assert client_headers({"PARKWATCH_STATE_DIR": str(state)}) == bearer
    assert client_headers({"PARKWATCH_HTTP__TOKEN": TOKEN}, config=cfg) == {
        "Authorization": f"Bearer {TOKEN}"}
    cfg.write_text(f"state_dir: {state}\nhttp:\n  token: {TOKEN}\n")
    assert client_headers({}, config=cfg) == {"Authorization": f"Bearer {TOKEN}"}
    assert client_headers({"PARKWATCH_STATE_DIR": str(tmp_path / "none")}) == {}


@pytest.mark.integration
async def test_a_real_gateway_writes_its_token_and_the_cli_uses_it(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry,
        monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                             http={"enabled": True, "port": port})
    cfg = tmp_path / "cli.yaml"
    cfg.write_text(f"state_dir: {settings.state_dir}\n")
    url = f"http://127.0.0.1:{port}"
    smoke = next(d for d in sample_registry if d.kind == "smoke")
    topic = f"{settings.mqtt.topic_root}/{smoke.park}/{smoke.building}/{smoke.device}/event"
    async with running_gateway(settings, sample_registry) as gw:
        runner = await start_http(gw, "127.0.0.1", port)
        try:
            token_file = settings.state_dir / "http.token"
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            async with MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("a")) as pub:
                await pub.publish(topic, json.dumps(
                    {"ts": time.time(), "type": "fire_alarm"}).encode())
                await pub.flush(10)
            await wait_for(lambda: any(a.rule == "fire_alarm" for a in gw.active_alarms()),
                           timeout_s=10, what="fire alarm")
            alarm = next(a for a in gw.active_alarms() if a.rule == "fire_alarm")
            async with aiohttp.ClientSession() as http, http.post(
                    f"{url}/alarms/{alarm.alarm_id}/ack", data=json.dumps(
                        {"by": "mallory", "disposition": "false_alarm"}),
                    headers={"Content-Type": "text/plain", "Origin": EVIL}) as resp:
                assert resp.status == 403
            ack = ["alarms", "ack", alarm.alarm_id, "--by", "alice", "--disposition", "real",
                   "--url", url]
            assert await asyncio.to_thread(alarmcli.main, ack) == alarmcli.EXIT_FAILED
            assert await asyncio.to_thread(alarmcli.main, [*ack, "--config", str(cfg)]) == 0
            acked = await gw.alarms.store.get(alarm.alarm_id)  # type: ignore[union-attr]
            assert acked is not None
            assert acked.state is AlarmState.ACKNOWLEDGED
            assert acked.acknowledged_by == "alice"
            monkeypatch.setenv("PARKWATCH_STATE_DIR", str(settings.state_dir))
            assert await asyncio.to_thread(alarmcli.main, [
                "maintenance", "list", "--url", url]) == 0
        finally:
            await runner.cleanup()
