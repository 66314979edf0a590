"""The registry of sensor kinds: one explicit tuple, edited in one place.

Adding a kind means adding its module to ``sensors/kinds/`` and its ``KIND`` here;
``tests/test_catalogue.py`` fails if a module is left out or has no golden test data.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from sensors.base import SensorKind
from sensors.kinds import (
    co,
    electrical_fire,
    environment,
    fire_door,
    fire_panel,
    gas,
    heat,
    manual_call_point,
    power_meter,
    smoke,
    water_level,
    water_pressure,
)

__all__ = ["KINDS", "KIND_BY_NAME", "get_kind"]

KINDS: tuple[SensorKind, ...] = (
    smoke.KIND,
    heat.KIND,
    gas.KIND,
    co.KIND,
    water_pressure.KIND,
    water_level.KIND,
    electrical_fire.KIND,
    fire_door.KIND,
    environment.KIND,
    power_meter.KIND,
    manual_call_point.KIND,
    fire_panel.KIND,
)

KIND_BY_NAME: Mapping[str, SensorKind] = MappingProxyType({kind.name: kind for kind in KINDS})

if len(KIND_BY_NAME) != len(KINDS):  # pragma: no cover - guards against a copy-paste slip
    raise RuntimeError("duplicate sensor kind name in sensors.catalogue.KINDS")


def get_kind(name: str) -> SensorKind:
    """The kind called ``name``; KeyError naming the known kinds otherwise."""
    try:
        return KIND_BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted(KIND_BY_NAME))
        raise KeyError(f"unknown sensor kind {name!r} (known: {known})") from None
