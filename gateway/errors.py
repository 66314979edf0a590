"""ParkWatch's exception tree. Third-party exceptions are wrapped at the adapter that meets them."""

from __future__ import annotations


class ParkWatchError(Exception):
    """Base of every error ParkWatch raises on purpose."""


class ConfigError(ParkWatchError):
    """The configuration cannot be used; ``problems`` lists every one, each with file and line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s) in {source}:\n  " + "\n  ".join(problems))
        self.source = source
        self.problems = problems


class RegistryError(ConfigError):
    """The device registry cannot be loaded; every bad row is listed."""


class WalError(ParkWatchError):
    """The local write-ahead log is unusable (disk full, corrupt beyond the last good record)."""


class InfluxError(ParkWatchError):
    """InfluxDB answered in a way the writer cannot act on."""


class MqttError(ParkWatchError):
    """The MQTT connection failed in a way that reconnecting will not fix (bad URL, TLS files)."""
