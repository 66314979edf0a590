"""Water pressure transmitters on hydrant and sprinkler pipe networks.

Metrics and accepted ranges: docs/device-protocol.md, "Metrics per kind".

``pressure_mpa`` is gauge pressure; the range starts slightly below zero because a drained riser
can sit under a light vacuum.

Vendor shapes, tried in this order before the generic flat shape:

* ``{"time": "2026-11-25 16:30:00", "pressure": 318.5, "unit": "kPa", "bat": 3.52}``: unit one of
  MPa, kPa, bar, psi (any case); ``time`` may be naive (park local time). ``bat`` is the battery
  voltage, which says nothing reliable about charge left, so it is dropped rather than guessed
  into ``battery_pct``.
* ``{"ts": 1764059400123, "press_bar": 3.2}``, also ``press_kpa`` / ``press_mpa``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from sensors.base import Rejection, RejectReason, SensorKind, SensorValues
from sensors.kinds._shapes import canonical, number, unit_divisor


class WaterPressureValues(SensorValues):
    pressure_mpa: float = Field(ge=-0.1, le=4.0)


# Divisors rather than factors: 318.5 / 1000 is exactly the double nearest 0.3185, whereas
# 318.5 * 0.001 is not.
_PER_MPA = {"mpa": 1.0, "kpa": 1000.0, "bar": 10.0, "psi": 145.03773773020923}
_FLAT_KEYS = {"press_mpa": 1.0, "press_kpa": 1000.0, "press_bar": 10.0}


def decode_pressure_with_unit(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    if "pressure" not in obj:
        return None
    mpa = number(obj, "pressure") / unit_divisor(obj, _PER_MPA)
    return canonical(obj, {"pressure_mpa": mpa}, ("pressure", "unit", "bat"), ts_alias="time")


def decode_press_suffix(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    present = [key for key in _FLAT_KEYS if key in obj]
    if not present:
        return None
    if len(present) > 1:
        raise Rejection(RejectReason.SCHEMA, f"conflicting pressure keys {present}")
    key = present[0]
    return canonical(obj, {"pressure_mpa": number(obj, key) / _FLAT_KEYS[key]}, (key,))


KIND = SensorKind(
    name="water_pressure",
    values_model=WaterPressureValues,
    vendor_decoders=(decode_pressure_with_unit, decode_press_suffix),
    description="Hydrant / sprinkler pipe-network pressure transmitter",
)
