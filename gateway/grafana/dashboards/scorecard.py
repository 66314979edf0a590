"""Park safety scorecard (园区消防安全评分卡): the figures of ``parkwatch scorecard`` over the
dashboard's time range, from the daily ``scorecard`` points (docs/scorecard.md).

Every figure of a range is Σ numerator ÷ Σ denominator over its days (the points store both),
so a month here equals the command's month; only the percentiles of acknowledgement time are
per day (they cannot be summed).
"""

from __future__ import annotations

from typing import Any

from gateway.grafana.dashboards.common import (
    TIME_FILTER,
    Board,
    ident,
    stat_panel,
    table_panel,
    tag_variable,
    targets,
    thresholds,
    timeseries_panel,
    var_match,
    where,
)
from rules.model import RuleSet

UID = "parkwatch-scorecard"
MEASUREMENT = "scorecard"
PARK = where(var_match("park"), f"{ident('scope')} = 'park'")
TENANTS = where(var_match("park"), var_match("tenant"), f"{ident('scope')} = 'tenant'")
#: (title, description, InfluxQL expression over the days, good-at-least threshold).
FIGURES: tuple[tuple[str, str, str, float], ...] = (
    ("在线率 Online rate", "Online device-minutes ÷ registered device-minutes (the registry "
     "is the denominator; a device never heard is offline).",
     f"sum({ident('online_min')}) / sum({ident('registered_min')})", 0.95),
    ("火警误报率 Fire false-alarm rate", "Fire-class alarms with disposition false_alarm ÷ "
     "those with disposition real, false_alarm or fault (tests and maintenance apart).",
     f"sum({ident('fire_false')}) / sum({ident('fire_judged')})", -1.0),
    ("24 h 未定性 Undisposed after 24 h", "Share of fire-class alarms without a disposition "
     "24 h after firing.",
     f"sum({ident('fire_undisposed_24h')}) / sum({ident('fire_due_24h')})", -1.0),
    ("3 分钟确认率 Acknowledged within 3 min", "Paged critical alarms acknowledged within "
     "3 minutes of firing ÷ all paged critical alarms.",
     f"sum({ident('critical_acked_3min')}) / sum({ident('critical')})", 0.9),
    ("完好率 Intactness", "1 − (fault + offline + isolated device-hours) ÷ device-hours.",
     f"1 - sum({ident('impaired_h')}) / sum({ident('device_h')})", 0.95),
    ("水压/液位合格率 Water compliance", "Time every pressure and level point stays inside "
     "its limits ÷ point-time.",
     f"1 - sum({ident('water_outside_h')}) / sum({ident('water_h')})", 0.98),
)


def _figure_query(expr: str, filt: str, group_by: str = "") -> str:
    return (f"SELECT {expr} AS {ident('value')} FROM {ident(MEASUREMENT)} "
            f"WHERE {where(TIME_FILTER, filt)}{group_by}")


def _steps(good_from: float) -> list[tuple[float | None, str]]:
    # A negative marker: lower is better (false-alarm rates); green below 10 %, red above.
    if good_from < 0:
        return [(None, "green"), (0.1, "red")]
    return [(None, "red"), (good_from, "green")]


def build(ruleset: RuleSet) -> dict[str, Any]:
    del ruleset  # the figures come from the stored daily points, not from the rules
    board = Board(UID, "ParkWatch · Park safety scorecard",
                  "园区消防安全评分卡: the figures a park hands in for its performance evaluation "
                  "and star rating, from the daily scorecard points (parkwatch scorecard "
                  "--write). Formulas: docs/scorecard.md.",
                  variables=[tag_variable("park", [], measurement=MEASUREMENT),
                             tag_variable("tenant", ["park"], label="Tenant",
                                          measurement=MEASUREMENT)],
                  annotation_filters=[var_match("park")], time_from="now-30d")
    for title, description, expr, good in FIGURES:
        board.add(stat_panel(title, description + " Whole park, whole time range.",
                             targets(_figure_query(expr, PARK)), unit="percentunit")
                  .decimals(2).thresholds(thresholds(_steps(good))), width=4, height=5)
    board.add(stat_panel("确认时间 Time to acknowledge (day P50 / P90)",
                         "Median and 90th percentile of the time to acknowledge critical alarms, "
                         "per day (the last day of the range); a month's exact figure comes "
                         "from the command.",
                         targets(f"SELECT last({ident('ack_p50_s')}) AS {ident('P50')}, "
                                 f"last({ident('ack_p90_s')}) AS {ident('P90')} "
                                 f"FROM {ident(MEASUREMENT)} WHERE {where(TIME_FILTER, PARK)}"),
                         unit="s"), width=8, height=5)
    board.add(stat_panel("告警 Alarms", "Alarms fired in the time range.",
                         targets(f"SELECT sum({ident('alarms')}) AS {ident('alarms')} "
                                 f"FROM {ident(MEASUREMENT)} WHERE {where(TIME_FILTER, PARK)}")),
              width=4, height=5)
    board.add(timeseries_panel(
        "每日 Daily figures", "The park's figures day by day.",
        [t.alias("$col") for t in targets(
            f"SELECT last({ident('online_rate')}) AS {ident('online')}, "
            f"last({ident('intact_rate')}) AS {ident('intact')}, "
            f"last({ident('water_rate')}) AS {ident('water')} FROM {ident(MEASUREMENT)} "
            f"WHERE {where(TIME_FILTER, PARK)} GROUP BY time(1d) fill(none)")],
        unit="percentunit"), width=12, height=8)
    tenant_cols = ", ".join(f"{expr} AS {ident(name)}" for name, expr in (
        ("online_rate", FIGURES[0][2]), ("false_alarm_rate", FIGURES[1][2]),
        ("intact_rate", FIGURES[4][2]), ("alarms", f"sum({ident('alarms')})")))
    board.add(table_panel("企业 Tenants", "Each tenant's figures over the time range.",
                          targets(f"SELECT {tenant_cols} FROM {ident(MEASUREMENT)} "
                                  f"WHERE {where(TIME_FILTER, TENANTS)} "
                                  f"GROUP BY {ident('tenant')}", table_format=True)),
              width=12, height=8)
    return board.to_json()
