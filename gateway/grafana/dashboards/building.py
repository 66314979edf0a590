"""Building drilldown: one building (or floor, zone, device) in detail, every reading it sends."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import statetimeline

from gateway.grafana.dashboards import alarmq, liveq, schema
from gateway.grafana.dashboards.common import (
    DS,
    INTERVAL,
    TIME_FILTER,
    Board,
    as_targets,
    ident,
    location_filter,
    location_variables,
    table_panel,
    targets,
    tenant_variable,
    timeseries_panel,
    transformation,
    value_text,
    var_match,
    where,
)
from rules.model import RuleSet

UID = "parkwatch-building"
LEVELS = schema.LOCATION_TAGS
#: A tenant's view of a building includes the equipment nobody owns (the fire panel, pumps,
#: water mains: no tenant tag), which its safety depends on; the overview counts strictly.
TENANT_OR_SHARED = f"({var_match('tenant')} OR {ident('tenant')} = '')"
HERE = where(location_filter(LEVELS), TENANT_OR_SHARED)


def _telemetry_panel(kind: str, metric: str) -> Any:
    query = (f"SELECT mean({ident(metric)}) AS {ident(metric)} FROM {ident(kind)} "
             f"WHERE {where(TIME_FILTER, HERE)} "
             f"GROUP BY time({INTERVAL}), {ident('device')} fill(none)")
    return timeseries_panel(f"{kind} · {metric}", f"{metric} of every {kind} device selected.",
                            [t.alias("$tag_device") for t in targets(query)],
                            unit=_UNITS.get(metric, "short"))


def _boolean_panel(kind: str, metric: str) -> Any:
    query = (f"SELECT last({ident(metric)}) AS {ident(metric)} FROM {ident(kind)} "
             f"WHERE {where(TIME_FILTER, HERE)} "
             f"GROUP BY time({INTERVAL}), {ident('device')} fill(previous)")
    return (statetimeline.Panel().title(f"{kind} · {metric}")
            .description(f"{metric} of every {kind} device selected, over time.")
            .targets(as_targets([t.alias("$tag_device") for t in targets(query)])).datasource(DS)
            .mappings([value_text({"true": (metric, "orange"), "false": (f"not {metric}",
                                                                        "green")})]))


#: Grafana unit ids for canonical metrics (the unit lives in the metric's name).
_UNITS = {"temperature_c": "celsius", "temp_l1_c": "celsius", "temp_l2_c": "celsius",
          "temp_l3_c": "celsius", "temp_n_c": "celsius", "humidity_pct": "humidity",
          "lel_pct": "percent", "co_ppm": "ppm", "pressure_mpa": "suffix: MPa",
          "level_m": "lengthm", "residual_current_ma": "mamp", "voltage_v": "volt",
          "current_a": "amp", "power_kw": "kwatt", "energy_kwh": "kwatth",
          "frequency_hz": "hertz", "obscuration_pct_m": "suffix: %/m", "power_factor": "short"}


def _events() -> Any:
    query = (f"SELECT count({ident('detail')}) AS {ident('events')} FROM {ident(schema.EVENTS)} "
             f"WHERE {where(TIME_FILTER, HERE)} GROUP BY time({INTERVAL}), {ident('type')} "
             f"fill(none)")
    return timeseries_panel("Device events", "Events (fire_alarm, fault, restored …) by type.",
                            [t.alias("$tag_type") for t in targets(query)], bars=True)


def _device_status() -> Any:
    """The latest liveness point of each device selected (ParkWatch's verdict, not only what
    devices announced), and the changes with their source."""
    fields = ("online", "never_seen", "source", "reason")
    latest = ", ".join(f"last({ident(f)}) AS {ident(f)}" for f in fields)
    query = (f"SELECT {latest} FROM {liveq.DEVICE_STATUS} WHERE {where(TIME_FILTER, HERE)} "
             f"{alarmq.group_by('kind', *LEVELS[1:])}")
    not_snapshot = f"{ident('source')} != 'snapshot'"
    changes = (f"SELECT {ident('online')}, {ident('source')}, {ident('reason')}, "
               f"{ident('device')} FROM {liveq.DEVICE_STATUS} "
               f"WHERE {where(TIME_FILTER, HERE, not_snapshot)} "
               f"ORDER BY time DESC LIMIT 200")
    return (table_panel("Device status", "Each device's online state at the end of the time "
                        "range (from anything it sends against its report interval, status "
                        "messages and Wills; never_seen: never heard at all), and the latest "
                        "changes with their source (traffic, status, will, startup).",
                        targets(query, changes, table_format=True))
            .transformations([transformation("merge", {})])
            .mappings([value_text({"true": ("online", "green"), "false": ("offline", "red")})]))


def build(ruleset: RuleSet) -> dict[str, Any]:
    del ruleset  # every threshold here is shown as its alarm, not a line
    board = Board(UID, "ParkWatch · Building drilldown",
                  "One building, floor, zone or device: its alarms, events and every reading.",
                  variables=[*location_variables(len(LEVELS)), tenant_variable()],
                  annotation_filters=[location_filter(LEVELS[:2]), TENANT_OR_SHARED])
    board.add(alarmq.active_alarms_table("Active alarms here", "Alarms not yet resolved in the "
                                         "selection.", [HERE]), width=24, height=8)
    board.add(_events(), width=12, height=8)
    board.add(_device_status(), width=12, height=8)
    for kind in schema.telemetry_kinds():
        board.row(f"{kind} readings")
        bools = schema.boolean_metrics_of(kind)
        for metric in schema.metrics_of(kind):
            panel = _boolean_panel(kind, metric) if metric in bools else _telemetry_panel(kind,
                                                                                         metric)
            board.add(panel, width=12, height=7)
    return board.to_json()
