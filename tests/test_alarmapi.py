"""The alarm HTTP API and the ``parkwatch alarms`` / ``maintenance`` commands, against a fake
in-memory AlarmService served on a real local port."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.http.alarmapi import AlarmService, add_alarm_routes, parse_time_ms
from gateway.tools import alarmcli
from rules.alarm import Alarm, AlarmState, Disposition, Maintenance, Severity, Subject, iso

T0 = 1_795_000_000_000
Client = TestClient[web.Request, web.Application]


def alarm(alarm_id: str, **overrides: Any) -> Alarm:
    fields: dict[str, Any] = {
        "alarm_id": alarm_id, "fingerprint": f"fp-{alarm_id}", "rule": "water_pressure_low",
        "severity": Severity.MAJOR, "state": AlarmState.FIRING,
        "subject": Subject(park="xz01", building="b3", floor="2", zone="east",
                           device=f"wp-{alarm_id}", kind="water_pressure"),
        "message": f"Hydrant pressure low at {alarm_id}", "started_at_ms": T0,
        "updated_at_ms": T0 + 1000, "fired_at_ms": T0 + 1000, "value": 0.08,
    }
    fields.update(overrides)
    return Alarm(**fields)


@dataclass
class FakeService:
    """In-memory AlarmService: records what the routes asked for."""

    alarms: dict[str, Alarm]
    list_calls: list[dict[str, Any]] = field(default_factory=list)
    maintenance_calls: list[dict[str, Any]] = field(default_factory=list)
    ack_calls: list[dict[str, Any]] = field(default_factory=list)

    async def list_alarms(self, *, active: bool | None, since_ms: int | None,
                          until_ms: int | None, park: str | None, building: str | None,
                          device: str | None, rule: str | None, severity: str | None,
                          tenant: str | None, limit: int) -> list[Alarm]:
        self.list_calls.append({"active": active, "since_ms": since_ms, "until_ms": until_ms,
                                "park": park, "building": building, "device": device,
                                "rule": rule, "severity": severity, "tenant": tenant,
                                "limit": limit})
        out = [a for a in self.alarms.values()
               if (active is None or a.active == active)
               and (tenant is None or a.subject.tenant == tenant)
               and (building is None or a.subject.building == building)
               and (severity is None or a.severity.value == severity)]
        return out[:limit]

    async def get_alarm(self, alarm_id: str) -> Alarm | None:
        return self.alarms.get(alarm_id)

    async def alarm_history(self, alarm_id: str) -> list[dict[str, Any]]:
        a = self.alarms[alarm_id]
        return [{"seq": 1, "at_ms": a.started_at_ms, "from_state": None, "to_state": "firing",
                 "severity": a.severity.value, "message": a.message,
                 "acknowledged_by": None, "disposition": None}]

    async def acknowledge(self, alarm_id: str, *, by: str, disposition: Disposition,
                          channel: str, name: str | None = None) -> Alarm:
        self.ack_calls.append({"id": alarm_id, "by": by, "disposition": disposition,
                               "channel": channel})
        current = self.alarms[alarm_id]  # KeyError for an unknown id, as the protocol says
        if not current.active:
            raise ValueError("it is already resolved")
        acked = current.evolve(state=AlarmState.ACKNOWLEDGED, acknowledged_by=by,
                               acknowledged_at_ms=T0 + 5000, ack_channel=channel,
                               disposition=disposition)
        self.alarms[alarm_id] = acked
        return acked

    async def reclassify(self, alarm_id: str, *, by: str, disposition: Disposition,
                         reason: str) -> Alarm:
        raise NotImplementedError   # tested against the real service (test_ack_once.py)

    async def reclassifications(self, alarm_id: str) -> list[dict[str, Any]]:
        return []

    async def set_maintenance(self, *, scope: str, target: str, mode: Maintenance,
                              until_ms: int | None, by: str) -> None:
        if target == "nowhere":
            raise KeyError(target)
        if target == "refused":
            raise ValueError("building refused is the control room; it cannot be isolated")
        self.maintenance_calls.append({"scope": scope, "target": target, "mode": mode,
                                       "until_ms": until_ms, "by": by})

    async def list_maintenance(self) -> list[dict[str, Any]]:
        return [{"scope": "building", "target": "b2", "mode": "isolated",
                 "until_ms": T0 + 7_200_000, "by": "alice"},
                {"scope": "device", "target": "sd-1", "mode": "test", "until": None,
                 "by": "bob"}]


def sample_alarms() -> dict[str, Alarm]:
    items = [
        alarm("a1"),
        alarm("a2", severity=Severity.CRITICAL, rule="fire_confirmed",
              subject=Subject(park="xz01", building="b2", zone="z1", kind="zone"),
              message="Fire confirmed in zone z1 " + "x" * 80),
        alarm("r1", state=AlarmState.RESOLVED, resolved_at_ms=T0 + 9000),
    ]
    return {a.alarm_id: a for a in items}


@pytest.fixture
def service() -> FakeService:
    return FakeService(sample_alarms())


@pytest.fixture
async def client(service: FakeService) -> AsyncIterator[Client]:
    app = web.Application()
    typed: AlarmService = service  # the fake must satisfy the protocol (checked by mypy)
    add_alarm_routes(app, typed)
    async with TestClient(TestServer(app)) as c:
        yield c


# --- GET /alarms ---------------------------------------------------------------------------------

async def test_list_defaults_to_active_documents(client: Client, service: FakeService) -> None:
    resp = await client.get("/alarms")
    assert resp.status == 200
    body = await resp.json()
    assert body == [service.alarms[i].document()
                    for i in ("a1", "a2")]
    assert service.list_calls == [{"active": True, "since_ms": None, "until_ms": None,
                                   "park": None, "building": None, "device": None,
                                   "rule": None, "severity": None, "tenant": None,
                                   "limit": 500}]


async def test_list_passes_every_filter(client: Client, service: FakeService) -> None:
    resp = await client.get("/alarms", params={
        "state": "all", "park": "xz01", "building": "b3", "device": "wp-a1", "rule": "r",
        "severity": "major", "tenant": "hs-elec", "since": "2026-11-18T00:00:00Z",
        "until": str(T0), "limit": "7"})
    assert resp.status == 200
    assert service.list_calls[-1] == {
        "active": None, "since_ms": parse_time_ms("2026-11-18T00:00:00+00:00"),
        "until_ms": T0, "park": "xz01", "building": "b3", "device": "wp-a1", "rule": "r",
        "severity": "major", "tenant": "hs-elec", "limit": 7}
    await client.get("/alarms", params={"state": "resolved", "since": "2026-11-18T08:00:00+08:00"})
    assert service.list_calls[-1]["active"] is False
    assert service.list_calls[-1]["since_ms"] == parse_time_ms("2026-11-18T00:00:00Z")


@pytest.mark.parametrize(("params", "needle"), [
    ({"state": "open"}, "state must be one of"),
    ({"severity": "huge"}, "severity must be one of"),
    ({"since": "yesterday"}, "since: 'yesterday' is neither"),
    ({"until": "2026-11-18T08:00:00"}, "until: '2026-11-18T08:00:00' has no time zone"),
    ({"limit": "0"}, "limit must be"),
    ({"limit": "5001"}, "limit must be"),
    ({"limit": "ten"}, "limit must be"),
    ({"bulding": "b2"}, "unknown query parameter(s): bulding"),
])
async def test_list_rejects_bad_queries(client: Client, service: FakeService,
                                        params: dict[str, str], needle: str) -> None:
    resp = await client.get("/alarms", params=params)
    assert resp.status == 400
    assert needle in (await resp.json())["error"]
    assert service.list_calls == []


# Issue 13, point 8: these gave a 500 and a traceback ("²".isdigit() is True; 40 digits overflow).
@pytest.mark.parametrize(("params", "needle"), [
    ({"limit": "\u00b2"}, "limit must be"),
    ({"limit": "\u0663"}, "limit must be"),             # Arabic-Indic three
    ({"limit": "\uff15"}, "limit must be"),             # fullwidth five
    ({"limit": " 5"}, "limit must be"),
    ({"limit": "5\n"}, "limit must be"),
    ({"limit": "9" * 40}, "limit must be"),
    ({"since": "9" * 40}, "since:"),
    ({"since": "-" + "9" * 40}, "since:"),
    ({"until": "-1"}, "until:"),
    ({"since": "\u00b2"}, "since:"),
    ({"since": "1\u00b2"}, "since:"),
    ({"until": "0001-01-01T00:00:00+14:00"}, "until:"),
    ({"since": str(253_402_300_800_000)}, "outside the years 1970 to 9999"),
    ({"since": "\x00"}, "since:"),
    ({"until": "2026-11-18T08:00:00\u00b2Z"}, "until:"),
])
async def test_hostile_numbers_are_400_not_500(client: Client, service: FakeService,
                                               params: dict[str, str], needle: str) -> None:
    resp = await client.get("/alarms", params=params)
    assert resp.status == 400, await resp.text()
    assert needle in (await resp.json())["error"]
    assert service.list_calls == []


def test_parse_time_ms_range() -> None:
    assert parse_time_ms("0") == 0
    assert parse_time_ms("253402300799999") == 253_402_300_799_999
    assert parse_time_ms("9999-12-31T23:59:59.999Z") == 253_402_300_799_999
    for bad in ("253402300800000", "-1", "1969-12-31T23:59:59Z", "\u00b2", "9" * 40):
        with pytest.raises(ValueError, match=r"outside|neither"):
            parse_time_ms(bad)


def test_parse_time_ms() -> None:
    assert parse_time_ms("1795000000000") == T0
    assert parse_time_ms(iso(T0)) == T0
    assert parse_time_ms("2026-11-18T08:00:00+08:00") == parse_time_ms("2026-11-18T00:00:00Z")
    with pytest.raises(ValueError, match="no time zone"):
        parse_time_ms("2026-11-18")


# --- GET /alarms/{id} ----------------------------------------------------------------------------

async def test_show_returns_document_and_history(client: Client, service: FakeService) -> None:
    resp = await client.get("/alarms/a1")
    assert resp.status == 200
    body = await resp.json()
    history = body.pop("history")
    assert body.pop("reclassifications") == []
    assert body == service.alarms["a1"].document()
    assert history[0]["to_state"] == "firing"
    assert history[0]["at"] == iso(T0)


async def test_show_unknown_is_404(client: Client) -> None:
    resp = await client.get("/alarms/nope")
    assert resp.status == 404
    assert await resp.json() == {"error": "no alarm with id 'nope'"}


# --- POST /alarms/{id}/ack -----------------------------------------------------------------------

async def test_ack(client: Client, service: FakeService) -> None:
    resp = await client.post("/alarms/a1/ack", json={"by": " alice ", "disposition": "real"})
    assert resp.status == 200
    doc = await resp.json()
    assert doc["state"] == "acknowledged"
    assert doc["acknowledged_by"] == "alice"
    assert doc["disposition"] == "real"
    # Ack links are minted per recipient and travel only in notifications, never in the API.
    assert doc["ack_url"] is None
    assert service.ack_calls == [{"id": "a1", "by": "alice", "disposition": Disposition.REAL,
                                  "channel": "api"}]
    resp = await client.post("/alarms/a2/ack",
                             json={"by": "bob", "disposition": "test", "channel": "sms"})
    assert resp.status == 200
    assert service.ack_calls[-1]["channel"] == "sms"


async def test_ack_unknown_is_404_and_resolved_is_409(client: Client) -> None:
    resp = await client.post("/alarms/nope/ack", json={"by": "a", "disposition": "real"})
    assert resp.status == 404
    assert "nope" in (await resp.json())["error"]
    resp = await client.post("/alarms/r1/ack", json={"by": "a", "disposition": "real"})
    assert resp.status == 409
    assert (await resp.json())["error"] == ("cannot acknowledge alarm 'r1': "
                                            "it is already resolved")


@pytest.mark.parametrize(("body", "needle"), [
    ({"by": "a", "disposition": "maybe"}, "disposition: Input should be 'real'"),
    ({"disposition": "real"}, "by: Field required"),
    ({"by": "  ", "disposition": "real"}, "by: String should have at least 1 character"),
    ({"by": "a", "disposition": "real", "note": "x"}, "note: Extra inputs are not permitted"),
    ([1, 2], "body: Input should be an object"),
])
async def test_ack_rejects_bad_bodies(client: Client, service: FakeService, body: Any,
                                      needle: str) -> None:
    resp = await client.post("/alarms/a1/ack", json=body)
    assert resp.status == 400
    assert needle in (await resp.json())["error"]
    assert service.ack_calls == []


async def test_ack_rejects_invalid_json(client: Client) -> None:
    resp = await client.post("/alarms/a1/ack", data=b"{by: alice",
                             headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert "Invalid JSON" in (await resp.json())["error"]


# --- /maintenance --------------------------------------------------------------------------------

async def test_maintenance_list(client: Client, service: FakeService) -> None:
    resp = await client.get("/maintenance")
    assert resp.status == 200
    assert await resp.json() == await service.list_maintenance()


async def test_maintenance_set_and_clear(client: Client, service: FakeService) -> None:
    until_ms = (int(time.time()) + 7200) * 1000
    resp = await client.post("/maintenance", json={
        "scope": "building", "target": "b2", "mode": "isolated", "until": iso(until_ms),
        "by": "alice"})
    assert resp.status == 200
    assert await resp.json() == {"scope": "building", "target": "b2", "mode": "isolated",
                                 "until": iso(until_ms), "by": "alice"}
    resp = await client.post("/maintenance", json={
        "scope": "device", "target": "sd-1", "mode": "none", "by": "bob"})
    assert resp.status == 200
    assert service.maintenance_calls == [
        {"scope": "building", "target": "b2", "mode": Maintenance.ISOLATED,
         "until_ms": until_ms, "by": "alice"},
        {"scope": "device", "target": "sd-1", "mode": Maintenance.NONE, "until_ms": None,
         "by": "bob"}]


@pytest.mark.parametrize(("body", "needle"), [
    ({"scope": "floor", "target": "f1", "mode": "test", "by": "a"}, "scope: Input should be"),
    ({"scope": "zone", "target": "z", "mode": "off", "by": "a"}, "mode: Input should be"),
    ({"scope": "zone", "target": "z", "mode": "none", "until": "2099-01-01T00:00:00Z",
      "by": "a"}, "'until' makes no sense with mode 'none'"),
    ({"scope": "zone", "target": "z", "mode": "test", "until": "2099-01-01T00:00:00",
      "by": "a"}, "until: Input should have timezone info"),
    ({"scope": "zone", "target": "z", "mode": "test", "until": "2001-01-01T00:00:00Z",
      "by": "a"}, "is in the past"),
    ({"scope": "zone", "target": "", "mode": "test", "by": "a"}, "target: String should"),
    ({"scope": "zone", "target": "z", "mode": "test"}, "by: Field required"),
    ({"scope": "zone", "target": "z", "mode": "test", "by": "a", "why": "x"}, "why: Extra"),
    ({"scope": "building", "target": "refused", "mode": "isolated", "by": "a"},
     "control room"),
])
async def test_maintenance_rejects_bad_requests(client: Client, body: dict[str, Any],
                                                needle: str) -> None:
    resp = await client.post("/maintenance", json=body)
    assert resp.status == 400
    assert needle in (await resp.json())["error"]


async def test_maintenance_unknown_target_is_404(client: Client) -> None:
    resp = await client.post("/maintenance", json={"scope": "building", "target": "nowhere",
                                                   "mode": "test", "by": "a"})
    assert resp.status == 404
    assert (await resp.json())["error"] == "no building 'nowhere' in the registry"


# --- the CLI, against the same fake service on a real port --------------------------------------

@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(client: Client, capsys: pytest.CaptureFixture[str]) -> Any:
    url = str(client.make_url("")).rstrip("/")

    async def run(*argv: str, url: str = url) -> Run:
        capsys.readouterr()
        # The CLI is synchronous: run it off the loop so the test server can answer it.
        code = await asyncio.to_thread(alarmcli.main, [*argv[:2], "--url", url, *argv[2:]])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


async def test_cli_alarms_list(cli: Any, service: FakeService) -> None:
    r = await cli("alarms", "list")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == ["SEVERITY", "STATE", "SINCE", "WHERE", "RULE", "MESSAGE", "ACK",
                                "ID"]
    assert "b3/east/wp-a1" in r.out
    assert "b2/z1" in r.out
    assert "Fire confirmed in zone z1 xxx" in r.out
    assert "x" * 80 not in r.out  # long messages are cut
    assert "r1" not in r.out
    r = await cli("alarms", "list", "--all", "--building", "b3", "--severity", "major")
    assert r.code == 0
    assert service.list_calls[-1]["active"] is None
    assert service.list_calls[-1]["building"] == "b3"
    assert service.list_calls[-1]["severity"] == "major"
    assert "r1" in r.out
    r = await cli("alarms", "list", "--state", "resolved", "--json")
    assert [d["alarm_id"] for d in json.loads(r.out)] == ["r1"]
    r = await cli("alarms", "list", "--building", "b9")
    assert r.out.strip() == "no alarms"


_RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


async def test_cli_never_prints_terminal_escapes(cli: Any, service: FakeService) -> None:
    # A device's detail reached the operator's terminal as is: ESC [2J cleared the screen.
    hostile = "[确认](http://evil)\x1b[2J\x9b31m\u202eknil\x07"
    service.alarms["h1"] = alarm("h1", message=hostile, subject=Subject(
        park="xz01", building="b3", floor="2", zone="east", device="wp-h1",
        kind="water_pressure", location="2F\x1b]0;owned\x07 riser"))
    for argv in (("alarms", "list"), ("alarms", "list", "--json"), ("alarms", "show", "h1"),
                 ("alarms", "show", "h1", "--json"), ("alarms", "history", "--since", "7d")):
        r = await cli(*argv)
        assert r.code == 0, r.err
        assert not _RAW_CONTROL.search(r.out), (argv, r.out)
        assert "[2J" in r.out, argv   # shown, as an escape, not obeyed
    r = await cli("alarms", "show", "h1", "--json")
    assert json.loads(r.out)["message"] == hostile   # still the same data for a program


async def test_cli_usage_errors_exit_2(cli: Any) -> None:
    r = await cli("alarms", "list", "--all", "--state", "resolved")
    assert r.code == 2
    assert "not allowed with" in r.err
    r = await cli("alarms", "ack", "a1", "--by", "x", "--disposition", "maybe")
    assert r.code == 2
    r = await cli("alarms", "history", "--since", "last tuesday")
    assert r.code == 2
    assert "'last tuesday' is not a duration" in r.err
    r = await cli("alarms", "list", "--limit", "0")  # refused by the gateway: still usage
    assert r.code == 2
    assert "limit must be" in r.err


async def test_cli_show(cli: Any) -> None:
    r = await cli("alarms", "show", "a1")
    assert r.code == 0, r.err
    assert "alarm_id" in r.out
    assert "wp-a1" in r.out
    assert "history:" in r.out
    assert "new → firing" in r.out
    r = await cli("alarms", "show", "a1", "--json")
    assert json.loads(r.out)["history"][0]["seq"] == 1
    r = await cli("alarms", "show", "nope")
    assert r.code == 1
    assert "no alarm with id 'nope' (HTTP 404)" in r.err


async def test_cli_ack(cli: Any, service: FakeService) -> None:
    r = await cli("alarms", "ack", "a1", "--by", "alice", "--disposition", "false_alarm")
    assert r.code == 0, r.err
    assert r.out.strip() == "acknowledged a1 (water_pressure_low at b3/east/wp-a1) as " \
                            "false_alarm by alice"
    assert service.ack_calls[-1] == {"id": "a1", "by": "alice",
                                     "disposition": Disposition.FALSE_ALARM, "channel": "cli"}
    r = await cli("alarms", "ack", "r1", "--by", "alice", "--disposition", "real")
    assert r.code == 1
    assert "already resolved (HTTP 409)" in r.err
    r = await cli("alarms", "ack", "nope", "--by", "alice", "--disposition", "real")
    assert r.code == 1


async def test_cli_history(cli: Any, service: FakeService) -> None:
    before = time.time()
    r = await cli("alarms", "history", "--since", "7d")
    assert r.code == 0, r.err
    call = service.list_calls[-1]
    assert call["active"] is None
    assert abs(call["since_ms"] - (before - 7 * 86400) * 1000) < 60_000
    assert call["until_ms"] is None
    r = await cli("alarms", "history", "--since", "2026-11-01T00:00:00Z", "--until",
                  "2026-11-02T00:00:00Z", "--state", "resolved")
    assert r.code == 0, r.err
    call = service.list_calls[-1]
    assert call["active"] is False
    assert call["since_ms"] == parse_time_ms("2026-11-01T00:00:00Z")
    assert call["until_ms"] == parse_time_ms("2026-11-02T00:00:00Z")


async def test_cli_maintenance(cli: Any, service: FakeService) -> None:
    before = time.time()
    r = await cli("maintenance", "set", "--scope", "building", "--target", "b2", "--mode",
                  "isolated", "--until", "2h", "--by", "alice")
    assert r.code == 0, r.err
    assert r.out.startswith("building b2: isolated until ")
    call = service.maintenance_calls[-1]
    assert call["mode"] is Maintenance.ISOLATED
    assert abs(call["until_ms"] - (before + 7200) * 1000) < 60_000
    r = await cli("maintenance", "clear", "--scope", "building", "--target", "b2", "--by", "bob")
    assert r.code == 0, r.err
    assert r.out.strip() == "building b2: maintenance cleared by bob"
    assert service.maintenance_calls[-1]["mode"] is Maintenance.NONE
    r = await cli("maintenance", "set", "--scope", "zone", "--target", "nowhere", "--mode",
                  "test", "--by", "a")
    assert r.code == 1
    r = await cli("maintenance", "list")
    assert r.code == 0
    assert r.out.splitlines()[0].split() == ["SCOPE", "TARGET", "MODE", "UNTIL", "BY"]
    assert "isolated" in r.out
    assert "sd-1" in r.out
    r = await cli("maintenance", "list", "--json")
    assert len(json.loads(r.out)) == 2


async def test_cli_unreachable_gateway_exits_3(cli: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    r = await cli("alarms", "list", url=url)
    assert r.code == 3
    assert f"cannot reach the gateway at {url}" in r.err


def test_parse_when() -> None:
    now = 1_800_000_000.0
    assert alarmcli.parse_when("24h", future=False, now_s=now) == (now - 86400) * 1000
    assert alarmcli.parse_when("30m", future=True, now_s=now) == (now + 1800) * 1000
    assert alarmcli.parse_when("1.5d", future=False, now_s=now) == (now - 129600) * 1000
    assert alarmcli.parse_when("2026-11-18T00:00:00Z", future=False) == \
        parse_time_ms("2026-11-18T00:00:00Z")
    assert alarmcli.parse_when(str(T0), future=False) == T0
    with pytest.raises(alarmcli.CliError):
        alarmcli.parse_when("soon", future=True)
