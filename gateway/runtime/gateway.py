"""The running gateway: a few explicit stages joined by bounded queues.

::

    MQTT broker ──QoS 1, manual ack, window = receive_maximum──┐
                                                               ▼
      [inbox]  MqttSession: reading pauses when full (policy: block; the broker holds messages)
         │ batches of ≤ ingest.commit_batch
         ▼
      validate ── Validator: topic → registry → spoofing guard → decoder → line protocol
         │   │                                     └── observations ──▶ rule engine (pure)
         │   └── rejected ──▶ dead-letter publish ──PUBACK──▶ ack original
         ▼                          alarm ticker (1 s) ──▶ rule engine timers ──┐
      [commit queue]  bounded (4 batches; policy: block)  ◀── API acks ─────────┘
         │
      commit ── priority WAL (alarms, events, status; fsync) ──▶ alarm store (SQLite)
         │      ──▶ retained parkwatch/alarms/... documents, notifier woken, API ack answered
         ▼
      [ack queue]  only work carrying messages (bounded by the broker's receive window)
         │
      ack ──── bulk WAL (telemetry; fsync) ──▶ ack every message of the batch, in order
         │      (waits here when the telemetry log is full: alarms never wait behind it)
         │
      [write-ahead log on disk]  priority + bulk streams under wal.max_bytes
         │      (wal.full_policy: block → stop acking, or drop_oldest_telemetry)
         │
      writer ── InfluxWriter: priority stream first, batch by size/interval → InfluxDB
      stats  ── every observe.gateway_interval_s: the `gateway` measurement, via the WAL

Stages start downstream-first and stop upstream-first, so in-flight data drains into the WAL
and is acknowledged before the MQTT session closes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

from gateway.alarms.acklinks import AckGrant, AckLinks
from gateway.alarms.book import AlarmKeeper, alarm_line, alarm_topic, retained_payload
from gateway.alarms.book import now_ms as _now_ms
from gateway.config import Settings
from gateway.ingest import deadletter
from gateway.ingest.mqtt import Inbound, MqttSession, Will
from gateway.ingest.validate import Validated, Validator
from gateway.ingest.watchdog import Heartbeat, IngestWatchdog
from gateway.logs import RateLimited
from gateway.metrics import Metrics
from gateway.notify.notifier import Notifier
from gateway.notify.outbox import Pending
from gateway.storage.influx.factory import make_sink
from gateway.storage.influx.writer import InfluxWriter
from gateway.storage.lineprotocol import encode_line, escape_measurement, tag_set
from gateway.storage.walstreams import WalStreams, split_lines
from rules.alarm import Alarm, Severity, Subject, Transition
from rules.observation import DeviceEvent, Observation
from rules.system import (
    INGEST_STALLED,
    NOTIFICATION_DEAD,
    STORAGE_FULL,
    SYSTEM_KIND,
    HealthCondition,
)
from sensors.base import Rejection
from sensors.errors import ParkWatchError
from sensors.registry import Registry

log = logging.getLogger(__name__)

_TYPES = ("telemetry", "event", "status")
#: Gateway-health reports waiting for the next tick; beyond this a storm of them is dropped
#: (one active alarm per condition is all they can produce anyway).
MAX_PENDING_CONDITIONS = 1000
#: Batches read but not yet acknowledged, per session. Beyond it the validate stage waits, the
#: inbox fills and reading pauses, so the broker holds the rest (not every broker enforces our
#: MQTT 5 Receive Maximum). Timer and API work never waits for a slot.
ACK_BACKLOG = 8
#: Event/status messages remembered to recognise the other session's copy.
LANE_MEMORY = 200_000


@dataclass
class _Committable:
    """One unit of durability: lines for the WAL, alarm changes for SQLite, messages to ack."""

    lines: list[str]
    messages: list[Inbound]
    accepted_by_type: collections.Counter[str] = field(default_factory=collections.Counter)
    samples: int = 0
    transitions: list[Transition] = field(default_factory=list)
    outbox: list[tuple[Any, ...]] = field(default_factory=list)
    grants: list[AckGrant] = field(default_factory=list)
    save_state: bool = False
    #: Resolved once everything above is durable (an API acknowledgement waits on it).
    done: asyncio.Future[None] | None = None
    #: Where its messages are acknowledged: the ack stage of the session they came from.
    acks: asyncio.Queue[_Committable] | None = None
    #: Taken by the validate stage, given back when the work is acknowledged (ack backlog).
    slot: asyncio.Semaphore | None = None

    def release(self) -> None:
        if self.slot is not None:
            self.slot.release()
            self.slot = None


class Gateway:
    """Owns the stages, their queues and the state the status endpoints show."""

    def __init__(self, *, settings: Settings, registry: Registry,
                 metrics: Metrics | None = None,
                 on_delivered: Callable[[Sequence[bytes]], None] | None = None) -> None:
        self.settings = settings
        self._on_delivered = on_delivered
        self.registry = registry
        self.metrics = metrics or Metrics()
        self.started_at = time.time()
        # Last accepted message per device (bounded by the registry): the live view's source.
        self.latest: dict[str, Validated] = {}
        self.untrusted_clock_devices: set[str] = set()
        self._last_seq: dict[str, int] = {}
        self.validator = Validator(
            registry=registry, root=settings.mqtt.topic_root,
            timezones={p: ZoneInfo(s.timezone) for p, s in settings.parks.items()},
            default_timezone=ZoneInfo(settings.default_timezone),
            max_payload_bytes=settings.ingest.max_payload_bytes,
            max_age_s=settings.ingest.max_age_s, max_future_s=settings.ingest.max_future_s,
            max_batch=settings.ingest.max_batch,
            device_rate_per_s=settings.ingest.device_rate_per_s,
            device_burst=settings.ingest.device_burst)
        self.status_topic = f"parkwatch/gateway/{settings.instance}/status"
        self.probe_topic = f"parkwatch/gateway/{settings.instance}/probe"
        self.watchdog: IngestWatchdog | None = None
        hb = settings.observe.heartbeat_url
        self.heartbeat = Heartbeat(url=hb.get_secret_value() if hb else None,
                                   interval_s=settings.observe.heartbeat_s)
        self._commit_q: asyncio.Queue[_Committable] = asyncio.Queue(maxsize=4)
        self._ack_q: asyncio.Queue[_Committable] = asyncio.Queue()
        self._prio_ack_q: asyncio.Queue[_Committable] = asyncio.Queue()
        self._slots: dict[int, asyncio.Semaphore] = {}
        self.priority_session: MqttSession | None = None
        self._lane_acks: list[asyncio.Task[None]] = []
        # Events and status reach us on both sessions when the priority lane is on: the first
        # copy is evaluated, the second only acknowledged (hash of topic and payload, 1 h).
        self._lane_seen: collections.OrderedDict[bytes, float] = collections.OrderedDict()
        self._reject_log = RateLimited(log)
        self._pending_deadletters: set[asyncio.Future[None]] = set()
        self.session: MqttSession | None = None
        self.wal: WalStreams | None = None
        self.writer: InfluxWriter | None = None
        self.ready = asyncio.Event()
        self.alarms: AlarmKeeper | None = None
        self.notifier: Notifier | None = None
        self.ack_links: AckLinks | None = None
        if settings.alarms.enabled:
            self.alarms = AlarmKeeper.from_paths(rules_path=settings.rules, registry=registry,
                                               state_dir=settings.state_dir,
                                               lateness_s=settings.alarms.lateness_s)
        if self.alarms is not None and settings.notify.ack_secret is not None:
            http = settings.http
            self.ack_links = AckLinks(
                secret=settings.notify.ack_secret.get_secret_value().encode(),
                base_url=settings.notify.public_url or f"http://{http.host}:{http.port}",
                store=self.alarms.store, ttl_s=settings.notify.ack_ttl_s)
        self._state_saved_at = 0.0
        # Gateway-health conditions waiting for the alarm ticker (rules/system.py).
        self._conditions: list[HealthCondition] = []
        self._dead_channels: dict[tuple[str, str], Subject] = {}
        self._storage_alarmed = False
        self._counters = {t: self.metrics.received.labels(type=t) for t in (*_TYPES, "other")}

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then drain and shut down in order."""
        s = self.settings
        # Priority (alarms, events, status) and bulk telemetry streams under one disk cap.
        self.wal = WalStreams(s.state_dir / "wal", segment_bytes=s.wal.segment_bytes,
                              max_bytes=s.wal.max_bytes, fsync=s.wal.fsync,
                              full_policy=s.wal.full_policy,
                              priority_share=s.wal.priority_share, metrics=self.metrics)
        await self.wal.open()
        if self.alarms is not None:
            await self.alarms.open()
            self.notifier = await self._open_notifier(self.alarms, self.wal)
        sink = await _make_sink(s)
        # /healthz should tell the truth from the first second, not after the first write.
        self.metrics.influx_reachable.set(1 if await sink.ping() else 0)
        self.writer = InfluxWriter(wal=self.wal, sink=sink, metrics=self.metrics,
                                   batch_lines=s.influx.batch_lines,
                                   flush_interval_s=s.influx.flush_interval_s,
                                   max_backoff_s=s.influx.max_backoff_s,
                                   on_delivered=self._on_delivered)
        writer_task = asyncio.create_task(self.writer.run(), name="influx-writer")
        commit_task = asyncio.create_task(self._commit_stage(), name="commit")
        ack_task = asyncio.create_task(self._ack_stage(self._ack_q, lambda: self.session),
                                       name="ack")
        stats_task = asyncio.create_task(self._stats_stage(), name="gateway-stats")
        stages = [writer_task, commit_task, ack_task, stats_task]
        if self.notifier is not None:
            self.notifier.start()
        if self.alarms is not None:
            stages.append(asyncio.create_task(self._alarm_ticker(), name="alarm-ticker"))
        failed: list[asyncio.Task[None]] = []
        deadline: float | None = None
        session = MqttSession(
            settings=s.mqtt, client_id=s.client_id, subscriptions=self._subscriptions(),
            metrics=self.metrics, will=Will(self.status_topic, b"offline"),
            online=(self.status_topic, b"online"), queue_size=s.ingest.queue_size)
        self.session = session
        lane: list[asyncio.Task[None]] = []
        try:
            async with session, contextlib.AsyncExitStack() as exits:
                validate_task = asyncio.create_task(self._validate_stage(session),
                                                    name="validate")
                if s.mqtt.priority_session:
                    lane = await self._open_priority_lane(exits)
                    stages.extend(lane)
                # Registry, rules and engine state are long-lived: take them out of the cyclic
                # GC's full collections, whose pauses otherwise grow with the park's size.
                gc.freeze()
                stages.extend(self._health_stages(session, [*stages, validate_task]))
                self.ready.set()
                self.heartbeat.sd_notify("READY=1")
                log.info("gateway running: %d devices, broker %s, influx %s", len(self.registry),
                         s.mqtt.url, s.influx.url)
                failed = await _until_stop_or_failure(stop, [*stages, validate_task])
                log.info("stopping: draining in-flight messages")
                self.heartbeat.sd_notify("STOPPING=1")
                deadline = time.monotonic() + s.shutdown_timeout_s
                # Stop reading (both sessions), then let what was read become durable.
                for task in (validate_task, *lane[:1]):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await self._drain_commits(commit_task, ack_task, deadline)
                if self._pending_deadletters:
                    await asyncio.wait(self._pending_deadletters,
                                       timeout=_left(deadline, cap=5))
        finally:
            if deadline is None:     # failed before the drain began
                deadline = time.monotonic() + s.shutdown_timeout_s
            await self._close_down(stages, sink, deadline)
        if failed:
            # A dead stage must not leave a process that looks alive: exit, let the service
            # manager restart us, and let the broker redeliver what was not acknowledged.
            raise StageFailed(", ".join(t.get_name() for t in failed))

    async def _open_notifier(self, book: AlarmKeeper, wal: WalStreams) -> Notifier | None:
        def active() -> list[Alarm]:
            return book.engine.active() if book.engine is not None else []
        if self.ack_links is not None:
            await self.ack_links.open()
        notifier = Notifier.from_settings(self.settings, store=book.store, metrics=self.metrics,
                                          audit=wal.append, active=active,
                                          ack_links=self.ack_links,
                                          on_dead=self._notification_dead,
                                          on_outcome=self._notification_outcome)
        if notifier is not None:
            await notifier.open()
        return notifier

    # -- stages --------------------------------------------------------------------------------

    async def _validate_stage(self, session: MqttSession,
                              acks: asyncio.Queue[_Committable] | None = None) -> None:
        slots = self._slots.setdefault(id(acks), asyncio.Semaphore(ACK_BACKLOG))
        async for batch in session.batches(self.settings.ingest.commit_batch):
            await slots.acquire()
            work = _Committable(lines=[], messages=[], acks=acks, slot=slots)
            received: collections.Counter[str] = collections.Counter()
            observed: list[Observation] = []
            event_keys: set[str] = set()
            if self.watchdog is not None:
                self.watchdog.heard()
            for msg in batch:
                if msg.topic == self.probe_topic or self._second_copy(msg):
                    # The watchdog's loop-back, or the other session's copy of an event:
                    # acknowledged in receive order with the batch, nothing else.
                    work.messages.append(msg)
                    continue
                suffix = msg.topic.rpartition("/")[2]
                received[suffix if suffix in _TYPES else "other"] += 1
                try:
                    validated = self.validator.validate(msg.topic, msg.payload, msg.received_at_ms,
                                               msg.retain)
                except Rejection as rejection:
                    self._reject(session, msg, rejection)
                    continue
                if validated.seq is not None and validated.type.value == "event" \
                        and self.alarms is not None:
                    deduped = self._dedup_event(validated, msg.payload, event_keys)
                    if deduped is None:   # a repeat: acknowledged once durable, nothing else
                        work.messages.append(msg)
                        continue
                    validated = deduped
                self._accept(work, msg, validated)
                if self.alarms is not None and validated.observations:
                    observed.extend(validated.observations)
            if observed:
                self._add_transitions(work, self.alarms.observe(observed, _now_ms())
                                      if self.alarms is not None else [])
            for mtype, n in received.items():
                self._counters[mtype].inc(n)
            self.metrics.queue_depth.labels(queue="commit").set(self._commit_q.qsize())
            await self._commit_q.put(work)

    def _accept(self, work: _Committable, msg: Inbound, validated: Validated) -> None:
        work.lines.extend(validated.lines)
        work.messages.append(msg)
        work.accepted_by_type[validated.type.value] += 1
        work.samples += validated.samples
        if validated.untrusted:
            self.metrics.untrusted_clock.inc(validated.untrusted)
            self.untrusted_clock_devices.add(validated.device.device)
        self.latest[validated.device.device] = validated
        if validated.seq is not None:
            self._track_seq(validated.device.device, validated.seq)

    async def _commit_stage(self) -> None:
        """Alarms first: priority lines (alarms, events, status) and the alarm store are made
        durable here, in order, and alarm changes go out at once. Telemetry is the ack stage's
        job, so a full telemetry log (InfluxDB down for days, block policy) never holds up an
        alarm, an escalation or an acknowledgement made through the API."""
        assert self.wal is not None
        while True:
            work = await self._commit_q.get()
            try:
                priority, bulk = split_lines(work.lines)
                if priority:
                    await self.wal.priority.append(priority)
                if self.alarms is not None and (work.transitions or work.outbox
                                                or work.save_state or self._state_save_due()):
                    await self.alarms.persist(work.transitions, with_state=True,
                                              outbox=work.outbox, grants=work.grants)
                    self._state_saved_at = time.monotonic()
                self._publish_alarms(work.transitions)
                if work.outbox and self.notifier is not None:
                    self.notifier.wake()
                if work.done is not None and not work.done.done():
                    work.done.set_result(None)
                if work.messages or bulk:
                    work.lines = bulk
                    # Never blocks: only work from a validate stage comes here, and that
                    # holds a slot of the ack backlog until it is acknowledged.
                    (work.acks or self._ack_q).put_nowait(work)
                else:
                    work.release()
            except BaseException as exc:
                if work.done is not None and not work.done.done():
                    work.done.set_exception(exc)
                raise
            finally:
                self._commit_q.task_done()

    async def _ack_stage(self, queue: asyncio.Queue[_Committable],
                         session: Callable[[], MqttSession | None]) -> None:
        """Telemetry into its log, then the PUBACKs, in receive order, for one session. Under
        the block policy this is where ingest waits for room, and the broker keeps what is not
        acknowledged; the priority lane's session has its own ack stage and never waits here."""
        assert self.wal is not None
        while True:
            work = await queue.get()
            try:
                if work.lines:               # telemetry only (split by the commit stage)
                    await self.wal.bulk.append(work.lines)
                current = session()
                if current is not None:
                    current.puback_all(work.messages)
                for mtype, n in work.accepted_by_type.items():
                    self.metrics.accepted.labels(type=mtype).inc(n)
                self.metrics.readings.inc(work.samples)
            finally:
                work.release()
                queue.task_done()

    async def _alarm_ticker(self) -> None:
        """Timers run on the clock, not on message arrival (for-durations, silence, doors)."""
        if self.alarms is None:
            return
        while True:
            await asyncio.sleep(self.settings.alarms.tick_s)
            work = _Committable(lines=[], messages=[])
            now = _now_ms()
            self._add_transitions(work, self.alarms.tick(now))
            self._check_storage()
            if self._conditions:
                conditions, self._conditions = self._conditions, []
                self._add_transitions(work, self.alarms.conditions(conditions, now))
            if self.notifier is not None:
                # Escalation tiers and fire-class repeats that fell due (no I/O: cheap).
                work.outbox.extend(self.notifier.tick(now))
                work.grants.extend(self.notifier.take_grants())
            if work.transitions or work.outbox or self._state_save_due():
                await self._commit_q.put(work)

    async def commit_transitions(self, transitions: list[Transition]) -> None:
        """Make alarm changes from outside the message flow (API acks) durable and visible."""
        work = _Committable(lines=[], messages=[], save_state=True,
                            done=asyncio.get_running_loop().create_future())
        self._add_transitions(work, transitions)
        await self._commit_q.put(work)
        assert work.done is not None
        await work.done

    async def _stats_stage(self) -> None:
        assert self.wal is not None
        interval = self.settings.observe.gateway_interval_s
        measurement = escape_measurement("gateway")
        tags = tag_set({"instance": self.settings.instance})
        while True:
            await asyncio.sleep(interval)
            fields: dict[str, float | int | bool | str] = dict(self.metrics.flat())
            line = encode_line(measurement, tags, fields, time.time_ns() // 1_000_000)
            await self.wal.append([line])

    # -- the gateway's own health ----------------------------------------------------------------

    async def _close_down(self, stages: list[asyncio.Task[None]], sink: Any,
                          deadline: float) -> None:
        """After intake stopped: last state save, notifier, flush, close — within the deadline.
        ``stages`` starts with the writer, commit, ack and stats stages, in that order."""
        writer_task, commit_task, ack_task, stats_task = stages[:4]
        assert self.writer is not None
        assert self.wal is not None
        for task in stages[4:]:
            await _reap(task)
        if self.alarms is not None and not commit_task.done():
            # Last words: device last-seen times, so silence timers resume where they were.
            await self._commit_q.put(_Committable(lines=[], messages=[], save_state=True))
            await self._drain_commits(commit_task, ack_task, deadline)
        await _reap(commit_task)
        await _reap(ack_task)
        await _reap(stats_task)
        if self.notifier is not None:
            await self.notifier.close(timeout_s=_left(deadline, cap=5))
        flushed = await self.writer.flush(timeout_s=_left(deadline, cap=10))
        if not flushed:
            log.warning("InfluxDB not reachable at shutdown; the WAL keeps the backlog "
                        "and replays it on the next start")
        await _reap(writer_task)
        await sink.close()
        await self.wal.close()
        if self.alarms is not None:
            await self.alarms.close()
        log.info("gateway stopped")

    async def _open_priority_lane(self, exits: contextlib.AsyncExitStack
                                  ) -> list[asyncio.Task[None]]:
        """The priority lane: a second persistent session for events and status, with its own
        in-flight window and its own ack stage. Returns [validate task, ack task]."""
        s = self.settings
        lane = MqttSession(settings=s.mqtt, client_id=f"{s.client_id}-priority",
                           subscriptions=self.validator.priority_subscriptions(),
                           metrics=self.metrics, queue_size=s.ingest.queue_size, primary=False)
        await exits.enter_async_context(lane)
        self.priority_session = lane
        main = self.session
        self.metrics.inflight.set_function(
            lambda: lane.unacked + (main.unacked if main is not None else 0))
        validate = asyncio.create_task(self._validate_stage(lane, acks=self._prio_ack_q),
                                       name="validate-priority")
        ack = asyncio.create_task(self._ack_stage(self._prio_ack_q,
                                                  lambda: self.priority_session),
                                  name="ack-priority")
        self._lane_acks = [ack]
        return [validate, ack]

    def _second_copy(self, msg: Inbound) -> bool:
        """True for an event or status message already taken from the other session."""
        if self.priority_session is None or not msg.topic.endswith(("/event", "/status")):
            return False
        key = hashlib.blake2b(msg.topic.encode() + b"\0" + msg.payload,
                              digest_size=16).digest()
        now = time.monotonic()
        seen = self._lane_seen
        while seen and (len(seen) > LANE_MEMORY or next(iter(seen.values())) < now - 3600):
            seen.popitem(last=False)
        if key in seen:
            del seen[key]           # each copy is expected once more at most
            return True
        seen[key] = now
        return False

    async def _drain_commits(self, commit_task: asyncio.Task[None],
                             ack_task: asyncio.Task[None], deadline: float) -> None:
        """Wait for queued work to become durable and acked, but not past the deadline: with
        the WAL full (InfluxDB down, block policy) that could be forever. Cutting it short is
        safe: whatever was not acknowledged stays with the broker and comes back."""
        try:
            if not commit_task.done():
                await asyncio.wait_for(self._commit_q.join(), timeout=_left(deadline))
            if not ack_task.done():
                await asyncio.wait_for(self._ack_q.join(), timeout=_left(deadline))
            if any(not t.done() for t in self._lane_acks):
                await asyncio.wait_for(self._prio_ack_q.join(), timeout=_left(deadline))
        except TimeoutError:
            log.error("shutdown: in-flight work did not become durable within %.0f s "
                      "(shutdown_timeout_s; is the WAL full?); unacknowledged messages stay "
                      "with the broker and are redelivered on the next start",
                      self.settings.shutdown_timeout_s)
            commit_task.cancel()
            ack_task.cancel()
            for task in self._lane_acks:
                task.cancel()

    def _subscriptions(self) -> list[str]:
        topics = self.validator.subscriptions()
        if self.settings.mqtt.watchdog_s > 0:
            topics.append(self.probe_topic)
        return topics

    def _health_stages(self, session: MqttSession,
                       pipeline: list[asyncio.Task[None]]) -> list[asyncio.Task[None]]:
        """The ingest watchdog and the heartbeat (gateway/ingest/watchdog.py)."""
        s = self.settings
        tasks = [asyncio.create_task(
            self.heartbeat.run(lambda: not any(t.done() for t in pipeline)), name="heartbeat")]
        if s.mqtt.watchdog_s > 0:
            def probe(payload: bytes) -> None:
                session.publish(self.probe_topic, payload, qos=1)
            self.watchdog = IngestWatchdog(
                interval_s=s.mqtt.watchdog_s, probe=probe, connected=lambda: session.connected,
                resubscribe=session.resubscribe, reconnect=session.reconnect,
                stalled=self._ingest_stalled,
                paused=lambda: self.wal is not None and self.wal.full)
            tasks.append(asyncio.create_task(self.watchdog.run(), name="watchdog"))
        return tasks

    def _check_storage(self) -> None:
        """A full write-ahead log is raised as an alarm: the park is (partly) unmonitored."""
        full = self.wal is not None and self.wal.full
        if full == self._storage_alarmed:
            return
        self._storage_alarmed = full
        block = self.settings.wal.full_policy == "block"
        why = ("the write-ahead log is full (is InfluxDB reachable?): telemetry is no longer "
               "acknowledged and device events wait at the broker" if block else
               "the write-ahead log is full (is InfluxDB reachable?): the oldest telemetry is "
               "being dropped")
        for park in sorted({d.park for d in self.registry}) or ["parkwatch"]:
            subject = Subject(park=park, building="gateway", kind=SYSTEM_KIND,
                              location=f"ParkWatch {self.settings.instance}")
            self.report(HealthCondition(
                STORAGE_FULL, "wal", subject, Severity.CRITICAL if block else Severity.MAJOR,
                f"ParkWatch {self.settings.instance}: {why}" if full else
                f"ParkWatch {self.settings.instance}: the write-ahead log has room again",
                active=full))

    def _ingest_stalled(self, stalled: bool, why: str) -> None:
        """One gateway-health alarm per park this gateway serves: each park is unmonitored."""
        parks = sorted({d.park for d in self.registry}) or ["parkwatch"]
        for park in parks:
            subject = Subject(park=park, building="gateway", kind=SYSTEM_KIND,
                              location=f"ParkWatch {self.settings.instance}")
            message = (f"ParkWatch {self.settings.instance} receives nothing from the broker: "
                       f"{why}" if stalled else f"ParkWatch {self.settings.instance}: {why}")
            self.report(HealthCondition(INGEST_STALLED, "ingest", subject, Severity.CRITICAL,
                                        message, active=stalled))

    def report(self, condition: HealthCondition) -> None:
        """Raise or clear a gateway-health alarm; the alarm ticker commits it within a tick."""
        if len(self._conditions) < MAX_PENDING_CONDITIONS:
            self._conditions.append(condition)

    def _notification_dead(self, pending: Pending, why: str) -> None:
        n = pending.notification
        subject = _system_subject(n.alarm, f"notification channel {n.channel}")
        self._dead_channels[(n.channel, subject.park)] = subject
        self.report(HealthCondition(
            NOTIFICATION_DEAD, n.channel, subject,
            Severity.CRITICAL if pending.fire_class else Severity.MAJOR,
            f"Notification {n.key} via {n.channel} was not delivered ({why})"))

    def _notification_outcome(self, channel: str, sent: bool) -> None:
        if not sent:
            return
        for (chan, park), subject in list(self._dead_channels.items()):
            if chan == channel:   # the channel delivers again: its dead-notification alarm ends
                del self._dead_channels[(chan, park)]
                self.report(HealthCondition(NOTIFICATION_DEAD, channel, subject, Severity.MAJOR,
                                      f"Channel {channel} delivers again", active=False))

    # -- helpers -------------------------------------------------------------------------------

    def _add_transitions(self, work: _Committable, transitions: list[Transition]) -> None:
        work.transitions.extend(transitions)
        if self.notifier is not None and transitions:
            work.outbox.extend(self.notifier.plan(transitions, _now_ms()))
            work.grants.extend(self.notifier.take_grants())
        work.lines.extend(alarm_line(t.after) for t in transitions if t.published)

    def _dedup_event(self, validated: Validated, payload: bytes,
                     batch_keys: set[str]) -> Validated | None:
        """None for an event already evaluated (broker redelivery after a lost ack, or a device
        resending its publish): a second alarm transition or notification must not follow. The
        key is (device, seq, payload hash); the engine remembers it with its saved state, so
        the check survives a restart. Events without a seq are never treated as repeats."""
        digest = hashlib.blake2b(payload, digest_size=8).hexdigest()
        key = f"{validated.device.device}|{validated.seq}|{digest}"
        engine = self.alarms.engine if self.alarms is not None else None
        if key in batch_keys or (engine is not None and engine.seen_event(key)):
            self.metrics.duplicate_events.inc()
            return None
        batch_keys.add(key)
        return replace(validated, observations=tuple(
            replace(o, dedup_key=key) if isinstance(o, DeviceEvent) else o
            for o in validated.observations))

    def _state_save_due(self) -> bool:
        return time.monotonic() - self._state_saved_at >= self.settings.alarms.state_save_s

    def _publish_alarms(self, transitions: list[Transition]) -> None:
        """Retained documents on parkwatch/alarms/...; paho resends them after a reconnect."""
        if self.session is None:
            return
        for t in transitions:
            if t.published:
                self.session.publish(alarm_topic(t.after), retained_payload(t.after, None),
                                     qos=1, retain=True)

    def _track_seq(self, device: str, seq: int) -> None:
        """Count drops (forward jumps) and repeats of a device's seq; readings are kept anyway."""
        last = self._last_seq.get(device)
        self._last_seq[device] = max(seq, last) if last is not None else seq
        if last is None:
            return
        if seq > last + 1:
            self.metrics.seq_gaps.inc(seq - last - 1)
        elif seq <= last:
            self.metrics.seq_repeats.inc()

    def _reject(self, session: MqttSession, msg: Inbound, rejection: Rejection) -> None:
        self.metrics.rejected.labels(reason=rejection.reason.value).inc()
        self._reject_log.warning(rejection.reason.value, "rejected %s: %s (topic %s)",
                                 rejection.reason.value, rejection.detail, msg.topic[:200])
        doc = deadletter.deadletter_document(
            rejection=rejection, topic=msg.topic, payload=msg.payload,
            received_at_ms=msg.received_at_ms, instance=self.settings.instance)
        published = session.publish(deadletter.deadletter_topic(rejection), doc, qos=1)
        self._pending_deadletters.add(published)

        def _done(fut: asyncio.Future[None]) -> None:
            self._pending_deadletters.discard(fut)
            if fut.cancelled() or fut.exception() is not None:
                return  # not acked: the broker redelivers the original and we try again
            self.metrics.deadletter_published.inc()
            session.puback(msg)

        published.add_done_callback(_done)



class StageFailed(ParkWatchError):
    """A pipeline stage stopped on its own; the gateway shut down instead of limping on."""


def _system_subject(doc: Mapping[str, Any], location: str) -> Subject:
    """Where a gateway-health alarm about ``doc``'s alarm is shown: its park and building."""
    return Subject(park=str(doc.get("park") or "parkwatch"),
                   building=str(doc.get("building") or "gateway"),
                   kind=SYSTEM_KIND, location=location)


def _left(deadline: float, cap: float | None = None) -> float:
    """Seconds until ``deadline`` (at least a moment), at most ``cap``."""
    left = max(0.1, deadline - time.monotonic())
    return min(left, cap) if cap is not None else left


async def _reap(task: asyncio.Task[None]) -> None:
    """Cancel and await a stage during shutdown, reporting (not re-raising) its failure so
    the rest of the shutdown — flushing the WAL, closing the store — still happens."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception as exc:  # noqa: BLE001 - reported here, and run() raises StageFailed
        log.error("stage %s ended with %r", task.get_name(), exc)


async def _until_stop_or_failure(stop: asyncio.Event,
                                 stages: list[asyncio.Task[None]]) -> list[asyncio.Task[None]]:
    """Wait for a stop request or for any stage to end (which only happens on an error)."""
    stopper = asyncio.create_task(stop.wait(), name="stop-request")
    done, _ = await asyncio.wait([stopper, *stages], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    failed = [t for t in stages if t in done]
    for task in failed:
        exc = None if task.cancelled() else task.exception()
        log.critical("pipeline stage %s stopped unexpectedly: %r; shutting down",
                     task.get_name(), exc, exc_info=exc)
    return failed


async def _make_sink(s: Settings) -> Any:
    i = s.influx
    return await make_sink(
        url=i.url, version=i.version, database=i.database, retention_policy=i.retention_policy,
        username=i.username, password=i.password.get_secret_value() if i.password else None,
        org=i.org, bucket=i.bucket, token=i.token.get_secret_value() if i.token else None,
        timeout_s=i.timeout_s, create_database=i.create_database)
