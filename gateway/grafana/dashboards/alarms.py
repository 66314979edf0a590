"""Alarms: what was raised, how fast people answered, what the alarms turned out to be."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import barchart, bargauge
from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.models import common

from gateway.grafana.dashboards import alarmq, schema
from gateway.grafana.dashboards.common import (
    TIME_FILTER,
    Board,
    as_targets,
    ident,
    location_filter,
    prop,
    stat_panel,
    table_panel,
    tag_variable,
    targets,
    tenant_variable,
    thresholds,
    timeseries_panel,
    transformation,
    value_text,
    where,
)
from rules.alarm import Disposition
from rules.model import RuleSet

UID = "parkwatch-alarms"
FILTERS = location_filter(("park", "tenant", "building", "severity"))
ALARMS = ident(schema.ALARMS)
COLUMNS = ("alarm_id", "state", "severity", "rule", "building", "floor", "zone", "device",
           "message", "acknowledged_by", "disposition")
ACK_S = ident("ack_s")
#: The point written when someone acknowledges carries ``ack_s`` and the disposition, and so do
#: the alarm's later points (resolved ones included): only ``acknowledged`` points count, so each
#: answer is counted once. An acknowledged alarm whose severity or maintenance mark changes
#: writes one more such point; the table and the disposition counts fold those by alarm id,
#: the percentiles (computed by InfluxDB, which cannot group by a field) do not.
ACKED_IN_RANGE = where(TIME_FILTER, FILTERS, alarmq.ACKNOWLEDGED)
#: Disposition → (what the table and chart say, colour).
DISPOSITIONS = {
    Disposition.REAL.value: ("real", "red"),
    Disposition.FALSE_ALARM.value: ("false alarm", "orange"),
    Disposition.TEST.value: ("test", "blue"),
    Disposition.FAULT.value: ("equipment fault", "yellow"),
}
#: Acknowledgements table: column → header.
ACK_COLUMNS = {"Time": "acknowledged at", "ack_s": "time to acknowledge",
               "acknowledged_by": "acknowledged by", "disposition": "disposition",
               "severity": "severity", "rule": "rule", "building": "building", "floor": "floor",
               "zone": "zone", "device": "device"}


def _time_to_ack_stats() -> Any:
    query = (f"SELECT percentile({ACK_S}, 50) AS {ident('p50')}, "
             f"percentile({ACK_S}, 90) AS {ident('p90')}, max({ACK_S}) AS {ident('max')} "
             f"FROM {ALARMS} WHERE {ACKED_IN_RANGE}")
    return (stat_panel(
        "Time to acknowledge",
        "From firing to the acknowledgement, for alarms acknowledged in the time range: the "
        "median (p50), the time 90 % of alarms were answered within (p90), and the slowest.",
        [t.alias("$col") for t in targets(query)], unit="s")
        .color_mode(common.BigValueColorMode.VALUE)
        .thresholds(thresholds([(None, "blue")])))


def _dispositions() -> Any:
    # ``disposition`` is a field, which InfluxQL cannot GROUP BY: Grafana counts the alarms
    # per disposition instead, so a disposition added later shows up without a new query.
    query = (f"SELECT {ident('alarm_id')}, {ident('disposition')} FROM {ALARMS} "
             f"WHERE {ACKED_IN_RANGE}")
    return (barchart.Panel().title("Dispositions")
            .description("What the alarms acknowledged in the time range turned out to be, as "
                         "the person acknowledging said: real, false alarm, test or equipment "
                         "fault. Many false alarms point to a detector to check or clean.")
            .targets(as_targets(targets(query, table_format=True)))
            .transformations([
                transformation("groupBy", {"fields": {
                    "disposition": {"aggregations": [], "operation": "groupby"},
                    "alarm_id": {"aggregations": ["distinctCount"], "operation": "aggregate"}}}),
                transformation("organize", {"renameByName": {"alarm_id (distinctCount)":
                                                             "alarms"}}),
            ])
            .x_field("disposition")
            .orientation(common.VizOrientation.HORIZONTAL)
            .show_value(common.VisibilityMode.ALWAYS)
            .unit("short").decimals(0)
            .override_by_name("disposition", [prop("mappings", [value_text(DISPOSITIONS)])])
            .legend(common_builder.VizLegendOptions().show_legend(False)))


def _acknowledgements() -> Any:
    selected = ["alarm_id", *(c for c in ACK_COLUMNS if c != "Time")]
    query = f"SELECT {', '.join(ident(c) for c in selected)} FROM {ALARMS} WHERE {ACKED_IN_RANGE}"
    # One row per alarm: its first acknowledged point in the range.
    fields: dict[str, Any] = {"alarm_id": {"aggregations": [], "operation": "groupby"}}
    fields.update({c: {"aggregations": ["first"], "operation": "aggregate"} for c in ACK_COLUMNS})
    return (table_panel(
        "Acknowledgements",
        "Every alarm acknowledged in the time range: when, by whom, what it was, and how long "
        "it took from firing. Slowest first; the footer shows the mean.",
        targets(query, table_format=True))
        .transformations([
            transformation("groupBy", {"fields": fields}),
            transformation("organize", {
                "indexByName": {**{f"{c} (first)": i for i, c in enumerate(ACK_COLUMNS)},
                                "alarm_id": len(ACK_COLUMNS)},
                "renameByName": {f"{c} (first)": name for c, name in ACK_COLUMNS.items()}}),
            transformation("sortBy", {"sort": [{"field": "time to acknowledge", "desc": True}]}),
        ])
        .override_by_name("time to acknowledge", [prop("unit", "s")])
        .override_by_name("disposition", [prop("mappings", [value_text(DISPOSITIONS)]),
                                          prop("custom.cellOptions", {"type": "color-text"})])
        .footer(common_builder.TableFooterOptions().show(True).reducer(["mean"])
                .fields(["time to acknowledge"])))


def build(ruleset: RuleSet) -> dict[str, Any]:
    del ruleset
    variables = [tag_variable("park", []), tenant_variable(), tag_variable("building", ["park"]),
                 tag_variable("severity", ["park", "building"], measurement=schema.ALARMS)]
    board = Board(UID, "ParkWatch · Alarms",
                  "Alarm history, time to acknowledge and what the alarms turned out to be.",
                  variables=variables, annotation_filters=[FILTERS], time_from="now-7d")
    per_state = (f"SELECT count({ident('alarm_id')}) AS {ident('changes')} FROM {ALARMS} "
                 f"WHERE {where(TIME_FILTER, FILTERS)} GROUP BY {ident('state')}")
    board.add(stat_panel("Alarm state changes", "How many alarms were raised (firing), "
                         "acknowledged and resolved in the time range. Raised far above "
                         "acknowledged means alarms go unanswered.", targets(per_state))
              .display_name("${__field.labels.state}"), width=10, height=6)
    by_rule = (f"SELECT count({ident('alarm_id')}) AS {ident('raised')} FROM {ALARMS} "
               f"WHERE {where(TIME_FILTER, FILTERS, alarmq.FIRING)} GROUP BY {ident('rule')}")
    board.add(bargauge.Panel().title("Raised by rule")
              .description("Which rules raise the most alarms: a noisy rule or a bad device.")
              .targets(as_targets(targets(by_rule))).display_name("${__field.labels.rule}"),
              width=14, height=6)
    board.add(timeseries_panel("Alarms raised", "New alarms per interval, by severity.",
                               [t.alias("$tag_severity")
                                for t in targets(alarmq.raised_over_time([FILTERS]))],
                               bars=True), width=24, height=8)
    board.add(_time_to_ack_stats(), width=12, height=6)
    board.add(_dispositions(), width=12, height=6)
    board.add(_acknowledgements(), width=24, height=8)
    history = (f"SELECT {', '.join(ident(c) for c in COLUMNS)} FROM {ALARMS} "
               f"WHERE {where(TIME_FILTER, FILTERS)} ORDER BY time DESC LIMIT 1000")
    board.add(table_panel("Alarm history", "Every alarm state change, newest first (at most "
                          "1000).", targets(history, table_format=True)), width=24, height=12)
    return board.to_json()
