"""Fire alarm control panels, bridged to MQTT by a protocol converter.

Metrics and accepted ranges: docs/device-protocol.md, "Metrics per kind".

Events only: alarms, faults, isolations and resets of the panel's loop points arrive as events
with ``point`` set to the loop/address. Telemetry may only be a heartbeat (no metrics;
``battery_pct`` / ``rssi_dbm`` allowed); any metric is rejected as UNKNOWN_METRIC.
"""

from __future__ import annotations

from sensors.base import SensorKind

KIND = SensorKind(
    name="fire_panel",
    values_model=None,
    description="Fire alarm control panel (events only)",
)
