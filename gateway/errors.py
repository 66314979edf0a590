"""Errors of the running gateway. The root (:class:`ParkWatchError`) and the configuration
errors live in :mod:`sensors.errors`, the bottom layer, since every layer reads config files."""

from __future__ import annotations

from sensors.errors import ParkWatchError


class WalError(ParkWatchError):
    """The local write-ahead log is unusable (disk full, corrupt beyond the last good record)."""


class InfluxError(ParkWatchError):
    """InfluxDB answered in a way the writer cannot act on."""


class MqttError(ParkWatchError):
    """The MQTT connection failed in a way that reconnecting will not fix (bad URL, TLS files)."""
