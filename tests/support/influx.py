"""Reading back what a test's InfluxDB holds."""

from __future__ import annotations

from typing import Any

from gateway.tools.devservices import Influxd


def influx_rows(influxd: Influxd, db: str, query: str) -> list[list[Any]]:
    """All values rows of a query (first series), or [] when there is none."""
    result: Any = influxd.query(query, db)
    series = result["results"][0].get("series", [])
    rows: list[list[Any]] = []
    for s in series:
        rows.extend(s["values"])
    return rows


def influx_count(influxd: Influxd, db: str, measurement: str, field: str) -> int:
    rows = influx_rows(influxd, db, f'SELECT count("{field}") FROM "{measurement}"')
    return int(rows[0][1]) if rows else 0
