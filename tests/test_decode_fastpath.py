"""The canonical shape's shortcut in sensors/decode.py (issue 15) accepts exactly what each
kind's values model accepts, with the same values; everything else goes to the model, which
words the rejection."""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import gateway.ingest.validate as validate_module
from gateway.ingest.validate import Validator
from sensors.base import Rejection
from sensors.catalogue import KINDS
from sensors.decode import _fast_values, _plan_for, decode_canonical
from sensors.registry import build_registry

VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-10**30,
                                                                max_value=10**30),
    st.booleans(), st.none(), st.text(max_size=5), st.floats(min_value=-200, max_value=2000))

TELEMETRY_KINDS = [k for k in KINDS if k.values_model is not None]


@pytest.mark.parametrize("kind", TELEMETRY_KINDS, ids=lambda k: k.name)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_shortcut_agrees_with_the_model(kind: object, data: st.DataObject) -> None:
    plan = _plan_for(kind)  # type: ignore[arg-type]
    assert plan.model is not None
    names = [*plan.metrics, "not_a_metric"]
    raw = data.draw(st.dictionaries(st.sampled_from(names), VALUES, max_size=6))
    if plan.fast is None or not plan.required <= raw.keys():
        return
    quick = _fast_values(raw, plan.fast)
    if quick is None:
        return                      # the model decides; nothing to compare
    try:
        model = plan.model.model_validate(raw)
    except ValidationError as exc:
        raise AssertionError(f"the shortcut accepted what the model refuses: {raw}") from exc
    expected = {n: getattr(model, n) if n in plan.booleans else float(getattr(model, n))
                for n in raw if getattr(model, n) is not None}
    assert quick == expected
    assert [type(v) for v in quick.values()] == [type(v) for v in expected.values()]


def test_every_telemetry_kind_takes_the_shortcut() -> None:
    for kind in TELEMETRY_KINDS:
        plan = _plan_for(kind)
        assert plan.fast, f"{kind.name}: no metric can use the shortcut"


# ---- the whole message: Validator.validate with and without decode_canonical ----------------

RECEIVED_MS = 1_764_059_460_000
ROWS = [(i + 1, {"device": f"d-{k.name}", "park": "p", "building": "b", "floor": "1",
                 "zone": "z", "kind": k.name, "report_interval_s": 60})
        for i, k in enumerate(TELEMETRY_KINDS)]

TS = st.one_of(st.none(), st.integers(-10**15, 10**16), st.integers(-10**30, 10**30),
               st.floats(allow_nan=True),
               st.sampled_from([RECEIVED_MS / 1000, RECEIVED_MS, RECEIVED_MS / 1000 - 0.0005,
                                "2025-11-25T08:30:00Z", True]))
ENVELOPE = st.one_of(st.none(), st.integers(-10, 2**64), st.floats(allow_nan=True), st.booleans(),
                     st.floats(-160, 110), st.text(max_size=3),
                     # the edges of battery_pct, rssi_dbm and seq
                     st.sampled_from([-0.5, 0, 0.5, 100, 100.0, 100.5, -150, -150.5, -149.5,
                                      2**63 - 1, 2**63]))


def _validator() -> Validator:
    return Validator(registry=build_registry(ROWS, source="test"), root="parks", timezones={},
                     default_timezone=ZoneInfo("Asia/Shanghai"), max_payload_bytes=65536,
                     max_age_s=7 * 86400, max_future_s=300)


def _outcome(validator: Validator, topic: str, payload: bytes) -> object:
    try:
        v = validator.validate(topic, payload, RECEIVED_MS)
    except Rejection as rejection:
        return rejection.reason, rejection.detail
    return (v.type, v.lines, v.samples, v.untrusted, dict(v.latest), v.latest_ts_ms, v.seq,
            v.observations, [[type(x) for x in o.values.values()]  # type: ignore[union-attr]
                             for o in v.observations])


