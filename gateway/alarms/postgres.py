"""The shared alarm store backend: PostgreSQL, so every gateway instance sees the same alarms,
outbox and ack tokens (issue 16; docs/scale.md, "Shared alarm store").

Why it is built this way:

* **psycopg 3, a sync connection in the store's worker thread** — the same model as SQLite's, so
  :class:`gateway.alarms.store.AlarmStore` and every caller's SQL stay one code path. An
  ``AsyncConnection`` would have split the store in two (async for PostgreSQL, threads for
  SQLite) for no gain: the store already serialises its calls on one connection, and a worker
  thread costs nothing next to a network round trip. The connection runs in autocommit mode;
  :meth:`PostgresDb.write` is psycopg's ``conn.transaction()``, so a write is exactly one
  transaction, committed durably (``synchronous_commit`` as the server is configured) before
  the call returns.
* **READ COMMITTED with explicit locks**, not SERIALIZABLE: the places two instances can race
  are known and few, and SERIALIZABLE would turn them into retry loops around whole evaluation
  steps. The one-active-alarm-per-fingerprint rule is a partial UNIQUE index (a racing second
  alarm fails with :class:`DuplicateActiveAlarm`); a transition takes a transaction-scoped
  advisory lock on its alarm id (:meth:`PostgresDb.lock`) before numbering its history row;
  outbox rows are claimed with ``FOR UPDATE SKIP LOCKED`` (gateway/notify/outbox.py); an ack
  token is consumed by one conditional ``UPDATE`` (the second waits, re-reads, changes nothing).
* **Fencing**: with a ``fence`` (gateway/alarms/fence.py, the partition lease), every write
  transaction calls ``fence.check(conn)`` first, inside the transaction; :class:`FencedOut`
  rolls it back and propagates as is.
* **Migrations** are numbered in a ``schema_version`` table and run in one transaction under
  ``pg_advisory_xact_lock``: instances starting at once migrate once (the others wait, then find
  the schema current). PostgreSQL's DDL is transactional, so a failed migration leaves nothing.
* Placeholders: the shared SQL is written with ``?``; :func:`pg_sql` turns it into psycopg's
  ``%s`` (and doubles literal ``%``). No statement of ours has a ``?`` inside a string literal.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import RowMaker

from gateway.alarms.db import AlarmStoreError, Cursor, Db, DuplicateActiveAlarm
from gateway.alarms.fence import Fence

SCHEMA_VERSION = 2
#: pg_advisory_xact_lock key of the migrations (any constant; "pkwt" in ASCII).
_MIGRATION_LOCK = 0x706B7774
_ACTIVE_INDEX = "alarms_one_active_per_fingerprint"

# Each entry migrates from version i to i + 1. Version 1 is SQLite's schema version 7 in
# PostgreSQL's types (BIGINT milliseconds, DOUBLE PRECISION values, JSON kept as TEXT so both
# engines hand back the same strings).
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
        value              DOUBLE PRECISION,
        started_at_ms      BIGINT NOT NULL,
        updated_at_ms      BIGINT NOT NULL,
        fired_at_ms        BIGINT,
        acknowledged_by    TEXT,
        acknowledged_at_ms BIGINT,
        ack_channel        TEXT,
        disposition        TEXT,
        resolved_at_ms     BIGINT,
        maintenance        TEXT NOT NULL,
        inhibited_by       TEXT,
        labels             TEXT NOT NULL,
        document           TEXT NOT NULL,
        acknowledged_name  TEXT
    );
    CREATE UNIQUE INDEX alarms_one_active_per_fingerprint
        ON alarms (fingerprint) WHERE state <> 'resolved';
    CREATE INDEX alarms_started ON alarms (started_at_ms);
    CREATE INDEX alarms_resolved ON alarms (resolved_at_ms);
    CREATE INDEX alarms_fired ON alarms (fired_at_ms);
    CREATE TABLE alarm_history (
        alarm_id   TEXT NOT NULL,
        seq        BIGINT NOT NULL,
        at_ms      BIGINT NOT NULL,
        from_state TEXT,
        to_state   TEXT NOT NULL,
        severity   TEXT NOT NULL,
        digest     TEXT NOT NULL,
        record     TEXT NOT NULL,
        PRIMARY KEY (alarm_id, seq),
        UNIQUE (alarm_id, digest)
    );
    CREATE TABLE engine_state (
        partition_id TEXT PRIMARY KEY,
        state        TEXT NOT NULL
    );
    CREATE TABLE outbox (
        key               TEXT PRIMARY KEY,
        channel           TEXT NOT NULL,
        recipient         TEXT NOT NULL,
        notification      TEXT NOT NULL,
        fire_class        INTEGER NOT NULL,
        state             TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'dead')),
        attempts          INTEGER NOT NULL DEFAULT 0,
        created_at_ms     BIGINT NOT NULL,
        next_at_ms        BIGINT NOT NULL,
        deadline_ms       BIGINT NOT NULL,
        sent_at_ms        BIGINT,
        last_error        TEXT NOT NULL DEFAULT '',
        provider_id       TEXT,
        group_key         TEXT NOT NULL DEFAULT '',
        group_interval_ms BIGINT NOT NULL DEFAULT 0,
        claimed_by        TEXT,
        claimed_until_ms  BIGINT,
        seq               BIGINT GENERATED ALWAYS AS IDENTITY  -- insertion order (SQLite: rowid)
    );
    CREATE INDEX outbox_due ON outbox (state, next_at_ms);
    CREATE INDEX outbox_group_sent ON outbox (group_key, sent_at_ms);
    CREATE TABLE ack_tokens (
        token_id      TEXT PRIMARY KEY,
        alarm_id      TEXT NOT NULL,
        contact       TEXT NOT NULL,
        channel       TEXT NOT NULL,
        issued_at_ms  BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        used_at_ms    BIGINT
    );
    CREATE INDEX ack_tokens_alarm ON ack_tokens (alarm_id);
    CREATE INDEX ack_tokens_expiry ON ack_tokens (expires_at_ms);
    CREATE TABLE reclassifications (
        alarm_id         TEXT NOT NULL,
        at_ms            BIGINT NOT NULL,
        reclassified_by  TEXT NOT NULL,
        from_disposition TEXT,
        to_disposition   TEXT NOT NULL,
        reason           TEXT NOT NULL,
        PRIMARY KEY (alarm_id, at_ms, to_disposition)
    );
    CREATE TABLE device_liveness (
        partition_id  TEXT NOT NULL,
        device        TEXT NOT NULL,
        last_heard_ms BIGINT,
        online        INTEGER NOT NULL CHECK (online IN (0, 1)),
        reason        TEXT NOT NULL,
        PRIMARY KEY (partition_id, device)
    );
    """,
    # v2: acknowledgements handed to the instance whose engine holds the alarm (service.py).
    """
    CREATE TABLE ack_requests (
        alarm_id        TEXT PRIMARY KEY,
        acknowledged_by TEXT NOT NULL,
        disposition     TEXT NOT NULL,
        channel         TEXT NOT NULL,
        name            TEXT,
        requested_at_ms BIGINT NOT NULL
    );
    """,
)


