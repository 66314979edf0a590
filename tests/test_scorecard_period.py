"""``parkwatch scorecard`` periods: calendar months and days in the park's time zone."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from gateway.tools.scorecardcli import days, parse_period
from sensors.errors import ConfigError
from tests.support.scorecard import DAY, T0

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_a_month_is_the_parks_calendar_month() -> None:
    p = parse_period(period="2026-11", start=None, end=None, tz=SHANGHAI)
    assert (p.start_ms, p.end_ms) == (T0, T0 + 30 * DAY)
    dec = parse_period(period="2026-12", start=None, end=None, tz=SHANGHAI)
    assert dec.length_ms == 31 * DAY


def test_from_to_are_local_dates_or_times_and_to_is_exclusive() -> None:
    p = parse_period(period=None, start="2026-11-01", end="2026-11-02", tz=SHANGHAI)
    assert (p.start_ms, p.end_ms) == (T0, T0 + DAY)
    p = parse_period(period=None, start="2026-11-01T06:00", end="2026-11-01T00:00:00+00:00",
                     tz=SHANGHAI)
    assert (p.start_ms, p.end_ms) == (T0 + 6 * 3_600_000, T0 + 8 * 3_600_000)


@pytest.mark.parametrize(("period", "start", "end"), [
    ("2026-13", None, None), ("nov", None, None), (None, "2026-11-01", None),
    (None, "2026-11-02", "2026-11-01"), (None, "yesterday", "2026-11-01")])
def test_bad_periods_are_configuration_errors(period: str | None, start: str | None,
                                              end: str | None) -> None:
    with pytest.raises(ConfigError):
        parse_period(period=period, start=start, end=end, tz=SHANGHAI)


def test_days_are_whole_local_days_also_across_a_dst_change() -> None:
    p = parse_period(period="2026-11", start=None, end=None, tz=SHANGHAI)
    assert [(d.start_ms, d.end_ms) for d in days(p, SHANGHAI)][:2] == [
        (T0, T0 + DAY), (T0 + DAY, T0 + 2 * DAY)]
    assert len(days(p, SHANGHAI)) == 30
    berlin = ZoneInfo("Europe/Berlin")         # 25 October 2026: a 25-hour day
    october = parse_period(period="2026-10", start=None, end=None, tz=berlin)
    lengths = [d.length_ms // 3_600_000 for d in days(october, berlin)]
    assert len(lengths) == 31
    assert lengths.count(25) == 1
    assert set(lengths) == {24, 25}