def _plain(plan: Any, data: st.DataObject) -> dict[str, object]:
    """A valid message of the kind, most of the time: what the short way is for."""
    values: dict[str, object] = {}
    for name, spec in (plan.fast or {}).items():
        if name in plan.required or data.draw(st.booleans()):
            values[name] = data.draw(st.booleans() if spec is None else st.one_of(
                st.floats(*spec), st.integers(int(spec[0]) + 1, max(int(spec[0]) + 1,
                                                                     int(spec[1])))))
    doc: dict[str, object] = {"values": values}
    for key, strategy in (
            ("ts", st.one_of(st.none(), st.floats(RECEIVED_MS / 1000 - 10**6, RECEIVED_MS / 1000),
                             st.integers(RECEIVED_MS - 10**6, RECEIVED_MS + 10**5))),
            ("seq", st.integers(0, 2**63 - 1)), ("battery_pct", st.floats(0, 100)),
            ("rssi_dbm", st.integers(-150, 0))):
        if data.draw(st.booleans()):
            doc[key] = data.draw(strategy)
    return doc


@pytest.mark.parametrize("kind", TELEMETRY_KINDS, ids=lambda k: k.name)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_the_short_way_gives_what_the_long_way_gives(kind: object,
                                                     data: st.DataObject) -> None:
    plan = _plan_for(kind)  # type: ignore[arg-type]
    doc = _plain(plan, data)
    # Then, often, one thing wrong or unusual somewhere.
    spoil = data.draw(st.sampled_from(["", "", "ts", "seq", "battery_pct", "rssi_dbm", "extra",
                                       "value", "metric"]))
    if spoil == "ts":
        doc["ts"] = data.draw(TS)
    elif spoil in ("seq", "battery_pct", "rssi_dbm", "extra"):
        doc[spoil] = data.draw(ENVELOPE)
    elif spoil in ("value", "metric"):
        values = dict(doc["values"])  # type: ignore[call-overload]
        names = [*plan.metrics] if spoil == "value" else ["not_a_metric"]
        values[data.draw(st.sampled_from(names))] = data.draw(VALUES)
        doc["values"] = values
    payload = json.dumps(doc).encode()
    topic = f"parks/p/b/d-{kind.name}/telemetry"  # type: ignore[attr-defined]
    short = _outcome(_validator(), topic, payload)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(validate_module, "decode_canonical", lambda *a, **k: None)
        long = _outcome(_validator(), topic, payload)
    assert short == long


def test_the_peer_load_takes_the_short_way() -> None:
    seen: list[object] = []
    validator = _validator()
    real = decode_canonical

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(result := real(*args, **kwargs))  # type: ignore[arg-type]
        return result
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(validate_module, "decode_canonical", spy)
        validator.validate("parks/p/b/d-gas/telemetry",
                           b'{"ts":1764059459.5,"seq":7,"values":{"lel_pct":0.8},'
                           b'"battery_pct":87.5,"rssi_dbm":-71}', RECEIVED_MS)
    assert seen
    assert seen[0] is not None


@pytest.mark.parametrize("payload", [
    b'{"values":{"lel_pct":NaN}}', b'{"values":{"lel_pct":1e400}}',
    b'{"values":{"lel_pct":-Infinity}}', b'{"ts":1e400,"values":{"lel_pct":1.0}}',
    b'{"ts":123456789012345678901234567890,"values":{"lel_pct":1.0}}',
    b'{"seq":123456789012345678901234567890,"values":{"lel_pct":1.0}}',
    b'{"seq":18446744073709551615,"values":{"lel_pct":1.0}}',
    b'{"values":{"lel_pct":123456789012345678901234567890}}',
    b'{"values":{"lel_pct":1.0},"values":{"lel_pct":2.0}}',
    b'{"values":{"lel_pct":1.0}} x', b'\xef\xbb\xbf{"values":{"lel_pct":1.0}}',
    b'{"values":{"lel_pct":1.0},"detail":"\\ud800"}', b'{"values":{"lel_pct":"\xff"}}',
], ids=range(13))
def test_where_orjson_and_the_stdlib_differ_the_answer_is_the_same(payload: bytes) -> None:
    topic = "parks/p/b/d-gas/telemetry"
    short = _outcome(_validator(), topic, payload)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(validate_module, "decode_canonical", lambda *a, **k: None)
        assert short == _outcome(_validator(), topic, payload)
