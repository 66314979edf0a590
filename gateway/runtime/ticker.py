"""Work that runs on the clock, not on message arrival.

- :class:`AlarmTicker` (every ``alarms.tick_s``): rule timers (for-durations, silence, doors),
  gateway-health conditions, escalation tiers and fire-class repeats that fell due.
- :class:`StatsStage` (every ``observe.gateway_interval_s``): the ``gateway`` measurement.
- :class:`LivenessTicker`: devices whose silence allowance ran out (every ``alarms.tick_s``), a
  snapshot of every device (every ``observe.liveness_snapshot_s``) and their last-heard times
  saved in the alarm store (every ``alarms.state_save_s``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable

from gateway.alarms.health import GatewayHealth
from gateway.alarms.keeper import AlarmKeeper, now_ms
from gateway.metrics import Metrics
from gateway.notify.notifier import Notifier
from gateway.runtime.durability import CommitQueue, CommitStage
from gateway.runtime.liveness import LivenessFeed
from gateway.runtime.work import Work
from gateway.storage.lineprotocol import encode_line, escape_measurement, tag_set
from gateway.storage.walstreams import WalStreams
from rules.alarm import Transition


class AlarmTicker:
    def __init__(self, *, keeper: AlarmKeeper, health: GatewayHealth, notifier: Notifier | None,
                 commit: CommitStage, add_transitions: Callable[[Work, list[Transition]], None],
                 check_storage: Callable[[], None], tick_s: float) -> None:
        self._keeper = keeper
        self._health = health
        self._notifier = notifier
        self._commit = commit
        self._add_transitions = add_transitions
        self._check_storage = check_storage
        self._tick_s = tick_s

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            await self._commit.queue.submit(self._step)

    def _step(self) -> Work | None:
        """One tick, built with room reserved in the commit queue (see CommitQueue)."""
        work = Work()
        now = now_ms()
        self._add_transitions(work, self._keeper.tick(now))
        self._check_storage()
        conditions = self._health.take()
        if conditions:
            self._add_transitions(work, self._keeper.conditions(conditions, now))
        if self._notifier is not None:
            # Escalation tiers and fire-class repeats that fell due (no I/O: cheap).
            work.outbox.extend(self._notifier.tick(now))
            work.grants.extend(self._notifier.take_grants())
        if work.transitions or work.outbox or self._commit.state_save_due():
            return work
        return None


class StatsStage:
    """The gateway's own counters and gauges as one `gateway` point, through the WAL."""

    def __init__(self, *, wal: WalStreams, metrics: Metrics, instance: str,
                 interval_s: float) -> None:
        self._wal = wal
        self._metrics = metrics
        self._interval_s = interval_s
        self._measurement = escape_measurement("gateway")
        self._tags = tag_set({"instance": instance})

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            fields: dict[str, float | int | bool | str] = dict(self._metrics.flat())
            line = encode_line(self._measurement, self._tags, fields, time.time_ns() // 1_000_000)
            await self._wal.append([line])


#: Saves liveness rows (AlarmStore.save_liveness).
SaveLiveness = Callable[[list[tuple[str, int | None, bool, str]]], Awaitable[None]]


class LivenessTicker:
    """Device liveness on the clock; its lines go through the commit queue like the lines of
    the messages that feed it, so they reach the priority WAL in order."""

    def __init__(self, *, feed: LivenessFeed, commits: CommitQueue, save: SaveLiveness | None,
                 tick_s: float, snapshot_s: float, save_s: float) -> None:
        self._feed = feed
        self._commits = commits
        self._save = save
        self._tick_s = tick_s
        self._snapshot_s = snapshot_s
        self._save_s = save_s

    async def run(self) -> None:
        # A snapshot at once: the states restored from the last run are the truth until
        # something changes them, and a dashboard should not wait a minute to learn them.
        await self._commits.submit(lambda: self._work(snapshot=True))
        loop = asyncio.get_running_loop()
        next_snapshot = loop.time() + self._snapshot_s
        next_save = loop.time() + self._save_s
        while True:
            await asyncio.sleep(self._tick_s)
            snapshot = loop.time() >= next_snapshot
            if snapshot:
                next_snapshot += self._snapshot_s * max(
                    1, int((loop.time() - next_snapshot) // self._snapshot_s) + 1)
            await self._commits.submit(functools.partial(self._work, snapshot=snapshot))
            if loop.time() >= next_save:
                next_save = loop.time() + self._save_s
                await self.save()

    async def save(self) -> None:
        """The last-heard times and states changed since the last save (also at shutdown)."""
        rows = self._feed.take_dirty()
        if rows and self._save is not None:
            await self._save(rows)

    def _work(self, *, snapshot: bool) -> Work | None:
        now = now_ms()
        lines = self._feed.tick(now)
        if snapshot:
            lines.extend(self._feed.snapshot(now))
        return Work(lines=lines) if lines else None
