"""Manual call points ("break glass" alarm buttons).

Metrics and accepted ranges: docs/device-protocol.md, "Metrics per kind".

Events only: a press arrives as a ``fire_alarm`` event. Telemetry may only be a heartbeat (no
metrics; ``battery_pct`` / ``rssi_dbm`` allowed); any metric is rejected as UNKNOWN_METRIC.
"""

from __future__ import annotations

from sensors.base import SensorKind

KIND = SensorKind(
    name="manual_call_point",
    values_model=None,
    description="Manual call point (events only)",
)
