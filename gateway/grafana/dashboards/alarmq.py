"""InfluxQL over the ``alarms`` measurement: one point per state change, so "what is active"
is "series whose last point is not ``resolved``"."""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import table

from gateway.grafana.dashboards import schema
from gateway.grafana.dashboards.common import (
    ACTIVE_WINDOW,
    INTERVAL,
    SEVERITY_COLORS,
    TIME_FILTER,
    ident,
    prop,
    table_panel,
    targets,
    transformation,
    value_text,
    where,
)

#: One alarm subject: the fingerprint of an active alarm is rule + device, zone or building.
SUBJECT = ("building", "floor", "zone", "device", "rule")
STATE, MESSAGE, ALARM_ID = ident("state"), ident("message"), ident("alarm_id")
RESOLVED = f"{STATE} <> 'resolved'"
FIRING = f"{STATE} = 'firing'"
ACKNOWLEDGED = f"{STATE} = 'acknowledged'"
STARTED_AT_MS, ACKNOWLEDGED_BY = ident("started_at_ms"), ident("acknowledged_by")


def group_by(*tags: str) -> str:
    return "GROUP BY " + ", ".join(ident(t) for t in tags)


def last_states(filters: Sequence[str], by: Sequence[str] = SUBJECT) -> str:
    """Subquery: the last state of every alarm subject (within the active window)."""
    return (f"SELECT last({STATE}) AS {STATE} FROM {ident(schema.ALARMS)} "
            f"WHERE {where(ACTIVE_WINDOW, *filters)} {group_by(*by)}")


def active_count(filters: Sequence[str], *, per: Sequence[str] = (), alias: str = "active",
                 code: int | None = None) -> str:
    """Active alarms counted per ``per`` tags; with ``code``, the constant ``code`` wherever
    there is at least one (a status level to take the maximum of)."""
    value = f"count({STATE})" + (f" * 0 + {code}" if code is not None else "")
    outer = f" {group_by(*per)}" if per else ""
    inner_by = tuple(dict.fromkeys((*per, *SUBJECT)))
    return (f"SELECT {value} AS {ident(alias)} FROM ({last_states(filters, inner_by)}) "
            f"WHERE {RESOLVED}{outer}")


def raised_over_time(filters: Sequence[str], by: str = "severity") -> str:
    return (f"SELECT count({ALARM_ID}) AS {ident('raised')} FROM {ident(schema.ALARMS)} "
            f"WHERE {where(TIME_FILTER, FIRING, *filters)} "
            f"GROUP BY time({INTERVAL}), {ident(by)} fill(0)")


def active_alarms_table(title: str, description: str, filters: Sequence[str]) -> table.Panel:
    """Latest point of every alarm subject, resolved ones filtered out in Grafana (InfluxQL
    cannot filter on a selector's result without losing the point's own time)."""
    query = (f"SELECT {STATE}, {MESSAGE}, {ALARM_ID}, {STARTED_AT_MS}, {ACKNOWLEDGED_BY} "
             f"FROM {ident(schema.ALARMS)} "
             f"WHERE {where(ACTIVE_WINDOW, *filters)} {group_by('severity', *SUBJECT)} "
             f"ORDER BY time DESC LIMIT 1")
    severity_colours = {s: (s, c) for s, c in SEVERITY_COLORS.items()}
    return (table_panel(title, description, targets(query, table_format=True))
            .transformations([
                transformation("merge", {}),
                transformation("filterByValue", {
                    "type": "exclude", "match": "any",
                    "filters": [{"fieldName": "state",
                                 "config": {"id": "equal", "options": {"value": "resolved"}}}]}),
                # Epoch milliseconds become a time, shown in the dashboard's time zone.
                transformation("convertFieldType", {"conversions": [
                    {"targetField": "started_at_ms", "destinationType": "time"}]}),
                transformation("organize", {
                    "indexByName": {"severity": 0, "started_at_ms": 1, "state": 2,
                                    "acknowledged_by": 3, "building": 4, "floor": 5, "zone": 6,
                                    "device": 7, "rule": 8, "message": 9, "Time": 10,
                                    "alarm_id": 11},
                    "renameByName": {"started_at_ms": "since", "acknowledged_by": "acknowledged by",
                                     "Time": "last change"}}),
                transformation("sortBy", {"sort": [{"field": "since", "desc": True}]}),
            ])
            .override_by_name("severity", [
                prop("mappings", [value_text(severity_colours)]),
                prop("custom.cellOptions", {"type": "color-background"})])
            .override_by_name("state", [
                prop("mappings", [value_text({
                    "firing": ("firing: not acknowledged", "red"),
                    "acknowledged": ("acknowledged", "green")})]),
                prop("custom.cellOptions", {"type": "color-text"})]))
