"""An alarm is acknowledged once (issue 13, point 2): the API answers 409, a second ack link gets
a page saying who answered first, and nothing of the first acknowledgement is overwritten.
Correcting a disposition is an explicit, audited reclassification.

Everything is real except the MQTT/InfluxDB side: the rule engine in an AlarmKeeper, an
AlarmStore (SQLite and PostgreSQL), the GatewayAlarmService with a commit that persists like the
pipeline's, the ack links on the same database, and both HTTP surfaces served by aiohttp's
TestClient.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.alarms.acklinks import AckLinks
from gateway.alarms.db import Db
from gateway.alarms.keeper import AlarmKeeper
from gateway.alarms.service import GatewayAlarmService
from gateway.http.ackpage import add_ack_routes
from gateway.http.alarmapi import add_alarm_routes
from gateway.tools import alarmcli
from rules.alarm import Alarm, AlarmState, AlreadyAcknowledged, Disposition, Transition
from rules.loader import load_rules
from rules.observation import DeviceEvent
from sensors.base import EventType
from sensors.registry import Registry
from tests.support.alarmstores import StoreTarget
from tests.support.paths import ROOT

Client = TestClient[web.Request, web.Application]
BASE = "https://pw.example.test"


class Gateway:
    """The parts of a running gateway that acknowledgements touch."""

    def __init__(self, keeper: AlarmKeeper, links: AckLinks) -> None:
        self.keeper = keeper
        self.links = links
        self.service = GatewayAlarmService(keeper, self.commit_change)

    async def commit(self, transitions: Sequence[Transition]) -> None:
        await self.keeper.persist(transitions, with_state=True)

    async def commit_change(self, change: Callable[[], list[Transition]]) -> list[Transition]:
        made = change()
        await self.commit(made)
        return made

    async def fire(self, registry: Registry) -> str:
        panel = next(d for d in registry if d.kind == "fire_panel")
        now = int(time.time() * 1000)
        transitions = self.keeper.observe(
            [DeviceEvent(device=panel.device, ts_ms=now, type=EventType("fire_alarm"),
                         received_at_ms=now, point="1-01-001")], now)
        await self.commit(transitions)
        fired = [t.after for t in transitions if t.after.rule == "fire_alarm"]
        assert fired, transitions
        return fired[0].alarm_id


@pytest.fixture
async def gw(alarm_target: StoreTarget, sample_registry: Registry) -> AsyncIterator[Gateway]:
    store = alarm_target.store()
    keeper = AlarmKeeper(rules=load_rules(ROOT / "config" / "rules"), registry=sample_registry,
                         store=store, lateness_s=60)
    await keeper.open()
    try:
        yield Gateway(keeper, AckLinks(secret=b"k" * 32, base_url=BASE, store=store))
    finally:
        await keeper.close()


@pytest.fixture
async def client(gw: Gateway) -> AsyncIterator[Client]:
    app = web.Application()
    add_alarm_routes(app, gw.service)
    add_ack_routes(app, links=gw.links, service=gw.service, tz=dt.UTC)
    async with TestClient(TestServer(app)) as c:
        yield c


async def _stored_row(gw: Gateway, alarm_id: str) -> dict[str, object]:
    """The alarm's row as the database holds it, not as the store maps it."""
    return await _select(gw, "SELECT * FROM alarms WHERE alarm_id = ?", alarm_id)


async def _select(gw: Gateway, sql: str, *params: object) -> dict[str, object]:
    def read(db: Db) -> dict[str, object]:
        return dict(db.execute(sql, params).fetchone())
    return await gw.keeper.store.execute(read)


