"""Power meters on fire-pump, smoke-extraction and fire-lift supplies.

Metrics and accepted ranges: docs/device-protocol.md, "Metrics per kind".

Every metric is optional: meters report whatever registers they were configured to poll.
``power_kw`` is signed (export is negative); ``energy_kwh`` has no upper bound.

Vendor shapes: only the canonical form and the generic flat shape.
"""

from __future__ import annotations

from pydantic import Field

from sensors.base import SensorKind, SensorValues


class PowerMeterValues(SensorValues):
    voltage_v: float | None = Field(default=None, ge=0.0, le=1000.0)
    current_a: float | None = Field(default=None, ge=0.0, le=10000.0)
    power_kw: float | None = Field(default=None, ge=-10000.0, le=10000.0)
    energy_kwh: float | None = Field(default=None, ge=0.0)
    power_factor: float | None = Field(default=None, ge=-1.0, le=1.0)
    frequency_hz: float | None = Field(default=None, ge=40.0, le=70.0)


KIND = SensorKind(
    name="power_meter",
    values_model=PowerMeterValues,
    description="Power meter on fire-safety supplies",
)
