"""Point heat detectors and linear heat sensing cable controllers.

Metrics and accepted ranges: docs/device-protocol.md, "Metrics per kind".

Vendor shapes, before the generic flat shape:

* ``{"temperature": 68.0, "unit": "C"}``, unit ``C`` or ``F`` (also ``°C`` / ``°F``). The unit is
  required: guessing Celsius for a Fahrenheit device would hide a real fire.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from sensors.base import Rejection, RejectReason, SensorKind, SensorValues
from sensors.kinds._shapes import canonical, number


class HeatValues(SensorValues):
    temperature_c: float = Field(ge=-40.0, le=200.0)


_CELSIUS = frozenset({"c", "°c", "celsius"})
_FAHRENHEIT = frozenset({"f", "°f", "fahrenheit"})


def decode_temperature_with_unit(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    if "temperature" not in obj:
        return None
    value = number(obj, "temperature")
    unit = obj.get("unit")
    norm = unit.strip().lower() if isinstance(unit, str) else None
    if norm in _CELSIUS:
        celsius = value
    elif norm in _FAHRENHEIT:
        celsius = (value - 32.0) * 5.0 / 9.0
    else:
        raise Rejection(RejectReason.UNIT, f"unit={unit!r:.32}: expected C or F")
    return canonical(obj, {"temperature_c": celsius}, ("temperature", "unit"))


KIND = SensorKind(
    name="heat",
    values_model=HeatValues,
    vendor_decoders=(decode_temperature_with_unit,),
    description="Heat detector / linear heat controller",
)
