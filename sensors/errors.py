"""The root of ParkWatch's exception tree, and the errors of reading configuration files.

They live at the bottom layer (``sensors``) because the registry, the rule loader and the
gateway's settings all report bad files the same way; ``gateway/errors.py`` adds the errors of
the running service. Third-party exceptions are wrapped at the adapter that meets them.
"""

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


class PointMapError(ConfigError):
    """The fire-panel point map cannot be loaded; every bad row is listed."""
