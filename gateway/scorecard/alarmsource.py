"""Reading the scorecard's alarms and maintenance windows from the alarm store: its SQLite file
or the shared PostgreSQL database (``alarms.backend``).

Read-only either way: the scorecard runs beside live gateways and must neither migrate nor lock
their database. A SQLite file is opened ``mode=ro`` (its WAL mode lets it read while the gateway
writes); a PostgreSQL session is ``default_transaction_read_only``. The table layout is
:mod:`gateway.alarms.sqlite`'s and :mod:`gateway.alarms.postgres`'s (the same columns).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.alarms.store import AlarmStoreError
from gateway.scorecard.model import AlarmFact, MaintenanceSpan, Period


@dataclass(frozen=True)
class PostgresSource:
    """A shared PostgreSQL alarm store (its DSN may hold a password: never shown)."""

    dsn: str

    def __repr__(self) -> str:
        return "PostgresSource(...)"


#: Where the alarms are: the SQLite file, or a PostgreSQL database.
AlarmSource = Path | PostgresSource

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


def _query(source: AlarmSource, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    """Rows of one read-only query (``?`` placeholders), as dicts."""
    if isinstance(source, PostgresSource):
        return _query_postgres(source, sql, params)
    conn = _connect(source)
    try:
        return [dict(row) for row in conn.execute(sql, params).fetchall()]
    except sqlite3.Error as exc:
        raise AlarmStoreError(f"{source}: {exc}") from exc
    finally:
        conn.close()


def _query_postgres(source: PostgresSource, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    # Imported here: psycopg is only loaded where the PostgreSQL store is used.
    import psycopg
    from psycopg.rows import dict_row

    from gateway.alarms.postgres import describe, pg_sql
    where = describe(source.dsn)
    try:
        with psycopg.connect(source.dsn, autocommit=True, row_factory=dict_row,
                             connect_timeout=10,
                             options="-c default_transaction_read_only=on") as conn:
            return conn.execute(pg_sql(sql), params).fetchall()
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise AlarmStoreError(f"PostgreSQL alarm store at {where}: {first}") from None


def read_alarms(source: AlarmSource, *, park: str, period: Period,
                tenant: str | None = None) -> list[AlarmFact]:
    """Alarms of ``park`` (and ``tenant``) whose lifetime overlaps ``period``, pending ones
    included (a breach shorter than its ``for_s`` is still time outside the limits)."""
    sql, params = _SELECT, [park, period.end_ms, period.start_ms]
    if tenant is not None:
        sql += " AND tenant = ?"
        params.append(tenant)
    return [AlarmFact(**row) for row in _query(source, sql, params)]


def read_maintenance(source: AlarmSource, *, as_of_ms: int) -> list[MaintenanceSpan]:
    """The maintenance windows in the engine's saved state (every partition's), each up to
    ``as_of_ms``.

    A ``test`` window ends at its expiry; an ``isolated`` one stays in force until a person lifts
    it (rules/maintenance.py), so it counts up to now. The engine keeps only the windows in
    force: a lifted window leaves no trace here (docs/scorecard.md says so).
    """
    rows = _query(source, "SELECT state FROM engine_state ORDER BY partition_id", [])
    spans: list[MaintenanceSpan] = []
    for row in rows:
        for w in json.loads(row["state"]).get("maintenance", []):
            end = as_of_ms if w["mode"] == "isolated" else min(int(w["until_ms"]), as_of_ms)
            if end > int(w["since_ms"]):
                spans.append(MaintenanceSpan(scope=w["scope"], target=w["target"],
                                             mode=w["mode"], since_ms=int(w["since_ms"]),
                                             until_ms=end))
    return spans
