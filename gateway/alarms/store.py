"""Durable alarm state: the current alarms, their history and the engine's resume state.

::

    rule engine ──transitions + engine state──▶ AlarmStore.apply() ──one transaction──▶ database
                                                          SQLite file (sqlite.py, the default)
                                                          or shared PostgreSQL (postgres.py)

The SQL here (and in the outbox and ack-link modules) is written once for both engines; the
seam between them is :mod:`gateway.alarms.db`.

Why the design is what it is:

* **One transaction per evaluation step.** :meth:`AlarmStore.apply` writes every transition of
  the step *and* the engine's resume state together, so after a crash (even ``kill -9``) the
  alarms on disk and the engine's timers agree: nothing is lost, nothing is fired twice.
  ``synchronous=FULL`` makes the commit durable before ``apply`` returns.
* **The database enforces "one active alarm per fingerprint"** with a partial UNIQUE index, so
  even a bug in the engine cannot create a second active alarm; ``apply`` then raises
  :class:`DuplicateActiveAlarm` and nothing of the step is written. Within one step a transition
  that resolves an alarm must come before the one that opens its successor.
* **Re-applying is harmless.** Each history row carries a digest of the transition; applying a
  transition already stored changes nothing (not even the current row, so a replayed old
  transition cannot roll an alarm back). A cancelled ``apply`` may still have committed:
  retrying it is the right reaction.
* **Database calls are blocking** (sqlite3, psycopg), so each runs in a worker thread
  (``asyncio.to_thread``); one connection, used by one worker at a time under an ``asyncio.Lock``.
* **Partitions.** The engine's resume state and the liveness rows are keyed by ``partition``
  (default ``"default"``): with partitions (docs/scale.md) each instance's engine covers only its
  own parks, and a standby taking a partition over loads that partition's state.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from gateway.alarms.db import AlarmStoreError, Backend, Db, DuplicateActiveAlarm, Row
from gateway.alarms.fence import Fence
from gateway.alarms.sqlite import SqliteBackend
from gateway.config import AlarmSettings
from rules.alarm import (
    Alarm,
    AlarmState,
    AlreadyAcknowledged,
    Disposition,
    Maintenance,
    Severity,
    Subject,
    Transition,
)

_T = TypeVar("_T")

#: The single-box store's file name under ``state_dir``.
SQLITE_FILE = "alarms.sqlite3"

#: One device_liveness row: device, last heard (ms, None: never), online, reason.
LivenessRow = tuple[str, int | None, bool, str]


@dataclass(frozen=True, slots=True)
class AckRequest:
    """A person's acknowledgement of an alarm another instance's engine holds, waiting in the
    shared store for that instance (gateway/alarms/service.py)."""

    alarm_id: str
    acknowledged_by: str
    disposition: Disposition
    channel: str
    name: str | None
    requested_at_ms: int


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One notification as the outbox table stores it (made by gateway.notify.outbox.outbox_row;
    the table and this row type live here, with the rest of the schema)."""

    key: str                    # idempotency key: one message, ever
    channel: str
    recipient: str
    notification_json: str      # the Notification as JSON
    fire_class: bool
    created_at_ms: int
    due_ms: int
    deadline_ms: int
    group_key: str = ""
    group_interval_ms: int = 0

    def params(self) -> tuple[str | int, ...]:
        return (self.key, self.channel, self.recipient, self.notification_json,
                int(self.fire_class), self.created_at_ms, self.due_ms, self.deadline_ms,
                self.group_key, self.group_interval_ms)


_OUTBOX_INSERT = ("INSERT INTO outbox (key, channel, recipient, notification,"
                  " fire_class, state, created_at_ms, next_at_ms, deadline_ms, group_key,"
                  " group_interval_ms) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)"
                  " ON CONFLICT (key) DO NOTHING")


def insert_outbox(conn: Db, rows: Sequence[OutboxRow]) -> int:
    """Insert rows inside the caller's transaction; a key already present is ignored (a replayed
    transition enqueues nothing). Returns how many rows were new."""
    return conn.executemany(_OUTBOX_INSERT, [r.params() for r in rows])


def prune_ack_tokens(conn: Db, expired_before_ms: int) -> int:
    """Delete ack-link tokens that expired before ``expired_before_ms`` (no commit here)."""
    return int(conn.execute("DELETE FROM ack_tokens WHERE expires_at_ms < ?",
                            (expired_before_ms,)).rowcount)

