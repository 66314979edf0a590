"""Copy a single box's SQLite alarm store into a shared PostgreSQL one (docs/scale.md).

A park that outgrows one box keeps its alarm history, the alarms still open, their pending
notifications and ack links, and the engine's resume state: ``parkwatch migrate-store`` opens
both databases (each migrated to its newest schema), checks that the copy can be trusted, and
copies every table in one PostgreSQL transaction, so the target holds everything or nothing.

Refused, with the reason, before anything is written:

* the target already holds alarm data (a gateway used it, or an earlier copy did);
* the source holds state of more than one partition (it is not a single box's file);
* an open alarm belongs to a park the target instance does not own: one engine's state cannot
  be split between partitions, and an open alarm no engine knows would block its rule (the one
  open alarm per fingerprint rule) the next time it fires. Copy into a one-partition setup
  (an active and a standby) instead.

Blocking code for a command-line tool: run it with every gateway of both stores stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.alarms.db import AlarmStoreError, Db

#: (table, ORDER BY, has a partition column). Order matters only for the outbox, whose
#: insertion order is its sending order; the rest are ordered so a rerun copies alike.
_TABLES: tuple[tuple[str, str, bool], ...] = (
    ("alarms", "started_at_ms, alarm_id", False),
    ("alarm_history", "alarm_id, seq", False),
    ("reclassifications", "alarm_id, at_ms, to_disposition", False),
    ("ack_tokens", "issued_at_ms, token_id", False),
    ("ack_requests", "requested_at_ms, alarm_id", False),
    ("outbox", "", False),   # the source's insertion order (Db.outbox_order)
    ("engine_state", "partition_id", True),
    ("device_liveness", "partition_id, device", True),
)
#: What a single box keys its state by (AlarmStore's default partition).
SINGLE_BOX = "default"


class MigrationRefused(AlarmStoreError):
    """The copy would not be trustworthy; nothing was written."""


@dataclass(frozen=True, slots=True)
class Copied:
    table: str
    rows: int


def copy_store(source: Db, target: Db, *, partition: str, owns: Callable[[str], bool],
               progress: Callable[[Copied], None] = lambda _c: None) -> list[Copied]:
    """Copy every table of ``source`` (SQLite) into the empty ``target`` (PostgreSQL), the
    single box's engine state and liveness rows becoming ``partition``'s."""
    if source.dialect != "sqlite" or target.dialect != "postgres":
        raise MigrationRefused("copies a SQLite alarm store into a PostgreSQL one, "
                               f"not {source.dialect} into {target.dialect}")
    _check_empty(target)
    _check_single_box(source)
    _check_owned(source, owns)
    copied: list[Copied] = []
    with target.write():
        for table, order, partitioned in _TABLES:
            columns = _columns(source, target, table)
            order_by = order or source.outbox_order
            rows = source.execute(f"SELECT {', '.join(columns)} FROM {table}"
                                  f" ORDER BY {order_by}").fetchall()
            values = [tuple(row) for row in rows]
            if partitioned:
                at = columns.index("partition_id")
                values = [(*v[:at], partition, *v[at + 1:]) for v in values]
            if values:
                marks = ", ".join("?" for _ in columns)
                target.executemany(f"INSERT INTO {table} ({', '.join(columns)})"
                                   f" VALUES ({marks})", values)
            copied.append(Copied(table, len(values)))
            progress(copied[-1])
    for done in copied:
        count = _count(target, done.table)
        if count != done.rows:   # cannot happen short of a bug: then say so, loudly
            raise AlarmStoreError(f"{done.table}: copied {done.rows} rows, the target holds "
                                  f"{count}")
    return copied


def _count(db: Db, table: str) -> int:
    return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _check_empty(target: Db) -> None:
    full = [f"{table} ({n} rows)" for table, _, _ in _TABLES if (n := _count(target, table))]
    if full:
        raise MigrationRefused("the target already holds alarm data: " + ", ".join(full)
                               + "; copy only into a new, empty database")


def _check_single_box(source: Db) -> None:
    keys = {row[0] for table in ("engine_state", "device_liveness")
            for row in source.execute(f"SELECT DISTINCT partition_id FROM {table}")}
    if keys - {SINGLE_BOX}:
        raise MigrationRefused(f"the source holds the state of partitions {sorted(keys)}: "
                               "it is not a single box's alarm store")


def _check_owned(source: Db, owns: Callable[[str], bool]) -> None:
    parks = sorted({row[0] for row in source.execute(
        "SELECT DISTINCT park FROM alarms WHERE state <> 'resolved'") if not owns(row[0])})
    if parks:
        raise MigrationRefused(
            f"open alarms in parks {', '.join(parks)}, which the target instance does not own: "
            "one engine's state cannot be split between partitions. Copy into a one-partition "
            "setup (cluster.parks listing every park, an active and a standby) instead")


def _columns(source: Db, target: Db, table: str) -> list[str]:
    """The source's columns, every one of which the target must have. The target's own
    generated columns (the outbox's ``seq``) are left to it."""
    have = [row[1] for row in source.execute(f"PRAGMA table_info({table})")]
    want = {row[0] for row in target.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ?", (table,))}
    missing = [c for c in have if c not in want]
    if missing:
        raise MigrationRefused(f"{table}: the target has no column {', '.join(missing)} "
                               "(is the gateway older than the store?)")
    return have
