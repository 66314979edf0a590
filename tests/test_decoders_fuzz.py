"""Whatever arrives on the wire, decoders and the validator answer with a result or a Rejection,
never a crash; and what the validator accepts never carries injected characters into a line."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ingest.validate import Validated, Validator
from gateway.storage.lineprotocol import escape_tag
from sensors.base import Event, Rejection, RejectReason, Status, Telemetry, TimeContext
from sensors.catalogue import KINDS
from sensors.decode import MAX_PAYLOAD_BYTES, decode_event, decode_status, decode_telemetry
from sensors.registry import load_registry

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


# --------------------------------------------------------------------------- the validator

_REGISTRY = load_registry(Path(__file__).resolve().parent.parent / "config" / "sample-park"
                          / "registry.yaml")
_DEVICES = sorted(_REGISTRY, key=lambda d: d.device)
_TAG_VALUES = {escape_tag(v) for d in _DEVICES for v in d.tags().values()}


def _router() -> Validator:
    # A fresh validator per example would reset the rate limiter; a tight limit is part of the fuzz.
    return Validator(registry=_REGISTRY, root="parks", timezones={},
                  default_timezone=ZoneInfo("Asia/Shanghai"), max_payload_bytes=4096,
                  max_age_s=7 * 86400, max_future_s=300, max_batch=50,
                  device_rate_per_s=5, device_burst=20)


ROUTER = _router()
_SEGMENTS = st.one_of(
    st.sampled_from(["parks", "xz01", "b1", "b2", "b3", "telemetry", "event", "status", "", "+",
                     "#", "wp,0017", "a b", "x=y", '"', "\\", "\n", "\x00"]),
    st.sampled_from([d.device for d in _DEVICES]),
    st.text(max_size=12),
)


_PAYLOADS = st.one_of(
    st.binary(max_size=300),
    OBJECTS.map(lambda obj: json.dumps(obj).encode()),
    _mutated(),
    st.sampled_from([b"online", b"offline", b" ONLINE ", b"NaN", b"null", b"[]", b"{}"]),
)
_GOLDEN_BY_KIND: dict[str, list[tuple[str, bytes]]] = {}
for _case in sorted(GOLDEN.glob("*/*/payload")):
    if _case.stat().st_size <= 4096 and not _case.parent.parent.name.startswith("_"):
        _suffix = (_case.parent / "topic").read_text().strip().rpartition("/")[2]
        _GOLDEN_BY_KIND.setdefault(_case.parent.parent.name, []).append(
            (_suffix, _case.read_bytes()))


@st.composite
def _messages(draw: st.DrawFn) -> tuple[str | bytes, bytes]:
    """Mostly a registered device's topic with a real payload of its kind, then damaged a
    little (so every stage is reached); sometimes raw bytes."""
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        return draw(st.binary(max_size=80)), draw(st.binary(max_size=200))
    dev = draw(st.sampled_from(_DEVICES))
    suffix, payload = draw(st.sampled_from(_GOLDEN_BY_KIND[dev.kind]))
    parts = ["parks", dev.park, dev.building, dev.device, suffix]
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        parts[draw(st.integers(min_value=0, max_value=4))] = draw(_SEGMENTS)
    topic = "/".join(parts)
    if draw(st.booleans()):
        payload = draw(st.one_of(_PAYLOADS, st.just(payload)))
    return (topic.encode("utf-8", "surrogatepass") if draw(st.booleans()) else topic), payload


def _route_once(topic: str | bytes, payload: bytes, received_at_ms: int) -> None:
    refused: Rejection | None = None
    try:
        validated = ROUTER.validate(topic, payload, received_at_ms)
    except Rejection as rejection:
        refused = rejection
    if refused is not None:
        assert isinstance(refused.reason, RejectReason)
        assert len(refused.detail) <= 300
        return
    _assert_routed_is_safe(validated)


def _assert_routed_is_safe(validated: Validated) -> None:
    assert validated.device.device in _REGISTRY.devices
    for line in validated.lines:
        assert "\n" not in line
        head = line.split(" ", 1)[0]
        # Tag values are registry IDs, never anything from the topic or payload.
        for pair in head.split(",")[1:]:
            _, _, value = pair.partition("=")
            assert value in _TAG_VALUES | {validated.device.kind, "fire_alarm", "pre_alarm",
                                           "fault", "supervisory", "isolated", "test",
                                           "restored", "tamper", "low_battery", "reset",
                                           "mute"}, line


@FUZZ
@given(_messages(), st.integers(min_value=0, max_value=2**45))
def test_router_answers_routed_or_rejection_for_any_topic_and_payload(
        message: tuple[str | bytes, bytes], received_at_ms: int) -> None:
    _route_once(*message, received_at_ms)


@FUZZ
@given(st.binary(max_size=120), st.binary(max_size=120))
def test_router_survives_raw_bytes_everywhere(topic: bytes, payload: bytes) -> None:
    _route_once(topic, payload, 1764059460000)
    _route_once(b"parks/xz01/b3/wp-0017/" + topic, payload, 1764059460000)
