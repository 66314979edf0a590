"""Alarms filtered by tenant (``GET /alarms?tenant=``, ``parkwatch alarms list|history
--tenant``) and the read-only ``GET /tenants``, against a real (not running) Gateway: its rule
engine, its SQLite alarm store and its HTTP app on a real local port (issue 12, point 3)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.http.app import API_TOKEN, build_app
from gateway.runtime.gateway import Gateway
from gateway.tools import alarmcli
from rules.observation import DeviceEvent
from sensors.base import EventType
from sensors.registry import Registry
from sensors.tenants import TenantRegisterError
from tests.support.gateway import make_settings
from tests.support.paths import ROOT

TENANTS = ROOT / "config" / "sample-park" / "tenants.yaml"


def _settings(tmp_path: Path, **overrides: Any) -> Any:
    return make_settings(tmp_path, mqtt_url="mqtt://127.0.0.1:1", influx_url="http://127.0.0.1:1",
                         http={"enabled": True, "port": 0}, **overrides)


@pytest.fixture
async def gateway(tmp_path: Path, sample_registry: Registry) -> AsyncIterator[Gateway]:
    gw = Gateway(settings=_settings(tmp_path, tenants=str(TENANTS)), registry=sample_registry)
    assert gw.alarms is not None
    await gw.alarms.open()
    try:
        yield gw
    finally:
        await gw.alarms.close()


async def _fire(gw: Gateway, device: str) -> str:
    """A real fire_alarm from ``device``, through the engine into the store."""
    keeper = gw.alarms
    assert keeper is not None
    now = int(time.time() * 1000)
    transitions = keeper.observe([DeviceEvent(device=device, ts_ms=now, received_at_ms=now,
                                              type=EventType("fire_alarm"))], now)
    await keeper.persist(transitions, with_state=True)
    fired = [t.after for t in transitions if t.after.rule == "fire_alarm"]
    assert fired, transitions
    return fired[0].alarm_id


def _device_of(registry: Registry, tenant: str | None) -> str:
    return next(d.device for d in registry if d.tenant == tenant and d.kind == "smoke")


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(build_app(gateway))) as c:
        yield c


async def test_alarms_filtered_by_tenant(gateway: Gateway, client: TestClient[Any, Any],
                                         sample_registry: Registry) -> None:
    hs = await _fire(gateway, _device_of(sample_registry, "hs-elec"))
    jx = await _fire(gateway, _device_of(sample_registry, "jx-textile"))
    everyone = await (await client.get("/alarms")).json()
    assert {hs, jx} <= {d["alarm_id"] for d in everyone}
    resp = await client.get("/alarms", params={"tenant": "hs-elec", "state": "all"})
    assert resp.status == 200
    assert [d["alarm_id"] for d in await resp.json()] == [hs]
    resp = await client.get("/alarms", params={"tenant": "nobody"})
    assert await resp.json() == []
    resp = await client.get("/alarms", params={"tenant_id": "hs-elec"})
    assert resp.status == 400
    assert "tenant" in (await resp.json())["error"]


async def test_tenants_lists_the_register_read_only(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/tenants")
    assert resp.status == 200
    body = await resp.json()
    assert [t["id"] for t in body] == ["hs-elec", "jx-textile", "lt-print"]
    jx = body[1]
    assert jx["fire_safety_manager"] == {"name": "陈丽", "phone": "+8613800000021"}
    assert (jx["fire_hazard_class"], jx["hazard_code"], jx["three_in_one"]) == ("丙", "C", True)
    one = await client.get("/tenants/lt-print")
    assert (await one.json())["name"] == body[2]["name"]
    assert (await client.get("/tenants/nobody")).status == 404
    # Read-only even for a caller with the token: the register is the park office's file.
    assert client.app is not None
    token = client.app[API_TOKEN].secret.get_secret_value()
    resp = await client.post("/tenants", json={"id": "x"},
                             headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 405


async def test_no_register_no_tenants_route(tmp_path: Path, sample_registry: Registry) -> None:
    gw = Gateway(settings=_settings(tmp_path), registry=sample_registry)
    async with TestClient(TestServer(build_app(gw))) as c:
        assert (await c.get("/tenants")).status == 404


def test_gateway_refuses_a_registry_tenant_missing_from_the_register(
        tmp_path: Path, sample_registry: Registry) -> None:
    register = tmp_path / "tenants.yaml"
    register.write_text("tenants: []\n")
    with pytest.raises(TenantRegisterError, match="tenant: 'hs-elec' is not in the tenant"):
        Gateway(settings=_settings(tmp_path, tenants=str(register)), registry=sample_registry)


@dataclass
class Run:
    code: int
    out: str
    err: str


async def test_cli_filters_by_tenant(gateway: Gateway, client: TestClient[Any, Any],
                                     sample_registry: Registry,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    hs = await _fire(gateway, _device_of(sample_registry, "hs-elec"))
    lt = await _fire(gateway, _device_of(sample_registry, "lt-print"))
    url = str(client.make_url("")).rstrip("/")

    async def cli(*argv: str) -> Run:
        capsys.readouterr()
        code = await asyncio.to_thread(alarmcli.main, [*argv[:2], "--url", url, *argv[2:]])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    r = await cli("alarms", "list", "--tenant", "lt-print", "--json")
    assert r.code == 0, r.err
    assert [d["alarm_id"] for d in json.loads(r.out)] == [lt]
    r = await cli("alarms", "list", "--tenant", "hs-elec")
    assert r.code == 0, r.err
    assert hs in r.out
    assert lt not in r.out
    r = await cli("alarms", "history", "--since", "1h", "--tenant", "hs-elec", "--json")
    assert r.code == 0, r.err
    assert [d["alarm_id"] for d in json.loads(r.out)] == [hs]
    r = await cli("alarms", "history", "--since", "1h", "--tenant", "jx-textile")
    assert r.out.strip() == "no alarms"
