"""Alarms: what was raised, how fast people answered, how alarms ended."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import bargauge
from grafana_foundation_sdk.builders import common as common_builder

from gateway.grafana.dashboards import alarmq, schema
from gateway.grafana.dashboards.common import (
    TIME_FILTER,
    Board,
    as_targets,
    ident,
    location_filter,
    stat_panel,
    table_panel,
    tag_variable,
    targets,
    timeseries_panel,
    transformation,
    where,
)
from rules.model import RuleSet

UID = "parkwatch-alarms"
FILTERS = location_filter(("park", "building", "severity"))
ALARMS = ident(schema.ALARMS)
COLUMNS = ("alarm_id", "state", "severity", "rule", "building", "floor", "zone", "device",
           "message")


def _time_to_ack() -> Any:
    query = (f"SELECT {', '.join(ident(c) for c in COLUMNS[:6])} FROM {ALARMS} "
             f"WHERE {where(TIME_FILTER, FILTERS, alarmq.FIRING_OR_ACKED)}")
    return (table_panel(
        "Time to acknowledge",
        "Per alarm acknowledged in the time range: from firing to the acknowledgement. The "
        "footer shows the mean.", targets(query, table_format=True))
        .transformations([
            transformation("merge", {}),
            transformation("groupBy", {"fields": {
                "alarm_id": {"aggregations": [], "operation": "groupby"},
                "rule": {"aggregations": [], "operation": "groupby"},
                "severity": {"aggregations": [], "operation": "groupby"},
                "building": {"aggregations": [], "operation": "groupby"},
                "floor": {"aggregations": [], "operation": "groupby"},
                "Time": {"aggregations": ["range"], "operation": "aggregate"}}}),
            transformation("filterByValue", {
                "type": "include", "match": "any",
                "filters": [{"fieldName": "Time (range)",
                             "config": {"id": "greater", "options": {"value": 0}}}]}),
            transformation("organize", {"renameByName": {"Time (range)": "time to acknowledge"}}),
            transformation("sortBy", {"sort": [{"field": "time to acknowledge", "desc": True}]}),
        ])
        .unit("ms")
        .footer(_footer_mean()))


def _footer_mean() -> common_builder.TableFooterOptions:
    return common_builder.TableFooterOptions().show(True).reducer(["mean"]).fields(
        ["time to acknowledge"])


def build(ruleset: RuleSet) -> dict[str, Any]:
    del ruleset
    variables = [tag_variable("park", []), tag_variable("building", ["park"]),
                 tag_variable("severity", ["park", "building"], measurement=schema.ALARMS)]
    board = Board(UID, "ParkWatch · Alarms",
                  "Alarm history, time to acknowledge and how alarms ended.",
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
    board.add(_time_to_ack(), width=24, height=8)
    history = (f"SELECT {', '.join(ident(c) for c in COLUMNS)} FROM {ALARMS} "
               f"WHERE {where(TIME_FILTER, FILTERS)} ORDER BY time DESC LIMIT 1000")
    board.add(table_panel("Alarm history", "Every alarm state change, newest first (at most "
                          "1000).", targets(history, table_format=True)), width=24, height=12)
    return board.to_json()
