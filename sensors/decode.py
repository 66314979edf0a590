"""Payload bytes → :class:`Telemetry` / :class:`Event` / :class:`Status`, or a :class:`Rejection`.

This is the only module the gateway calls. It is pure: time comes in through
:class:`TimeContext`, and nothing here logs, counts or does I/O; the caller turns a
:class:`Rejection` into a dead letter and a metric.

Telemetry path::

    bytes ─ parse_json_object ─┬─ has "values"/"readings" ──────────────────┬─ envelope checks
                               └─ kind's vendor decoders, then flat shape ──┘  ts, values model

It runs for every message, so per-kind facts (metric names, bounds, validator) are computed once
and cached, and the happy path does no work that only an error message needs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from sensors.base import (
    Event,
    EventType,
    Rejection,
    RejectReason,
    Sample,
    SensorKind,
    SensorValues,
    Status,
    Telemetry,
    TimeContext,
)
from sensors.kinds._shapes import decode_flat
from sensors.text import strip_controls
from sensors.timestamps import numeric_ts, resolve_ts

__all__ = [
    "MAX_BATCH_READINGS",
    "MAX_DETAIL_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_OBJECT_KEYS",
    "MAX_PAYLOAD_BYTES",
    "MAX_POINT_CHARS",
    "Canonical",
    "decode_canonical",
    "decode_event",
    "decode_status",
    "decode_telemetry",
    "parse_json_object",
]

MAX_PAYLOAD_BYTES = 64 * 1024
#: Default for the batch form's ``readings`` and for any other JSON array (ingest.max_batch).
MAX_BATCH_READINGS = 1000
#: Deeper than any legitimate payload (canonical batch is 4), shallow enough to stop abuse.
MAX_JSON_DEPTH = 32
#: Keys in any one JSON object. The widest legitimate object (a power meter's flat shape with
#: its envelope) has about ten; a payload with thousands of keys only makes validation slow.
MAX_OBJECT_KEYS = 64
#: Event text reaching InfluxDB as string fields (docs/device-protocol.md, Events).
MAX_POINT_CHARS = 64
MAX_DETAIL_CHARS = 256

_MAX_SEQ = 2**63 - 1  # stored as an InfluxDB integer field (int64)
_MAX_STATUS_BYTES = 64

_SINGLE_KEYS = frozenset({"ts", "seq", "values", "battery_pct", "rssi_dbm"})
_BATCH_KEYS = frozenset({"seq", "readings", "battery_pct", "rssi_dbm"})
_READING_KEYS = frozenset({"ts", "values"})
_ENVELOPE_NUMBERS = frozenset({"seq", "battery_pct", "rssi_dbm"})
_EVENT_KEYS = frozenset({"ts", "seq", "type", "point", "detail"})
_EVENT_TYPES: Mapping[str, EventType] = {member.value: member for member in EventType}

_ERROR_REASONS: Mapping[str, RejectReason] = {
    "extra_forbidden": RejectReason.UNKNOWN_METRIC,
    "finite_number": RejectReason.NAN,
    "greater_than_equal": RejectReason.RANGE,
    "less_than_equal": RejectReason.RANGE,
    "greater_than": RejectReason.RANGE,
    "less_than": RejectReason.RANGE,
}
_PRIORITY: Mapping[RejectReason, int] = {
    RejectReason.UNKNOWN_METRIC: 0,
    RejectReason.NAN: 1,
    RejectReason.TYPE: 2,
    RejectReason.RANGE: 3,
    RejectReason.SCHEMA: 4,
}


# --------------------------------------------------------------------------- JSON


def _reject_constant(name: str) -> NoReturn:
    raise Rejection(RejectReason.NAN, f"{name} is not a number ParkWatch accepts")


#: One decoder for every message: ``json.loads`` with an argument builds a new one per call.
_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def parse_json_object(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES,
                      max_items: int = MAX_BATCH_READINGS) -> dict[str, Any]:
    """Decode a UTF-8 JSON object, refusing what no sensor legitimately sends.

    Everything "too big" is ``oversize``: the bytes, the nesting depth, an array longer than
    ``max_items``, an object with more than :data:`MAX_OBJECT_KEYS` keys.
    """
    if len(payload) > max_bytes:
        raise Rejection(RejectReason.OVERSIZE, f"{len(payload)} bytes > {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejection(RejectReason.BAD_UTF8, f"invalid UTF-8 at byte {exc.start}") from exc
    try:
        obj = _JSON.decode(text)
    except RecursionError as exc:  # the C scanner recurses per nesting level
        raise Rejection(RejectReason.OVERSIZE, f"nested deeper than {MAX_JSON_DEPTH}") from exc
    except json.JSONDecodeError as exc:
        raise Rejection(RejectReason.BAD_JSON, f"{exc.msg} at char {exc.pos}") from exc
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        raise Rejection(RejectReason.BAD_JSON, str(exc)[:80]) from exc
    if not isinstance(obj, dict):
        raise Rejection(RejectReason.SCHEMA, f"top level is {_json_type(obj)}, not an object")
    # Each level needs a bracket, each key a colon, each further array item a comma: a payload
    # with few of them cannot break a limit, so the common small message skips the walk.
    if (text.count("{") + text.count("[") > MAX_JSON_DEPTH or text.count(":") > MAX_OBJECT_KEYS
            or text.count(",") >= max_items):
        _check_shape_limits(obj, max_items)
    return obj


def _check_shape_limits(root: dict[str, Any], max_items: int) -> None:
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise Rejection(RejectReason.OVERSIZE, f"nested deeper than {MAX_JSON_DEPTH}")
        if isinstance(node, dict):
            if len(node) > MAX_OBJECT_KEYS:
                raise Rejection(RejectReason.OVERSIZE,
                                f"an object has {len(node)} keys > {MAX_OBJECT_KEYS}")
            children: Any = node.values()
        else:
            if len(node) > max_items:
                raise Rejection(RejectReason.OVERSIZE,
                                f"an array has {len(node)} items > {max_items}")
            children = node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "null" if value is None else type(value).__name__


# --------------------------------------------------------------------------- per-kind plan


@dataclass(frozen=True, slots=True)
class _Plan:
    """What decoding needs to know about a kind, derived once from its values model."""

    kind: SensorKind
    model: type[SensorValues] | None
    metrics: frozenset[str]
    booleans: frozenset[str]
    bounds: Mapping[str, tuple[float | None, float | None]]
    #: The canonical shape's shortcut (None: always ask the model): metric → (low, high) for a
    #: number with both bounds inclusive, or None for a boolean; and the metrics required.
    fast: Mapping[str, tuple[float, float] | None] | None = None
    required: frozenset[str] = frozenset()


_PLANS: dict[int, _Plan] = {}


def _plan_for(kind: SensorKind) -> _Plan:
    # Keyed by identity: hashing a SensorKind would hash its decoders tuple on every message.
    plan = _PLANS.get(id(kind))
    if plan is None or plan.kind is not kind:
        plan = _build_plan(kind)
        _PLANS[id(kind)] = plan
    return plan


def _build_plan(kind: SensorKind) -> _Plan:
    model = kind.values_model
    if model is None:
        return _Plan(kind, None, frozenset(), frozenset(), {})
    bounds: dict[str, tuple[float | None, float | None]] = {}
    for name, info in model.model_fields.items():
        low: float | None = None
        high: float | None = None
        for item in info.metadata:
            low = getattr(item, "ge", getattr(item, "gt", low))
            high = getattr(item, "le", getattr(item, "lt", high))
        bounds[name] = (low, high)
    required = frozenset(n for n, info in model.model_fields.items() if info.is_required())
    return _Plan(kind, model, frozenset(model.model_fields), model.boolean_metrics, bounds,
                 _fast_map(model), required)


def _fast_map(model: type[SensorValues]) -> dict[str, tuple[float, float] | None] | None:
    """Metrics whose check the shortcut can do exactly as the model does: a strict float with
    inclusive bounds (``ge``/``le``), or a strict bool. A model with validators of its own gets
    no shortcut; a metric outside the map sends its message the model's way."""
    decorators = model.__pydantic_decorators__
    if _ENVELOPE_NUMBERS & model.model_fields.keys():
        return None   # a metric named like the envelope's field: the long way merges them
    if (decorators.validators or decorators.field_validators or decorators.model_validators
            or decorators.root_validators):
        return None
    fast: dict[str, tuple[float, float] | None] = {}
    for name, info in model.model_fields.items():
        # An optional metric's null goes to the model: the shortcut takes numbers and booleans.
        if info.annotation in (bool, bool | None) and not info.metadata:
            fast[name] = None
            continue
        if info.annotation not in (float, float | None):
            continue
        kinds = {type(item).__name__ for item in info.metadata}
        low = next((getattr(i, "ge", None) for i in info.metadata if hasattr(i, "ge")), None)
        high = next((getattr(i, "le", None) for i in info.metadata if hasattr(i, "le")), None)
        if kinds == {"Ge", "Le"} and low is not None and high is not None:
            fast[name] = (float(low), float(high))
    return fast