_COLUMNS = ("alarm_id", "fingerprint", "rule", "severity", "state", "park", "building", "floor",
            "zone", "device", "tenant", "kind", "location", "message", "value", "started_at_ms",
            "updated_at_ms", "fired_at_ms", "acknowledged_by", "acknowledged_at_ms",
            "ack_channel", "disposition", "resolved_at_ms", "maintenance", "inhibited_by",
            "labels", "acknowledged_name", "document")
_UPSERT = (f"INSERT INTO alarms ({', '.join(_COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in _COLUMNS)}) ON CONFLICT (alarm_id) DO UPDATE SET "
           + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:]))
_SEVERITY_RANK_SQL = ("CASE severity " + " ".join(f"WHEN '{s.value}' THEN {s.rank}"
                                                  for s in Severity) + " ELSE -1 END")
MAX_LIMIT = 5000


__all__ = ["AlarmStore", "AlarmStoreError", "DuplicateActiveAlarm", "OutboxRow",
           "insert_outbox", "prune_ack_tokens", "store_for"]


# --- Alarm <-> row -------------------------------------------------------------------------------

def _finite(value: float | None) -> float | None:
    # NaN/inf cannot be stored (SQLite makes NaN NULL) nor sent as JSON; refusing them would
    # refuse the whole step, alarms included, so they are stored as "no value" instead.
    return value if value is None or math.isfinite(value) else None


def alarm_record(alarm: Alarm) -> dict[str, Any]:
    """Every field of ``alarm`` as JSON-ready values, flat (subject fields inlined); a
    non-finite value becomes None."""
    s = alarm.subject
    return {
        "alarm_id": alarm.alarm_id, "fingerprint": alarm.fingerprint, "rule": alarm.rule,
        "severity": alarm.severity.value, "state": alarm.state.value, "park": s.park,
        "building": s.building, "floor": s.floor, "zone": s.zone, "device": s.device,
        "tenant": s.tenant, "kind": s.kind, "location": s.location, "message": alarm.message,
        "value": _finite(alarm.value), "started_at_ms": alarm.started_at_ms,
        "updated_at_ms": alarm.updated_at_ms, "fired_at_ms": alarm.fired_at_ms,
        "acknowledged_by": alarm.acknowledged_by,
        "acknowledged_at_ms": alarm.acknowledged_at_ms, "ack_channel": alarm.ack_channel,
        "disposition": alarm.disposition.value if alarm.disposition else None,
        "resolved_at_ms": alarm.resolved_at_ms, "maintenance": alarm.maintenance.value,
        "inhibited_by": alarm.inhibited_by, "labels": dict(alarm.labels),
        # Only when set: the records (and so the digests) of every other transition stay as
        # schema version 4 wrote them, so replaying one stored before the upgrade is a no-op.
        **({"acknowledged_name": alarm.acknowledged_name}
           if alarm.acknowledged_name is not None else {}),
    }


def alarm_from_record(r: dict[str, Any] | Row) -> Alarm:
    """The inverse of :func:`alarm_record`; also reads an ``alarms`` row (labels as JSON text)."""
    labels = r["labels"]
    disposition = r["disposition"]
    return Alarm(
        alarm_id=r["alarm_id"], fingerprint=r["fingerprint"], rule=r["rule"],
        severity=Severity(r["severity"]), state=AlarmState(r["state"]),
        subject=Subject(park=r["park"], building=r["building"], floor=r["floor"],
                        zone=r["zone"], device=r["device"], tenant=r["tenant"], kind=r["kind"],
                        location=r["location"]),
        message=r["message"], started_at_ms=r["started_at_ms"],
        updated_at_ms=r["updated_at_ms"], value=r["value"], fired_at_ms=r["fired_at_ms"],
        acknowledged_by=r["acknowledged_by"], acknowledged_at_ms=r["acknowledged_at_ms"],
        ack_channel=r["ack_channel"],
        disposition=Disposition(disposition) if disposition is not None else None,
        resolved_at_ms=r["resolved_at_ms"], maintenance=Maintenance(r["maintenance"]),
        inhibited_by=r["inhibited_by"],
        labels=json.loads(labels) if isinstance(labels, str) else dict(labels),
        # Absent from history records written before schema version 5.
        acknowledged_name=r["acknowledged_name"] if "acknowledged_name" in _keys(r) else None,
    )


