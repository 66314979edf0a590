"""Building blocks for vendor decoders, and the generic flat decoder every telemetry kind shares.

A vendor decoder receives the parsed JSON object and returns the canonical telemetry object
(``{"ts": ..., "seq": ..., "values": {...}, "battery_pct": ..., "rssi_dbm": ...}``), or None when
the object is not its shape. Range, type and NaN checks are not done here: the canonical path
validates the result with the kind's values model, so every shape gets the same verdicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sensors.base import Rejection, RejectReason, VendorDecoder

__all__ = [
    "ENVELOPE_KEYS",
    "canonical",
    "decode_flat",
    "number",
    "renamer",
    "unit_divisor",
]

#: Top-level keys that describe the message rather than the measurement.
ENVELOPE_KEYS = frozenset({"ts", "seq", "battery_pct", "rssi_dbm"})


def number(obj: Mapping[str, Any], key: str) -> float:
    """``obj[key]`` as a float, for shapes that must do arithmetic before validation."""
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejection(RejectReason.TYPE, f"{key}={_short(value)} is not a number")
    try:
        return float(value)
    except OverflowError as exc:  # a several-hundred-digit integer
        raise Rejection(RejectReason.RANGE, f"{key}={_short(value)} is out of range") from exc


def unit_divisor(obj: Mapping[str, Any], divisors: Mapping[str, float], key: str = "unit") -> float:
    """The divisor that turns the vendor's unit into the canonical one (UNIT if unknown)."""
    unit = obj.get(key)
    if not isinstance(unit, str):
        raise Rejection(RejectReason.UNIT, f"{key}={_short(unit)}: a unit string is required")
    divisor = divisors.get(unit.strip().lower())
    if divisor is None:
        known = ", ".join(sorted(divisors))
        raise Rejection(RejectReason.UNIT, f"{key}={unit[:32]!r} is not one of: {known}")
    return divisor


def canonical(
    obj: Mapping[str, Any],
    values: dict[str, Any],
    consumed: Iterable[str],
    *,
    ts_alias: str | None = None,
) -> dict[str, Any]:
    """Wrap converted ``values`` with the envelope keys of ``obj``.

    A key that is neither envelope nor ``consumed`` by the shape is most likely a metric the vendor
    added later, so it is reported as an unknown metric rather than silently dropped.
    """
    known = set(consumed)
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key in ENVELOPE_KEYS:
            out[key] = value
        elif key not in known and key != ts_alias:
            raise Rejection(RejectReason.UNKNOWN_METRIC, f"unknown metric {_short(key)}")
    if ts_alias is not None and ts_alias in obj:
        if "ts" in obj:
            raise Rejection(RejectReason.SCHEMA, f"both 'ts' and {ts_alias!r} are present")
        out["ts"] = obj[ts_alias]
    out["values"] = values
    return out


def renamer(trigger: str, names: Mapping[str, str]) -> VendorDecoder:
    """A decoder for shapes that only rename keys (``{"t1": 41.5}`` → ``temp_l1_c``).

    ``trigger`` is the key whose presence identifies the shape.
    """
    mapping = dict(names)

    def decode(obj: Mapping[str, Any]) -> dict[str, Any] | None:
        if trigger not in obj:
            return None
        values = {canon: obj[vendor] for vendor, canon in mapping.items() if vendor in obj}
        return canonical(obj, values, mapping)

    decode.__name__ = decode.__qualname__ = f"decode_{trigger}_shape"
    return decode


def decode_flat(obj: Mapping[str, Any], metrics: frozenset[str]) -> dict[str, Any] | None:
    """Canonical metric names at the top level instead of under ``values``.

    Matches when at least one key is a metric of the kind, or when only envelope keys are present
    (a heartbeat). Other non-envelope keys then travel into ``values`` so validation names them.
    """
    values = {key: value for key, value in obj.items() if key not in ENVELOPE_KEYS}
    if values and metrics.isdisjoint(values):
        return None
    out = {key: value for key, value in obj.items() if key in ENVELOPE_KEYS}
    out["values"] = values
    return out


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
