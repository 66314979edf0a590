"""Durable alarm state in SQLite: the current alarms, their history and the engine's resume state.

::

    rule engine ──transitions + engine state──▶ AlarmStore.apply() ──one transaction──▶ alarms.db
                                                                     (WAL, synchronous=FULL)

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
* **SQLite calls are blocking**, so each runs in a worker thread (``asyncio.to_thread``); one
  connection, used by one worker at a time under an ``asyncio.Lock``.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import math
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from gateway.storage.private import FILE_MODE, private_dir, private_file, tighten
from rules.alarm import Alarm, AlarmState, Disposition, Maintenance, Severity, Subject, Transition
from sensors.errors import ParkWatchError

_T = TypeVar("_T")

SCHEMA_VERSION = 6

# Each entry migrates from version i to i + 1 (user_version counts applied entries).
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE alarms (
        alarm_id           TEXT PRIMARY KEY,
        fingerprint        TEXT NOT NULL,
        rule               TEXT NOT NULL,
        severity           TEXT NOT NULL,
        state              TEXT NOT NULL
                           CHECK (state IN ('pending', 'firing', 'acknowledged', 'resolved')),
        park               TEXT NOT NULL,
        building           TEXT NOT NULL,
        floor              TEXT NOT NULL,
        zone               TEXT NOT NULL,
        device             TEXT NOT NULL,
        tenant             TEXT,
        kind               TEXT NOT NULL,
        location           TEXT NOT NULL,
        message            TEXT NOT NULL,
        value              REAL,
        started_at_ms      INTEGER NOT NULL,
        updated_at_ms      INTEGER NOT NULL,
        fired_at_ms        INTEGER,
        acknowledged_by    TEXT,
        acknowledged_at_ms INTEGER,
        ack_channel        TEXT,
        disposition        TEXT,
        resolved_at_ms     INTEGER,
        maintenance        TEXT NOT NULL,
        inhibited_by       TEXT,
        labels             TEXT NOT NULL,   -- JSON object
        document           TEXT NOT NULL    -- alarm document, docs/alarms.md (ack_url null)
    ) STRICT;
    -- The invariant of the lifecycle, enforced where a bug cannot bypass it.
    CREATE UNIQUE INDEX alarms_one_active_per_fingerprint
        ON alarms (fingerprint) WHERE state != 'resolved';
    CREATE INDEX alarms_started ON alarms (started_at_ms);
    CREATE INDEX alarms_resolved ON alarms (resolved_at_ms);
    CREATE INDEX alarms_fired ON alarms (fired_at_ms);
    CREATE TABLE alarm_history (
        alarm_id   TEXT NOT NULL,
        seq        INTEGER NOT NULL,        -- 1, 2, … per alarm, in apply order
        at_ms      INTEGER NOT NULL,        -- the alarm's updated_at_ms after the transition
        from_state TEXT,                    -- null when the transition created the alarm
        to_state   TEXT NOT NULL,
        severity   TEXT NOT NULL,
        digest     TEXT NOT NULL,           -- sha256 of (from_state, record): idempotency key
        record     TEXT NOT NULL,           -- JSON of every Alarm field after the transition
        PRIMARY KEY (alarm_id, seq),
        UNIQUE (alarm_id, digest)
    ) STRICT;
    CREATE TABLE engine_state (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        state TEXT NOT NULL
    ) STRICT;
    """,
    # v2: the notification outbox lives in the same database, so an alarm change and the
    # notifications it causes are committed in one transaction (gateway/notify/outbox.py).
    """
    CREATE TABLE outbox (
        key           TEXT PRIMARY KEY,         -- idempotency key: one message, ever
        channel       TEXT NOT NULL,
        recipient     TEXT NOT NULL,
        notification  TEXT NOT NULL,            -- JSON of the Notification
        fire_class    INTEGER NOT NULL,         -- 1: never rate-limited, sent first
        state         TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'dead')),
        attempts      INTEGER NOT NULL DEFAULT 0,
        created_at_ms INTEGER NOT NULL,
        next_at_ms    INTEGER NOT NULL,
        deadline_ms   INTEGER NOT NULL,
        sent_at_ms    INTEGER,
        last_error    TEXT NOT NULL DEFAULT '',
        provider_id   TEXT
    ) STRICT;
    CREATE INDEX outbox_due ON outbox (state, next_at_ms);
    """,
    # v3: grouping. Rows with the same group key (route, group_by labels, contact, channel) leave
    # as one digest, at most once per group_interval; '' never merges (webhooks, fire alarms).
    """
    ALTER TABLE outbox ADD COLUMN group_key TEXT NOT NULL DEFAULT '';
    ALTER TABLE outbox ADD COLUMN group_interval_ms INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX outbox_group_sent ON outbox (group_key, sent_at_ms);
    """,
    # v4: ack-link tokens (gateway/alarms/acklinks.py), written in the same transaction as the
    # outbox rows whose messages carry the links. IF NOT EXISTS: earlier versions created the
    # table on their own, outside the migrations.
    """
    CREATE TABLE IF NOT EXISTS ack_tokens (
        token_id      TEXT PRIMARY KEY,         -- base64url of the 8 random bytes
        alarm_id      TEXT NOT NULL,
        contact       TEXT NOT NULL,
        channel       TEXT NOT NULL,
        issued_at_ms  INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        used_at_ms    INTEGER
    ) STRICT;
    CREATE INDEX IF NOT EXISTS ack_tokens_alarm ON ack_tokens (alarm_id);
    CREATE INDEX IF NOT EXISTS ack_tokens_expiry ON ack_tokens (expires_at_ms);
    """,
    # v5: an acknowledgement is made once. acknowledged_by is who the channel vouches for (an
    # ack link's contact); a name typed on the page is kept apart, unverified. Correcting a
    # disposition later is a reclassification with its own record, written in the same
    # transaction as the alarm's transition.
    """
    ALTER TABLE alarms ADD COLUMN acknowledged_name TEXT;
    CREATE TABLE reclassifications (
        alarm_id         TEXT NOT NULL,
        at_ms            INTEGER NOT NULL,
        reclassified_by  TEXT NOT NULL,
        from_disposition TEXT,
        to_disposition   TEXT NOT NULL,
        reason           TEXT NOT NULL,
        PRIMARY KEY (alarm_id, at_ms, to_disposition)
    ) STRICT;
    """,
    # v6: device liveness (gateway/runtime/liveness.py): last-heard time and state per device,
    # so a restart neither forgets who was silent nor flips every device.
    """
    CREATE TABLE device_liveness (
        device        TEXT PRIMARY KEY,
        last_heard_ms INTEGER,                  -- NULL: never heard
        online        INTEGER NOT NULL CHECK (online IN (0, 1)),
        reason        TEXT NOT NULL
    ) STRICT;
    """,
)

