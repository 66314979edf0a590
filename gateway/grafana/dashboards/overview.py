"""Park overview: where is the fire, what is broken, are the devices talking — in ten seconds."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.models import common

from gateway.grafana.dashboards import alarmq, schema
from gateway.grafana.dashboards.common import (
    ACTIVE_WINDOW,
    Board,
    ident,
    location_variables,
    one_of,
    prop,
    stat_panel,
    table_panel,
    targets,
    thresholds,
    timeseries_panel,
    transformation,
    value_text,
    var_match,
    where,
)
from rules.model import RuleSet

UID = "parkwatch-overview"
PARK = var_match("park")
#: Building status levels, worst wins.
NORMAL, FAULT, ALARM, FIRE = 0, 1, 2, 3


def _devices_with_status(per: tuple[str, ...], *, online_only: bool, alias: str,
                         code: int | None = None) -> str:
    """Devices whose last ``device_status`` is known (or is ``online``), counted per ``per``;
    with ``code``, that constant wherever there is at least one device."""
    online = ident("online")
    value = f"count({online})" + (f" * 0 + {code}" if code is not None else "")
    inner = (f"SELECT last({online}) AS {online} FROM {ident(schema.DEVICE_STATUS)} "
             f"WHERE {where(ACTIVE_WINDOW, PARK)} {alarmq.group_by(*per, 'device')}")
    outer_where = f" WHERE {online} = true" if online_only else ""
    outer_by = f" {alarmq.group_by(*per)}" if per else ""
    return f"SELECT {value} AS {ident(alias)} FROM ({inner}){outer_where}{outer_by}"


def _building_status(ruleset: RuleSet) -> Any:
    faults = schema.fault_rules(ruleset)
    not_fault = f"{ident('rule')} !~ /^({'|'.join(faults)})$/"
    base = _devices_with_status(("building",), online_only=False, alias="status", code=NORMAL)
    queries = [
        base,
        alarmq.active_count([PARK, one_of("rule", faults)], per=("building",), alias="status",
                            code=FAULT),
        alarmq.active_count([PARK, not_fault, one_of("severity", ["major", "minor", "warning"])],
                            per=("building",), alias="status", code=ALARM),
        alarmq.active_count([PARK, f"{ident('severity')} = 'critical'"], per=("building",),
                            alias="status", code=FIRE),
    ]
    return (stat_panel(
        "Building status",
        "Worst active alarm per building: FIRE (a critical alarm: confirmed fire, panel or "
        "manual call point), ALARM (major / minor / warning hazards), FAULT (silent or broken "
        "equipment), else NORMAL. Buildings are those whose devices reported a status.",
        targets(*queries, table_format=True))
        .transformations([
            transformation("merge", {}),
            transformation("groupBy", {"fields": {
                "building": {"aggregations": [], "operation": "groupby"},
                "status": {"aggregations": ["max"], "operation": "aggregate"}}}),
        ])
        .reduce_options(common_builder.ReduceDataOptions().values(True).calcs([])
                        .fields("/^status/"))
        .display_name("${__data.fields.building}")
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .mappings([value_text({str(NORMAL): ("NORMAL", "green"), str(FAULT): ("FAULT", "yellow"),
                               str(ALARM): ("ALARM", "orange"), str(FIRE): ("FIRE", "red")})]))


def _online_rate() -> Any:
    return (stat_panel(
        "Devices online",
        "Share of devices whose last announced status (device_status) is online. A device that "
        "died without saying so shows under 'Silent devices' once the rules notice.",
        targets(_devices_with_status((), online_only=True, alias="online"),
                _devices_with_status((), online_only=False, alias="devices"), table_format=True),
        unit="percentunit")
        .transformations([
            transformation("merge", {}),
            transformation("calculateField", {
                "mode": "binary", "alias": "online rate", "replaceFields": True,
                "binary": {"left": "online", "operator": "/", "right": "devices"}}),
        ])
        .thresholds(thresholds([(None, "red"), (0.9, "orange"), (0.99, "green")])))


def _silent(ruleset: RuleSet) -> Any:
    return (stat_panel(
        "Silent devices",
        "Devices (or whole buildings) with an active silence alarm: no message for several of "
        "their report intervals.",
        targets(alarmq.active_count([PARK, one_of("rule", schema.silence_rules(ruleset))],
                                    alias="silent"), table_format=True))
        .thresholds(thresholds([(None, "green"), (1, "orange")])))


def _health_per_kind(ruleset: RuleSet) -> Any:
    faults = schema.fault_rules(ruleset)
    return (table_panel(
        "Health per kind",
        "Per sensor kind: devices with a known status, how many are online, and active fault "
        "alarms (silent, faulty, tampered, low battery, implausible readings).",
        targets(_devices_with_status(("kind",), online_only=False, alias="devices"),
                _devices_with_status(("kind",), online_only=True, alias="online"),
                alarmq.active_count([PARK, one_of("rule", faults)], per=("kind",),
                                    alias="faults"),
                table_format=True))
        .transformations([
            transformation("merge", {}),
            transformation("organize", {"excludeByName": {"Time": True},
                                        "indexByName": {"kind": 0, "devices": 1, "online": 2,
                                                        "faults": 3}}),
        ])
        .override_by_name("faults", [prop("custom.cellOptions", {"type": "color-text"})])
        .thresholds(thresholds([(None, "green"), (1, "orange")])))


def build(ruleset: RuleSet) -> dict[str, Any]:
    board = Board(UID, "ParkWatch · Park overview",
                  "Where is the fire, what is broken, are the devices talking.",
                  variables=location_variables(1), annotation_filters=[PARK], time_from="now-24h")
    board.add(_building_status(ruleset), width=12, height=6)
    board.add(_online_rate(), width=6, height=6)
    board.add(_silent(ruleset), width=6, height=6)
    board.add(alarmq.active_alarms_table(
        "Active alarms", "Every alarm not yet resolved, the most recently started first. "
        "'firing' means nobody has acknowledged it yet; 'acknowledged by' says who did.",
        [PARK]), width=24, height=10)
    board.add(timeseries_panel(
        "Alarms raised", "New alarms per interval, by severity.",
        targets(alarmq.raised_over_time([PARK])), bars=True), width=16, height=8)
    board.add(_health_per_kind(ruleset), width=8, height=8)
    return board.to_json()
