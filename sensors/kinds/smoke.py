"""Point smoke detectors (photoelectric, often NB-IoT, battery powered).

Metrics and accepted ranges: docs/device-protocol.md, "Metrics per kind".

Both metrics are optional: most detectors only send a heartbeat with ``battery_pct`` and
``rssi_dbm`` and report alarms as events; some also report obscuration (% per metre) and the
chamber temperature.

Vendor shapes: only the canonical form and the generic flat shape.
"""

from __future__ import annotations

from pydantic import Field

from sensors.base import SensorKind, SensorValues


class SmokeValues(SensorValues):
    obscuration_pct_m: float | None = Field(default=None, ge=0.0, le=100.0)
    temperature_c: float | None = Field(default=None, ge=-40.0, le=120.0)


KIND = SensorKind(
    name="smoke",
    values_model=SmokeValues,
    description="Point smoke detector",
)
