"""The ParkWatch Grafana dashboards, generated from code (one module per dashboard).

``build_all()`` gives every dashboard's JSON by file stem; ``parkwatch grafana export`` writes
them to ``deploy/grafana/dashboards/<stem>.json`` and ``parkwatch grafana push`` uploads them.
Thresholds drawn on panels are read from the alarm rules, so they never drift from what alarms.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.grafana.dashboards import (
    alarms,
    building,
    electrical,
    health,
    influxql,
    labels,
    overview,
    schema,
    scorecard,
    water,
)
from rules.model import RuleSet

#: File stem → builder. The stems (and each module's ``UID``) are stable: Grafana links and
#: provisioning refer to them.
DASHBOARDS: dict[str, Callable[[RuleSet], dict[str, Any]]] = {
    "park-overview": overview.build,
    "building-drilldown": building.build,
    "water-systems": water.build,
    "electrical-fire": electrical.build,
    "alarms": alarms.build,
    "parkwatch-health": health.build,
    "park-scorecard": scorecard.build,
}


def build_all(rules_path: Path = schema.DEFAULT_RULES, lang: str = "en"
              ) -> dict[str, dict[str, Any]]:
    """Every dashboard as Grafana JSON, by file stem, its texts in ``lang`` (labels.LANGS)."""
    influxql.register()
    ruleset = schema.rules(rules_path)
    return {stem: labels.localize(build(ruleset), lang) for stem, build in DASHBOARDS.items()}
