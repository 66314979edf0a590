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


class CodedError(ParkWatchError):
    """A refusal told to a person as ``message``, with ``code`` for the program on the other side:
    an HTTP status (:class:`gateway.http.alarmapi.ApiError`) or a process exit code
    (:class:`gateway.tools.alarmcli.CliError`)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
