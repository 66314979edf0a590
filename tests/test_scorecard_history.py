"""Known history, exact numbers (issue 12, point 5): the day of tests/support/scorecard.py runs
through the real rule engine into the real alarm store; the scorecard read back from the store
file must give the figures worked out by hand below, per park and per tenant."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.scorecard.alarmsource import read_alarms, read_maintenance
from gateway.scorecard.collect import device_refs
from gateway.scorecard.model import MaintenanceSpan, Period
from gateway.scorecard.report import Inputs, Scorecard, as_dict, compute
from tests.support.scorecard import AS_OF, DAY, T0, H, registry, store_history

DAY_P = Period(T0, T0 + DAY)


@pytest.fixture
async def store(tmp_path: Path) -> Path:
    path = tmp_path / "alarms.sqlite3"
    await store_history(path, registry())
    return path


def scorecard(store: Path, tenant: str | None = None) -> Scorecard:
    inputs = Inputs(devices=device_refs(registry(), "p1"),
                    alarms=read_alarms(store, park="p1", period=DAY_P),
                    maintenance=read_maintenance(store, as_of_ms=AS_OF))
    return compute(inputs, park="p1", period=DAY_P, as_of_ms=AS_OF, tenant=tenant)


def test_maintenance_windows_come_from_the_engine_state(store: Path) -> None:
    # The 04:30-06:00 test window expired and is gone; the isolation is still in force.
    assert read_maintenance(store, as_of_ms=AS_OF) == [
        MaintenanceSpan("device", "wp-1", "isolated", T0 + 21 * H, AS_OF)]


def test_fire_false_alarms_and_response_for_the_park(store: Path) -> None:
    sc = scorecard(store)
    f = sc.false_alarms
    # Fired outside maintenance: 01, 02, 03, 04, 20 h; answered: 01 false, 02 real, 03 false,
    # 20 false; the 05 h alarm was raised in a test window.
    assert (f.fired, f.judged, f.false_alarms, f.tests) == (5, 4, 3, 0)
    assert f.rate == 0.75
    # Due (fired 24 h before 30:00): 01-04 h; the 04 h alarm was never answered.
    assert (f.due, f.undisposed_after_24h, f.undisposed_share) == (4, 1, 0.25)
    r = sc.response
    # Acknowledged after 30, 60, 120, 240 s; the 04 h alarm never.
    assert (r.critical, r.acknowledged, r.within_target) == (5, 4, 3)
    assert (r.p50_ms, r.p90_ms) == (60_000, 240_000)
    assert r.within_target_share == 0.6


def test_intactness_water_compliance_and_counts_for_the_park(store: Path) -> None:
    sc = scorecard(store)
    i = sc.intactness
    # wp-1 fault 2 h, fd-2 isolated 3 h, wl-1 offline 4 h, of 5 devices x 24 h.
    assert (i.device_ms, i.impaired_ms) == (120 * H, 9 * H)
    assert i.rate == 1 - 9 / 120
    assert (i.faults_repaired, i.mean_time_to_repair_ms) == (1, 2 * H)
    c = sc.compliance
    assert [(p.device, p.outside_ms) for p in c.points] == [("wl-1", 2 * H), ("wp-1", H // 2)]
    assert c.rate("water_pressure") == 1 - 0.5 / 24
    assert c.rate("water_level") == 1 - 2 / 24
    assert c.rate() == 1 - 2.5 / 48
    n = sc.counts
    # 6 fire alarms and 5 zone pre-alarms (none for the one in a test window), fault, isolation,
    # offline, pressure low, level high.
    assert n.total == 16
    assert n.by_class == {"device": 3, "fire": 11, "hazard": 2}
    # The isolation is a warning since issue 14 (屏蔽 disables a fire facility), no longer info.
    assert n.by_severity == {"critical": 6, "major": 6, "minor": 2, "warning": 2}
    assert n.noisiest == (("fd-1", 3), ("fd-2", 3), ("wl-1", 2), ("wp-1", 2), ("mc-1", 1))
    o = sc.online
    # No device_status here at all: every registered device is offline and never seen.
    assert (o.devices, o.never_seen, o.online_ms, o.maintenance_ms) == (5, 5, 0, 3 * H)


def test_per_tenant(store: Path) -> None:
    ta = scorecard(store, "ta")          # fd-1, mc-1, wp-1
    assert (ta.false_alarms.judged, ta.false_alarms.false_alarms) == (3, 3)
    assert ta.false_alarms.rate == 1.0
    assert (ta.false_alarms.due, ta.false_alarms.undisposed_after_24h) == (3, 1)
    assert (ta.response.critical, ta.response.p50_ms, ta.response.p90_ms) == (4, 60_000, 120_000)
    assert ta.response.within_target_share == 0.75
    assert ta.intactness.impaired_ms == 2 * H
    assert ta.intactness.rate == 1 - 2 / 72
    # fd-1 3 fire alarms, mc-1 1, wp-1 fault and pressure low; zone pre-alarms have no tenant.
    assert ta.counts.total == 6
    tb = scorecard(store, "tb")          # fd-2, wl-1
    assert (tb.false_alarms.judged, tb.false_alarms.rate) == (1, 0.0)
    assert (tb.response.critical, tb.response.p50_ms, tb.response.within_target) == (1, 240_000, 0)
    assert tb.intactness.impaired_ms == 7 * H
    assert tb.compliance.rate() == 1 - 2 / 24
    assert tb.online.maintenance_ms == 0


def test_as_dict_carries_the_same_numbers(store: Path) -> None:
    doc = as_dict(scorecard(store))
    assert doc["fire_false_alarms"]["rate"] == 0.75
    assert doc["response"] == {"critical": 5, "acknowledged": 4, "p50_s": 60.0, "p90_s": 240.0,
                               "within_3min": 3, "within_3min_share": 0.6}
    assert doc["intactness"]["rate"] == 0.925
    assert doc["intactness"]["mttr_s"] == 7200.0
    assert doc["water_compliance"]["water_level"] == round(22 / 24, 6)
