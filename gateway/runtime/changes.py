"""Alarm changes and lines from outside the message flow, committed in engine order.

A person's acknowledgement, a maintenance window, a UITD frame, a panel's link going silent:
each runs its engine step only once there is room in the commit queue (see
:class:`gateway.runtime.durability.CommitQueue`), so every change reaches the alarm store in the
order the engine made it. ``commit_*`` return once durable; ``later`` runs one in the background
for callers that cannot wait (synchronous callbacks of the UITD server).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from gateway.alarms.keeper import AlarmKeeper, now_ms
from gateway.runtime.durability import CommitQueue
from gateway.runtime.work import Work
from rules.alarm import Transition
from rules.observation import Observation

#: Adds alarm changes to a unit of work: their outbox rows, ack-link grants and `alarms` lines.
AddTransitions = Callable[[Work, list[Transition]], None]


class Changes:
    def __init__(self, *, commits: CommitQueue, keeper: AlarmKeeper | None,
                 add_transitions: AddTransitions) -> None:
        self._commits = commits
        self._keeper = keeper
        self._add = add_transitions
        self._background: set[asyncio.Task[None]] = set()

    async def commit_transitions(self, change: Callable[[], list[Transition]]
                                 ) -> list[Transition]:
        """Make an alarm change (a person's acknowledgement, maintenance) durable and visible;
        returns its transitions once they are in the alarm store. An exception ``change`` raises
        (an unknown alarm, a second acknowledgement) commits nothing."""
        done = asyncio.get_running_loop().create_future()
        made: list[Transition] = []

        def build() -> Work:
            work = Work(save_state=True, done=done)
            made.extend(change())
            self._add(work, made)
            return work
        await self._commits.submit(build)
        await done
        return made

    async def commit_observed(self, lines: list[str],
                              observations: Sequence[Observation]) -> None:
        """Evaluate observations and make them, their lines and the alarm changes they cause
        durable (priority WAL, alarm store with the engine's state and its dedup keys, bulk WAL);
        returns only then."""
        done = asyncio.get_running_loop().create_future()
        keeper = self._keeper

        def build() -> Work:
            work = Work(lines=list(lines), save_state=True, done=done)
            if keeper is not None and observations:
                self._add(work, keeper.observe(observations, now_ms()))
            return work
        await self._commits.submit(build)
        await done

    async def commit_change(self, change: Callable[[], list[Transition]]) -> None:
        """Run an engine step in commit order and queue its alarm changes, if it made any."""
        def build() -> Work | None:
            made = change()
            if not made:
                return None
            work = Work()
            self._add(work, made)
            return work
        await self._commits.submit(build)

    async def commit_lines(self, lines: list[str]) -> None:
        await self._commits.submit(lambda: Work(lines=lines))

    def later(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)   # a task nobody holds may be collected before it ends
        task.add_done_callback(self._background.discard)
