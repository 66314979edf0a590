"""The running gateway's daily scorecard stage (gateway/runtime/scorecardday.py): which days
are due on an injected clock, the restart-safe record of the last day written, and once end to
end — the known day's history in the alarm store and InfluxDB, the stage of a running gateway
forced to that day, its points through the WAL into a real InfluxDB with the exact numbers
``parkwatch scorecard --write`` stores."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import stat
from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.runtime.scorecardday import MAX_CATCH_UP_DAYS, STATE_FILE, ScorecardDaily
from gateway.tools.devservices import Influxd, Mosquitto
from sensors.errors import ParkWatchError
from tests.support.gateway import make_settings, running_gateway
from tests.support.influx import influx_rows
from tests.support.scorecard import T0, registry, registry_yaml, store_history, write_status
from tests.support.waiting import wait_for

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
NOV = dt.date(2026, 11, 1)


def _at(day: dt.date, hh: int, mm: int, tz: dt.tzinfo = SHANGHAI) -> float:
    return dt.datetime.combine(day, dt.time(hh, mm), tz).timestamp()


def _settings(tmp_path: Path, **observe: object) -> Settings:
    return make_settings(tmp_path, mqtt_url="mqtt://127.0.0.1:1", influx_url="http://127.0.0.1:1",
                         observe={"gateway_interval_s": 1.0, **observe},
                         parks={"p1": {"timezone": "Asia/Shanghai"}})


class _Stage:
    """A stage on a settable clock whose appended lines are kept."""

    def __init__(self, settings: Settings) -> None:
        self.now = 0.0
        self.lines: list[str] = []

        async def append(lines: list[str]) -> None:
            self.lines.extend(lines)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.stage = ScorecardDaily(settings=settings, registry=registry(), append=append,
                                    clock=lambda: self.now)


def test_yesterday_is_due_after_scorecard_at_in_the_park_time_zone(tmp_path: Path) -> None:
    s = _Stage(_settings(tmp_path)).stage
    s.done["p1"] = NOV - dt.timedelta(days=2)
    nov2 = NOV + dt.timedelta(days=1)
    # 00:09 Shanghai is still before 00:10: the day before yesterday is the newest due.
    assert s.due(_at(nov2, 0, 9)) == [("p1", NOV - dt.timedelta(days=1))]
    assert s.due(_at(nov2, 0, 10)) == [("p1", NOV - dt.timedelta(days=1)), ("p1", NOV)]
    # 16:30 UTC on Nov 1 is already 00:30 of Nov 2 in Shanghai.
    assert s.due(_at(NOV, 16, 30, dt.UTC))[-1] == ("p1", NOV)
    s.done["p1"] = NOV
    assert s.due(_at(nov2, 23, 59)) == []
    # Down over three midnights: the missed days are caught up, oldest first...
    assert [d for _, d in s.due(_at(NOV + dt.timedelta(days=4), 0, 30))] == [
        NOV + dt.timedelta(days=i) for i in (1, 2, 3)]
    # ...but at most a week of them (older gaps: parkwatch scorecard --write).
    late = s.due(_at(NOV + dt.timedelta(days=30), 1, 0))
    assert len(late) == MAX_CATCH_UP_DAYS
    assert late[-1] == ("p1", NOV + dt.timedelta(days=29))


def test_a_park_seen_first_starts_today(tmp_path: Path) -> None:
    s = _Stage(_settings(tmp_path)).stage
    now = _at(NOV + dt.timedelta(days=1), 0, 30)
    # Days before the gateway ran here would read as all offline: nothing is written for them.
    assert s.due(now) == []
    assert s.start(now)
    assert s.done == {"p1": NOV}
    assert not s.start(now)
    assert s.due(now) == []
    assert s.due(now + 86400) == [("p1", NOV + dt.timedelta(days=1))]


def test_the_time_of_day_is_a_setting(tmp_path: Path) -> None:
    s = _Stage(_settings(tmp_path, scorecard_at="06:00")).stage
    nov2 = NOV + dt.timedelta(days=1)
    assert s.latest("p1", _at(nov2, 5, 59)) == NOV - dt.timedelta(days=1)
    assert s.latest("p1", _at(nov2, 6, 0)) == NOV
    with pytest.raises(ValueError, match="scorecard_at"):
        _settings(tmp_path, scorecard_at="24:00")


def test_the_last_day_written_survives_a_restart_in_a_private_file(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    first = _Stage(settings).stage
    first.done["p1"] = NOV
    first._save()
    path = settings.state_dir / STATE_FILE
    assert json.loads(path.read_text()) == {"p1": "2026-11-01"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = _Stage(settings).stage
    again.load()
    assert again.done == {"p1": NOV}
    path.write_text("{not json")
    again.load()                   # unreadable: start afresh (one day may be written twice)
    assert again.done == {}


async def test_a_day_that_cannot_be_computed_stays_due(tmp_path: Path) -> None:
    t = _Stage(_settings(tmp_path))
    t.now = _at(NOV + dt.timedelta(days=1), 1, 0)
    t.stage.done["p1"] = NOV - dt.timedelta(days=1)
    # Not ready (InfluxDB down, WAL backlog): nothing read, nothing written, still due.
    t.stage._ready = lambda: False
    assert await t.stage.step() == 0
    t.stage._ready = lambda: True
    # No alarm store yet and no InfluxDB at 127.0.0.1:1: the step fails softly, stays due.
    assert await t.stage.step() == 0
    assert t.lines == []
    assert t.stage.due(t.now) == [("p1", NOV)]
    with pytest.raises(ParkWatchError):
        await t.stage.run_once("p1", NOV)


async def test_a_day_unwritten_for_hours_raises_scorecard_overdue_until_written(
        tmp_path: Path) -> None:
    calls: list[tuple[str, bool, str]] = []
    t = _Stage(_settings(tmp_path))
    t.stage._overdue = lambda park, overdue, why: calls.append((park, overdue, why))
    t.stage.done["p1"] = NOV - dt.timedelta(days=1)
    t.stage._ready = lambda: False
    # NOV fell due at 00:10 on the 2nd: five hours later it is only late, not overdue.
    t.now = _at(NOV + dt.timedelta(days=1), 5, 10)
    await t.stage.step()
    assert calls == []
    t.now = _at(NOV + dt.timedelta(days=1), 6, 10)
    await t.stage.step()
    [(park, overdue, why)] = calls
    assert (park, overdue) == ("p1", True)
    assert "2026-11-01" in why
    assert "InfluxDB is unreachable" in why
    await t.stage.step()
    assert len(calls) == 1, "raised once, not at every check"

    async def ok(park: str, day: dt.date) -> int:
        t.stage.done[park] = day
        return 1
    t.stage._ready = lambda: True
    t.stage.run_once = ok  # type: ignore[method-assign]
    await t.stage.step()
    assert calls[1][:2] == ("p1", False)
    assert t.stage.overdue_parks == set()


def test_scorecard_overdue_is_a_minor_gateway_health_alarm_of_the_park() -> None:
    from gateway.alarms.health import GatewayHealth
    from rules.alarm import Severity

    health = GatewayHealth(instance="gw1", parks=lambda: ["p1"])
    health.scorecard_overdue("p1", True, "why")
    [cond] = health.take()
    assert (cond.rule, cond.subject.park, cond.severity, cond.active) == (
        "scorecard_overdue", "p1", Severity.MINOR, True)


@pytest.mark.integration
async def test_the_running_gateway_writes_the_day_through_its_wal(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd) -> None:
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                             registry=str(registry_yaml(tmp_path / "registry.yaml")))
    reg = registry()
    settings.state_dir.mkdir(parents=True)
    await store_history(settings.state_dir / "alarms.sqlite3", reg)
    await asyncio.to_thread(write_status, influxd, settings.influx.database)
    async with running_gateway(settings, reg) as gw:
        stage = gw.scorecard_daily
        assert stage is not None
        # The day boundary forced: the known day, long past on the real clock.
        assert await stage.run_once("p1", NOV) == 3          # the park and tenants ta, tb
        query = ('SELECT "online_rate", "fire_false", "fire_judged", "impaired_h" FROM '
                 f'"scorecard" WHERE time = {T0}ms GROUP BY "scope", "tenant"')

        async def stored() -> bool:
            rows = await asyncio.to_thread(influx_rows, influxd, settings.influx.database, query)
            return len(rows) == 3
        await wait_for(stored, timeout_s=20, what="the day's scorecard points in InfluxDB")
    rows = influx_rows(influxd, settings.influx.database, query)
    # The numbers parkwatch scorecard --write stores for this day (test_scorecard_cli).
    assert sorted(rows) == sorted([[T0, 67 / 120, 3.0, 4.0, 53.0],
                                   [T0, 36 / 72, 3.0, 3.0, 36.0],
                                   [T0, 31 / 48, 0.0, 1.0, 17.0]])
    state = json.loads((settings.state_dir / STATE_FILE).read_text())
    assert dt.date.fromisoformat(state["p1"]) >= NOV
