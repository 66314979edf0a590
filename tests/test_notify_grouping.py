"""200 alarms at once: grouped into digests within the rate limit; fire alarms not delayed."""

from __future__ import annotations

import asyncio
import time

from gateway.alarms.store import AlarmStore
from gateway.metrics import Metrics
from gateway.notify.base import Notification, SendResult
from gateway.notify.dispatcher import DIGEST_ITEMS, Dispatcher, RateLimit
from gateway.notify.outbox import Outbox, outbox_row
from tests.support.alarmstores import StoreTarget
from tests.support.waiting import wait_for


class RecordingChannel:
    """Stands for a robot: records what it would have posted."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[tuple[float, Notification]] = []

    async def send(self, notification: Notification) -> SendResult:
        self.sent.append((time.monotonic(), notification))
        return SendResult.sent(provider_id=f"m{len(self.sent)}")

    async def close(self) -> None:
        return None


def _n(i: int, *, fire: bool = False) -> Notification:
    rule = "fire_alarm" if fire else "environment_temperature_high"
    return Notification(key=f"a{i}:firing:0:0:ops:robot", channel="robot", recipient="",
                        title=f"{rule} {i}", text=f"alarm {i} in b2 [ack](http://x/ack/{i})",
                        alarm={"alarm_id": f"a{i}", "rule": rule, "building": "b2"})


async def test_two_hundred_alarms_become_digests_within_the_limit_and_fire_goes_first(
        alarm_target: StoreTarget) -> None:
    store = alarm_target.store()
    await store.open()
    try:
        now = int(time.time() * 1000)
        rows = [outbox_row(_n(i), now_ms=now, due_ms=now, deadline_ms=now + 3_600_000,
                           fire_class=False) for i in range(200)]
        rows.append(outbox_row(_n(999, fire=True), now_ms=now, due_ms=now,
                               deadline_ms=now + 3_600_000, fire_class=True))
        await store.apply([], outbox=rows)
        robot = RecordingChannel("robot")
        audit: list[str] = []

        async def record(lines: list[str]) -> None:
            audit.extend(lines)

        outbox = Outbox(store)
        dispatcher = Dispatcher(outbox=outbox, channels={"robot": robot}, metrics=Metrics(),
                                audit=record, rate_limits={"robot": RateLimit(20, 60.0)})
        started = time.monotonic()
        task = asyncio.create_task(dispatcher.run())
        try:
            async def all_sent() -> bool:
                return (await outbox.counts()).get("sent", 0) == 201
            await wait_for(all_sent, timeout_s=10, what="every row sent")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        fire = [(t, n) for t, n in robot.sent if n.alarm["rule"] == "fire_alarm"]
        assert len(fire) == 1
        assert fire[0][0] - started < 1.0            # not held behind the 200 others
        others = [n for _, n in robot.sent if n.alarm["rule"] != "fire_alarm"]
        assert len(others) <= 2                      # two hundred alarms, one or two messages
        assert others[0].title.startswith("[")       # a digest says how many it carries
        carried = [int(n.title[1:n.title.index("]")]) if n.title.startswith("[") else 1
                   for n in others]
        assert sum(carried) == 200
        assert others[0].text.count("alarm ") == DIGEST_ITEMS
        assert f"+{carried[0] - DIGEST_ITEMS}" in others[0].text
        assert len(robot.sent) <= 20                 # within the robot's 20/min
        assert len(audit) == 201                     # one audit point per notification
    finally:
        await store.close()


def _g(i: int, group: str, *, channel: str = "robot", recipient: str = "") -> Notification:
    return Notification(key=f"g{i}:firing:0:0:ops:{channel}", channel=channel,
                        recipient=recipient, title=f"alarm {i}", text=f"alarm {i} in {group}",
                        alarm={"alarm_id": f"g{i}", "rule": "door_held_open", "building": group})


class FlakyChannel(RecordingChannel):
    """Answers 'retry' to the first ``failures`` attempts."""

    def __init__(self, name: str, failures: int) -> None:
        super().__init__(name)
        self.failures = failures

    async def send(self, notification: Notification) -> SendResult:
        if self.failures > 0:
            self.failures -= 1
            return SendResult.retry("503", retry_after_s=0.2)
        return await super().send(notification)


async def _dispatch(store: AlarmStore, channel: RecordingChannel,
                    **kwargs: object) -> tuple[Outbox, Dispatcher, asyncio.Task[None]]:
    outbox = Outbox(store)

    async def record(lines: list[str]) -> None:
        return None

    dispatcher = Dispatcher(outbox=outbox, channels={channel.name: channel}, metrics=Metrics(),
                            audit=record, **kwargs)  # type: ignore[arg-type]
    await dispatcher.open(int(time.time() * 1000))
    return outbox, dispatcher, asyncio.create_task(dispatcher.run())


async def _enqueue(store: AlarmStore, notes: list[tuple[Notification, str]],
                   interval_ms: int) -> None:
    now = int(time.time() * 1000)
    await store.apply([], outbox=[
        outbox_row(n, now_ms=now, due_ms=now, deadline_ms=now + 3_600_000, fire_class=False,
                   group_key=group, group_interval_ms=interval_ms) for n, group in notes])


async def test_group_by_merges_a_group_and_holds_it_for_the_group_interval(
        alarm_target: StoreTarget) -> None:
    store = alarm_target.store()
    await store.open()
    robot = RecordingChannel("robot")
    outbox, dispatcher, task = await _dispatch(store, robot)
    try:
        # Three alarms of building b1 and one of b2 at once: one message per group.
        await _enqueue(store, [(_g(1, "b1"), "b1"), (_g(2, "b1"), "b1"), (_g(3, "b1"), "b1"),
                               (_g(4, "b2"), "b2")], interval_ms=1500)
        dispatcher.wake()
        await wait_for(lambda: len(robot.sent) == 2, timeout_s=10, what="two group messages")
        titles = sorted(n.title for _, n in robot.sent)
        assert titles == ["[3] alarm 1", "alarm 4"]
        first_b1 = next(t for t, n in robot.sent if n.title.startswith("[3]"))
        # Two more b1 alarms right after: they wait for b1's group interval, then leave as one.
        await _enqueue(store, [(_g(5, "b1"), "b1"), (_g(6, "b1"), "b1")], interval_ms=1500)
        dispatcher.wake()
        async def all_sent() -> bool:
            return (await outbox.counts()) == {"sent": 6}
        await wait_for(all_sent, timeout_s=10, what="the held group")
        at, late = robot.sent[2]
        assert late.title == "[2] alarm 5"
        assert at - first_b1 >= 1.4       # not before the interval (clock granularity aside)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def test_a_failed_digest_is_retried_whole_and_not_held_by_the_group_interval(
        alarm_target: StoreTarget) -> None:
    store = alarm_target.store()
    await store.open()
    robot = FlakyChannel("robot", failures=1)
    outbox, dispatcher, task = await _dispatch(store, robot)
    try:
        await _enqueue(store, [(_g(i, "b1"), "b1") for i in range(4)], interval_ms=600_000)
        dispatcher.wake()
        async def all_sent() -> bool:
            return (await outbox.counts()) == {"sent": 4}
        await wait_for(all_sent, timeout_s=10, what="the retried digest recorded")
        assert [n.title for _, n in robot.sent] == ["[4] alarm 0"]  # one message, all four
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def test_group_interval_survives_a_restart(alarm_target: StoreTarget) -> None:
    store = alarm_target.store()
    await store.open()
    robot = RecordingChannel("robot")
    outbox, dispatcher, task = await _dispatch(store, robot)
    try:
        await _enqueue(store, [(_g(1, "b1"), "b1")], interval_ms=600_000)
        dispatcher.wake()
        await wait_for(lambda: len(robot.sent) == 1, timeout_s=10, what="first message")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # A new dispatcher (the gateway restarted) must still hold b1 for its interval.
    robot2 = RecordingChannel("robot")
    outbox, dispatcher, task = await _dispatch(store, robot2)
    try:
        await _enqueue(store, [(_g(2, "b1"), "b1"), (_g(3, "b2"), "b2")], interval_ms=600_000)
        dispatcher.wake()
        async def b2_recorded() -> bool:
            return (await outbox.counts()).get("sent") == 2
        await wait_for(b2_recorded, timeout_s=10, what="b2's message")
        await asyncio.sleep(0.5)
        assert [n.title for _, n in robot2.sent] == ["alarm 3"]
        assert (await outbox.counts()) == {"sent": 2, "pending": 1}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def test_webhook_rows_are_never_merged_even_behind_a_rate_limit(
        alarm_target: StoreTarget) -> None:
    store = alarm_target.store()
    await store.open()
    hook = RecordingChannel("hook")
    _outbox, dispatcher, task = await _dispatch(
        store, hook, rate_limits={"hook": RateLimit(3, 0.5)}, unmergeable={"hook"})
    try:
        await _enqueue(store, [(_g(i, "b1", channel="hook"), "") for i in range(7)],
                       interval_ms=0)
        dispatcher.wake()
        await wait_for(lambda: len(hook.sent) == 7, timeout_s=10, what="seven requests")
        assert all(not n.title.startswith("[") for _, n in hook.sent)   # one document each
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def test_finished_rows_older_than_the_retention_are_pruned(alarm_target: StoreTarget) -> None:
    store = alarm_target.store()
    await store.open()
    try:
        outbox = Outbox(store)
        old, now = 1_000, 100 * 86_400_000
        rows = [outbox_row(_g(i, "b1"), now_ms=old if i < 3 else now, due_ms=old,
                           deadline_ms=old + 1, fire_class=False) for i in range(5)]
        await store.apply([], outbox=rows)
        for i in (0, 1, 3):
            await outbox.record(f"g{i}:firing:0:0:ops:robot", SendResult.sent(), now_ms=old)
        # Old and finished: gone. Old but still pending: kept. New: kept.
        assert await outbox.prune(now - 30 * 86_400_000) == 2
        assert await outbox.counts() == {"pending": 2, "sent": 1}
    finally:
        await store.close()