#: One device_liveness row: device, last heard (ms, None: never), online, reason.
LivenessRow = tuple[str, int | None, bool, str]

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


_OUTBOX_INSERT = ("INSERT OR IGNORE INTO outbox (key, channel, recipient, notification,"
                  " fire_class, state, created_at_ms, next_at_ms, deadline_ms, group_key,"
                  " group_interval_ms) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)")


def insert_outbox(conn: sqlite3.Connection, rows: Sequence[OutboxRow]) -> int:
    """Insert rows inside the caller's transaction; a key already present is ignored (a replayed
    transition enqueues nothing). Returns how many rows were new."""
    before = conn.total_changes
    conn.executemany(_OUTBOX_INSERT, [r.params() for r in rows])
    return conn.total_changes - before


def prune_ack_tokens(conn: sqlite3.Connection, expired_before_ms: int) -> int:
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


class AlarmStoreError(ParkWatchError):
    """The alarm database cannot be opened, read or written."""


class DuplicateActiveAlarm(AlarmStoreError):
    """A step tried to make a second alarm active for one fingerprint; nothing was written."""


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


def alarm_from_record(r: dict[str, Any] | sqlite3.Row) -> Alarm:
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


def _keys(r: dict[str, Any] | sqlite3.Row) -> Any:
    # sqlite3.Row has no __contains__ for column names; keys() works for both.
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

