"""The partition lease: one row per partition in PostgreSQL, with a fencing epoch.

Why PostgreSQL: the shared alarm store lives there already (alarms.backend: postgres), so the
lease adds no engine to run, and — the real reason — the fence check and the store's write
are one transaction in one database: a write of an instance that lost its lease fails in its own
transaction (gateway/alarms/fence.py). A lease in another system (etcd, Consul) could only be
checked before the write, and a pause between check and write is exactly the failure fencing
exists for. Why a lease row rather than a session advisory lock: an advisory lock lives as long
as its connection, so a network cut between the active and the database releases it at once
(or only after TCP gives up, minutes later); a row with ``expires_at`` expires on a schedule
both sides know, and carries an epoch the store can compare.

::

    parkwatch_lease(partition PK, holder, epoch, expires_at, acquired_at)

    acquire:  insert, or take over a row whose expires_at has passed: epoch + 1 (the fencing
              token; every takeover gets a new one)
    renew:    expires_at = now + lease_s, only while holder and epoch are ours and it has not
              expired (an expired lease is never revived: a standby may already hold it)
    release:  expires_at = now (graceful shutdown: the standby takes over at its next poll)
    check:    inside the store's write transaction, SELECT … FOR SHARE: holder, epoch and
              expires_at > now, or FencedOut. The share lock makes a concurrent takeover wait for
              the write to commit, so a write is either before the takeover or refused.

Time: ``expires_at`` is computed and compared only on the database's clock
(``clock_timestamp()``), never against this machine's. This machine keeps its own, shorter,
view: :attr:`Lease.valid_until` is a monotonic deadline starting when a renewal was *sent* (the
database's "now" is later than that), minus a safety margin for clock-rate drift and scheduling.
The puback stage asks :meth:`Lease.valid` before every PUBACK, so an active that cannot renew
stops acknowledging before its standby can take over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from gateway.alarms.fence import FencedOut

log = logging.getLogger(__name__)

#: The local view of the lease ends this share of lease_s before the database's.
LOCAL_MARGIN = 0.25
#: Serialises the CREATE TABLE of instances starting together.
_DDL_LOCK = 0x7061726B   # "park"

_DDL = """
CREATE TABLE IF NOT EXISTS parkwatch_lease (
    partition   text PRIMARY KEY,
    holder      text NOT NULL,
    epoch       bigint NOT NULL,
    expires_at  timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL
)"""

_ACQUIRE = """
INSERT INTO parkwatch_lease AS l (partition, holder, epoch, expires_at, acquired_at)
VALUES (%(p)s, %(h)s, 1, clock_timestamp() + make_interval(secs => %(s)s), clock_timestamp())
ON CONFLICT (partition) DO UPDATE
   SET holder = EXCLUDED.holder, epoch = l.epoch + 1, expires_at = EXCLUDED.expires_at,
       acquired_at = EXCLUDED.acquired_at
 WHERE l.expires_at <= clock_timestamp()
RETURNING epoch"""

_RENEW = """
UPDATE parkwatch_lease SET expires_at = clock_timestamp() + make_interval(secs => %(s)s)
 WHERE partition = %(p)s AND holder = %(h)s AND epoch = %(e)s
   AND expires_at > clock_timestamp()
RETURNING epoch"""

_RELEASE = """
UPDATE parkwatch_lease SET expires_at = clock_timestamp()
 WHERE partition = %(p)s AND holder = %(h)s AND epoch = %(e)s"""

_HOLDER = """
SELECT holder, epoch, greatest(0, extract(epoch FROM expires_at - clock_timestamp()))::float8
  FROM parkwatch_lease WHERE partition = %(p)s"""

_CHECK = """
SELECT holder = %(h)s AND epoch = %(e)s AND expires_at > clock_timestamp()
  FROM parkwatch_lease WHERE partition = %(p)s FOR SHARE"""


class LeaseLost(FencedOut):
    """The lease could not be renewed in time or was taken over: stop acking, exit."""


@dataclass(frozen=True)
class Holder:
    """Who holds a partition's lease, as the database sees it now."""

    holder: str
    epoch: int
    remaining_s: float


def holder_id(instance: str) -> str:
    """Unique per process: a restarted instance is a new holder and waits like any standby
    (its old self may still be paused somewhere, holding the old epoch)."""
    return f"{instance}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def ensure_schema(conn: psycopg.AsyncConnection[Any]) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        await conn.execute(_DDL)


