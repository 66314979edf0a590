"""Alarm changes reach the store in the order the engine made them (gateway/runtime/durability.py,
CommitQueue). Found by the throughput benchmark: under load, a tick that opened a new
device_offline alarm overtook the step that resolved the previous one for the same device, the
store refused a second active alarm for one fingerprint, and the commit stage stopped."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from gateway.runtime.durability import CommitQueue
from gateway.runtime.work import Work


async def _consume(queue: asyncio.Queue[Work], seen: list[int], total: int) -> None:
    while len(seen) < total:
        work = await queue.get()
        await asyncio.sleep(0)           # the commit stage awaits its fsync
        seen.append(int(work.lines[0]))
        work.release_commit_slot()
        queue.task_done()


async def test_a_plain_bounded_queue_lets_a_later_step_overtake() -> None:
    """Why CommitQueue exists: with ``asyncio.Queue.put`` a producer that built its step first
    can be overtaken while it waits for room."""
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(0)
    first = asyncio.create_task(queue.put(1))     # built step 1, waits for room
    await asyncio.sleep(0)
    queue.get_nowait()                             # the consumer frees the room ...
    queue.put_nowait(2)                            # ... and step 2 (built later) takes it
    await asyncio.sleep(0)
    order = [queue.get_nowait()]
    await first
    order.append(queue.get_nowait())
    assert order == [2, 1]


async def test_work_is_queued_in_the_order_it_was_built() -> None:
    commits = CommitQueue(2)
    steps = itertools.count()
    built: list[int] = []
    seen: list[int] = []
    rng = random.Random(7)

    def build() -> Work:
        n = next(steps)
        built.append(n)
        return Work(lines=[str(n)])

    async def producer() -> None:
        for _ in range(200):
            if rng.random() < 0.5:
                await asyncio.sleep(0)
            await commits.submit(build)

    total = 5 * 200
    consumer = asyncio.create_task(_consume(commits.queue, seen, total))
    await asyncio.gather(*(producer() for _ in range(5)))
    await asyncio.wait_for(consumer, timeout=10)
    assert seen == built == list(range(total))


async def test_a_build_that_fails_or_has_nothing_gives_the_room_back() -> None:
    commits = CommitQueue(1)

    def broken() -> Work:
        raise KeyError("unknown alarm")

    for _ in range(3):
        with pytest.raises(KeyError):
            await commits.submit(broken)
        assert await commits.submit(lambda: None) is None
    work = await asyncio.wait_for(commits.submit(lambda: Work(lines=["x"])), timeout=1)
    assert work is not None
    assert commits.qsize() == 1
