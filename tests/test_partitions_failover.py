"""Partitions with a standby, on this box (issue 16, point 6): three instances (partition a:
active + standby, partition b: one) against mosquitto, PostgreSQL and InfluxDB.

``kill -9`` of a's active with traffic flowing: the standby takes over within the lease
(+ slack for its start), and InfluxDB ends with every acknowledged reading of both parks exactly
once (the chaos suite's proof, tests/support/chaos.py). With the shared PostgreSQL alarm store
(alarms.backend: postgres), fire alarms published around the kill are raised once and paged
once. The harness is tests/support/cluster.py; bench/failover.py times 10 kills with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import HAS_PG_STORE, Cluster, ClusterConfig

pytestmark = [pytest.mark.integration]

LEASE_S = 3.0
#: Beyond the lease: the standby's poll (0.5 s) and the gateway's start (WAL, store, MQTT).
SLACK_S = 4.0


@pytest.fixture
def cluster(tmp_path: Path, pg_dsn: str) -> Iterator[Cluster]:
    harness = Cluster(tmp_path, ClusterConfig(lease_s=LEASE_S, renew_s=LEASE_S / 4),
                      pg_dsn=pg_dsn)
    yield harness
    harness.emergency_stop()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("ack_after", ["influx", "wal"])
async def test_kill_9_of_an_active_the_standby_takes_over_and_nothing_is_lost(
        cluster: Cluster, ack_after: str) -> None:
    """ack_after influx: the broker redelivers what the killed active had not delivered.
    ack_after wal: the killed instance, restarted as the standby, delivers what its WAL
    still held (runtime/leftovers.py)."""
    cluster.cfg.ack_after = ack_after
    async with cluster:
        await cluster.start_load()
        await asyncio.sleep(3)
        fire = [d for d in cluster.smoke if d.park == "pa"][:4] if HAS_PG_STORE else []
        killed, successor, took = await cluster.kill_active("a", fire=fire)
        print(f"failover: {killed.name} killed, {successor.name} active after {took:.2f} s")
        assert took < LEASE_S + SLACK_S
        await asyncio.sleep(3)                     # traffic through the new active
        total = await cluster.drain()
        assert total > 0
        assert cluster.telemetry_problems() == []
        # Both partitions wrote, each under its own instance tag.
        assert {"b1", successor.name} <= cluster.instances_in_influx()
        if HAS_PG_STORE:
            await cluster.until(lambda: len(cluster.fire_notifications()) >= len(fire), 60,
                                "every fire paged")
            await asyncio.sleep(3)                 # a duplicate would come within a retry
            assert cluster.alarm_problems() == []
            assert set(cluster.fire_notifications().values()) == {1}


@pytest.mark.skipif(not HAS_PG_STORE, reason="needs the shared PostgreSQL alarm store "
                    "(alarms.backend: postgres, issue 16 point 3)")
@pytest.mark.timeout(300)
async def test_fire_during_the_kill_is_raised_once_and_paged_once(cluster: Cluster) -> None:
    async with cluster:
        await cluster.start_load()
        await asyncio.sleep(2)
        fire = [d for d in cluster.smoke if d.park == "pa"]
        other = [d for d in cluster.smoke if d.park == "pb"][:2]
        for dev in other:                          # partition b is not disturbed
            assert cluster.load is not None
            await cluster.load.event(dev, "fire_alarm")
        await cluster.kill_active("a", fire=fire)
        await cluster.drain()
        await cluster.until(lambda: len(cluster.fire_notifications()) >= len(fire) + len(other),
                            60, "every fire paged")
        await asyncio.sleep(3)
        assert cluster.alarm_problems() == []
        assert set(cluster.fire_notifications().values()) == {1}
        assert cluster.telemetry_problems() == []


@pytest.mark.skipif(not HAS_PG_STORE, reason="needs the shared PostgreSQL alarm store "
                    "(alarms.backend: postgres, issue 16 point 3)")
@pytest.mark.timeout(300)
async def test_a_paused_active_that_wakes_after_the_takeover_is_fenced(
        cluster: Cluster) -> None:
    """Two actives for a moment: the old one (SIGSTOP past its lease, then SIGCONT) must not
    PUBACK or write a single alarm change; it exits non-zero saying it lost the lease."""
    async with cluster:
        await cluster.start_load()
        await asyncio.sleep(2)
        paused, successor = await cluster.pause_active("a", paused_s=1.0)
        assert cluster.load is not None
        for dev in [d for d in cluster.smoke if d.park == "pa"][:3]:
            await cluster.load.event(dev, "fire_alarm")   # old active awake, new one active
        proc = paused.process.proc
        assert proc is not None
        code = await asyncio.to_thread(proc.wait, 60)
        assert code not in (0, None)
        assert "lost the lease of partition a" in paused.process.log_since(0)
        assert successor.role() == "active"
        await cluster.drain()
        await cluster.until(lambda: len(cluster.fire_notifications()) >= 3, 60,
                            "every fire paged")
        await asyncio.sleep(3)
        assert cluster.alarm_problems() == []
        assert set(cluster.fire_notifications().values()) == {1}
        assert cluster.telemetry_problems() == []
