"""Park overview: where is the fire, what is broken, are the devices talking — in ten seconds."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.models import common

from gateway.grafana.dashboards import alarmq, liveq, schema
from gateway.grafana.dashboards.common import (
    Board,
    ident,
    location_variables,
    one_of,
    prop,
    stat_panel,
    table_panel,
    targets,
    tenant_variable,
    thresholds,
    timeseries_panel,
    transformation,
    value_text,
    var_match,
)
from rules.model import RuleSet

UID = "parkwatch-overview"
PARK = var_match("park")
TENANT = var_match("tenant")
HERE = [PARK, TENANT]
#: Building status levels, worst wins.
NORMAL, FAULT, ALARM, FIRE = 0, 1, 2, 3


def _building_status(ruleset: RuleSet) -> Any:
    faults = schema.fault_rules(ruleset)
    not_fault = f"{ident('rule')} !~ /^({'|'.join(faults)})$/"
    base = liveq.count_devices(HERE, per=("building",), alias="status", code=NORMAL)
    queries = [
        base,
        alarmq.active_count([*HERE, one_of("rule", faults)], per=("building",), alias="status",
                            code=FAULT),
        alarmq.active_count([*HERE, not_fault, one_of("severity", ["major", "minor", "warning"])],
                            per=("building",), alias="status", code=ALARM),
        alarmq.active_count([*HERE, f"{ident('severity')} = 'critical'"], per=("building",),
                            alias="status", code=FIRE),
    ]
    return (stat_panel(
        "Building status",
        "Worst active alarm per building: FIRE (a critical alarm: confirmed fire, panel or "
        "manual call point), ALARM (major / minor / warning hazards), FAULT (silent or broken "
        "equipment), else NORMAL. Every building of the registry has a tile (liveness points).",
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
        "Share of registered devices online now (latest device_status point of each). ParkWatch "
        "judges it from anything a device sends against factor x its report interval, status "
        "messages and Wills; a device never heard counts offline once its allowance has passed.",
        targets(liveq.count_devices(HERE, alias="online", only="online"),
                liveq.count_devices(HERE, alias="devices"), table_format=True),
        unit="percentunit")
        .transformations([
            transformation("merge", {}),
            transformation("calculateField", {
                "mode": "binary", "alias": "online rate", "replaceFields": True,
                "binary": {"left": "online", "operator": "/", "right": "devices"}}),
        ])
        .thresholds(thresholds([(None, "red"), (0.9, "orange"), (0.99, "green")])))


def _never_seen() -> Any:
    return (stat_panel(
        "Never seen",
        "Registered devices never heard since ParkWatch met them (counted offline above): not "
        "installed, not commissioned or misconfigured.",
        targets(liveq.count_devices(HERE, alias="never seen", only="never_seen"),
                table_format=True))
        .no_value("0")
        .thresholds(thresholds([(None, "green"), (1, "orange")])))


def _silent(ruleset: RuleSet) -> Any:
    return (stat_panel(
        "Silent devices",
        "Devices (or whole buildings) with an active silence alarm: no message for several of "
        "their report intervals.",
        targets(alarmq.active_count([*HERE, one_of("rule", schema.silence_rules(ruleset))],
                                    alias="silent"), table_format=True))
        .thresholds(thresholds([(None, "green"), (1, "orange")])))


def _health_per_kind(ruleset: RuleSet) -> Any:
    faults = schema.fault_rules(ruleset)
    return (table_panel(
        "Health per kind",
        "Per sensor kind: registered devices, how many are online now, and active fault "
        "alarms (silent, faulty, tampered, low battery, implausible readings).",
        targets(liveq.count_devices(HERE, per=("kind",), alias="devices"),
                liveq.count_devices(HERE, per=("kind",), alias="online", only="online"),
                alarmq.active_count([*HERE, one_of("rule", faults)], per=("kind",),
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
                  variables=[*location_variables(1), tenant_variable()],
                  annotation_filters=HERE, time_from="now-24h")
    board.add(_building_status(ruleset), width=12, height=6)
    board.add(_online_rate(), width=4, height=6)
    board.add(_never_seen(), width=4, height=6)
    board.add(_silent(ruleset), width=4, height=6)
    board.add(alarmq.active_alarms_table(
        "Active alarms", "Every alarm not yet resolved, the most recently started first. "
        "'firing' means nobody has acknowledged it yet; 'acknowledged by' says who did.",
        HERE), width=24, height=10)
    board.add(timeseries_panel(
        "Alarms raised", "New alarms per interval, by severity.",
        targets(alarmq.raised_over_time(HERE)), bars=True), width=16, height=8)
    board.add(_health_per_kind(ruleset), width=8, height=8)
    return board.to_json()
