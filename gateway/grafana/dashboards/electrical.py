"""Electrical fire: which circuit leaks current or runs hot, against its alarm levels."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.models import common

from gateway.grafana.dashboards import alarmq, schema
from gateway.grafana.dashboards.common import (
    INTERVAL,
    TIME_FILTER,
    Board,
    ident,
    location_filter,
    location_variables,
    one_of,
    rule_steps,
    stat_panel,
    stat_steps,
    targets,
    thresholds,
    timeseries_panel,
    where,
)
from rules.model import RuleSet

UID = "parkwatch-electrical"
KIND = "electrical_fire"
HERE = location_filter(("park", "building"))
RESIDUAL = "residual_current_ma"


def _conductors() -> list[str]:
    return [m for m in schema.metrics_of(KIND) if m.startswith("temp_")]


def _alarm_lines() -> common_builder.GraphThresholdsStyleConfig:
    return common_builder.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)


def _describe(limits: list[schema.Limit]) -> str:
    return "Alarm lines from the rules: " + "; ".join(
        sorted({f"{lim.op} {lim.value:g} ({lim.severity})" for lim in limits})) + "."


def build(ruleset: RuleSet) -> dict[str, Any]:
    residual_limits = schema.limits(ruleset, RESIDUAL)
    temp_limits = [lim for m in _conductors() for lim in schema.limits(ruleset, m)]
    board = Board(UID, "ParkWatch · Electrical fire",
                  "Residual (earth-leakage) current and cable temperatures of every monitored "
                  "circuit, against the alarm rules' levels.",
                  variables=location_variables(2), annotation_filters=[HERE])
    residual_now = (f"SELECT last({ident(RESIDUAL)}) AS {ident(RESIDUAL)} FROM {ident(KIND)} "
                    f"WHERE {where(TIME_FILTER, HERE)} GROUP BY {ident('device')}")
    board.add(stat_panel("Residual current now", "Last residual current per circuit. " +
                         _describe(residual_limits), targets(residual_now), unit="mamp")
              .display_name("${__field.labels.device}")
              .thresholds(thresholds(stat_steps(residual_limits))), width=14, height=5)
    board.add(alarmq.active_alarms_table(
        "Electrical alarms", "Active alarms of the electrical-fire rules.",
        [HERE, one_of("rule", schema.rules_for_kinds(ruleset, {KIND}))]), width=10, height=5)
    residual = (f"SELECT max({ident(RESIDUAL)}) AS {ident(RESIDUAL)} FROM {ident(KIND)} "
                f"WHERE {where(TIME_FILTER, HERE)} "
                f"GROUP BY time({INTERVAL}), {ident('device')} fill(none)")
    board.add(timeseries_panel(
        "Residual current per circuit", "Highest residual current per interval. " +
        _describe(residual_limits), [t.alias("$tag_device") for t in targets(residual)],
        unit="mamp").thresholds(thresholds(rule_steps(residual_limits)))
        .thresholds_style(_alarm_lines()), width=24, height=9)
    fields = ", ".join(f"max({ident(m)}) AS {ident(m)}" for m in _conductors())
    temps = (f"SELECT {fields} FROM {ident(KIND)} WHERE {where(TIME_FILTER, HERE)} "
             f"GROUP BY time({INTERVAL}), {ident('device')} fill(none)")
    board.add(timeseries_panel(
        "Cable temperatures per circuit", "Highest temperature per interval of each conductor "
        "(L1, L2, L3, N) of each circuit. " + _describe(temp_limits),
        [t.alias("$tag_device $col") for t in targets(temps)], unit="celsius")
        .thresholds(thresholds(rule_steps(temp_limits))).thresholds_style(_alarm_lines()),
        width=24, height=9)
    return board.to_json()
