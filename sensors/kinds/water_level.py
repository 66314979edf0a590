"""Level transmitters on fire-water tanks and pools.

Metrics and accepted ranges: docs/device-protocol.md, "Metrics per kind".

``level_m`` is the water height above the transmitter's reference; it can be slightly negative
when the probe sits above the tank floor.

Vendor shapes, before the generic flat shape:

* ``{"level": 230, "unit": "cm"}``, unit one of m, cm, mm (any case).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from sensors.base import SensorKind, SensorValues
from sensors.kinds._shapes import canonical, number, unit_divisor


class WaterLevelValues(SensorValues):
    level_m: float = Field(ge=-1.0, le=50.0)


_PER_METRE = {"m": 1.0, "cm": 100.0, "mm": 1000.0}


def decode_level_with_unit(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    if "level" not in obj:
        return None
    metres = number(obj, "level") / unit_divisor(obj, _PER_METRE)
    return canonical(obj, {"level_m": metres}, ("level", "unit"))


KIND = SensorKind(
    name="water_level",
    values_model=WaterLevelValues,
    vendor_decoders=(decode_level_with_unit,),
    description="Fire-water tank / pool level transmitter",
)
