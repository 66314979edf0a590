"""The single-box alarm store backend: one SQLite file (WAL, ``synchronous=FULL``).

The default: nothing to run beside the gateway, and a ``kill -9`` loses nothing because each
write transaction is ``BEGIN IMMEDIATE`` … ``COMMIT`` with a full fsync. The file is made private
(0600) before SQLite creates it, since it holds outbox messages and ack-link rows. Migrations are
numbered by ``PRAGMA user_version``; each one and its version number commit together. Only one
gateway process writes the file, so an outbox claim left by a dead process is released on open.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gateway.alarms.db import AlarmStoreError, Cursor, Db, DuplicateActiveAlarm
from gateway.storage.private import FILE_MODE, private_dir, private_file, tighten

SCHEMA_VERSION = 8

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
    # v7: partitions (docs/scale.md). The engine's resume state and the liveness rows are keyed
    # by the partition whose parks they cover; the single-box row becomes partition 'default'.
    # Outbox rows get a claim (who sends them, until when): a no-op for one process, the same
    # code as on a shared PostgreSQL store (gateway/notify/outbox.py).
    """
    CREATE TABLE engine_state_v7 (
        partition_id TEXT PRIMARY KEY,
        state        TEXT NOT NULL
    ) STRICT;
    INSERT INTO engine_state_v7 (partition_id, state) SELECT 'default', state FROM engine_state;
    DROP TABLE engine_state;
    ALTER TABLE engine_state_v7 RENAME TO engine_state;
    CREATE TABLE device_liveness_v7 (
        partition_id  TEXT NOT NULL,
        device        TEXT NOT NULL,
        last_heard_ms INTEGER,                  -- NULL: never heard
        online        INTEGER NOT NULL CHECK (online IN (0, 1)),
        reason        TEXT NOT NULL,
        PRIMARY KEY (partition_id, device)
    ) STRICT;
    INSERT INTO device_liveness_v7 (partition_id, device, last_heard_ms, online, reason)
        SELECT 'default', device, last_heard_ms, online, reason FROM device_liveness;
    DROP TABLE device_liveness;
    ALTER TABLE device_liveness_v7 RENAME TO device_liveness;
    ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
    ALTER TABLE outbox ADD COLUMN claimed_until_ms INTEGER;
    """,
    # v8: acknowledgements handed to the instance whose engine holds the alarm (service.py).
    """
    CREATE TABLE ack_requests (
        alarm_id        TEXT PRIMARY KEY,       -- the first request for an alarm is the one
        acknowledged_by TEXT NOT NULL,
        disposition     TEXT NOT NULL,
        channel         TEXT NOT NULL,
        name            TEXT,
        requested_at_ms INTEGER NOT NULL
    ) STRICT;
    """,
)


class SqliteDb(Db):
    dialect = "sqlite"
    shared = False

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> int:
        if not params:
            return 0
        return self.conn.executemany(sql, params).rowcount

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock at once: a reader never has to upgrade mid-transaction.
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class SqliteBackend:
    """The alarm database in the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = str(path)

    def connect(self) -> SqliteDb:
        try:
            return SqliteDb(_connect(self.path))
        except (sqlite3.Error, OSError) as exc:
            raise AlarmStoreError(f"{self.path}: cannot open alarm store: {exc}") from exc

    def translate(self, exc: BaseException) -> AlarmStoreError | None:
        if isinstance(exc, sqlite3.IntegrityError) and "fingerprint" in str(exc):
            return DuplicateActiveAlarm(
                f"{self.path}: a second active alarm for one fingerprint: {exc}")
        if isinstance(exc, sqlite3.Error):
            return AlarmStoreError(f"{self.path}: {exc}")
        return None


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
        # One process writes this file: claims still on rows were made by a process that died.
        conn.execute("UPDATE outbox SET claimed_by = NULL, claimed_until_ms = NULL"
                     " WHERE claimed_by IS NOT NULL")
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
