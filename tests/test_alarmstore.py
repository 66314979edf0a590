"""AlarmStore: round trips, atomic and idempotent apply, the active-fingerprint guard, crashes.

Tests taking ``store`` or ``alarm_target`` run on SQLite and on PostgreSQL; the ones that open
the SQLite file themselves are about that backend only."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.alarms import sqlite as sqlitebackend
from gateway.alarms import store as alarmstore
from gateway.alarms.db import Db
from gateway.alarms.store import AlarmStore, AlarmStoreError, DuplicateActiveAlarm
from rules.alarm import Alarm, AlarmState, Disposition, Severity, Subject, Transition
from tests.support.alarms import T0, full_alarm, make_alarm
from tests.support.alarmstores import StoreTarget

ROOT = Path(__file__).resolve().parent.parent


def step(before: Alarm | None, **changes: Any) -> Transition:
    """A transition from ``before`` (or a new alarm built from ``changes``)."""
    if before is None:
        return Transition(before=None, after=make_alarm(**changes))
    return Transition(before=before, after=before.evolve(**changes))


@pytest.fixture
async def store(alarm_target: StoreTarget) -> AsyncIterator[AlarmStore]:
    async with alarm_target.store() as s:
        yield s


async def test_every_field_round_trips(store: AlarmStore) -> None:
    resolved = full_alarm().evolve(alarm_id="full2", fingerprint="gas_high/gs-10",
                                   state=AlarmState.RESOLVED, resolved_at_ms=T0 + 99_000,
                                   disposition=Disposition.REAL)
    sparse = make_alarm("sparse", value=None, fired_at_ms=None, state=AlarmState.PENDING)
    await store.apply([Transition(None, full_alarm()), Transition(None, resolved),
                       Transition(None, sparse)])
    assert await store.get("full") == full_alarm()
    assert await store.get("full2") == resolved
    assert await store.get("sparse") == sparse
    assert await store.get("nope") is None
    # Equal start times: ordered by id.
    assert await store.list(include_pending=True) == [full_alarm(), resolved, sparse]


async def test_stored_document_is_the_contract_document(tmp_path: Path) -> None:
    path = tmp_path / "alarms.db"
    async with AlarmStore(path) as store:
        await store.apply([Transition(None, full_alarm())])
    with sqlite3.connect(path) as conn:
        (doc,) = conn.execute("SELECT document FROM alarms").fetchone()
    assert json.loads(doc) == full_alarm().document()


async def test_apply_is_all_or_nothing(store: AlarmStore,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    await store.apply([], engine_state_json='{"v": 1}')
    real = alarmstore._write_transition
    calls = 0

    def fail_on_second(conn: Db, transition: Transition) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("disk on fire")
        real(conn, transition)

    monkeypatch.setattr(alarmstore, "_write_transition", fail_on_second)
    with pytest.raises(OSError, match="disk on fire"):
        await store.apply([step(None, alarm_id="x1"), step(None, alarm_id="x2")],
                          engine_state_json='{"v": 2}')
    assert await store.get("x1") is None
    assert await store.history("x1") == []
    assert await store.load_engine_state() == '{"v": 1}'
    monkeypatch.undo()
    # The connection is usable afterwards (the transaction was rolled back, not left open).
    await store.apply([step(None, alarm_id="x1")], engine_state_json='{"v": 3}')
    assert await store.get("x1") is not None
    assert await store.load_engine_state() == '{"v": 3}'


async def test_reapplying_changes_nothing(store: AlarmStore) -> None:
    fire = step(None)
    ack = step(fire.after, state=AlarmState.ACKNOWLEDGED, acknowledged_by="bob",
               acknowledged_at_ms=T0 + 5000, updated_at_ms=T0 + 5000,
               disposition=Disposition.REAL, ack_channel="cli")
    await store.apply([fire, ack])
    await store.apply([fire, ack])
    await store.apply([fire])  # a replayed old transition must not roll the alarm back
    assert await store.get("a1") == ack.after
    assert [h["to_state"] for h in await store.history("a1")] == ["firing", "acknowledged"]


async def test_same_state_change_with_new_content_is_recorded(store: AlarmStore) -> None:
    fire = step(None)
    escalate = step(fire.after, severity=Severity.CRITICAL, value=0.01)
    await store.apply([fire])
    await store.apply([escalate])
    history = await store.history("a1")
    assert [(h["from_state"], h["to_state"], h["severity"]) for h in history] == [
        (None, "firing", "major"), ("firing", "firing", "critical")]


async def test_two_active_alarms_for_one_fingerprint_are_refused(store: AlarmStore) -> None:
    first = step(None, alarm_id="f1", fingerprint="fp")
    await store.apply([first])
    second = step(None, alarm_id="f2", fingerprint="fp", state=AlarmState.PENDING)
    with pytest.raises(DuplicateActiveAlarm):
        await store.apply([second], engine_state_json="{}")
    assert await store.get("f2") is None
    assert await store.load_engine_state() is None
    # Resolve first, then open the successor in the same step: allowed, in that order.
    resolve = step(first.after, state=AlarmState.RESOLVED, resolved_at_ms=T0 + 9000,
                   updated_at_ms=T0 + 9000)
    await store.apply([resolve, second])
    assert (await store.get("f2")) == second.after


async def test_the_database_itself_enforces_one_active_per_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "alarms.db"
    async with AlarmStore(path) as store:
        await store.apply([step(None, alarm_id="f1", fingerprint="fp")])
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT * FROM alarms WHERE alarm_id = 'f1'").fetchone()
        clone = ("f2", *row[1:])
        with pytest.raises(sqlite3.IntegrityError, match="fingerprint"):
            conn.execute(f"INSERT INTO alarms VALUES ({', '.join('?' * len(clone))})", clone)


async def test_reopen_keeps_everything(alarm_target: StoreTarget) -> None:
    fire = step(None)
    async with alarm_target.store() as store:
        await store.apply([fire, Transition(None, full_alarm())], engine_state_json='{"t": 1}')
    async with alarm_target.store() as store:
        assert await store.get("a1") == fire.after
        assert await store.get("full") == full_alarm()
        assert await store.load_engine_state() == '{"t": 1}'
        assert len(await store.history("a1")) == 1
        # Reopening does not re-run migrations or reset the schema version.
        await store.apply([fire])
        assert len(await store.history("a1")) == 1


_KILLED_WRITER = """
import asyncio, os, signal, sys
from pathlib import Path
from gateway.alarms.store import AlarmStore
from rules.alarm import Transition
from tests.support.alarms import full_alarm, make_alarm

