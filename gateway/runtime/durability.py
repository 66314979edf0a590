"""The durability stages: what is read becomes durable, then the broker gets its PUBACKs.

::

    [commit queue] ─▶ CommitStage: priority lines (alarms, events, status) → priority WAL (fsync)
                        → alarm store (transitions, outbox, ack links, engine state: one SQLite
                        transaction) → retained alarm documents, notifier woken, API answered
                                │ telemetry lines and the messages
                                ▼
    [puback queue] ─▶ PubackStage (one per session): telemetry → bulk WAL (fsync) → PUBACK every
                        message of the batch, in receive order

Alarms first: a full telemetry log (InfluxDB down for days, block policy) holds up only the
puback stage, never an alarm, an escalation or an acknowledgement made through the API; and
the priority lane's session has its own puback stage that never waits behind telemetry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.alarms.keeper import AlarmKeeper
from gateway.ingest.mqtt import MqttSession
from gateway.metrics import Metrics
from gateway.notify.notifier import Notifier
from gateway.runtime.work import Work
from gateway.storage.wal import Wal, WalPosition
from gateway.storage.walstreams import WalStreams, split_lines
from rules.alarm import Transition

#: Units of work committed together at most (one priority-log fsync, one SQLite transaction).
MAX_COALESCE = 64

#: Builds a unit of work (None: nothing to commit). Runs with room reserved, so no await.
Build = Callable[[], Work | None]


class CommitQueue:
    """The bounded queue in front of the commit stage, where building a unit of work and
    queueing it are one step.

    Alarm changes must reach the store in the order the engine made them: a step that resolves
    an alarm and a later one that opens its successor for the same fingerprint, applied the
    other way round, break the store's one-active-alarm rule and stop the commit stage. With a
    plain bounded ``asyncio.Queue`` a producer that computed its changes first can be overtaken
    while it waits for room (``put`` lets a newcomer in when room appears before the waiter
    runs). Here a producer first reserves room, then builds (the engine step) and queues without
    an await in between, so the queue's order is the order of the engine's steps.
    """

    def __init__(self, maxsize: int) -> None:
        self._slots = asyncio.Semaphore(maxsize)
        self.queue: asyncio.Queue[Work] = asyncio.Queue()

    async def submit(self, build: Build) -> Work | None:
        """Reserve room (backpressure: waits while the queue is full), then build and queue."""
        await self._slots.acquire()
        try:
            work = build()
        except BaseException:
            self._slots.release()
            raise
        if work is None:
            self._slots.release()
            return None
        work.commit_slot = self._slots
        self.queue.put_nowait(work)
        return work

    def qsize(self) -> int:
        return self.queue.qsize()


class CommitStage:
    """Makes priority lines and alarm changes durable, in order, and sends alarm changes out."""

    def __init__(self, *, queue: CommitQueue, wal: WalStreams,
                 keeper: AlarmKeeper | None, notifier: Notifier | None,
                 publish_alarms: Callable[[list[Transition]], None], state_save_s: float,
                 default_pubacks: asyncio.Queue[Work]) -> None:
        self.queue = queue
        self._wal = wal
        self._keeper = keeper
        self._notifier = notifier
        self._publish_alarms = publish_alarms
        self._state_save_s = state_save_s
        self._default_pubacks = default_pubacks
        self._state_saved_at = 0.0

    def state_save_due(self) -> bool:
        return time.monotonic() - self._state_saved_at >= self._state_save_s

    async def run(self) -> None:
        queue = self.queue.queue
        while True:
            work = await queue.get()
            # Whatever else is already queued is committed with it: one fsync of the priority
            # log and one SQLite transaction for the lot (a burst of UITD frames, each waiting
            # for its own ACK, would otherwise pay two fsyncs each).
            batch = [work]
            while len(batch) < MAX_COALESCE and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._commit(batch)
            except BaseException as exc:
                for w in batch:
                    if w.done is not None and not w.done.done():
                        w.done.set_exception(exc)
                raise
            finally:
                for w in batch:
                    w.release_commit_slot()
                    queue.task_done()

    async def _commit(self, batch: list[Work]) -> None:
        """Make a batch durable in queue order (alarm changes stay in engine order)."""
        split = [split_lines(w.lines) for w in batch]
        priority = [line for lines, _ in split for line in lines]
        if priority:
            await self._wal.priority.append(priority)
        transitions = [t for w in batch for t in w.transitions]
        outbox = [row for w in batch for row in w.outbox]
        keeper = self._keeper
        if keeper is not None and (transitions or outbox or self.state_save_due()
                                   or any(w.save_state for w in batch)):
            await keeper.persist(transitions, with_state=True, outbox=outbox,
                                 grants=[g for w in batch for g in w.grants])
            self._state_saved_at = time.monotonic()
        self._publish_alarms(transitions)
        if outbox and self._notifier is not None:
            self._notifier.wake()
        for work, (_, bulk) in zip(batch, split, strict=True):
            self._hand_on(work, bulk)

    def _hand_on(self, work: Work, bulk: list[str]) -> None:
        # Work that carries telemetry (a UITD frame's analog values) is durable only once the
        # bulk WAL has it too: the puback stage resolves ``done`` then.
        if work.done is not None and not work.done.done() and not bulk:
            work.done.set_result(None)
        if work.messages or bulk:
            work.lines = bulk
            # Never blocks: only work from a validate stage comes here, and that holds a slot
            # of its session's PUBACK backlog until the messages got their PUBACKs.
            (work.pubacks or self._default_pubacks).put_nowait(work)
        else:
            work.release()


class PubackStage:
    """Telemetry into its log, then the PUBACKs, in receive order, for one session. Under the
    block policy this is where ingest waits for room; the broker keeps what has no PUBACK.

    ``after_delivery`` (``ingest.ack_after: influx``): a batch gets its PUBACKs only once
    InfluxDB accepted every line appended so far (the WAL checkpoints passed the batch's end),
    so the broker, not this host's disk, holds whatever is not in InfluxDB yet and a standby
    on another host gets it redelivered (docs/scale.md). Batches wait in a second, in-order
    queue so the WAL keeps filling while earlier batches are in flight to InfluxDB: the writer
    still sends full batches.

    ``may_ack`` (a partition's lease, gateway/cluster/lease.py): asked before every PUBACK;
    once false nothing more is acknowledged and the stage fails with the reason, so the
    gateway stops (crash-only) and what was not acknowledged is redelivered to the standby.
    """

    def __init__(self, *, wal: WalStreams, session: Callable[[], MqttSession | None],
                 metrics: Metrics, after_delivery: bool = False,
                 may_ack: Callable[[], None] | None = None) -> None:
        self.queue: asyncio.Queue[Work] = asyncio.Queue()
        self._wal = wal
        self._session = session
        self._metrics = metrics
        self._after_delivery = after_delivery
        self._may_ack = may_ack
        self._delivering: asyncio.Queue[tuple[Work, list[tuple[Wal, WalPosition]]]] = \
            asyncio.Queue()

    async def run(self) -> None:
        if not self._after_delivery:
            await self._append_and_ack()
            return
        async with asyncio.TaskGroup() as group:
            group.create_task(self._append_and_ack(), name="puback-append")
            group.create_task(self._ack_delivered(), name="puback-delivered")

    async def _append_and_ack(self) -> None:
        while True:
            work = await self.queue.get()
            handed_on = False
            try:
                if work.lines:               # telemetry only (split by the commit stage)
                    await self._wal.bulk.append(work.lines)
                if self._after_delivery:
                    # Priority lines of this batch went in at the commit stage, before it:
                    # every stream's end now lies at or past this batch's last line.
                    marks = [(w, w.end) for w in self._wal.streams]
                    self._delivering.put_nowait((work, marks))
                    handed_on = True
                else:
                    self._ack(work)
            finally:
                if not handed_on:
                    work.release()
                    self.queue.task_done()

    async def _ack_delivered(self) -> None:
        while True:
            work, marks = await self._delivering.get()
            try:
                for wal, mark in marks:
                    await wal.wait_delivered(mark, None)
                self._ack(work)
            finally:
                work.release()
                self.queue.task_done()

    def _ack(self, work: Work) -> None:
        if self._may_ack is not None and work.messages:
            self._may_ack()                  # raises: no PUBACK for this batch or any later
        if work.done is not None and not work.done.done():
            work.done.set_result(None)
        current = self._session()
        if current is not None:
            current.puback_all(work.messages)   # where a PUBACK is sent
        for mtype, n in work.accepted_by_type.items():
            self._metrics.accepted.labels(type=mtype).inc(n)
        self._metrics.readings.inc(work.samples)