# --------------------------------------------------------------------------- telemetry


def decode_telemetry(
    payload: bytes,
    kind: SensorKind,
    ctx: TimeContext,
    *,
    limits: Mapping[str, float] | None = None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_readings: int = MAX_BATCH_READINGS,
) -> Telemetry:
    """Decode one telemetry message of ``kind``.

    ``limits`` (per-device overrides from the registry) is reserved: physical ranges are the
    kind's; alarm thresholds are the rules' business. ``max_readings`` bounds the batch form
    (and any array in the payload).
    """
    plan = _plan_for(kind)
    obj = parse_json_object(payload, max_bytes=max_bytes, max_items=max_readings)
    if "values" not in obj and "readings" not in obj:
        obj = _vendor_shape(obj, plan)
    if "readings" in obj:
        _check_keys(obj, _BATCH_KEYS, "batch")
        if "values" in obj:
            raise Rejection(RejectReason.SCHEMA, "both 'values' and 'readings' present")
        samples = _readings(obj["readings"], plan, ctx, max_readings)
    else:
        _check_keys(obj, _SINGLE_KEYS, "telemetry")
        samples = (_sample(obj.get("ts"), obj.get("values"), plan, ctx),)
    return Telemetry(
        samples=samples,
        seq=_seq(obj.get("seq")),
        battery_pct=_health(obj, "battery_pct", 0.0, 100.0),
        rssi_dbm=_health(obj, "rssi_dbm", -150.0, 0.0),
    )