async def main() -> None:
    store = AlarmStore(Path(sys.argv[1]))
    await store.open()
    await store.apply([Transition(None, full_alarm()), Transition(None, make_alarm("k1"))],
                      engine_state_json='{"killed": true}')
    print("applied", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_data_survives_sigkill_after_apply(tmp_path: Path) -> None:
    path = tmp_path / "alarms.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(_KILLED_WRITER), str(path), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert out.decode().strip() == "applied"
    async with AlarmStore(path) as store:
        assert await store.get("full") == full_alarm()
        assert await store.get("k1") == make_alarm("k1")
        assert await store.load_engine_state() == '{"killed": true}'


async def test_list_filters(store: AlarmStore) -> None:
    sub = Subject(park="p2", building="b9", zone="z", device="d9", kind="smoke")
    alarms = [
        make_alarm("minor", severity=Severity.MINOR, started_at_ms=T0 + 3),
        make_alarm("crit", severity=Severity.CRITICAL, rule="fire_confirmed", started_at_ms=T0),
        make_alarm("other", subject=sub, started_at_ms=T0 + 1),
        make_alarm("old", state=AlarmState.RESOLVED, started_at_ms=T0 - 100_000,
                   resolved_at_ms=T0 - 50_000),
        make_alarm("late", state=AlarmState.RESOLVED, started_at_ms=T0 - 10_000,
                   resolved_at_ms=T0 + 10_000),
        make_alarm("pend", state=AlarmState.PENDING, fired_at_ms=None, started_at_ms=T0 + 5),
    ]
    await store.apply([Transition(None, a) for a in alarms])

    async def ids(**kw: Any) -> list[str]:
        return [a.alarm_id for a in await store.list(**kw)]

    assert await ids(active=True) == ["crit", "other", "minor"]  # worst first, then newest
    assert await ids(active=True, include_pending=True) == ["crit", "pend", "other", "minor"]
    assert await ids(active=False) == ["late", "old"]
    assert await ids() == ["minor", "other", "crit", "late", "old"]  # newest first
    assert await ids(park="p2") == ["other"]
    assert await ids(building="b9") == ["other"]
    assert await ids(zone="z") == ["other"]
    assert await ids(device="wp-crit") == ["crit"]
    assert await ids(rule="fire_confirmed") == ["crit"]
    assert await ids(severity="minor") == ["minor"]
    assert await ids(severity="critical", building="b9") == []
    # The window keeps alarms whose lifetime overlaps it.
    assert await ids(since_ms=T0) == ["minor", "other", "crit", "late"]
    assert await ids(until_ms=T0 - 20_000) == ["old"]
    assert await ids(since_ms=T0 - 60_000, until_ms=T0 - 20_000) == ["old"]
    assert await ids(limit=2) == ["minor", "other"]
    assert await ids(limit=0) == []


async def test_history_is_oldest_first(store: AlarmStore) -> None:
    fire = step(None, value=0.08)
    ack = step(fire.after, state=AlarmState.ACKNOWLEDGED, acknowledged_by="carol",
               acknowledged_at_ms=T0 + 4000, updated_at_ms=T0 + 4000, ack_channel="api",
               disposition=Disposition.TEST)
    resolve = step(ack.after, state=AlarmState.RESOLVED, resolved_at_ms=T0 + 8000,
                   updated_at_ms=T0 + 8000, value=0.3)
    await store.apply([fire])
    await store.apply([ack, resolve])
    history = await store.history("a1")
    assert [(h["seq"], h["at_ms"], h["from_state"], h["to_state"]) for h in history] == [
        (1, T0 + 1000, None, "firing"), (2, T0 + 4000, "firing", "acknowledged"),
        (3, T0 + 8000, "acknowledged", "resolved")]
    assert history[1]["acknowledged_by"] == "carol"
    assert history[1]["disposition"] == "test"
    assert history[2]["value"] == 0.3
    assert await store.history("unknown") == []


async def test_kpis(store: AlarmStore) -> None:
    def acked(alarm_id: str, severity: Severity, after_ms: int,
              disposition: Disposition) -> Alarm:
        return make_alarm(alarm_id, severity=severity, state=AlarmState.ACKNOWLEDGED,
                          fired_at_ms=T0, acknowledged_at_ms=T0 + after_ms,
                          acknowledged_by="x", disposition=disposition)

    alarms = [acked(f"c{i}", Severity.CRITICAL, i * 1000, Disposition.REAL)
              for i in range(1, 11)]
    alarms += [acked("m1", Severity.MAJOR, 60_000, Disposition.FALSE_ALARM),
               acked("m2", Severity.MAJOR, 120_000, Disposition.FALSE_ALARM),
               make_alarm("open", severity=Severity.MAJOR, fired_at_ms=T0 + 5),
               make_alarm("before", fired_at_ms=T0 - 1),
               make_alarm("pend", state=AlarmState.PENDING, fired_at_ms=None)]
    await store.apply([Transition(None, a) for a in alarms])
    kpis = await store.kpis(since_ms=T0)
    assert kpis["fired"] == 13
    assert kpis["acknowledged"] == 12
    assert kpis["unacknowledged"] == 1
    assert kpis["by_severity"]["critical"] == 10
    assert kpis["by_severity"]["major"] == 3
    assert kpis["by_disposition"] == {"real": 10, "false_alarm": 2, "test": 0, "fault": 0}
    assert kpis["false_alarm_ratio"] == pytest.approx(2 / 12)
    assert kpis["time_to_ack"]["critical"] == {"count": 10, "p50_ms": 5000, "p90_ms": 9000}
    assert kpis["time_to_ack"]["major"] == {"count": 2, "p50_ms": 60_000, "p90_ms": 120_000}
    empty = await store.kpis(since_ms=T0 + 10**9)
    assert empty["fired"] == 0
    assert empty["false_alarm_ratio"] is None
    assert empty["time_to_ack"] == {}


async def test_schema_is_versioned(tmp_path: Path) -> None:
    path = tmp_path / "alarms.db"
    async with AlarmStore(path):
        pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlitebackend.SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(AlarmStoreError, match="newer"):
        await AlarmStore(path).open()


async def test_calls_need_an_open_store(tmp_path: Path) -> None:
    store = AlarmStore(tmp_path / "alarms.db")
    with pytest.raises(AlarmStoreError, match="not open"):
        await store.get("a1")
    await store.open()
    await store.open()  # idempotent
    await store.close()
    await store.close()
    with pytest.raises(AlarmStoreError, match="not open"):
        await store.apply([])


async def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(AlarmStoreError, match=r"dir\.db"):
        await AlarmStore(tmp_path / "dir.db").open()


async def test_concurrent_calls_share_one_connection_safely(store: AlarmStore) -> None:
    await asyncio.gather(*(store.apply([step(None, alarm_id=f"c{i}")]) for i in range(30)),
                         *(store.list() for _ in range(30)))
    assert len(await store.list(limit=100)) == 30


async def test_racing_duplicates_leave_one_active_alarm(store: AlarmStore) -> None:
    results = await asyncio.gather(
        store.apply([step(None, alarm_id="d1", fingerprint="same")]),
        store.apply([step(None, alarm_id="d2", fingerprint="same")]),
        return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["DuplicateActiveAlarm", "NoneType"]
    assert len(await store.list(active=True)) == 1


async def test_a_cancelled_call_leaves_the_store_usable(store: AlarmStore) -> None:
    task = asyncio.create_task(store.apply([step(None, alarm_id=f"x{i}") for i in range(200)]))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The worker could not be interrupted: its transaction committed or not, as a whole.
    assert len(await store.list(limit=1000)) in (0, 200)
    await store.apply([step(None, alarm_id="after")])
    assert await store.get("after") is not None


async def test_a_non_finite_value_is_stored_as_no_value(store: AlarmStore) -> None:
    await store.apply([step(None, value=float("nan")), step(None, alarm_id="i", value=math.inf)])
    assert (await store.get("a1")) == make_alarm(value=None)
    assert (await store.get("i")) == make_alarm("i", value=None)


async def test_a_half_applied_migration_is_rolled_back(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "alarms.db"
    monkeypatch.setattr(sqlitebackend, "_MIGRATIONS",
                        (sqlitebackend._MIGRATIONS[0] + "; CREATE TABLE broken (",))
    with pytest.raises(AlarmStoreError):
        await AlarmStore(path).open()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    monkeypatch.undo()
    async with AlarmStore(path) as store:
        await store.apply([step(None)])
