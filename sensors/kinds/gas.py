"""Combustible gas detectors (kitchens, boiler rooms, gas meter rooms).

Metrics and accepted ranges: docs/device-protocol.md, "Metrics per kind".

``lel_pct`` is the concentration as a percentage of the lower explosive limit.

Vendor shapes, before the generic flat shape:

* ``{"lel": 12.5}``: already %LEL.
* ``{"concentration": 0.6, "unit": "%vol", "gas": "CH4"}``: volume fraction, converted with the
  gas's LEL; ``unit`` may also be ``%LEL``. Only methane is known; any other gas or unit is a UNIT
  rejection, because the LEL differs per gas and a wrong guess shifts every alarm threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from sensors.base import Rejection, RejectReason, SensorKind, SensorValues
from sensors.kinds._shapes import canonical, number, renamer


class GasValues(SensorValues):
    lel_pct: float = Field(ge=0.0, le=100.0)


# %vol at 100 %LEL. Methane at 5 %vol is the figure the park's detectors are calibrated to
# (IEC 60079-20-1 lists 4.4 %vol; the vendors' conversion uses 5, and so must we to agree).
_LEL_VOL_PCT = {"ch4": 5.0, "methane": 5.0}
_VOL_UNITS = frozenset({"%vol", "vol%", "% vol"})
_LEL_UNITS = frozenset({"%lel", "lel%", "% lel"})


def decode_concentration(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    if "concentration" not in obj:
        return None
    value = number(obj, "concentration")
    unit = obj.get("unit")
    norm = unit.strip().lower() if isinstance(unit, str) else None
    if norm in _LEL_UNITS:
        lel = value
    elif norm in _VOL_UNITS:
        gas = obj.get("gas")
        full_scale = _LEL_VOL_PCT.get(gas.strip().lower()) if isinstance(gas, str) else None
        if full_scale is None:
            raise Rejection(RejectReason.UNIT, f"gas={gas!r:.32}: no known LEL (known: CH4)")
        lel = value * 100.0 / full_scale
    else:
        raise Rejection(RejectReason.UNIT, f"unit={unit!r:.32}: expected %vol or %LEL")
    return canonical(obj, {"lel_pct": lel}, ("concentration", "unit", "gas"))


KIND = SensorKind(
    name="gas",
    values_model=GasValues,
    vendor_decoders=(renamer("lel", {"lel": "lel_pct"}), decode_concentration),
    description="Combustible gas detector",
)
