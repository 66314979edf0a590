"""``parkwatch migrate-store``: a single box's SQLite alarm store into a shared PostgreSQL one.

The source is made by a real AlarmKeeper (open fire alarms, history, engine state), with
pending notifications and liveness rows; the copy goes into a fresh database of the test
PostgreSQL through the command line, and a keeper opened on it must resume as the old box
would have. Refusals leave the target untouched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.alarms.db import Db
from gateway.alarms.keeper import AlarmKeeper
from gateway.alarms.postgres import PostgresBackend
from gateway.alarms.store import AlarmStore, OutboxRow
from gateway.tools.cli import main
from rules.observation import DeviceEvent
from sensors.base import EventType
from sensors.registry import Registry
from tests.support.paths import ROOT, SAMPLE_REGISTRY

pytestmark = pytest.mark.integration

T0 = 1_767_000_000_000


def _keeper(registry: Registry, store: AlarmStore, state_dir: Path) -> AlarmKeeper:
    return AlarmKeeper.from_paths(rules_path=ROOT / "config" / "rules", registry=registry,
                                  state_dir=state_dir, lateness_s=60.0, store=store)


async def _old_box(registry: Registry, path: Path) -> tuple[list[Any], int]:
    """The old box's store: five panel points in fire, three pending messages, liveness."""
    panel = next(d for d in registry if d.kind == "fire_panel").device
    keeper = _keeper(registry, AlarmStore(path), path.parent)
    await keeper.open()
    for p in range(5):
        event = DeviceEvent(panel, T0 + p, EventType.FIRE_ALARM, T0 + p, f"L1-D{p:03d}", "x")
        rows = [OutboxRow(f"k{p}", "sms", "+8613800000000", json.dumps({"p": p}), True,
                          T0 + p, T0 + p, T0 + 3_600_000)] if p < 3 else []
        await keeper.persist(keeper.observe([event], T0 + p), with_state=True, outbox=rows)
    await keeper.store.save_liveness([(panel, T0, True, "heard")])
    assert keeper.engine is not None
    active = keeper.engine.active()
    await keeper.close()
    return active, len(active)


def _config(tmp_path: Path, dsn: str, **cluster: Any) -> Path:
    path = tmp_path / "new.yaml"
    doc: dict[str, Any] = {"registry": str(SAMPLE_REGISTRY), "state_dir": str(tmp_path / "new"),
                           "alarms": {"backend": "postgres", "postgres_dsn": dsn}}
    if cluster:
        doc["cluster"] = cluster
    path.write_text(yaml.safe_dump(doc))
    return path


async def test_the_new_store_resumes_what_the_old_box_held(
        sample_registry: Registry, tmp_path: Path, pg_dsn: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "old" / "alarms.sqlite3"
    active, n = await _old_box(sample_registry, source)
    assert n == 5

    assert main(["migrate-store", "--config", str(_config(tmp_path, pg_dsn)),
                 "--from", str(source)]) == 0
    out = capsys.readouterr().out
    assert "alarms" in out
    assert "outbox                     3 rows" in out

    store = AlarmStore(PostgresBackend(pg_dsn))
    keeper = _keeper(sample_registry, store, tmp_path / "new")
    await keeper.open()
    assert keeper.engine is not None
    assert keeper.engine.active() == active
    def pending(conn: Db) -> list[str]:   # in sending (insertion) order
        return [row[0] for row in conn.execute(
            "SELECT key FROM outbox WHERE state = 'pending' ORDER BY seq")]
    assert await store.execute(pending) == ["k0", "k1", "k2"]
    assert [row[0] for row in await store.load_liveness()] == [active[0].subject.device]
    # Resumed, not restarted: a repeat of a point already in alarm opens nothing new.
    panel = active[0].subject.device
    repeat = DeviceEvent(panel, T0 + 100, EventType.FIRE_ALARM, T0 + 100, "L1-D000", "x")
    assert [t for t in keeper.observe([repeat], T0 + 100) if t.before is None] == []
    await keeper.close()

    # A second copy into the same database is refused, and changes nothing.
    assert main(["migrate-store", "--config", str(_config(tmp_path, pg_dsn)),
                 "--from", str(source)]) == 1
    assert "already holds alarm data" in capsys.readouterr().err


async def test_open_alarms_of_a_park_the_target_does_not_own_are_refused(
        sample_registry: Registry, tmp_path: Path, pg_dsn: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "old" / "alarms.sqlite3"
    await _old_box(sample_registry, source)
    config = _config(tmp_path, pg_dsn, partition="south", parks=["elsewhere"])
    assert main(["migrate-store", "--config", str(config), "--from", str(source)]) == 1
    err = capsys.readouterr().err
    assert "open alarms in parks xz01" in err
    assert "one-partition" in err
    async with AlarmStore(PostgresBackend(pg_dsn)) as store:
        assert await store.load_engine_state() is None


async def test_the_engine_state_becomes_the_target_partitions(
        sample_registry: Registry, tmp_path: Path, pg_dsn: str) -> None:
    source = tmp_path / "old" / "alarms.sqlite3"
    await _old_box(sample_registry, source)
    config = _config(tmp_path, pg_dsn, partition="all", parks=["xz01"])
    assert main(["migrate-store", "--config", str(config), "--from", str(source)]) == 0
    async with AlarmStore(PostgresBackend(pg_dsn), partition="all") as store:
        assert await store.load_engine_state() is not None
    async with AlarmStore(PostgresBackend(pg_dsn)) as store:   # "default": nothing left there
        assert await store.load_engine_state() is None


def test_a_sqlite_config_or_a_missing_file_is_named(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    sqlite_config = tmp_path / "old.yaml"
    sqlite_config.write_text(yaml.safe_dump({"registry": str(SAMPLE_REGISTRY)}))
    assert main(["migrate-store", "--config", str(sqlite_config), "--from", "x.sqlite3"]) == 2
    assert "give the new setup's config" in capsys.readouterr().err
    config = _config(tmp_path, "postgresql://nobody@127.0.0.1:1/none")
    assert main(["migrate-store", "--config", str(config),
                 "--from", str(tmp_path / "missing.sqlite3")]) == 1
    assert "no such alarm store file" in capsys.readouterr().err
