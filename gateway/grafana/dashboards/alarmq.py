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
FIRING_OR_ACKED = f"({FIRING} OR {STATE} = 'acknowledged')"


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
    query = (f"SELECT {STATE}, {MESSAGE}, {ALARM_ID} FROM {ident(schema.ALARMS)} "
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
                transformation("organize", {
                    "indexByName": {"severity": 0, "Time": 1, "state": 2, "building": 3,
                                    "floor": 4, "zone": 5, "device": 6, "rule": 7,
                                    "message": 8, "alarm_id": 9},
                    "renameByName": {"Time": "since (last change)"}}),
                transformation("sortBy", {"sort": [{"field": "since (last change)",
                                                    "desc": True}]}),
            ])
            .override_by_name("severity", [
                prop("mappings", [value_text(severity_colours)]),
                prop("custom.cellOptions", {"type": "color-background"})])
            .override_by_name("state", [
                prop("mappings", [value_text({
                    "firing": ("firing: not acknowledged", "red"),
                    "acknowledged": ("acknowledged", "green")})]),
                prop("custom.cellOptions", {"type": "color-text"})]))
