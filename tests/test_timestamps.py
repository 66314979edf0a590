"""resolve_ts: every accepted form, the trust window, rounding, and what is refused."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensors.base import Rejection, RejectReason, TimeContext
from sensors.timestamps import resolve_ts

RECEIVED_AT_MS = 1764059460000  # 2025-11-25T08:31:00Z
T0_MS = 1764059400000  # 2025-11-25T08:30:00Z
CTX = TimeContext(received_at_ms=RECEIVED_AT_MS, timezone=ZoneInfo("Asia/Shanghai"))


@pytest.mark.parametrize(
    ("raw", "expected_ms"),
    [
        pytest.param(1764059400, T0_MS, id="int-seconds"),
        pytest.param(1764059400.123, T0_MS + 123, id="float-seconds-rounds-not-truncates"),
        pytest.param(1764059400.0004, T0_MS, id="float-seconds-sub-ms-down"),
        pytest.param(1764059400.0006, T0_MS + 1, id="float-seconds-sub-ms-up"),
        pytest.param(1764059400123, T0_MS + 123, id="int-ms"),
        pytest.param(1764059400123.6, T0_MS + 124, id="float-ms"),
        pytest.param("2025-11-25T08:30:00Z", T0_MS, id="rfc3339-z"),
        pytest.param("2025-11-25t08:30:00z", T0_MS, id="rfc3339-lowercase"),
        pytest.param("2025-11-25T16:30:00+08:00", T0_MS, id="rfc3339-offset"),
        pytest.param("2025-11-25T03:30:00-05:00", T0_MS, id="rfc3339-negative-offset"),
        pytest.param("2025-11-25T08:30:00.123456789Z", T0_MS + 123, id="nanoseconds"),
        pytest.param("2025-11-25T08:30:00.1235Z", T0_MS + 124, id="half-ms-rounds-up"),
        pytest.param("2025-11-25T08:30:00.9996Z", T0_MS + 1000, id="round-carries"),
        pytest.param("2025-11-25 16:30:00", T0_MS, id="naive-space-is-park-local"),
        pytest.param("2025-11-25T16:30:00.25", T0_MS + 250, id="naive-t-fraction"),
    ],
)
def test_accepted_forms(raw: object, expected_ms: int) -> None:
    assert resolve_ts(raw, CTX) == (expected_ms, True)


def test_absent_is_receive_time_and_trusted() -> None:
    assert resolve_ts(None, CTX) == (RECEIVED_AT_MS, True)


def test_naive_string_uses_context_timezone() -> None:
    utc = TimeContext(received_at_ms=RECEIVED_AT_MS, timezone=ZoneInfo("UTC"))
    assert resolve_ts("2025-11-25 08:30:00", utc) == (T0_MS, True)


@pytest.mark.parametrize(
    ("raw", "trusted"),
    [
        pytest.param((RECEIVED_AT_MS + 300_000) // 1000, True, id="future-edge"),
        pytest.param((RECEIVED_AT_MS + 301_000) // 1000, False, id="future-beyond"),
        pytest.param((RECEIVED_AT_MS - 7 * 86_400_000) // 1000, True, id="age-edge"),
        pytest.param((RECEIVED_AT_MS - 7 * 86_400_000) // 1000 - 1, False, id="age-beyond"),
        pytest.param(0, False, id="epoch-zero"),
        pytest.param(-1, False, id="negative"),
        pytest.param(10**30, False, id="huge-int"),
        pytest.param(-1e308, False, id="huge-negative-float"),
        pytest.param(1e300, False, id="huge-float"),
        pytest.param("2026-11-25T08:30:00Z", False, id="a-year-ahead"),
        pytest.param("0001-01-01T00:00:00+08:00", False, id="year-one"),
    ],
)
def test_trust_window(raw: object, trusted: bool) -> None:
    ts_ms, is_trusted = resolve_ts(raw, CTX)
    assert is_trusted is trusted
    if not trusted:
        assert ts_ms == RECEIVED_AT_MS


def test_window_comes_from_context() -> None:
    strict = TimeContext(
        received_at_ms=RECEIVED_AT_MS,
        timezone=ZoneInfo("Asia/Shanghai"),
        max_age_s=30,
        max_future_s=0,
    )
    assert resolve_ts(T0_MS, strict) == (RECEIVED_AT_MS, False)
    assert resolve_ts(RECEIVED_AT_MS + 1, strict) == (RECEIVED_AT_MS, False)
    assert resolve_ts(RECEIVED_AT_MS - 30_000, strict) == (RECEIVED_AT_MS - 30_000, True)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(True, RejectReason.SCHEMA, id="bool"),
        pytest.param([1764059400], RejectReason.SCHEMA, id="list"),
        pytest.param({"s": 1}, RejectReason.SCHEMA, id="object"),
        pytest.param("", RejectReason.SCHEMA, id="empty"),
        pytest.param("1764059400", RejectReason.SCHEMA, id="numeric-string"),
        pytest.param("2025-11-25", RejectReason.SCHEMA, id="date-only"),
        pytest.param("2025-W48-2T08:30:00Z", RejectReason.SCHEMA, id="week-date"),
        pytest.param("20251125T083000Z", RejectReason.SCHEMA, id="compact"),
        pytest.param("2025-11-25T08:30Z", RejectReason.SCHEMA, id="no-seconds"),
        pytest.param("2025-13-01T00:00:00Z", RejectReason.SCHEMA, id="month-13"),
        pytest.param("2025-11-25T24:00:00Z", RejectReason.SCHEMA, id="hour-24"),
        pytest.param("2025-11-25T08:30:60Z", RejectReason.SCHEMA, id="leap-second"),
        pytest.param("2025-11-25T08:30:00+24:00", RejectReason.SCHEMA, id="offset-24h"),
        pytest.param("2025-11-25T08:30:00.Z", RejectReason.SCHEMA, id="empty-fraction"),
        pytest.param("２０２５-11-25T08:30:00Z", RejectReason.SCHEMA, id="fullwidth-digits"),
        pytest.param("2025-11-25T08:30:00Z" + " " * 100, RejectReason.SCHEMA, id="long"),
        pytest.param(float("inf"), RejectReason.NAN, id="inf"),
        pytest.param(float("nan"), RejectReason.NAN, id="nan"),
    ],
)
def test_refused(raw: object, reason: RejectReason) -> None:
    with pytest.raises(Rejection) as caught:
        resolve_ts(raw, CTX)
    assert caught.value.reason is reason


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=50),
        st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat()),
    )
)
def test_never_raises_anything_but_rejection(raw: object) -> None:
    try:
        ts_ms, trusted = resolve_ts(raw, CTX)
    except Rejection:
        return
    assert isinstance(ts_ms, int)
    if not trusted:
        assert ts_ms == RECEIVED_AT_MS


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=T0_MS - 86_400_000, max_value=RECEIVED_AT_MS))
def test_seconds_millis_and_string_agree(ms: int) -> None:
    text = datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
    assert resolve_ts(ms, CTX) == (ms, True)
    assert resolve_ts(ms / 1000, CTX) == (ms, True)
    assert resolve_ts(text, CTX) == (ms, True)