def _keys(r: dict[str, Any] | Row) -> Any:
    # sqlite3.Row has no __contains__ for column names; keys() works for every row type.
    return r.keys()


def _dumps(obj: Any) -> str:
    # allow_nan=False: a NaN value would not survive SQLite (stored as NULL) nor strict JSON.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _row_values(alarm: Alarm) -> tuple[Any, ...]:
    rec = alarm_record(alarm)
    rec["labels"] = _dumps(rec["labels"])
    rec["document"] = _dumps({**alarm.document(), "value": rec["value"]})
    return tuple(rec.get(c) for c in _COLUMNS)


# --- synchronous work, run in the worker thread --------------------------------------------------

def _write_transition(conn: Db, transition: Transition) -> None:
    after = transition.after
    conn.lock(after.alarm_id)
    from_state = transition.before.state.value if transition.before is not None else None
    record = alarm_record(after)
    record_json = _dumps(record)
    digest = hashlib.sha256(_dumps([from_state, record]).encode()).hexdigest()
    inserted = conn.execute(
        "INSERT INTO alarm_history (alarm_id, seq, at_ms, from_state, to_state, severity, digest,"
        " record) SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ?, ?"
        " FROM alarm_history WHERE alarm_id = ?"
        " ON CONFLICT (alarm_id, digest) DO NOTHING",
        (after.alarm_id, after.updated_at_ms, from_state, after.state.value,
         after.severity.value, digest, record_json, after.alarm_id)).rowcount
    if inserted == 0:
        return  # this exact transition is already stored: leave the current row alone
    if transition.before is not None and transition.before.acknowledged_by is None \
            and after.acknowledged_by is not None:
        # Acknowledge once, whichever instance (or engine) made the transition: a row that is
        # acknowledged already keeps its first answer and the whole step is refused.
        current = conn.execute("SELECT * FROM alarms WHERE alarm_id = ?",
                               (after.alarm_id,)).fetchone()
        if current is not None and current["acknowledged_by"] is not None:
            raise AlreadyAcknowledged(alarm_from_record(current))
    conn.execute(_UPSERT, _row_values(after))
    change = transition.reclassification
    if change is not None:
        conn.execute(
            "INSERT INTO reclassifications (alarm_id, at_ms, reclassified_by, from_disposition,"
            " to_disposition, reason) VALUES (?, ?, ?, ?, ?, ?)",
            (after.alarm_id, change.at_ms, change.by,
             change.from_disposition.value if change.from_disposition else None,
             change.to_disposition.value, change.reason))


def _apply_sync(conn: Db, partition: str, transitions: Sequence[Transition],
                engine_state_json: str | None,
                outbox: Sequence[OutboxRow] = (),
                also: Sequence[Callable[[Db], None]] = ()) -> None:
    with conn.write():
        for transition in transitions:
            _write_transition(conn, transition)
        if outbox:
            insert_outbox(conn, outbox)
        for write in also:
            write(conn)
        if engine_state_json is not None:
            conn.execute("INSERT INTO engine_state (partition_id, state) VALUES (?, ?)"
                         " ON CONFLICT (partition_id) DO UPDATE SET state = excluded.state",
                         (partition, engine_state_json))


def _list_sql(active: bool | None, include_pending: bool, since_ms: int | None,
              until_ms: int | None, exact: dict[str, str | None], limit: int
              ) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if active is True:
        where.append("state != 'resolved'")
    elif active is False:
        where.append("state = 'resolved'")
    if not include_pending:
        where.append("state != 'pending'")
    # since/until select alarms whose lifetime [started, resolved or now] overlaps the window.
    if since_ms is not None:
        where.append("(resolved_at_ms IS NULL OR resolved_at_ms >= ?)")
        params.append(since_ms)
    if until_ms is not None:
        where.append("started_at_ms <= ?")
        params.append(until_ms)
    for column, wanted in exact.items():
        if wanted is not None:
            where.append(f"{column} = ?")
            params.append(wanted)
    # Active alarms: worst first, as an operator reads them; otherwise newest first.
    order = (f"{_SEVERITY_RANK_SQL} DESC, started_at_ms DESC" if active is True
             else "started_at_ms DESC")
    sql = ("SELECT * FROM alarms" + (" WHERE " + " AND ".join(where) if where else "")
           + f" ORDER BY {order}, alarm_id LIMIT ?")
    params.append(limit)
    return sql, params