class Lease:
    """One instance's lease on one partition. Implements :class:`gateway.alarms.fence.Fence`."""

    def __init__(self, *, dsn: str, partition: str, holder: str, lease_s: float,
                 connect_timeout_s: float = 5.0) -> None:
        self.dsn = dsn
        self.partition = partition
        self.holder = holder
        self.lease_s = lease_s
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        #: The fencing token of our current tenure (0: not held).
        self.epoch = 0
        #: Monotonic time until which this machine may act as the active (0: not held).
        self.valid_until = 0.0

    # -- the local view ----------------------------------------------------------------------

    @property
    def held(self) -> bool:
        return self.epoch > 0

    def valid(self) -> bool:
        """True while this instance may act (PUBACK, UITD ACK) as the partition's active."""
        return self.epoch > 0 and time.monotonic() < self.valid_until

    def _extend(self, sent_at: float) -> None:
        self.valid_until = sent_at + self.lease_s * (1.0 - LOCAL_MARGIN)

    # -- the database ------------------------------------------------------------------------

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=max(1, int(self._connect_timeout_s)),
                application_name=f"parkwatch-lease-{self.partition}")
            await ensure_schema(conn)
            self._conn = conn
        return conn

    async def try_acquire(self) -> bool:
        """Take the lease if it is free or expired (a new epoch); False if someone holds it."""
        sent_at = time.monotonic()
        conn = await self._connection()
        cur = await conn.execute(_ACQUIRE, {"p": self.partition, "h": self.holder,
                                            "s": self.lease_s})
        row = await cur.fetchone()
        if row is None:
            return False
        self.epoch = int(row[0])
        self._extend(sent_at)
        log.info("lease: acquired partition %s, epoch %d", self.partition, self.epoch)
        return True

    async def renew(self) -> None:
        """Extend the lease; :class:`LeaseLost` if it is no longer ours or the local view ran
        out before the database answered."""
        if not self.held:
            raise LeaseLost(f"partition {self.partition}: renew without holding the lease")
        sent_at = time.monotonic()
        left = self.valid_until - sent_at
        if left <= 0:
            raise LeaseLost(self._lost_message("the lease ran out before it could be renewed"))
        try:
            async with asyncio.timeout(left):
                conn = await self._connection()
                cur = await conn.execute(_RENEW, {"p": self.partition, "h": self.holder,
                                                  "e": self.epoch, "s": self.lease_s})
                row = await cur.fetchone()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            if self._conn is not None and not self._conn.closed:
                await self._conn.close()   # a half-dead connection is not retried
            if time.monotonic() >= self.valid_until:
                raise LeaseLost(self._lost_message(f"renewal failed: {exc}")) from exc
            log.warning("lease: renewal of partition %s failed (%s); %.1f s of lease left",
                        self.partition, exc, self.valid_until - time.monotonic())
            return
        if row is None:
            raise LeaseLost(self._lost_message("the database no longer has it as ours "
                                               "(expired and taken over)"))
        self._extend(sent_at)

    async def release(self) -> None:
        """Give the lease up at once (graceful stop): the standby need not wait it out."""
        if not self.held:
            return
        epoch, self.epoch, self.valid_until = self.epoch, 0, 0.0
        try:
            conn = await self._connection()
            cur = await conn.execute(_RELEASE, {"p": self.partition, "h": self.holder,
                                                "e": epoch})
            if cur.rowcount:
                log.info("lease: released partition %s (epoch %d)", self.partition, epoch)
        except (psycopg.Error, OSError) as exc:
            log.warning("lease: release of partition %s failed (%s); the standby takes over "
                        "when it expires", self.partition, exc)

    async def current(self) -> Holder | None:
        """Who holds the lease now (None: nobody ever did)."""
        conn = await self._connection()
        cur = await conn.execute(_HOLDER, {"p": self.partition})
        row = await cur.fetchone()
        return Holder(str(row[0]), int(row[1]), float(row[2])) if row is not None else None

    async def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            await self._conn.close()
        self._conn = None

    # -- Fence -------------------------------------------------------------------------------

    def check(self, conn: Any) -> None:
        """:class:`gateway.alarms.fence.Fence`: inside the store's transaction (a sync psycopg
        connection), the lease must be ours, at our epoch, unexpired — or FencedOut."""
        if not self.held:
            raise FencedOut(f"partition {self.partition}: this instance holds no lease")
        row = conn.execute(_CHECK, {"p": self.partition, "h": self.holder,
                                    "e": self.epoch}).fetchone()
        if row is None or not row[0]:
            raise FencedOut(self._lost_message("a store write was fenced off"))

    def _lost_message(self, why: str) -> str:
        return (f"lost the lease of partition {self.partition} (epoch {self.epoch}): {why}; "
                "stopped acknowledging, exiting so the supervisor restarts this instance as "
                "a standby")
