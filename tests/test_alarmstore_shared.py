"""The alarm store shared by several instances on one PostgreSQL database (issue 16, point 3):
migrations once, fencing, the outbox sent exactly once across senders, partitions, errors that
name the server but never its password; and what the SQLite default keeps from before."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from gateway.alarms import postgres as pgbackend
from gateway.alarms import sqlite as sqlitebackend
from gateway.alarms.acklinks import AckLinks, insert_grants
from gateway.alarms.fence import FencedOut
from gateway.alarms.postgres import PostgresBackend, describe
from gateway.alarms.store import (
    AlarmStore,
    AlarmStoreError,
    DuplicateActiveAlarm,
    OutboxRow,
    store_for,
)
from gateway.config import AlarmSettings
from gateway.metrics import Metrics
from gateway.notify.base import Notification, SendResult
from gateway.notify.channels.webhook import WebhookChannel
from gateway.notify.dispatcher import Dispatcher
from gateway.notify.outbox import Outbox, outbox_row
from gateway.scorecard.alarmsource import PostgresSource, read_alarms, read_maintenance
from gateway.scorecard.model import Period
from rules.alarm import Transition
from sensors.errors import ConfigError
from tests.support.alarms import T0, make_alarm
from tests.support.alarmstores import FlipFence, StoreTarget
from tests.support.gateway import make_settings
from tests.support.notify_servers import ProviderServer

pg = pytest.mark.integration


def _note(i: int, *, channel: str = "hook") -> Notification:
    return Notification(key=f"n{i}:firing", channel=channel, recipient="", title=f"alarm {i}",
                        text=f"alarm {i}", alarm={"alarm_id": f"a{i}", "rule": "smoke"})


def _rows(count: int, now: int, *, fire: bool = True) -> list[OutboxRow]:
    return [outbox_row(_note(i), now_ms=now, due_ms=now, deadline_ms=now + 3_600_000,
                       fire_class=fire) for i in range(count)]


# --- migrations ----------------------------------------------------------------------------------

@pg
async def test_instances_starting_at_once_migrate_once(pg_dsn: str, tmp_path: Path) -> None:
    target = StoreTarget("postgres", tmp_path, pg_dsn)
    stores = [target.store() for _ in range(6)]
    await asyncio.gather(*(s.open() for s in stores))
    for s in stores:
        await s.close()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall() \
            == [(v,) for v in range(1, pgbackend.SCHEMA_VERSION + 1)]
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(AlarmStoreError, match="newer"):
        await target.store().open()


async def test_a_single_box_store_moves_its_state_to_the_default_partition(
        tmp_path: Path) -> None:
    """A file written before partitions (schema 6) keeps its engine state and liveness rows."""
    path = tmp_path / "alarms.sqlite3"
    with sqlite3.connect(path, isolation_level=None) as conn:
        for version, script in enumerate(sqlitebackend._MIGRATIONS[:6], start=1):
            conn.executescript(f"BEGIN; {script}; PRAGMA user_version = {version}; COMMIT;")
        conn.execute("INSERT INTO engine_state (id, state) VALUES (1, '{\"old\": true}')")
        conn.execute("INSERT INTO device_liveness VALUES ('d1', 5, 1, 'heard')")
    async with AlarmStore(path) as store:
        assert await store.load_engine_state() == '{"old": true}'
        assert await store.load_liveness() == [("d1", 5, True, "heard")]
    async with AlarmStore(path, partition="p2") as other:
        assert await other.load_engine_state() is None


# --- the same guarantees, two instances ----------------------------------------------------------

@pg
async def test_two_instances_cannot_both_open_an_alarm_for_one_fingerprint(
        pg_dsn: str, tmp_path: Path) -> None:
    target = StoreTarget("postgres", tmp_path, pg_dsn)
    async with target.store() as a, target.store() as b:
        for round_ in range(5):
            results = await asyncio.gather(
                a.apply([Transition(None, make_alarm(f"x{round_}", fingerprint=f"fp{round_}"))]),
                b.apply([Transition(None, make_alarm(f"y{round_}", fingerprint=f"fp{round_}"))]),
                return_exceptions=True)
            assert sorted(type(r).__name__ for r in results) == [
                DuplicateActiveAlarm.__name__, "NoneType"]
        assert len(await b.list(active=True)) == 5


@pg
async def test_engine_state_and_liveness_are_per_partition(pg_dsn: str, tmp_path: Path) -> None:
    target = StoreTarget("postgres", tmp_path, pg_dsn)
    async with target.store(partition="p1") as p1, target.store(partition="p2") as p2:
        await p1.apply([], engine_state_json='{"p": 1}')
        await p2.apply([], engine_state_json='{"p": 2}')
        await p1.save_liveness([("d1", 1, True, "heard")])
        await p2.save_liveness([("d2", None, False, "never heard")])
    async with target.store(partition="p1") as standby:   # a standby taking p1 over
        assert await standby.load_engine_state() == '{"p": 1}'
        assert await standby.load_liveness() == [("d1", 1, True, "heard")]


# --- fencing -------------------------------------------------------------------------------------

@pg
async def test_a_fenced_out_instance_writes_nothing(pg_dsn: str, tmp_path: Path) -> None:
    target = StoreTarget("postgres", tmp_path, pg_dsn)
    fence = FlipFence()
    now = int(time.time() * 1000)
    async with target.store(fence=fence) as store:
        outbox = Outbox(store)
        links = AckLinks(secret=b"k" * 32, base_url="https://pw.test", store=store)
        _, grant = links.mint("a1", contact="c", channel="sms")
        token = (await links.issue("a1", contact="c", channel="sms")).rsplit("/", 1)[1]
        await store.apply([Transition(None, make_alarm("a1"))], engine_state_json="{}",
                          outbox=_rows(1, now))
        assert fence.checks == 2            # issue, apply: each write asked first
        fence.lose()
        writes = {
            "apply": store.apply([Transition(None, make_alarm("a2"))],
                                 also=[lambda db: insert_grants(db, [grant])]),
            "engine state": store.apply([], engine_state_json='{"stale": true}'),
            "liveness": store.save_liveness([("d1", 1, True, "heard")]),
            "outbox claim": outbox.due(now),
            "outbox record": outbox.record("n0:firing", SendResult.sent(), now_ms=now),
            "outbox defer": outbox.defer(["n0:firing"], now + 1000),
            "outbox enqueue": outbox.enqueue(_rows(2, now)),
            "ack": links.consume(token),
        }
        refused = []
        for what, write in writes.items():
            try:
                await write
            except FencedOut:
                refused.append(what)
        assert refused == list(writes)
        # Reads still work, and nothing of the refused writes is there.
        assert await store.get("a2") is None
        assert await store.load_engine_state() == "{}"
        assert await store.load_liveness() == []
        assert await outbox.counts() == {"pending": 1}
        assert (await links.verify(token)).used_at_ms is None


# --- the outbox: exactly once across senders -----------------------------------------------------

@pg
async def test_two_senders_on_one_store_send_every_row_exactly_once(
        pg_dsn: str, tmp_path: Path) -> None:
    target = StoreTarget("postgres", tmp_path, pg_dsn)
    count = 120
    async with ProviderServer() as srv, target.store() as store_a, target.store() as store_b:
        now = int(time.time() * 1000)
        # Written in several steps while both senders run, as alarms arrive.
        senders = []
        for store in (store_a, store_b):
            channel = WebhookChannel(url=f"{srv.url}/hook")
            dispatcher = Dispatcher(outbox=Outbox(store), channels={"hook": channel},
                                    metrics=Metrics(), audit=_no_audit)
            senders.append((channel, dispatcher, asyncio.create_task(dispatcher.run())))
        try:
            for batch in range(6):
                rows = _rows(count, now)[batch * 20:(batch + 1) * 20]
                await (store_a if batch % 2 else store_b).apply([], outbox=rows)
                for _, dispatcher, _ in senders:
                    dispatcher.wake()
            await srv.wait_for(count, timeout_s=20)
            await asyncio.sleep(0.3)         # room for a duplicate to show up
        finally:
            for channel, _, task in senders:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await channel.close()
        ids = [r.headers["webhook-id"] for r in srv.requests]
        assert len(ids) == count
        assert sorted(set(ids)) == sorted(f"n{i}:firing" for i in range(count))
        assert await Outbox(store_a).counts() == {"sent": count}


async def _no_audit(lines: list[str]) -> None:
    return None


async def test_claims_keep_other_senders_off_until_they_expire(
        alarm_target: StoreTarget) -> None:
    now = int(time.time() * 1000)
    async with alarm_target.store() as store_a, alarm_target.store() as store_b:
        a = Outbox(store_a, claim_s=60)
        b = Outbox(store_b, claim_s=60)
        await store_a.apply([], outbox=_rows(3, now))
        assert len(await a.due(now)) == 3
        assert await b.due(now) == []                      # A holds them
        assert len(await a.due(now + 1)) == 3              # A still sees its own
        assert await b.next_due_ms() == now + 60_000       # B sleeps until the claims end
        await a.defer(["n0:firing"], now + 5_000)          # deferred: free for anyone later
        assert [p.notification.key for p in await b.due(now + 5_000)] == ["n0:firing"]
        # A dies without recording the other two: after its claim they are B's.
        later = now + 60_001
        assert sorted(p.notification.key for p in await b.due(later)) == [
            "n0:firing", "n1:firing", "n2:firing"]
        await b.record("n1:firing", SendResult.sent(), now_ms=later)
        # A's late outcome for a row B took over is not recorded over B's.
        await a.record("n1:firing", SendResult.retry("late"), now_ms=later, next_at_ms=later)
        assert (await b.counts()) == {"pending": 2, "sent": 1}


# --- configuration and errors --------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_server_is_named_without_its_password() -> None:
    port = _closed_port()
    backend = PostgresBackend(f"postgresql://pw:s3cret-pass@127.0.0.1:{port}/alarms",
                              connect_timeout_s=2)
    assert "s3cret" not in repr(backend)
    with pytest.raises(AlarmStoreError) as info:
        await AlarmStore(backend).open()
    assert f"127.0.0.1:{port}/alarms" in str(info.value)
    assert "unreachable" in str(info.value)
    assert "s3cret" not in str(info.value)
    assert describe("host=db.park port=6543 dbname=pw password=x") == "db.park:6543/pw"


def test_backend_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert AlarmSettings().backend == "sqlite"
    store = store_for(AlarmSettings(), tmp_path)
    assert store.path == tmp_path / "alarms.sqlite3"
    with pytest.raises(ValueError, match="backend postgres needs a database"):
        AlarmSettings(backend="postgres")
    with pytest.raises(ValueError, match="not both"):
        AlarmSettings(backend="postgres", postgres_dsn=SecretStr("postgresql://x/y"),
                      postgres_dsn_file=tmp_path / "dsn")
    settings = AlarmSettings(backend="postgres", postgres_dsn=SecretStr("postgresql://u:pw@db:5433/pk"))
    assert "pw@" not in repr(settings)
    assert store_for(settings, tmp_path).label == "db:5433/pk"
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text("postgresql://u:pw@db2/pk\n")
    from_file = AlarmSettings(backend="postgres", postgres_dsn_file=dsn_file)
    assert from_file.dsn() == "postgresql://u:pw@db2/pk"
    with pytest.raises(ConfigError, match="cannot read"):
        AlarmSettings(backend="postgres", postgres_dsn_file=tmp_path / "nope").dsn()
    with pytest.raises(ValueError, match="single-box"):
        store_for(AlarmSettings(), tmp_path, fence=FlipFence())


def test_the_dsn_comes_from_the_environment(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARKWATCH_ALARMS__BACKEND", "postgres")
    monkeypatch.setenv("PARKWATCH_ALARMS__POSTGRES_DSN", "postgresql://u:envpw@db:5432/pk")
    settings = make_settings(tmp_path, mqtt_url="mqtt://127.0.0.1:1", influx_url="http://x:1")
    assert settings.alarms.backend == "postgres"
    assert settings.alarms.dsn() == "postgresql://u:envpw@db:5432/pk"


# --- the scorecard reads the shared store --------------------------------------------------------

@pg
async def test_the_scorecard_reads_alarms_and_maintenance_from_postgres(
        pg_dsn: str, tmp_path: Path) -> None:
    target = StoreTarget("postgres", tmp_path, pg_dsn)
    window = {"scope": "device", "target": "wp-a1", "mode": "isolated", "since_ms": T0,
              "until_ms": None, "by": "x"}
    async with target.store(partition="p1") as store:
        await store.apply([Transition(None, make_alarm("a1"))],
                          engine_state_json=json.dumps({"maintenance": [window]}))
    source = PostgresSource(pg_dsn)
    assert "parkwatch@" not in repr(source)
    period = Period(start_ms=T0 - 1000, end_ms=T0 + 10_000)
    facts = await asyncio.to_thread(read_alarms, source, park="xz01", period=period)
    assert [f.alarm_id for f in facts] == ["a1"]
    spans = await asyncio.to_thread(read_maintenance, source, as_of_ms=T0 + 5000)
    assert [(s.target, s.until_ms) for s in spans] == [("wp-a1", T0 + 5000)]


@pg
async def test_a_dropped_connection_is_reopened_and_the_call_retried(
        pg_dsn: str, tmp_path: Path) -> None:
    target = StoreTarget("postgres", tmp_path, pg_dsn)
    async with target.store() as store:
        await store.apply([Transition(None, make_alarm("a1"))])
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            # What a server restart or a failover does to the store's session.
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE application_name = 'parkwatch' AND pid <> pg_backend_pid()"
                          " AND datname = current_database()")
        await store.apply([Transition(None, make_alarm("a2"))])
        assert {a.alarm_id for a in await store.list()} == {"a1", "a2"}


async def test_claims_left_in_a_sqlite_file_are_released_when_it_is_opened(
        tmp_path: Path) -> None:
    """One process writes the file: a claim found at start belongs to a process that died."""
    now = int(time.time() * 1000)
    path = tmp_path / "alarms.sqlite3"
    async with AlarmStore(path) as store:
        await store.apply([], outbox=_rows(2, now))
        assert len(await Outbox(store).due(now)) == 2      # claimed, then "killed"
    async with AlarmStore(path) as store:
        assert len(await Outbox(store).due(now)) == 2