def _token(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def test_api_refuses_a_second_ack_with_409_and_the_first_stands(
        gw: Gateway, client: Client, sample_registry: Registry) -> None:
    alarm_id = await gw.fire(sample_registry)
    resp = await client.post(f"/alarms/{alarm_id}/ack",
                             json={"by": "alice", "disposition": "real"})
    assert resp.status == 200, await resp.text()
    first = await _stored_row(gw, alarm_id)
    resp = await client.post(f"/alarms/{alarm_id}/ack",
                             json={"by": "mallory", "disposition": "false_alarm"})
    assert resp.status == 409
    body = await resp.json()
    assert (body["acknowledged_by"], body["ack_channel"], body["disposition"]) == (
        "alice", "api", "real")
    assert "already acknowledged by alice" in body["error"]
    assert await _stored_row(gw, alarm_id) == first
    assert (first["acknowledged_by"], first["disposition"]) == ("alice", "real")


async def test_a_second_contacts_link_says_who_acknowledged_and_overwrites_nothing(
        gw: Gateway, client: Client, sample_registry: Registry) -> None:
    alarm_id = await gw.fire(sample_registry)
    alice = _token(await gw.links.issue(alarm_id, contact="alice", channel="sms"))
    mallory = _token(await gw.links.issue(alarm_id, contact="mallory", channel="wecom"))
    resp = await client.post(f"/ack/{alice}", data={"disposition": "real"})
    assert resp.status == 200, await resp.text()
    first = await _stored_row(gw, alarm_id)
    resp = await client.post(f"/ack/{mallory}",
                             data={"disposition": "false_alarm", "name": "Mallory"})
    assert resp.status == 409
    page = await resp.text()
    when = dt.datetime.fromtimestamp(int(str(first["acknowledged_at_ms"])) / 1000, tz=dt.UTC)
    assert f"Already acknowledged by alice at {when:%Y-%m-%d %H:%M:%S}" in page
    assert "via sms" in page
    assert await _stored_row(gw, alarm_id) == first
    assert (first["acknowledged_by"], first["ack_channel"], first["disposition"]) == (
        "alice", "sms", "real")
    # The refused link was not used up: it still shows the alarm (without a form).
    resp = await client.get(f"/ack/{mallory}")
    assert resp.status == 200
    assert 'method="post"' not in await resp.text()


async def test_a_typed_name_is_kept_apart_from_the_links_contact(
        gw: Gateway, client: Client, sample_registry: Registry) -> None:
    alarm_id = await gw.fire(sample_registry)
    token = _token(await gw.links.issue(alarm_id, contact="li-hs", channel="robot"))
    resp = await client.post(f"/ack/{token}",
                             data={"disposition": "false_alarm", "name": "the fire chief"})
    assert resp.status == 200, await resp.text()
    row = await _stored_row(gw, alarm_id)
    assert (row["acknowledged_by"], row["ack_channel"]) == ("li-hs", "robot")
    assert row["acknowledged_name"] == "the fire chief"
    doc = json.loads(str(row["document"]))
    assert (doc["acknowledged_by"], doc["acknowledged_name"]) == ("li-hs", "the fire chief")
    resp = await client.get(f"/alarms/{alarm_id}")
    shown = await resp.json()
    assert (shown["acknowledged_by"], shown["acknowledged_name"]) == ("li-hs", "the fire chief")


async def test_reclassify_writes_its_record_and_changes_the_figures(
        gw: Gateway, client: Client, sample_registry: Registry) -> None:
    alarm_id = await gw.fire(sample_registry)
    body = {"by": "carol", "disposition": "test", "reason": "a planned evacuation drill"}
    resp = await client.post(f"/alarms/{alarm_id}/reclassify", json=body)
    assert resp.status == 409                    # nothing to correct before an acknowledgement
    assert "not acknowledged" in (await resp.json())["error"]
    resp = await client.post(f"/alarms/{alarm_id}/ack",
                             json={"by": "alice", "disposition": "real"})
    assert resp.status == 200
    for bad in ({**body, "reason": ""}, {**body, "reason": "x" * 501},
                {k: v for k, v in body.items() if k != "reason"}):
        resp = await client.post(f"/alarms/{alarm_id}/reclassify", json=bad)
        assert resp.status == 400, bad
    resp = await client.post(f"/alarms/{alarm_id}/reclassify", json=body)
    assert resp.status == 200, await resp.text()
    row = await _stored_row(gw, alarm_id)
    assert (row["disposition"], row["acknowledged_by"], row["state"]) == (
        "test", "alice", AlarmState.ACKNOWLEDGED.value)
    record = await _select(gw, "SELECT reclassified_by, from_disposition, to_disposition, reason"
                                " FROM reclassifications WHERE alarm_id = ?", alarm_id)
    assert record == {"reclassified_by": "carol", "from_disposition": "real",
                      "to_disposition": "test", "reason": "a planned evacuation drill"}
    shown = await (await client.get(f"/alarms/{alarm_id}")).json()
    assert [(c["by"], c["from_disposition"], c["to_disposition"], c["reason"])
            for c in shown["reclassifications"]] == [
        ("carol", "real", "test", "a planned evacuation drill")]
    kpis = await gw.keeper.store.kpis(since_ms=0)
    assert kpis["by_disposition"]["test"] == 1
    assert kpis["by_disposition"]["real"] == 0


async def test_a_resolved_alarm_is_acknowledged_and_reclassified_from_the_store(
        gw: Gateway, sample_registry: Registry) -> None:
    alarm_id = await gw.fire(sample_registry)
    panel = next(d for d in sample_registry if d.kind == "fire_panel")
    now = int(time.time() * 1000) + 10
    await gw.commit(gw.keeper.observe(
        [DeviceEvent(device=panel.device, ts_ms=now, type=EventType("reset"),
                     received_at_ms=now)], now))
    assert (await gw.keeper.store.get(alarm_id)).state is AlarmState.RESOLVED  # type: ignore[union-attr]
    acked = await gw.service.acknowledge(alarm_id, by="alice", disposition=Disposition.REAL,
                                         channel="api")
    with pytest.raises(ValueError, match="already acknowledged by alice"):
        await gw.service.acknowledge(alarm_id, by="bob", disposition=Disposition.FAULT,
                                     channel="api")
    changed = await gw.service.reclassify(alarm_id, by="carol", disposition=Disposition.FAULT,
                                          reason="detector contaminated")
    assert changed.disposition is Disposition.FAULT
    assert changed.acknowledged_by == acked.acknowledged_by == "alice"
    assert [c["to_disposition"] for c in await gw.service.reclassifications(alarm_id)] == [
        "fault"]


async def test_cli_reclassifies_and_show_lists_the_record(
        gw: Gateway, client: Client, sample_registry: Registry,
        capsys: pytest.CaptureFixture[str]) -> None:
    alarm_id = await gw.fire(sample_registry)
    url = f"http://{client.host}:{client.port}"

    async def cli(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(alarmcli.main, [*argv[:2], "--url", url, *argv[2:]])
        out, err = capsys.readouterr()
        return code, out, err

    code, _, err = await cli("alarms", "ack", alarm_id, "--by", "alice",
                             "--disposition", "real")
    assert code == 0, err
    code, _, err = await cli("alarms", "ack", alarm_id, "--by", "bob", "--disposition", "fault")
    assert code == 1
    assert "already acknowledged by alice" in err
    code, out, err = await cli("alarms", "reclassify", alarm_id, "--by", "carol",
                               "--disposition", "false_alarm", "--reason", "steam from a kettle")
    assert code == 0, err
    assert f"reclassified {alarm_id}" in out
    code, out, err = await cli("alarms", "show", alarm_id)
    assert code == 0, err
    assert "reclassifications:" in out
    assert "real → false_alarm" in out
    assert "steam from a kettle" in out


# --- two instances, one shared PostgreSQL store --------------------------------------------------

@pytest.fixture
async def pair(pg_dsn: str, tmp_path: Path, sample_registry: Registry
               ) -> AsyncIterator[tuple[Gateway, Gateway]]:
    """Two gateways of two partitions on one database, each answering the other's hand-overs."""
    target = StoreTarget("postgres", tmp_path, pg_dsn)
    gateways: list[Gateway] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for partition in ("p1", "p2"):
            store = target.store(partition=partition)
            keeper = AlarmKeeper(rules=load_rules(ROOT / "config" / "rules"),
                                 registry=sample_registry, store=store, lateness_s=60)
            await keeper.open()
            gw = Gateway(keeper, AckLinks(secret=b"k" * 32, base_url=BASE, store=store))
            gateways.append(gw)
            tasks.append(asyncio.create_task(gw.service.run_handoffs()))
        yield gateways[0], gateways[1]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for gw in gateways:
            await gw.keeper.close()


def _app(gw: Gateway) -> web.Application:
    app = web.Application()
    add_alarm_routes(app, gw.service)
    add_ack_routes(app, links=gw.links, service=gw.service, tz=dt.UTC)
    return app


@pytest.mark.integration
async def test_any_instance_acknowledges_an_alarm_another_engine_holds_once(
        pair: tuple[Gateway, Gateway], sample_registry: Registry) -> None:
    a, b = pair
    alarm_id = await a.fire(sample_registry)                 # A's engine holds the alarm
    link = _token(await a.links.issue(alarm_id, contact="alice", channel="sms"))
    async with TestClient(TestServer(_app(a))) as on_a, \
            TestClient(TestServer(_app(b))) as on_b:
        # A link minted by A, opened on B: B hands the acknowledgement to A's engine.
        await asyncio.sleep(1.1)        # B looks for other instances' links once a second
        resp = await on_b.post(f"/ack/{link}", data={"disposition": "real"})
        assert resp.status == 200, await resp.text()
        held = a.keeper.engine.get(alarm_id) if a.keeper.engine else None
        assert held is not None
        assert held.acknowledged_by == "alice"               # A's engine knows
        first = await _stored_row(a, alarm_id)
        for client in (on_a, on_b):
            resp = await client.post(f"/alarms/{alarm_id}/ack",
                                     json={"by": "mallory", "disposition": "false_alarm"})
            assert resp.status == 409
            assert (await resp.json())["acknowledged_by"] == "alice"
        assert await _stored_row(b, alarm_id) == first
        assert await b.keeper.store.ack_requests() == []


@pytest.mark.integration
async def test_two_instances_racing_to_acknowledge_let_one_through(
        pair: tuple[Gateway, Gateway], sample_registry: Registry) -> None:
    a, b = pair
    alarm_id = await a.fire(sample_registry)
    results = await asyncio.gather(
        a.service.acknowledge(alarm_id, by="alice", disposition=Disposition.REAL,
                              channel="api"),
        b.service.acknowledge(alarm_id, by="bob", disposition=Disposition.FAULT,
                              channel="api"),
        return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1, results
    assert any(isinstance(r, AlreadyAcknowledged) for r in results), results
    row = await _stored_row(b, alarm_id)
    assert row["acknowledged_by"] == winners[0].acknowledged_by


@pytest.mark.integration
async def test_two_instances_acknowledging_a_resolved_alarm_let_one_through(
        pair: tuple[Gateway, Gateway], sample_registry: Registry) -> None:
    a, b = pair
    alarm_id = await a.fire(sample_registry)
    panel = next(d for d in sample_registry if d.kind == "fire_panel")
    now = int(time.time() * 1000) + 10
    await a.commit(a.keeper.observe(
        [DeviceEvent(device=panel.device, ts_ms=now, type=EventType("reset"),
                     received_at_ms=now)], now))
    for round_ in range(3):      # several rounds: the race must never let two through
        results = await asyncio.gather(
            a.service.acknowledge(alarm_id, by=f"alice{round_}", disposition=Disposition.REAL,
                                  channel="api"),
            b.service.acknowledge(alarm_id, by=f"bob{round_}", disposition=Disposition.FAULT,
                                  channel="api"),
            return_exceptions=True)
        assert all(isinstance(r, (AlreadyAcknowledged, Alarm)) for r in results), results
        if round_ == 0:
            assert len([r for r in results if isinstance(r, Alarm)]) == 1, results
        else:
            assert all(isinstance(r, AlreadyAcknowledged) for r in results), results
    history = await a.keeper.store.history(alarm_id)
    assert len([h for h in history if h["acknowledged_by"] is not None]) == 1
    assert await a.keeper.store.ack_requests() == []


@pytest.mark.integration
async def test_a_hand_over_nobody_takes_fails_clearly(
        pg_dsn: str, tmp_path: Path, sample_registry: Registry) -> None:
    target = StoreTarget("postgres", tmp_path, pg_dsn)
    stores = [target.store(partition=p) for p in ("p1", "p2")]
    keepers = [AlarmKeeper(rules=load_rules(ROOT / "config" / "rules"), registry=sample_registry,
                           store=s, lateness_s=60) for s in stores]
    for keeper in keepers:
        await keeper.open()
    try:
        owner = Gateway(keepers[0], AckLinks(secret=b"k" * 32, base_url=BASE, store=stores[0]))
        alarm_id = await owner.fire(sample_registry)     # and then A stops answering
        asker = GatewayAlarmService(keepers[1], owner.commit_change, handoff_wait_s=0.5)
        with pytest.raises(ValueError, match="held by another instance"):
            await asker.acknowledge(alarm_id, by="alice", disposition=Disposition.REAL,
                                    channel="api")
        assert await stores[1].ack_requests() == []
        with pytest.raises(ValueError, match="active on another instance"):
            await asker.reclassify(alarm_id, by="c", disposition=Disposition.TEST, reason="r")
    finally:
        for keeper in keepers:
            await keeper.close()
