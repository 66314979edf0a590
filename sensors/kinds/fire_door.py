"""Fire door position monitors.

Metrics and accepted ranges: docs/device-protocol.md, "Metrics per kind".

``open`` is a boolean. Whether open is normal depends on the door's registry ``mode``
(``normally_open`` / ``normally_closed``); that is for the rules, not the decoder.

Vendor shapes, before the generic flat shape:

* ``{"state": "open"}`` / ``{"state": "closed"}`` (any case).
* ``{"open": 1}`` / ``{"open": 0}``: integers are mapped to booleans here; anything other than 0
  or 1 is a TYPE rejection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from sensors.base import Rejection, RejectReason, SensorKind, SensorValues
from sensors.kinds._shapes import canonical


class FireDoorValues(SensorValues):
    open: bool

    boolean_metrics: ClassVar[frozenset[str]] = frozenset({"open"})


_STATES = {"open": True, "opened": True, "closed": False, "close": False}


def decode_state(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    if "state" not in obj:
        return None
    state = obj["state"]
    is_open = _STATES.get(state.strip().lower()) if isinstance(state, str) else None
    if is_open is None:
        raise Rejection(RejectReason.TYPE, f"state={state!r:.32}: expected 'open' or 'closed'")
    return canonical(obj, {"open": is_open}, ("state",))


def decode_open_int(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    flag = obj.get("open")
    if flag is None or isinstance(flag, bool):
        return None  # absent, or already canonical: the flat shape takes it
    if type(flag) is not int or flag not in (0, 1):
        raise Rejection(RejectReason.TYPE, f"open={flag!r:.32}: expected true/false or 0/1")
    return canonical(obj, {"open": flag == 1}, ("open",))


KIND = SensorKind(
    name="fire_door",
    values_model=FireDoorValues,
    vendor_decoders=(decode_state, decode_open_int),
    description="Fire door position monitor",
)
