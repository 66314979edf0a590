"""Carbon monoxide detectors (underground car parks, boiler rooms).

Metrics and accepted ranges: docs/device-protocol.md, "Metrics per kind".

Vendor shapes, before the generic flat shape:

* ``{"co_mg_m3": 35.0}``: mass concentration, converted to ppm.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from sensors.base import SensorKind, SensorValues
from sensors.kinds._shapes import canonical, number


class CoValues(SensorValues):
    co_ppm: float = Field(ge=0.0, le=10000.0)


# ppm = mg/m³ × molar volume / molar mass: 24.45 L/mol is the molar volume at 25 °C and
# 1 atm (the conditions detector datasheets quote), 28.01 g/mol is CO.
_PPM_PER_MG_M3 = 24.45 / 28.01


def decode_mg_m3(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    if "co_mg_m3" not in obj:
        return None
    ppm = number(obj, "co_mg_m3") * _PPM_PER_MG_M3
    return canonical(obj, {"co_ppm": ppm}, ("co_mg_m3",))


KIND = SensorKind(
    name="co",
    values_model=CoValues,
    vendor_decoders=(decode_mg_m3,),
    description="Carbon monoxide detector",
)
