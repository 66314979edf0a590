"""InfluxQL for device liveness: the latest ``device_status`` point of every device.

The gateway owns liveness (gateway/runtime/liveness.py): every registered device gets a point on
each online/offline change and a snapshot every ``observe.liveness_snapshot_s`` (60 s), so "the
latest point per device within a few snapshots" is the whole registry, telemetry-only devices
and never-seen ones included. A device removed from the registry drops out after the window.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.grafana.dashboards import alarmq, schema
from gateway.grafana.dashboards.common import ident, where

#: Latest per device: five snapshot intervals, so one late snapshot does not empty a panel,
#: and a gateway down longer than this shows no data rather than a stale guess.
LIVE_WINDOW = "time > now() - 5m"
ONLINE, NEVER_SEEN = ident("online"), ident("never_seen")
DEVICE_STATUS = ident(schema.DEVICE_STATUS)


def latest(field: str, filters: Sequence[str], per: Sequence[str] = ()) -> str:
    """Subquery: the latest ``field`` of every device (grouped by ``per`` too)."""
    f = ident(field)
    return (f"SELECT last({f}) AS {f} FROM {DEVICE_STATUS} "
            f"WHERE {where(LIVE_WINDOW, *filters)} "
            f"{alarmq.group_by(*dict.fromkeys((*per, 'device')))}")


def count_devices(filters: Sequence[str], *, per: Sequence[str] = (), alias: str,
                  only: str | None = None, code: int | None = None) -> str:
    """Devices counted per ``per``: all of them, or ``only`` those whose latest point has
    ``only`` (``online`` or ``never_seen``) true; with ``code``, that constant wherever there is
    at least one device (a status level to take the maximum of)."""
    field = only or "online"
    value = f"count({ident(field)})" + (f" * 0 + {code}" if code is not None else "")
    outer_where = f" WHERE {ident(only)} = true" if only else ""
    outer_by = f" {alarmq.group_by(*per)}" if per else ""
    return (f"SELECT {value} AS {ident(alias)} FROM ({latest(field, filters, per)})"
            f"{outer_where}{outer_by}")
