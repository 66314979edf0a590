"""The alarm store's seam between SQL and a database engine: SQLite or PostgreSQL.

A thin dialect layer, not an ORM: the store, the outbox (gateway/notify/outbox.py) and the
ack-link tokens (acklinks.py) keep their SQL readable and next to the concern it serves, written
once, with ``?`` placeholders and the SQL both engines share (``ON CONFLICT``, ``RETURNING``).
A :class:`Db` is one open connection; what differs between engines lives behind it:

* placeholders (``?`` for sqlite3, ``%s`` for psycopg; :mod:`gateway.alarms.postgres` rewrites),
* how a write transaction starts (``BEGIN IMMEDIATE`` vs a psycopg transaction that first asks
  the :class:`~gateway.alarms.fence.Fence`), see :meth:`Db.write`,
* the schema and its migrations (sqlite.py, postgres.py), and which driver errors mean what.

Each :class:`Backend` opens a :class:`Db`; :class:`gateway.alarms.store.AlarmStore` runs every call
in a worker thread on that one connection, so both engines keep today's blocking-call model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from sensors.errors import ParkWatchError


class AlarmStoreError(ParkWatchError):
    """The alarm database cannot be opened, read or written."""


class DuplicateActiveAlarm(AlarmStoreError):
    """A step tried to make a second alarm active for one fingerprint; nothing was written."""


class Row(Protocol):
    """A result row readable by position and by column name (``sqlite3.Row`` is one)."""

    def __getitem__(self, key: int | str, /) -> Any: ...
    def keys(self) -> Sequence[str]: ...
    def __len__(self) -> int: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Db:
    """One open connection to the alarm database (used by one worker thread at a time)."""

    #: "sqlite" or "postgres", for the rare statement that must differ (``FOR UPDATE``).
    dialect: str = ""
    #: True when other gateway processes use the same database (outbox claims matter).
    shared: bool = False
    #: The outbox column that orders rows as they were inserted (SQLite's implicit rowid).
    outbox_order: str = "rowid"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        raise NotImplementedError

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> int:
        """Run ``sql`` once per parameter tuple; the number of rows changed in all."""
        raise NotImplementedError

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """One write transaction: committed when the block ends, rolled back if it raises.
        Nothing outside such a block writes (connections are in autocommit mode)."""
        raise NotImplementedError
        yield  # pragma: no cover

    def lock(self, key: str) -> None:
        """Inside a write: serialise writers of ``key`` until the transaction ends (a no-op
        where the transaction already excludes every other writer, as SQLite's does)."""

    def for_update(self) -> str:
        """The row-locking suffix of a claiming SELECT (empty where the engine has none)."""
        return ""

    @property
    def broken(self) -> bool:
        """The connection is lost (the server restarted): the store opens a new one."""
        return False

    def close(self) -> None:
        raise NotImplementedError


class Backend(Protocol):
    """Where the alarm database lives; opens connections to it (blocking, in a worker)."""

    #: Names the database in error messages (a path, or host:port/dbname — never a password).
    label: str

    def connect(self) -> Db:
        """Open a connection, creating or migrating the schema; raise AlarmStoreError."""
        ...

    def translate(self, exc: BaseException) -> AlarmStoreError | None:
        """The store's error for a driver exception, or None if ``exc`` is not the driver's."""
        ...
