"""Reading the scorecard's alarms and maintenance windows from the alarm store's SQLite file.

Opened read-only (``mode=ro``): the scorecard runs beside a live gateway and must neither
migrate nor lock its database; SQLite's WAL mode lets it read while the gateway writes. The
table layout is :mod:`gateway.alarms.store`'s (schema version 5).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from gateway.alarms.store import AlarmStoreError
from gateway.scorecard.model import AlarmFact, MaintenanceSpan, Period

_SELECT = (
    "SELECT alarm_id, rule, severity, park, device, tenant, kind, started_at_ms, fired_at_ms,"
    " acknowledged_at_ms, disposition, resolved_at_ms, maintenance, inhibited_by FROM alarms"
    " WHERE park = ? AND started_at_ms < ? AND (resolved_at_ms IS NULL OR resolved_at_ms >= ?)")


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise AlarmStoreError(f"{path}: no alarm store here (is state_dir right?)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as exc:
        raise AlarmStoreError(f"{path}: cannot open alarm store read-only: {exc}") from exc
    conn.row_factory = sqlite3.Row
    return conn


def read_alarms(path: Path, *, park: str, period: Period,
                tenant: str | None = None) -> list[AlarmFact]:
    """Alarms of ``park`` (and ``tenant``) whose lifetime overlaps ``period``, pending ones
    included (a breach shorter than its ``for_s`` is still time outside the limits)."""
    sql, params = _SELECT, [park, period.end_ms, period.start_ms]
    if tenant is not None:
        sql += " AND tenant = ?"
        params.append(tenant)
    conn = _connect(path)
    try:
        rows = conn.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise AlarmStoreError(f"{path}: {exc}") from exc
    finally:
        conn.close()
    return [AlarmFact(**dict(row)) for row in rows]


def read_maintenance(path: Path, *, as_of_ms: int) -> list[MaintenanceSpan]:
    """The maintenance windows in the engine's saved state, each up to ``as_of_ms``.

    A ``test`` window ends at its expiry; an ``isolated`` one stays in force until a person lifts
    it (rules/maintenance.py), so it counts up to now. The engine keeps only the windows in
    force: a lifted window leaves no trace here (docs/scorecard.md says so).
    """
    conn = _connect(path)
    try:
        row = conn.execute("SELECT state FROM engine_state WHERE id = 1").fetchone()
    except sqlite3.Error as exc:
        raise AlarmStoreError(f"{path}: {exc}") from exc
    finally:
        conn.close()
    if row is None:
        return []
    spans: list[MaintenanceSpan] = []
    for w in json.loads(row["state"]).get("maintenance", []):
        end = as_of_ms if w["mode"] == "isolated" else min(int(w["until_ms"]), as_of_ms)
        if end > int(w["since_ms"]):
            spans.append(MaintenanceSpan(scope=w["scope"], target=w["target"], mode=w["mode"],
                                         since_ms=int(w["since_ms"]), until_ms=end))
    return spans
