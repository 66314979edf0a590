"""Electrical fire monitors on distribution boards (GB 14287 style).

Metrics and accepted ranges: docs/device-protocol.md, "Metrics per kind".

They measure the residual (earth-leakage) current of a circuit and, optionally, the temperature
of each phase conductor and the neutral.

Vendor shapes, before the generic flat shape:

* ``{"ir_ma": 146, "t1": 41.5, "t2": 43.0, "t3": 40.8, "tn": 37.2}``: only renamed; the
  temperature channels are optional, as in the canonical form.
"""

from __future__ import annotations

from pydantic import Field

from sensors.base import SensorKind, SensorValues
from sensors.kinds._shapes import renamer


class ElectricalFireValues(SensorValues):
    residual_current_ma: float = Field(ge=0.0, le=10000.0)
    temp_l1_c: float | None = Field(default=None, ge=-40.0, le=300.0)
    temp_l2_c: float | None = Field(default=None, ge=-40.0, le=300.0)
    temp_l3_c: float | None = Field(default=None, ge=-40.0, le=300.0)
    temp_n_c: float | None = Field(default=None, ge=-40.0, le=300.0)


decode_channels = renamer(
    "ir_ma",
    {
        "ir_ma": "residual_current_ma",
        "t1": "temp_l1_c",
        "t2": "temp_l2_c",
        "t3": "temp_l3_c",
        "tn": "temp_n_c",
    },
)

KIND = SensorKind(
    name="electrical_fire",
    values_model=ElectricalFireValues,
    vendor_decoders=(decode_channels,),
    description="Electrical fire monitor (residual current and conductor temperatures)",
)
