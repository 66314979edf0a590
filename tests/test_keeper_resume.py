"""The engine resumes from its saved state with its active alarms read back from the store.

The state names active alarms by id (format 2); the rows are the alarm store's, written in the
same transaction. These tests restart a real AlarmKeeper on a real store, on both backends.
"""

from __future__ import annotations

import json
import logging

import pytest

from gateway.alarms.db import Db
from gateway.alarms.keeper import AlarmKeeper
from rules.observation import DeviceEvent
from sensors.base import EventType
from sensors.registry import Registry
from tests.support.alarmstores import StoreTarget
from tests.support.paths import ROOT

T0 = 1_767_000_000_000


def _keeper(registry: Registry, target: StoreTarget) -> AlarmKeeper:
    return AlarmKeeper.from_paths(rules_path=ROOT / "config" / "rules", registry=registry,
                                  state_dir=target.path.parent, lateness_s=60.0,
                                  store=target.store())


async def _fire_points(keeper: AlarmKeeper, panel: str, points: int) -> None:
    for p in range(points):
        event = DeviceEvent(panel, T0 + p, EventType.FIRE_ALARM, T0 + p, f"L9-D{p:03d}", "x")
        await keeper.persist(keeper.observe([event], T0 + p), with_state=True)


async def test_active_alarms_come_back_from_the_store(sample_registry: Registry,
                                                      alarm_target: StoreTarget) -> None:
    panel = next(d for d in sample_registry if d.kind == "fire_panel").device
    keeper = _keeper(sample_registry, alarm_target)
    await keeper.open()
    await _fire_points(keeper, panel, 30)
    assert keeper.engine is not None
    before = keeper.engine.active()
    assert len(before) >= 30
    saved = await keeper.store.load_engine_state()
    await keeper.close()

    assert saved is not None
    doc = json.loads(saved)
    assert doc["version"] == 2
    assert "alarms" not in doc
    assert sorted(doc["alarm_ids"]) == sorted(a.alarm_id for a in before)

    again = _keeper(sample_registry, alarm_target)
    await again.open()
    assert again.engine is not None
    assert again.engine.active() == before
    # Resumed, not restarted: a repeat of a point already in alarm opens nothing new.
    event = DeviceEvent(panel, T0 + 100, EventType.FIRE_ALARM, T0 + 100, "L9-D000", "x")
    assert [t.after.alarm_id for t in again.observe([event], T0 + 100)
            if t.before is None] == []
    await again.close()


async def test_an_alarm_missing_from_the_store_is_reported_and_the_engine_starts(
        sample_registry: Registry, alarm_target: StoreTarget,
        caplog: pytest.LogCaptureFixture) -> None:
    panel = next(d for d in sample_registry if d.kind == "fire_panel").device
    keeper = _keeper(sample_registry, alarm_target)
    await keeper.open()
    await _fire_points(keeper, panel, 3)
    assert keeper.engine is not None
    gone = keeper.engine.active()[0]

    def delete(conn: Db) -> None:
        with conn.write():
            conn.execute("DELETE FROM alarms WHERE alarm_id = ?", (gone.alarm_id,))
    await keeper.store.execute(delete)
    await keeper.close()

    again = _keeper(sample_registry, alarm_target)
    with caplog.at_level(logging.ERROR, logger="gateway.alarms.keeper"):
        await again.open()
    assert again.engine is not None
    assert gone.alarm_id not in {a.alarm_id for a in again.engine.active()}
    assert len(again.engine.active()) >= 2
    assert gone.alarm_id in caplog.text
    await again.close()
