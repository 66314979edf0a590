"""Whatever arrives on the wire, decoders answer with a result or a Rejection, never a crash."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensors.base import Event, Rejection, Status, Telemetry, TimeContext
from sensors.catalogue import KINDS
from sensors.decode import MAX_PAYLOAD_BYTES, decode_event, decode_status, decode_telemetry

CTX = TimeContext(received_at_ms=1764059460000, timezone=ZoneInfo("Asia/Shanghai"))
GOLDEN = Path(__file__).parent / "golden"
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

GOLDEN_PAYLOADS = sorted(
    payload.read_bytes()
    for payload in GOLDEN.glob("*/*/payload")
    if payload.stat().st_size <= 4096  # the big ones only test size limits
)

# Keys decoders look at, so generated objects reach past the "unknown key" checks.
KNOWN_KEYS = sorted(
    {"ts", "seq", "values", "readings", "battery_pct", "rssi_dbm", "type", "point", "detail"}
    | {"time", "pressure", "unit", "bat", "press_bar", "press_kpa", "press_mpa", "lel"}
    | {"concentration", "gas", "state", "open", "ir_ma", "t1", "tn", "temp", "hum"}
    | {"temperature", "co_mg_m3", "level"}
    | {name for kind in KINDS if kind.values_model for name in kind.values_model.model_fields}
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),  # NaN is covered through the raw-bytes routes
    st.sampled_from(["kPa", "bar", "%vol", "CH4", "open", "fire_alarm", "2025-11-25 16:30:00"]),
    st.text(max_size=20),
)
KEYS = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=10))
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=20,
)
OBJECTS = st.dictionaries(KEYS, JSON_VALUES, max_size=6)


def _decode_all(payload: bytes) -> None:
    for kind in KINDS:
        with contextlib.suppress(Rejection):
            _assert_well_formed(decode_telemetry(payload, kind, CTX))
    with contextlib.suppress(Rejection):
        _assert_well_formed(decode_event(payload, CTX))
    with contextlib.suppress(Rejection):
        _assert_well_formed(decode_status(payload))


def _assert_well_formed(result: Telemetry | Event | Status) -> None:
    if isinstance(result, Telemetry):
        assert result.samples
        for sample in result.samples:
            assert isinstance(sample.ts_ms, int)
            for value in sample.values.values():
                assert type(value) is bool or (type(value) is float and math.isfinite(value))
    elif isinstance(result, Event):
        assert isinstance(result.ts_ms, int)
        assert len(result.point) <= 64
        assert len(result.detail) <= 256
    else:
        assert isinstance(result, Status)


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes(payload: bytes) -> None:
    _decode_all(payload)


@FUZZ
@given(OBJECTS)
def test_arbitrary_objects(obj: dict[str, Any]) -> None:
    _decode_all(json.dumps(obj).encode())


@FUZZ
@given(st.dictionaries(KEYS, JSON_VALUES, max_size=4), st.sampled_from(["values", "readings"]))
def test_arbitrary_values_and_readings(values: dict[str, Any], key: str) -> None:
    body: object = values if key == "values" else [{"values": values}, {"values": values}]
    _decode_all(json.dumps({"ts": 1764059400, key: body}).encode())


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(GOLDEN_PAYLOADS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice"]))
        at = draw(st.integers(min_value=0, max_value=len(data)))
        if op == "flip" and at < len(data):
            data[at] = draw(st.integers(min_value=0, max_value=255))
        elif op == "insert":
            token = draw(st.sampled_from([b"[", b"{", b'"', b"NaN", b"1e999", b"-", b"\xff", b"0"]))
            data[at:at] = token
        elif op == "delete":
            del data[at : at + draw(st.integers(min_value=1, max_value=8))]
        elif op == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.sampled_from(GOLDEN_PAYLOADS))[:32]
    return bytes(data)


@FUZZ
@given(_mutated())
def test_mutated_golden_payloads(payload: bytes) -> None:
    _decode_all(payload)


@FUZZ
@given(st.integers(min_value=1, max_value=MAX_PAYLOAD_BYTES // 2), st.sampled_from("[{"))
def test_deep_nesting_never_recurses_out(depth: int, bracket: str) -> None:
    inner = (bracket if bracket == "[" else '{"a":') * depth
    closing = ("]" if bracket == "[" else "}") * depth
    _decode_all(('{"values": ' + inner + "1" + closing + "}").encode()[:MAX_PAYLOAD_BYTES])
