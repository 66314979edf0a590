"""Fencing: a shared alarm store refuses writes from an instance that lost its partition's lease.

With partitions (docs/scale.md) an active and a standby share one PostgreSQL alarm store. A lease
alone cannot stop an active that paused (GC, a frozen VM, a network cut) and wakes after its
standby took over; so every write transaction of the shared store asks a :class:`Fence`, inside
that same transaction, whether this instance still holds the lease with the epoch it acquired.
The lease table lives in the same database, so the check and the write commit or fail together.
The single-box SQLite store has nothing to fence and takes no fence.
"""

from __future__ import annotations

from typing import Any, Protocol

from sensors.errors import ParkWatchError


class FencedOut(ParkWatchError):
    """This instance no longer holds its partition's lease: it must stop writing and acking."""


class Fence(Protocol):
    """Checks, inside the caller's open transaction, that the lease is still ours."""

    def check(self, conn: Any) -> None:
        """Raise :class:`FencedOut` unless this instance holds the lease at its epoch.

        ``conn`` is the backend's connection (a ``psycopg.Connection`` in a transaction); the
        check must lock what it reads (``FOR SHARE``) so a takeover waits for the write.
        """
        ...
