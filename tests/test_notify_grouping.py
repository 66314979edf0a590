"""200 alarms at once: grouped into digests within the rate limit; fire alarms not delayed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.alarmstore import AlarmStore
from gateway.metrics import Metrics
from gateway.notify.base import Notification, SendResult
from gateway.notify.dispatcher import DIGEST_ITEMS, Dispatcher, RateLimit
from gateway.notify.outbox import Outbox, outbox_row
from tests.conftest import wait_for


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
        tmp_path: Path) -> None:
    store = AlarmStore(tmp_path / "alarms.sqlite3")
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
