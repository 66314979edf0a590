"""Temperature / humidity sensors in archive rooms, warehouses and plant rooms.

Metrics and accepted ranges: docs/device-protocol.md, "Metrics per kind".

Vendor shapes, before the generic flat shape:

* ``{"temp": 23.4, "hum": 51.0}``: Celsius and % relative humidity, only renamed.
"""

from __future__ import annotations

from pydantic import Field

from sensors.base import SensorKind, SensorValues
from sensors.kinds._shapes import renamer


class EnvironmentValues(SensorValues):
    temperature_c: float = Field(ge=-40.0, le=85.0)
    humidity_pct: float = Field(ge=0.0, le=100.0)


KIND = SensorKind(
    name="environment",
    values_model=EnvironmentValues,
    vendor_decoders=(renamer("temp", {"temp": "temperature_c", "hum": "humidity_pct"}),),
    description="Temperature and humidity sensor",
)
