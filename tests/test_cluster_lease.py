"""The partition lease on PostgreSQL (issue 16, point 2): one holder, a new epoch per takeover,
expiry on the database clock, renewal never revives an expired lease, and the Fence check
inside a store transaction holds a takeover back until the write committed."""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import pytest

from gateway.alarms.fence import FencedOut
from gateway.cluster.lease import LOCAL_MARGIN, Lease, LeaseLost
from gateway.cluster.standby import Role, wait_for_lease

pytestmark = pytest.mark.integration


def _lease(dsn: str, who: str, lease_s: float = 5.0, partition: str = "p1") -> Lease:
    return Lease(dsn=dsn, partition=partition, holder=who, lease_s=lease_s)


async def test_one_holder_at_a_time_and_each_takeover_a_new_epoch(pg_dsn: str) -> None:
    a, b = _lease(pg_dsn, "a", lease_s=1.0), _lease(pg_dsn, "b", lease_s=1.0)
    try:
        assert await a.try_acquire()
        assert a.epoch == 1
        assert a.valid()
        assert not await b.try_acquire()
        current = await b.current()
        assert current is not None
        assert current.holder == "a"
        assert current.epoch == 1
        await a.renew()
        await asyncio.sleep(1.2)                 # a stops renewing: the lease expires
        assert not a.valid()                     # the local view ended first
        assert await b.try_acquire()
        assert b.epoch == 2
        with pytest.raises(LeaseLost):
            await a.renew()
    finally:
        await a.close()
        await b.close()


async def test_renewal_never_revives_an_expired_lease(pg_dsn: str) -> None:
    a = _lease(pg_dsn, "a", lease_s=1.0)
    try:
        assert await a.try_acquire()
        a.valid_until = time.monotonic() + 10    # pretend the local view were still good
        await asyncio.sleep(1.1)
        with pytest.raises(LeaseLost, match="no longer has it"):
            await a.renew()
    finally:
        await a.close()


async def test_local_validity_ends_before_the_database_lease(pg_dsn: str) -> None:
    a = _lease(pg_dsn, "a", lease_s=4.0)
    try:
        before = time.monotonic()
        assert await a.try_acquire()
        assert a.valid_until <= before + 4.0 * (1 - LOCAL_MARGIN) + 0.5
        held = await a.current()
        assert held is not None
        assert held.remaining_s > 4.0 * (1 - LOCAL_MARGIN)
    finally:
        await a.close()


async def test_release_lets_the_standby_take_over_at_once(pg_dsn: str) -> None:
    a, b = _lease(pg_dsn, "a", lease_s=30.0), _lease(pg_dsn, "b", lease_s=30.0)
    stop = asyncio.Event()
    try:
        assert await a.try_acquire()
        role = Role(partition="p1", holder="b")
        waiting = asyncio.create_task(wait_for_lease(b, stop, role, poll_s=0.1))
        await asyncio.sleep(0.3)
        assert role.role == "standby"
        assert role.held_by == "a"
        started = time.monotonic()
        await a.release()
        assert await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - started < 2
        assert role.role == "active"
        assert role.epoch == 2
    finally:
        stop.set()
        await a.close()
        await b.close()


async def test_standby_stops_waiting_on_request(pg_dsn: str) -> None:
    a, b = _lease(pg_dsn, "a"), _lease(pg_dsn, "b")
    stop = asyncio.Event()
    try:
        assert await a.try_acquire()
        waiting = asyncio.create_task(
            wait_for_lease(b, stop, Role(partition="p1", holder="b"), poll_s=0.1))
        await asyncio.sleep(0.2)
        stop.set()
        assert await asyncio.wait_for(waiting, 5) is False
    finally:
        await a.close()
        await b.close()


async def test_partitions_have_independent_leases(pg_dsn: str) -> None:
    a, b = _lease(pg_dsn, "a", partition="p1"), _lease(pg_dsn, "b", partition="p2")
    try:
        assert await a.try_acquire()
        assert await b.try_acquire()
    finally:
        await a.close()
        await b.close()


async def test_fence_check_passes_for_the_holder_and_fences_the_old_epoch(pg_dsn: str) -> None:
    a, b = _lease(pg_dsn, "a", lease_s=1.0), _lease(pg_dsn, "b", lease_s=5.0)
    try:
        assert await a.try_acquire()
        with psycopg.connect(pg_dsn) as conn, conn.transaction():
            a.check(conn)                        # ours: the write may go on
        with pytest.raises(FencedOut), psycopg.connect(pg_dsn) as conn, conn.transaction():
            b.check(conn)                    # b never held it
        await asyncio.sleep(1.1)
        with pytest.raises(FencedOut), psycopg.connect(pg_dsn) as conn, conn.transaction():
            a.check(conn)                    # expired, even before anyone took over
        assert await b.try_acquire()
        with pytest.raises(FencedOut), psycopg.connect(pg_dsn) as conn, conn.transaction():
            a.check(conn)                    # taken over: a's epoch is gone
    finally:
        await a.close()
        await b.close()


async def test_a_takeover_waits_for_a_write_that_passed_the_fence(pg_dsn: str) -> None:
    """The FOR SHARE lock: a store write that checked the fence commits before the standby's
    takeover can change the row, so no write of the old epoch lands after the new one began."""
    a, b = _lease(pg_dsn, "a", lease_s=1.0), _lease(pg_dsn, "b", lease_s=5.0)
    committed_at: list[float] = []
    checked = threading.Event()

    def slow_write() -> None:
        with psycopg.connect(pg_dsn) as conn, conn.transaction():
            a.check(conn)
            checked.set()
            time.sleep(2.0)                      # the lease expires meanwhile
            committed_at.append(time.monotonic())

    try:
        assert await a.try_acquire()
        writer = threading.Thread(target=slow_write)
        writer.start()
        await asyncio.to_thread(checked.wait, 5)
        await asyncio.sleep(1.2)                 # expired in the database now
        assert await b.try_acquire()             # blocks until the write committed
        acquired_at = time.monotonic()
        await asyncio.to_thread(writer.join, 5)
        assert committed_at
        assert committed_at[0] <= acquired_at
    finally:
        await a.close()
        await b.close()