def _connect(path: Path) -> sqlite3.Connection:
    # Made private before SQLite creates anything: its -wal and -shm files copy the database
    # file's mode, and the outbox and ack-link rows must not be readable by other local users.
    private_dir(path.parent)
    private_file(path)
    for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if side.exists():
            tighten(side, FILE_MODE)
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly apply().
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    try:
        conn.row_factory = sqlite3.Row
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise AlarmStoreError(f"{path}: cannot use WAL journal mode (got {mode!r})")
        conn.execute("PRAGMA synchronous=FULL")
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise AlarmStoreError(f"{path}: schema version {version} is newer than this ParkWatch "
                              f"(knows {SCHEMA_VERSION}); refusing to touch it")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        # One script, one transaction: a migration and its version number land together.
        try:
            conn.executescript(f"BEGIN IMMEDIATE; {_MIGRATIONS[target - 1]};"
                               f" PRAGMA user_version = {target}; COMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _write_transition(conn: sqlite3.Connection, transition: Transition) -> None:
    after = transition.after
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
    conn.execute(_UPSERT, _row_values(after))
    change = transition.reclassification
    if change is not None:
        conn.execute(
            "INSERT INTO reclassifications (alarm_id, at_ms, reclassified_by, from_disposition,"
            " to_disposition, reason) VALUES (?, ?, ?, ?, ?, ?)",
            (after.alarm_id, change.at_ms, change.by,
             change.from_disposition.value if change.from_disposition else None,
             change.to_disposition.value, change.reason))


def _apply_sync(conn: sqlite3.Connection, transitions: Sequence[Transition],
                engine_state_json: str | None,
                outbox: Sequence[OutboxRow] = (),
                also: Sequence[Callable[[sqlite3.Connection], None]] = ()) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for transition in transitions:
            _write_transition(conn, transition)
        if outbox:
            insert_outbox(conn, outbox)
        for write in also:
            write(conn)
        if engine_state_json is not None:
            conn.execute("INSERT INTO engine_state (id, state) VALUES (1, ?)"
                         " ON CONFLICT (id) DO UPDATE SET state = excluded.state",
                         (engine_state_json,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


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


def _history_entry(row: sqlite3.Row) -> dict[str, Any]:
    rec = json.loads(row["record"])
    return {
        "seq": row["seq"], "at_ms": row["at_ms"], "from_state": row["from_state"],
        "to_state": row["to_state"], "severity": row["severity"], "value": rec["value"],
        "message": rec["message"], "acknowledged_by": rec["acknowledged_by"],
        "ack_channel": rec["ack_channel"], "disposition": rec["disposition"],
        "acknowledged_name": rec.get("acknowledged_name"),
        "maintenance": rec["maintenance"], "inhibited_by": rec["inhibited_by"],
    }


def _percentile(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile (an observed value, no interpolation)."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _kpis(rows: Sequence[sqlite3.Row], since_ms: int) -> dict[str, Any]:
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
    """The alarm database at ``path``; use ``async with AlarmStore(path) as store``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

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
                try:
                    self._conn = await asyncio.to_thread(_connect, self.path)
                except (sqlite3.Error, OSError) as exc:
                    raise AlarmStoreError(f"{self.path}: cannot open alarm store: {exc}") from exc

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await asyncio.to_thread(conn.close)

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise AlarmStoreError(f"{self.path}: alarm store is not open")
            work = asyncio.ensure_future(asyncio.to_thread(fn, conn, *args))
            try:
                return await asyncio.shield(work)
            except sqlite3.IntegrityError as exc:
                if "fingerprint" in str(exc):
                    raise DuplicateActiveAlarm(
                        f"{self.path}: a second active alarm for one fingerprint: {exc}") from exc
                raise AlarmStoreError(f"{self.path}: {exc}") from exc
            except sqlite3.Error as exc:
                raise AlarmStoreError(f"{self.path}: {exc}") from exc
            finally:
                if not work.done():
                    # Cancelled while the worker runs: it cannot be interrupted, so keep the lock
                    # until it ends (the connection must never serve two threads at once).
                    await asyncio.wait({work})

    async def apply(self, transitions: Sequence[Transition], *,
                    engine_state_json: str | None = None,
                    outbox: Sequence[OutboxRow] = (),
                    also: Sequence[Callable[[sqlite3.Connection], None]] = ()) -> None:
        """Store ``transitions`` (in order), the engine state and the notifications they cause
        (outbox rows, see gateway/notify/outbox.py), plus ``also`` writes by sibling modules
        (ack-link grants), all or nothing, durably."""
        await self._run(_apply_sync, list(transitions), engine_state_json, list(outbox),
                        list(also))

    async def execute(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(connection, *args)`` in the store's worker, serialised with everything else
        (for modules that keep their tables in this database, like the outbox)."""
        return await self._run(fn, *args)

    async def load_engine_state(self) -> str | None:
        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT state FROM engine_state WHERE id = 1").fetchone()
            return None if row is None else str(row["state"])
        return await self._run(read)

    async def get(self, alarm_id: str) -> Alarm | None:
        def read(conn: sqlite3.Connection) -> Alarm | None:
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

        def read(conn: sqlite3.Connection) -> list[Alarm]:
            return [alarm_from_record(row) for row in conn.execute(sql, params)]
        return await self._run(read)

    async def alarms_by_id(self, alarm_ids: Sequence[str]) -> builtins.list[Alarm]:
        """The current rows of these alarms (those the store has), uncapped: the engine's
        resume state names its active alarms by id."""
        ids = list(alarm_ids)

        def read(conn: sqlite3.Connection) -> builtins.list[Alarm]:
            out: builtins.list[Alarm] = []
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                marks = ", ".join("?" * len(chunk))
                out += [alarm_from_record(row) for row in conn.execute(
                    f"SELECT * FROM alarms WHERE alarm_id IN ({marks})", chunk)]
            return out
        return await self._run(read)

    # builtins.list: inside this class body ``list`` is the method above.
    async def history(self, alarm_id: str) -> builtins.list[dict[str, Any]]:
        """The transitions of one alarm, oldest first ([] for an unknown id)."""
        def read(conn: sqlite3.Connection) -> builtins.list[dict[str, Any]]:
            rows = conn.execute("SELECT * FROM alarm_history WHERE alarm_id = ? ORDER BY seq",
                                (alarm_id,))
            return [_history_entry(row) for row in rows]
        return await self._run(read)

    async def reclassifications(self, alarm_id: str) -> builtins.list[dict[str, Any]]:
        """The disposition corrections of one alarm, oldest first."""
        def read(conn: sqlite3.Connection) -> builtins.list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT at_ms, reclassified_by, from_disposition, to_disposition, reason"
                " FROM reclassifications WHERE alarm_id = ? ORDER BY at_ms", (alarm_id,))
            return [{"at_ms": r[0], "by": r[1], "from_disposition": r[2],
                     "to_disposition": r[3], "reason": r[4]} for r in rows]
        return await self._run(read)

    async def save_liveness(self, rows: Sequence[LivenessRow]) -> None:
        """Upsert device liveness rows (one transaction)."""
        def write(conn: sqlite3.Connection, rows: builtins.list[LivenessRow]) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO device_liveness (device, last_heard_ms, online, reason)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (device) DO UPDATE SET"
                    " last_heard_ms = excluded.last_heard_ms, online = excluded.online,"
                    " reason = excluded.reason",
                    [(d, heard, int(online), reason) for d, heard, online, reason in rows])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        if rows:
            await self._run(write, list(rows))

    async def load_liveness(self) -> builtins.list[LivenessRow]:
        def read(conn: sqlite3.Connection) -> builtins.list[LivenessRow]:
            rows = conn.execute(
                "SELECT device, last_heard_ms, online, reason FROM device_liveness").fetchall()
            return [(str(r[0]), None if r[1] is None else int(r[1]), bool(r[2]), str(r[3]))
                    for r in rows]
        return await self._run(read)

    async def kpis(self, *, since_ms: int) -> dict[str, Any]:
        """Alarms that fired since ``since_ms``: counts by severity and disposition, and
        time-to-acknowledge (nearest-rank p50/p90, ms) by severity."""
        def read(conn: sqlite3.Connection) -> builtins.list[sqlite3.Row]:
            return conn.execute(
                "SELECT severity, disposition, fired_at_ms, acknowledged_at_ms FROM alarms"
                " WHERE fired_at_ms >= ?", (since_ms,)).fetchall()
        return _kpis(await self._run(read), since_ms)
