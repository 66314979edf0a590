"""Golden-folder tests: every folder under tests/golden/<kind>/<case>/ is one decoding case.

A folder holds ``topic`` (the message type is its last segment), ``payload`` (raw bytes as sent)
and either ``expected.json`` or ``error.json`` (``{"reason": ..., "detail_contains": ...}``).
``_topic/`` holds routing cases for the gateway's topic tests and is skipped here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sensors.base import Event, Rejection, Status, Telemetry, TimeContext
from sensors.catalogue import get_kind
from sensors.decode import decode_event, decode_status, decode_telemetry

GOLDEN = Path(__file__).parent / "golden"
#: 2025-11-25T08:31:00Z; the golden payloads' numeric timestamps sit one minute before it.
RECEIVED_AT_MS = 1764059460000
CTX = TimeContext(received_at_ms=RECEIVED_AT_MS, timezone=ZoneInfo("Asia/Shanghai"))


def _cases() -> list[Path]:
    return sorted(
        case
        for case in GOLDEN.glob("*/*")
        if case.is_dir() and not case.parent.name.startswith("_")
    )


def _decode(case: Path) -> Telemetry | Event | Status:
    message_type = (case / "topic").read_text().strip().rsplit("/", 1)[-1]
    payload = (case / "payload").read_bytes()
    if message_type == "telemetry":
        return decode_telemetry(payload, get_kind(case.parent.name), CTX)
    if message_type == "event":
        return decode_event(payload, CTX)
    if message_type == "status":
        return decode_status(payload)
    raise AssertionError(f"{case}: topic must end in telemetry, event or status")


def _as_json(result: Telemetry | Event | Status) -> dict[str, Any]:
    if isinstance(result, Telemetry):
        for sample in result.samples:
            for name, value in sample.values.items():
                # InfluxDB fixes a field's type on first write: ints must never leak out.
                assert type(value) in (float, bool), f"{name}={value!r} is {type(value)}"
        return {
            "seq": result.seq,
            "battery_pct": result.battery_pct,
            "rssi_dbm": result.rssi_dbm,
            "samples": [
                {"ts_ms": s.ts_ms, "values": dict(s.values), "clock_trusted": s.clock_trusted}
                for s in result.samples
            ],
        }
    if isinstance(result, Event):
        return {
            "ts_ms": result.ts_ms,
            "type": result.type.value,
            "seq": result.seq,
            "point": result.point,
            "detail": result.detail,
            "clock_trusted": result.clock_trusted,
        }
    return {"online": result.online}


def _assert_same(actual: object, expected: object, where: str = "") -> None:
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        assert actual is expected or actual == expected, f"{where}: {actual!r} != {expected!r}"
        assert type(actual) is type(expected), f"{where}: {actual!r} is not {expected!r}"
    elif isinstance(expected, int | float):
        assert isinstance(actual, int | float), where
        assert not isinstance(actual, bool), where
        assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12), (
            f"{where}: {actual!r} != {expected!r}"
        )
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), where
        assert sorted(actual) == sorted(expected), f"{where}: keys {sorted(actual)}"
        for key, value in expected.items():
            _assert_same(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), where
        assert len(actual) == len(expected), where
        for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
            _assert_same(got, want, f"{where}[{index}]")
    else:  # pragma: no cover - expected.json only holds JSON types
        raise AssertionError(f"{where}: unsupported expected value {expected!r}")


@pytest.mark.parametrize("case", _cases(), ids=lambda case: f"{case.parent.name}/{case.name}")
def test_golden(case: Path) -> None:
    error_file = case / "error.json"
    expected_file = case / "expected.json"
    assert error_file.exists() != expected_file.exists(), "need exactly one expectation file"
    if expected_file.exists():
        _assert_same(_as_json(_decode(case)), json.loads(expected_file.read_text()))
        return
    error = json.loads(error_file.read_text())
    with pytest.raises(Rejection) as caught:
        _decode(case)
    assert caught.value.reason.value == error["reason"], caught.value.detail
    assert error.get("detail_contains", "") in caught.value.detail
