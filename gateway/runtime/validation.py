"""The validate stage: batches from an MQTT session → validated lines and alarm changes → the
commit queue.

Per message: the watchdog's probe and the priority lane's second copies only get their PUBACK;
everything else goes through :meth:`gateway.ingest.validate.Validator.validate` (where a reading
is validated). A rejection is dead-lettered; an event already evaluated (a redelivery) is
acknowledged once durable and nothing else; accepted messages feed the rule engine, and the
alarm changes and notifications they cause travel in the same :class:`Work` as the lines.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import Callable
from dataclasses import replace

from gateway.alarms.keeper import AlarmKeeper, now_ms
from gateway.ingest.deadletter import DeadLetters
from gateway.ingest.mqtt import Inbound, MqttSession
from gateway.ingest.validate import MessageType, Validated, Validator
from gateway.metrics import Metrics
from gateway.runtime.durability import CommitQueue
from gateway.runtime.lane import SecondCopies
from gateway.runtime.liveness import LivenessFeed
from gateway.runtime.liveview import LiveView
from gateway.runtime.work import Work
from rules.alarm import Transition
from rules.observation import DeviceEvent, Observation
from sensors.base import Rejection

_TYPES = ("telemetry", "event", "status")
#: Batches read but not yet given their PUBACKs, per session. Beyond it the validate stage
#: waits, the inbox fills and reading pauses, so the broker holds the rest (not every broker
#: enforces our MQTT 5 Receive Maximum). Timer and API work never waits for a slot.
PUBACK_BACKLOG = 8

#: Adds alarm changes to a unit of work: their outbox rows, ack-link grants and `alarms` lines.
AddTransitions = Callable[[Work, list[Transition]], None]


class ValidateStage:
    """One per session; they share the validator, the alarm keeper and the commit queue."""

    def __init__(self, *, validator: Validator, keeper: AlarmKeeper | None,
                 add_transitions: AddTransitions, commits: CommitQueue,
                 deadletters: DeadLetters, live: LiveView, metrics: Metrics, batch_size: int,
                 skip: Callable[[Inbound], bool], heard: Callable[[], None],
                 liveness: LivenessFeed | None = None) -> None:
        self._validator = validator
        self._keeper = keeper
        self._add_transitions = add_transitions
        self._commits = commits
        self._deadletters = deadletters
        self._live = live
        self._metrics = metrics
        self._batch_size = batch_size
        # Messages that only need their PUBACK (the watchdog's probe, second copies).
        self._skip = skip
        self._heard = heard
        self._liveness = liveness
        self._counters = {t: metrics.received.labels(type=t) for t in (*_TYPES, "other")}

    async def run(self, session: MqttSession, pubacks: asyncio.Queue[Work],
                  linger_s: float = 0.0) -> None:
        """Validate ``session``'s batches (``linger_s``: see :meth:`MqttSession.batches`)."""
        slots = asyncio.Semaphore(PUBACK_BACKLOG)
        async for batch in session.batches(self._batch_size, linger_s):
            await slots.acquire()
            self._heard()

            def build(batch: list[Inbound] = batch) -> Work:
                # Runs once there is room in the commit queue: the engine step inside and the
                # queueing are one, so alarm changes reach the store in engine order.
                work = Work(pubacks=pubacks, slot=slots)
                self._batch(session, batch, work)
                return work
            await self._commits.submit(build)
            self._metrics.queue_depth.labels(queue="commit").set(self._commits.qsize())

    def _batch(self, session: MqttSession, batch: list[Inbound], work: Work) -> None:
        received: collections.Counter[str] = collections.Counter()
        observed: list[Observation] = []
        event_keys: set[str] = set()
        for msg in batch:
            if self._skip(msg):
                work.messages.append(msg)    # PUBACK in receive order with the batch
                continue
            suffix = msg.topic.rpartition("/")[2]
            received[suffix if suffix in _TYPES else "other"] += 1
            try:
                validated = self._validator.validate(msg.topic, msg.payload, msg.received_at_ms,
                                                     msg.retain)
            except Rejection as rejection:
                self._deadletters.reject(session, msg, rejection)
                continue
            if validated.seq is not None and validated.type is MessageType.EVENT \
                    and self._keeper is not None:
                deduped = self._dedup_event(validated, msg.payload, event_keys)
                if deduped is None:   # a repeat: its PUBACK once durable, nothing else
                    work.messages.append(msg)
                    continue
                validated = deduped
            self._accept(work, msg, validated)
            if self._liveness is not None:   # device_status transitions travel with the batch
                work.lines.extend(self._liveness.accepted(validated, msg.received_at_ms,
                                                          msg.retain))
            if self._keeper is not None and validated.observations:
                observed.extend(validated.observations)
        if observed and self._keeper is not None:
            self._add_transitions(work, self._keeper.observe(observed, now_ms()))
        for mtype, n in received.items():
            self._counters[mtype].inc(n)

    def _accept(self, work: Work, msg: Inbound, validated: Validated) -> None:
        work.lines.extend(validated.lines)
        work.messages.append(msg)
        work.accepted_by_type[validated.type.value] += 1
        work.samples += validated.samples
        self._live.accepted(validated)

    def _dedup_event(self, validated: Validated, payload: bytes,
                     batch_keys: set[str]) -> Validated | None:
        """None for an event already evaluated (broker redelivery after a lost PUBACK, or a
        device resending its publish): a second alarm transition or notification must not
        follow. The key is (device, seq, payload hash); the engine remembers it with its saved
        state, so the check survives a restart. Events without a seq are never repeats."""
        digest = hashlib.blake2b(payload, digest_size=8).hexdigest()
        key = f"{validated.device.device}|{validated.seq}|{digest}"
        engine = self._keeper.engine if self._keeper is not None else None
        if key in batch_keys or (engine is not None and engine.seen_event(key)):
            self._metrics.duplicate_events.inc()
            return None
        batch_keys.add(key)
        return replace(validated, observations=tuple(
            replace(o, dedup_key=key) if isinstance(o, DeviceEvent) else o
            for o in validated.observations))


def second_copy_filter(copies: SecondCopies | None,
                       probe_topic: str) -> Callable[[Inbound], bool]:
    """The messages a validate stage only acknowledges: the watchdog's probe, and with the
    priority lane on, the other session's copy of an event or status message."""
    def skip(msg: Inbound) -> bool:
        return msg.topic == probe_topic or (copies is not None and copies.is_second(msg))
    return skip