#: One reading in the canonical shape: (ts_ms, clock_trusted, values, seq, battery_pct,
#: rssi_dbm), as :func:`decode_telemetry` would give it in its one :class:`Sample`.
Canonical = tuple[int, bool, dict[str, float | bool], int | None, float | None, float | None]


def decode_canonical(payload: bytes, kind: SensorKind, received_at_ms: int, *,
                     max_age_s: float, max_future_s: float) -> Canonical | None:
    """The message nearly every device sends (one reading, the canonical shape, a numeric or
    no ``ts``, everything plainly valid), decoded without the general path's objects.

    None for anything else, valid or not: :func:`decode_telemetry` then decides, and words any
    rejection. Whatever this accepts, :func:`decode_telemetry` accepts with the same values
    (tests/test_decode_fastpath.py). The caller has checked the size. No shape limit can be
    broken here: two levels, no array, and only the kind's metrics and the envelope's keys.
    """
    plan = _plan_for(kind)
    fast = plan.fast
    if fast is None:
        return None
    try:
        # orjson: a quarter of the stdlib decoder's time here. Where the two differ (NaN and
        # Infinity, 1e400, integers beyond 64 bits, which orjson refuses or turns into a float)
        # the answer is None or a number outside every bound, so the long way decides.
        obj = orjson.loads(payload)
    except ValueError:   # orjson.JSONDecodeError, invalid UTF-8 included
        return None
    if type(obj) is not dict or not obj.keys() <= _SINGLE_KEYS:
        return None
    raw = obj.get("values")
    if type(raw) is not dict or not plan.required <= raw.keys():
        return None
    values = _fast_values(raw, fast)
    if values is None:
        return None
    ts = obj.get("ts")
    when = (received_at_ms, True) if ts is None else numeric_ts(ts, received_at_ms, max_age_s,
                                                                max_future_s)
    if when is None:
        return None
    seq = obj.get("seq")
    if seq is not None and (type(seq) is not int or not 0 <= seq <= _MAX_SEQ):
        return None
    battery = obj.get("battery_pct")
    if battery is not None:
        if (type(battery) is not float and type(battery) is not int) or \
                not 0.0 <= battery <= 100.0:   # NaN and infinities fail the bounds too
            return None
        battery = float(battery)
    rssi = obj.get("rssi_dbm")
    if rssi is not None:
        if (type(rssi) is not float and type(rssi) is not int) or not -150.0 <= rssi <= 0.0:
            return None
        rssi = float(rssi)
    return when[0], when[1], values, seq, battery, rssi


