"""Alarm stores on either backend, so one test runs against SQLite and PostgreSQL alike.

The ``alarm_backend`` fixture (conftest.py) gives "sqlite" or "postgres"; ``alarm_target`` turns it
into a :class:`StoreTarget`: one database (a file, or a fresh PostgreSQL database per test) that
any number of stores open, as several gateway instances would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.alarms.fence import Fence, FencedOut
from gateway.alarms.postgres import PostgresBackend
from gateway.alarms.store import AlarmStore

BACKENDS = ("sqlite", "postgres")


@dataclass(frozen=True)
class StoreTarget:
    """Where a test's alarm database lives."""

    backend: str
    path: Path
    dsn: str | None = None

    def store(self, *, fence: Fence | None = None, partition: str = "default") -> AlarmStore:
        """A new (unopened) store on this database."""
        if self.dsn is not None:
            return AlarmStore(PostgresBackend(self.dsn, fence=fence), partition=partition)
        return AlarmStore(self.path, partition=partition)

    def settings(self) -> dict[str, Any]:
        """The ``alarms:`` settings that select this database (state_dir gives SQLite's)."""
        if self.dsn is None:
            return {"backend": "sqlite"}
        return {"backend": "postgres", "postgres_dsn": self.dsn}


def target_for(backend: str, tmp_path: Path, dsn: str | None) -> StoreTarget:
    path = tmp_path / "state" / "alarms.sqlite3"
    return StoreTarget(backend, path, dsn if backend == "postgres" else None)


class FlipFence:
    """A fence that holds until :meth:`lose` (a takeover); counts its checks."""

    def __init__(self) -> None:
        self.held = True
        self.checks = 0

    def lose(self) -> None:
        self.held = False

    def check(self, conn: Any) -> None:
        self.checks += 1
        # A real fence reads its lease row in this transaction: prove it is one.
        conn.execute("SELECT 1").fetchone()
        if not self.held:
            raise FencedOut("partition p1: lease lost (test fence)")
