"""Water systems: is there water, at pressure, where the firefighters will need it."""

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

UID = "parkwatch-water"
HERE = location_filter(("park", "building"))
PRESSURE, LEVEL = "pressure_mpa", "level_m"
MPA = "suffix: MPa"


def _series(metric: str) -> str:
    kinds = schema.kinds_with_metric(metric)
    return (f"SELECT mean({ident(metric)}) AS {ident(metric)} FROM {ident(kinds[0])} "
            f"WHERE {where(TIME_FILTER, HERE)} "
            f"GROUP BY time({INTERVAL}), {ident('building')}, {ident('device')} fill(none)")


def _now(metric: str) -> str:
    kinds = schema.kinds_with_metric(metric)
    return (f"SELECT last({ident(metric)}) AS {ident(metric)} FROM {ident(kinds[0])} "
            f"WHERE {where(TIME_FILTER, HERE)} GROUP BY {ident('device')}")


def _limits_text(limits: list[schema.Limit]) -> str:
    if not limits:
        return ("No park-wide default: every tank's low and high levels are its own registry "
                "limits (limits.low_m / limits.high_m); their alarms show as annotations.")
    return "Bands are the alarm rules' defaults: " + "; ".join(
        f"{lim.rule} {lim.op} {lim.value:g} ({lim.severity})" for lim in limits) + (
        ". A device with its own registry limit alarms at that limit instead.")


def build(ruleset: RuleSet) -> dict[str, Any]:
    pressure_limits = schema.limits(ruleset, PRESSURE)
    level_limits = schema.limits(ruleset, LEVEL)
    water_rules = schema.rules_for_kinds(ruleset, set(schema.kinds_with_metric(PRESSURE))
                                         | set(schema.kinds_with_metric(LEVEL)))
    board = Board(UID, "ParkWatch · Water systems",
                  "Hydrant and sprinkler pipe pressure and fire-water tank levels, with the "
                  "alarm rules' limits drawn as bands.",
                  variables=location_variables(2), annotation_filters=[HERE])
    board.add(stat_panel("Pressure now", "Last pressure of every point. " +
                         _limits_text(pressure_limits), targets(_now(PRESSURE)), unit=MPA)
              .display_name("${__field.labels.device}")
              .thresholds(thresholds(stat_steps(pressure_limits))), width=14, height=5)
    board.add(alarmq.active_alarms_table("Water alarms", "Active alarms of the water rules.",
                                         [HERE, one_of("rule", water_rules)]),
              width=10, height=5)
    board.add(timeseries_panel(
        "Pipe network pressure (hydrant and sprinkler)",
        "Pressure of every hydrant and sprinkler point, by building and device; the registry's "
        "location text says which network a point is on. " + _limits_text(pressure_limits),
        [t.alias("$tag_building $tag_device") for t in targets(_series(PRESSURE))], unit=MPA)
        .thresholds(thresholds(rule_steps(pressure_limits)))
        .thresholds_style(_bands()), width=24, height=10)
    board.add(timeseries_panel(
        "Fire-water tank and pool levels", "Water level of every tank and pool. " +
        _limits_text(level_limits),
        [t.alias("$tag_building $tag_device") for t in targets(_series(LEVEL))], unit="lengthm")
        .thresholds(thresholds(rule_steps(level_limits)))
        .thresholds_style(_bands()), width=24, height=9)
    return board.to_json()


def _bands() -> common_builder.GraphThresholdsStyleConfig:
    return common_builder.GraphThresholdsStyleConfig().mode(
        common.GraphThresholdsStyleMode.LINE_AND_AREA)