def _vendor_shape(obj: dict[str, Any], plan: _Plan) -> dict[str, Any]:
    for decoder in plan.kind.vendor_decoders:
        decoded = decoder(obj)
        if decoded is not None:
            return decoded
    decoded = decode_flat(obj, plan.metrics)
    if decoded is None and plan.model is None:
        metric = next(key for key in obj if key not in _SINGLE_KEYS)
        raise Rejection(
            RejectReason.UNKNOWN_METRIC,
            f"unknown metric {metric!r:.40}: {plan.kind.name} reports events only",
        )
    if decoded is None:
        keys = ", ".join(sorted(obj)[:8])
        raise Rejection(RejectReason.SCHEMA, f"no {plan.kind.name} shape has keys [{keys:.200}]")
    return decoded


def _check_keys(obj: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    if not obj.keys() <= allowed:
        unknown = ", ".join(sorted(obj.keys() - allowed)[:8])
        raise Rejection(RejectReason.SCHEMA, f"unknown {what} key(s) [{unknown:.200}]")


def _readings(raw: object, plan: _Plan, ctx: TimeContext,
              max_readings: int) -> tuple[Sample, ...]:
    if not isinstance(raw, list):
        raise Rejection(RejectReason.SCHEMA, f"readings is {_json_type(raw)}, not an array")
    if not raw:
        raise Rejection(RejectReason.SCHEMA, "readings is empty")
    if len(raw) > max_readings:
        # Unreachable through parse_json_object today; kept so the limit does not depend on it.
        raise Rejection(RejectReason.OVERSIZE, f"readings has {len(raw)} items > {max_readings}")
    samples: list[Sample] = []
    for index, reading in enumerate(raw):
        if not isinstance(reading, dict):
            raise Rejection(RejectReason.SCHEMA, f"readings[{index}] is not an object")
        _check_keys(reading, _READING_KEYS, f"readings[{index}]")
        samples.append(_sample(reading.get("ts"), reading.get("values"), plan, ctx))
    return tuple(samples)


def _sample(ts: object, raw_values: object, plan: _Plan, ctx: TimeContext) -> Sample:
    values = _values(raw_values, plan)
    ts_ms, trusted = resolve_ts(ts, ctx)
    return Sample(ts_ms=ts_ms, values=values, clock_trusted=trusted)


def _values(raw: object, plan: _Plan) -> dict[str, float | bool]:
    if not isinstance(raw, dict):
        raise Rejection(RejectReason.SCHEMA, f"values is {_json_type(raw)}, not an object")
    if plan.model is None:
        if raw:
            metric = next(iter(raw))
            raise Rejection(
                RejectReason.UNKNOWN_METRIC,
                f"unknown metric {metric!r:.40}: {plan.kind.name} reports events only",
            )
        return {}
    fast = plan.fast
    if fast is not None and plan.required <= raw.keys():
        quick = _fast_values(raw, fast)
        if quick is not None:
            return quick
    try:
        model = plan.model.model_validate(raw)
    except ValidationError as exc:
        raise _translate(exc, plan) from exc
    out: dict[str, float | bool] = {}
    for name in raw:
        value = getattr(model, name)
        if value is None:
            continue
        out[name] = value if name in plan.booleans else float(value)
    return out


def _fast_values(raw: Mapping[str, object],
                 fast: Mapping[str, tuple[float, float] | None]) -> dict[str, float | bool] | None:
    """The canonical shape without the model: every metric known to the shortcut and plainly
    valid. None on anything else, which the model then judges (and words the rejection)."""
    out: dict[str, float | bool] = {}
    for name, value in raw.items():
        if name not in fast:
            return None
        spec = fast[name]
        t = type(value)
        if spec is None:
            if t is not bool:
                return None
            out[name] = value  # type: ignore[assignment]
        elif (t is float or t is int) and spec[0] <= value <= spec[1]:  # type: ignore[operator]
            out[name] = float(value)  # type: ignore[arg-type]   # NaN fails the bounds
        else:
            return None
    return out


def _translate(exc: ValidationError, plan: _Plan) -> Rejection:
    errors = exc.errors(include_url=False)
    # Report the most telling error: {"pressure_psi": 46} is an unknown metric first and a
    # missing pressure_mpa only as a consequence.
    first = min(errors, key=lambda error: _PRIORITY[_reason_for(error["type"])])
    reason = _reason_for(first["type"])
    detail = _describe(first, reason, plan)
    if len(errors) > 1:
        detail += f" (+{len(errors) - 1} more)"
    return Rejection(reason, detail)


def _reason_for(error_type: str) -> RejectReason:
    reason = _ERROR_REASONS.get(error_type)
    if reason is not None:
        return reason
    if error_type.endswith(("_type", "_parsing")):
        return RejectReason.TYPE
    return RejectReason.SCHEMA


def _describe(error: ErrorDetails, reason: RejectReason, plan: _Plan) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "values"
    shown = _short(error.get("input"))
    if reason is RejectReason.UNKNOWN_METRIC:
        return f"unknown metric {field!r:.60} for kind {plan.kind.name}"
    if reason is RejectReason.RANGE:
        low, high = plan.bounds.get(field, (None, None))
        return f"{field}={shown} outside [{_bound(low, '-inf')}, {_bound(high, 'inf')}]"
    if reason is RejectReason.NAN:
        return f"{field}={shown} is not finite"
    if error["type"] == "missing":
        return f"{field} missing (required for kind {plan.kind.name})"
    return f"{field}={shown}: {error['msg']}"


def _bound(value: float | None, unbounded: str) -> str:
    return unbounded if value is None else repr(value)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _seq(raw: object) -> int | None:
    if raw is None:
        return None
    if type(raw) is not int or not 0 <= raw <= _MAX_SEQ:
        raise Rejection(RejectReason.SCHEMA, f"seq={_short(raw)} is not an integer in 0..2^63-1")
    return raw


def _health(obj: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    raw = obj.get(key)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise Rejection(RejectReason.TYPE, f"{key}={_short(raw)} is not a number")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise Rejection(RejectReason.NAN, f"{key}={raw!r} is not finite")
    if not low <= raw <= high:
        raise Rejection(RejectReason.RANGE, f"{key}={_short(raw)} outside [{low!r}, {high!r}]")
    return float(raw)


# --------------------------------------------------------------------------- events, status


def decode_event(payload: bytes, ctx: TimeContext, *,
                 max_bytes: int = MAX_PAYLOAD_BYTES) -> Event:
    """Decode one event message (docs/device-protocol.md, Events)."""
    obj = parse_json_object(payload, max_bytes=max_bytes)
    _check_keys(obj, _EVENT_KEYS, "event")
    raw_type = obj.get("type")
    event_type = _EVENT_TYPES.get(raw_type) if isinstance(raw_type, str) else None
    if event_type is None:
        raise Rejection(RejectReason.SCHEMA, f"type={_short(raw_type)} is not an event type")
    ts_ms, trusted = resolve_ts(obj.get("ts"), ctx)
    return Event(
        ts_ms=ts_ms,
        type=event_type,
        seq=_seq(obj.get("seq")),
        point=_text(obj, "point", MAX_POINT_CHARS),
        detail=_text(obj, "detail", MAX_DETAIL_CHARS),
        clock_trusted=trusted,
    )


def _text(obj: Mapping[str, Any], key: str, max_chars: int) -> str:
    raw = obj.get(key)
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise Rejection(RejectReason.TYPE, f"{key}={_short(raw)} is not a string")
    # Before the cut, so the limit counts what people will read. Never a rejection: a fire
    # alarm must not be lost over a stray byte in its description.
    raw = strip_controls(raw)
    if len(raw) > max_chars:
        # Cut, not refused: a fire alarm must not be lost over the length of its description.
        raw = raw[:max_chars - 1] + "\u2026"
    try:
        # A lone surrogate from a "\ud800" escape would only fail later, in the writer.
        raw.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Rejection(RejectReason.SCHEMA, f"{key} contains an unpaired surrogate") from exc
    return raw


_STATUS_WORDS: Mapping[str, bool] = {"online": True, "offline": False}


def decode_status(payload: bytes) -> Status:
    """Decode a device status message: plain text ``online`` / ``offline``."""
    if len(payload) > _MAX_STATUS_BYTES:
        raise Rejection(RejectReason.OVERSIZE, f"{len(payload)} bytes > {_MAX_STATUS_BYTES}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejection(RejectReason.BAD_UTF8, f"invalid UTF-8 at byte {exc.start}") from exc
    online = _STATUS_WORDS.get(text.strip().lower())
    if online is None:
        raise Rejection(RejectReason.SCHEMA, f"status {text.strip()[:20]!r} is not online/offline")
    return Status(online=online)