@functools.lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """``sql`` with ``?`` placeholders in psycopg's ``%s`` style."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgRow:
    """A row readable by position and by column name, like ``sqlite3.Row``."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: dict[str, int], values: Sequence[Any]) -> None:
        self._names = names
        self._values = values

    def __getitem__(self, key: int | str) -> Any:
        return self._values[key if isinstance(key, int) else self._names[key]]

    def keys(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)


def _pg_rows(cursor: psycopg.Cursor[Any]) -> RowMaker[PgRow]:
    names = {c.name: i for i, c in enumerate(cursor.description or ())}
    return functools.partial(PgRow, names)


def describe(dsn: str) -> str:
    """``host:port/dbname`` of a DSN: what error messages name (never the password)."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable PostgreSQL DSN>"
    host = str(parts.get("host") or parts.get("hostaddr") or "localhost")
    return f"{host}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}"


class PostgresDb(Db):
    dialect = "postgres"
    shared = True
    outbox_order = "seq"

    def __init__(self, conn: psycopg.Connection[PgRow], fence: Fence | None) -> None:
        self.conn = conn
        self._fence = fence

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.conn.execute(pg_sql(sql), params)

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> int:
        if not params:
            return 0
        with self.conn.cursor() as cur:
            cur.executemany(pg_sql(sql), params)
            return cur.rowcount

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self.conn.transaction():
            if self._fence is not None:
                # First, inside the transaction: the lease row stays locked until we commit.
                self._fence.check(self.conn)
            yield

    def lock(self, key: str) -> None:
        # Two instances writing one alarm (a takeover, an ack on the other instance) number its
        # history rows one after the other instead of colliding on (alarm_id, seq).
        self.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))

    def for_update(self) -> str:
        return " FOR UPDATE SKIP LOCKED"

    @property
    def broken(self) -> bool:
        return self.conn.broken or self.conn.closed

    def close(self) -> None:
        self.conn.close()


class PostgresBackend:
    """The alarm database at ``dsn``; ``fence`` guards every write transaction."""

    def __init__(self, dsn: str, *, fence: Fence | None = None,
                 connect_timeout_s: int = 10) -> None:
        self._dsn = dsn
        self._fence = fence
        self._connect_timeout_s = connect_timeout_s
        self.label = describe(dsn)

    def __repr__(self) -> str:  # the DSN may hold a password
        return f"PostgresBackend({self.label!r})"

    def connect(self) -> PostgresDb:
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, row_factory=_pg_rows,
                                   connect_timeout=self._connect_timeout_s,
                                   application_name="parkwatch")
        except psycopg.Error as exc:
            # libpq's message names host and port, never the password; keep only its gist.
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise AlarmStoreError(f"PostgreSQL alarm store at {self.label} is unreachable:"
                                  f" {reason}") from None
        try:
            _migrate(conn, self.label)
        except psycopg.Error as exc:
            conn.close()
            raise AlarmStoreError(f"{self.label}: cannot migrate the alarm store: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return PostgresDb(conn, self._fence)

    def translate(self, exc: BaseException) -> AlarmStoreError | None:
        if isinstance(exc, pgerrors.UniqueViolation) and \
                exc.diag.constraint_name == _ACTIVE_INDEX:
            return DuplicateActiveAlarm(
                f"{self.label}: a second active alarm for one fingerprint: {exc}")
        if isinstance(exc, psycopg.Error):
            return AlarmStoreError(f"{self.label}: {exc}")
        return None


def _migrate(conn: psycopg.Connection[PgRow], label: str) -> None:
    with conn.transaction():
        # Concurrent starters queue here; the lock ends with the transaction.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        version = int(row[0]) if row is not None and row[0] is not None else 0
        if version > SCHEMA_VERSION:
            raise AlarmStoreError(f"{label}: schema version {version} is newer than this "
                                  f"ParkWatch (knows {SCHEMA_VERSION}); refusing to touch it")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute(_MIGRATIONS[target - 1].encode())
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (target,))