def _history_entry(row: Row) -> dict[str, Any]:
    rec = json.loads(row["record"])
    return {
        "seq": row["seq"], "at_ms": row["at_ms"], "from_state": row["from_state"],
        "to_state": row["to_state"], "severity": row["severity"], "value": rec["value"],
        "message": rec["message"], "acknowledged_by": rec["acknowledged_by"],
        "ack_channel": rec["ack_channel"], "disposition": rec["disposition"],
        "acknowledged_name": rec.get("acknowledged_name"),
        "maintenance": rec["maintenance"], "inhibited_by": rec["inhibited_by"],
    }


def _ack_request(r: Row) -> AckRequest:
    return AckRequest(alarm_id=str(r["alarm_id"]), acknowledged_by=str(r["acknowledged_by"]),
                      disposition=Disposition(r["disposition"]), channel=str(r["channel"]),
                      name=r["name"], requested_at_ms=int(r["requested_at_ms"]))


def _percentile(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile (an observed value, no interpolation)."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _kpis(rows: Sequence[Row], since_ms: int) -> dict[str, Any]:
    by_disposition = {d.value: 0 for d in Disposition}
    by_severity = {s.value: 0 for s in Severity}
    ack_times: dict[str, list[int]] = {}
    for row in rows:
        by_severity[row["severity"]] = by_severity.get(row["severity"], 0) + 1
        if row["disposition"] is not None:
            by_disposition[row["disposition"]] += 1
        if row["acknowledged_at_ms"] is not None:
            ack_times.setdefault(row["severity"], []).append(
                max(0, row["acknowledged_at_ms"] - row["fired_at_ms"]))
    acknowledged = sum(len(v) for v in ack_times.values())
    judged = sum(by_disposition.values())
    time_to_ack: dict[str, dict[str, int]] = {}
    for severity, values in ack_times.items():
        values.sort()
        time_to_ack[severity] = {"count": len(values), "p50_ms": _percentile(values, 50),
                                 "p90_ms": _percentile(values, 90)}
    return {
        "since_ms": since_ms, "fired": len(rows), "acknowledged": acknowledged,
        "unacknowledged": len(rows) - acknowledged, "by_severity": by_severity,
        "by_disposition": by_disposition,
        "false_alarm_ratio": (by_disposition[Disposition.FALSE_ALARM.value] / judged
                              if judged else None),
        "time_to_ack": time_to_ack,
    }


# --- the async facade ----------------------------------------------------------------------------

class AlarmStore:
    """The alarm database; use ``async with AlarmStore(path) as store``.

    ``target`` is a SQLite file path (the single-box default) or a backend, e.g.
    :class:`gateway.alarms.postgres.PostgresBackend` for a store shared by several instances.
    ``partition`` keys the engine's resume state and the liveness rows (docs/scale.md).
    """

    def __init__(self, target: Path | Backend, *, partition: str = "default") -> None:
        self.backend: Backend = SqliteBackend(target) if isinstance(target, Path) else target
        #: The SQLite file, or None for a server database.
        self.path: Path | None = target if isinstance(target, Path) else None
        self.partition = partition
        self._conn: Db | None = None
        self._lock = asyncio.Lock()

    @property
    def label(self) -> str:
        """Names the database in messages (a path or host:port/dbname)."""
        return self.backend.label

    @property
    def shared(self) -> bool:
        """Other gateway instances may use this database at the same time."""
        return self._conn is not None and self._conn.shared

    async def __aenter__(self) -> AlarmStore:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                       tb: TracebackType | None) -> None:
        await self.close()

    async def open(self) -> None:
        """Open (creating or migrating the schema); a second call is a no-op."""
        async with self._lock:
            if self._conn is None:
                self._conn = await asyncio.to_thread(self.backend.connect)

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await asyncio.to_thread(conn.close)

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        async with self._lock:
            if self._conn is None:
                raise AlarmStoreError(f"{self.label}: alarm store is not open")
            try:
                return await self._work(self._conn, fn, *args)
            except AlarmStoreError:
                if not self._conn.broken:
                    raise
            # The server restarted or the network dropped us: one fresh connection, one retry.
            # Every call is safe to repeat: apply() is idempotent (digests, outbox keys), claims
            # and outcomes are conditional, and a repeated token use says "used", never twice.
            await asyncio.to_thread(self._conn.close)
            self._conn = await asyncio.to_thread(self.backend.connect)
            return await self._work(self._conn, fn, *args)

    async def _work(self, conn: Db, fn: Callable[..., _T], *args: Any) -> _T:
        work = asyncio.ensure_future(asyncio.to_thread(fn, conn, *args))
        try:
            return await asyncio.shield(work)
        except Exception as exc:
            mapped = self.backend.translate(exc)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            if not work.done():
                # Cancelled while the worker runs: it cannot be interrupted, so keep the lock
                # until it ends (the connection must never serve two threads at once).
                await asyncio.wait({work})

    async def apply(self, transitions: Sequence[Transition], *,
                    engine_state_json: str | None = None,
                    outbox: Sequence[OutboxRow] = (),
                    also: Sequence[Callable[[Db], None]] = ()) -> None:
        """Store ``transitions`` (in order), this partition's engine state and the notifications
        they cause (outbox rows, see gateway/notify/outbox.py), plus ``also`` writes by sibling
        modules (ack-link grants), all or nothing, durably."""
        await self._run(_apply_sync, self.partition, list(transitions), engine_state_json,
                        list(outbox), list(also))

    async def execute(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(db, *args)`` (``db`` a :class:`gateway.alarms.db.Db`) in the store's
        worker, serialised with everything else (for modules that keep their tables in this
        database, like the outbox); writes go in ``with db.write():``."""
        return await self._run(fn, *args)

    async def load_engine_state(self) -> str | None:
        """This partition's engine resume state (None before the first save)."""
        def read(conn: Db) -> str | None:
            row = conn.execute("SELECT state FROM engine_state WHERE partition_id = ?",
                               (self.partition,)).fetchone()
            return None if row is None else str(row["state"])
        return await self._run(read)

    async def get(self, alarm_id: str) -> Alarm | None:
        def read(conn: Db) -> Alarm | None:
            row = conn.execute("SELECT * FROM alarms WHERE alarm_id = ?", (alarm_id,)).fetchone()
            return None if row is None else alarm_from_record(row)
        return await self._run(read)

    async def list(self, *, active: bool | None = None, include_pending: bool = False,
                   since_ms: int | None = None, until_ms: int | None = None,
                   park: str | None = None, building: str | None = None,
                   zone: str | None = None, device: str | None = None, rule: str | None = None,
                   severity: str | None = None, tenant: str | None = None,
                   limit: int = 500) -> list[Alarm]:
        """Alarms matching every given filter.

        ``active``: True = not resolved, False = resolved, None = both. Pending alarms are
        internal and left out unless ``include_pending``. ``since_ms``/``until_ms`` keep alarms
        whose lifetime overlaps the window. Active lists come worst severity first, other lists
        newest first; at most ``limit`` (capped at 5000).
        """
        exact = {"park": park, "building": building, "zone": zone, "device": device,
                 "rule": rule, "severity": severity, "tenant": tenant}
        sql, params = _list_sql(active, include_pending, since_ms, until_ms, exact,
                                max(0, min(limit, MAX_LIMIT)))

        def read(conn: Db) -> list[Alarm]:
            return [alarm_from_record(row) for row in conn.execute(sql, params)]
        return await self._run(read)

    # builtins.list: inside this class body ``list`` is the method above.
    async def history(self, alarm_id: str) -> builtins.list[dict[str, Any]]:
        """The transitions of one alarm, oldest first ([] for an unknown id)."""
        def read(conn: Db) -> builtins.list[dict[str, Any]]:
            rows = conn.execute("SELECT * FROM alarm_history WHERE alarm_id = ? ORDER BY seq",
                                (alarm_id,))
            return [_history_entry(row) for row in rows]
        return await self._run(read)

    async def reclassifications(self, alarm_id: str) -> builtins.list[dict[str, Any]]:
        """The disposition corrections of one alarm, oldest first."""
        def read(conn: Db) -> builtins.list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT at_ms, reclassified_by, from_disposition, to_disposition, reason"
                " FROM reclassifications WHERE alarm_id = ? ORDER BY at_ms", (alarm_id,))
            return [{"at_ms": r[0], "by": r[1], "from_disposition": r[2],
                     "to_disposition": r[3], "reason": r[4]} for r in rows]
        return await self._run(read)

    async def save_liveness(self, rows: Sequence[LivenessRow]) -> None:
        """Upsert this partition's device liveness rows (one transaction)."""
        part = self.partition

        def write(conn: Db, rows: builtins.list[LivenessRow]) -> None:
            with conn.write():
                conn.executemany(
                    "INSERT INTO device_liveness (partition_id, device, last_heard_ms, online,"
                    " reason) VALUES (?, ?, ?, ?, ?) ON CONFLICT (partition_id, device)"
                    " DO UPDATE SET last_heard_ms = excluded.last_heard_ms,"
                    " online = excluded.online, reason = excluded.reason",
                    [(part, d, heard, int(online), reason) for d, heard, online, reason in rows])
        if rows:
            await self._run(write, list(rows))

    async def load_liveness(self) -> builtins.list[LivenessRow]:
        def read(conn: Db) -> builtins.list[LivenessRow]:
            rows = conn.execute(
                "SELECT device, last_heard_ms, online, reason FROM device_liveness"
                " WHERE partition_id = ?", (self.partition,)).fetchall()
            return [(str(r[0]), None if r[1] is None else int(r[1]), bool(r[2]), str(r[3]))
                    for r in rows]
        return await self._run(read)

    async def request_ack(self, request: AckRequest) -> AckRequest:
        """File ``request`` unless one for the alarm is waiting; the one that stands (the first)."""
        def write(conn: Db) -> AckRequest:
            with conn.write():
                conn.execute(
                    "INSERT INTO ack_requests (alarm_id, acknowledged_by, disposition, channel,"
                    " name, requested_at_ms) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (alarm_id) DO NOTHING",
                    (request.alarm_id, request.acknowledged_by, request.disposition.value,
                     request.channel, request.name, request.requested_at_ms))
                row = conn.execute("SELECT * FROM ack_requests WHERE alarm_id = ?",
                                   (request.alarm_id,)).fetchone()
            return _ack_request(row)
        return await self._run(write)

    async def ack_requests(self) -> builtins.list[AckRequest]:
        """Every waiting acknowledgement request, oldest first."""
        def read(conn: Db) -> builtins.list[AckRequest]:
            rows = conn.execute("SELECT * FROM ack_requests ORDER BY requested_at_ms").fetchall()
            return [_ack_request(r) for r in rows]
        return await self._run(read)

    async def drop_ack_request(self, request: AckRequest) -> None:
        """Forget ``request`` (answered, refused or given up on); another one stays."""
        def write(conn: Db) -> None:
            with conn.write():
                conn.execute("DELETE FROM ack_requests WHERE alarm_id = ?"
                             " AND acknowledged_by = ? AND requested_at_ms = ?",
                             (request.alarm_id, request.acknowledged_by,
                              request.requested_at_ms))
        await self._run(write)

    async def kpis(self, *, since_ms: int) -> dict[str, Any]:
        """Alarms that fired since ``since_ms``: counts by severity and disposition, and
        time-to-acknowledge (nearest-rank p50/p90, ms) by severity."""
        def read(conn: Db) -> builtins.list[Row]:
            return conn.execute(
                "SELECT severity, disposition, fired_at_ms, acknowledged_at_ms FROM alarms"
                " WHERE fired_at_ms >= ?", (since_ms,)).fetchall()
        return _kpis(await self._run(read), since_ms)


def store_for(settings: AlarmSettings, state_dir: Path, *, fence: Fence | None = None,
              partition: str = "default") -> AlarmStore:
    """The alarm store ``alarms:`` configures: ``state_dir/alarms.sqlite3`` or the shared
    PostgreSQL database (reads ``postgres_dsn_file`` now; ConfigError if unusable). ``fence``
    guards a shared store's writes (gateway/alarms/fence.py); SQLite takes none."""
    if settings.backend == "sqlite":
        if fence is not None:
            raise ValueError("a SQLite alarm store is single-box: it takes no fence")
        return AlarmStore(state_dir / SQLITE_FILE, partition=partition)
    # Imported here: psycopg is only loaded by gateways that use it.
    from gateway.alarms.postgres import PostgresBackend
    return AlarmStore(PostgresBackend(settings.dsn(), fence=fence), partition=partition)
