"""The running gateway: a few explicit stages joined by bounded queues.

::

    MQTT broker ──QoS 1, manual PUBACK, window = receive_maximum──┐
                                                                  ▼
      [inbox]  MqttSession (ingest/mqtt.py): reading pauses when full (the broker holds messages)
         │ batches of ≤ ingest.commit_batch
         ▼
      validate ── ValidateStage (runtime/validation.py) → Validator (ingest/validate.py):
         │   │      topic → registry → spoofing guard → decoder → line protocol
         │   │                                     └── observations ──▶ rule engine (pure)
         │   └── rejected ──▶ dead letter (ingest/deadletter.py) ──broker ack──▶ PUBACK original
         ▼                          alarm ticker (runtime/ticker.py) ──▶ timers, health ─┐
      [commit queue]  bounded (4 units of Work; policy: block)  ◀── API acknowledgements ─┘
         │
      commit ── CommitStage (runtime/durability.py): priority WAL (fsync) → alarm store
         │      (alarms/store.py, one SQLite transaction) → retained alarm documents, notifier
         ▼
      [puback queue]  one per session, bounded by the session's PUBACK backlog
         │
      puback ── PubackStage: bulk WAL (telemetry; fsync) → PUBACK every message, in order
         │      (waits here when the telemetry log is full: alarms never wait behind it)
         ▼
      [write-ahead log on disk]  priority + bulk streams under wal.max_bytes (storage/walstreams.py)
         │
      writer ── InfluxWriter (storage/influx/writer.py): priority first, batches → InfluxDB
      stats  ── every observe.gateway_interval_s: the `gateway` measurement, via the WAL

With ``mqtt.priority_session`` a second session (the priority lane) carries events and status
through its own validate and puback stages into the same commit stage. Stages start
downstream-first and stop upstream-first, so in-flight data drains into the WAL and gets its
PUBACK before the MQTT session closes.

With ``ingest.ack_after: influx`` the puback stages wait until InfluxDB accepted a batch before
acknowledging it. With ``cluster.partition`` (docs/scale.md) the gateway subscribes to its
parks only, its engine covers their devices only, and it runs only while it holds the
partition's lease (gateway/cluster/): the ``lease`` stage renews it, the puback stages ask it
before every PUBACK, and the shared alarm store checks it in every write.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from gateway.alarms.acklinks import AckLinks
from gateway.alarms.fence import FencedOut
from gateway.alarms.health import GatewayHealth
from gateway.alarms.keeper import AlarmKeeper, now_ms
from gateway.alarms.outputs import alarm_line, alarm_topic, retained_payload
from gateway.alarms.service import GatewayAlarmService
from gateway.alarms.store import AlarmStore, store_for
from gateway.cluster.lease import Lease, LeaseLost
from gateway.cluster.partitions import Partition, priority_filters, topic_filters
from gateway.cluster.standby import Role, keep
from gateway.config import Settings
from gateway.ingest.deadletter import DeadLetters
from gateway.ingest.mqtt import MqttSession, Will
from gateway.ingest.uitd.server import UitdServer
from gateway.ingest.validate import Validated, Validator
from gateway.ingest.watchdog import IngestWatchdog
from gateway.metrics import Metrics
from gateway.notify.notifier import Notifier
from gateway.notify.outbox import Pending
from gateway.notify.templates import PlaceNames
from gateway.runtime.changes import Changes
from gateway.runtime.durability import CommitQueue, CommitStage, PubackStage
from gateway.runtime.heartbeat import Heartbeat
from gateway.runtime.lane import SecondCopies
from gateway.runtime.liveness import LivenessFeed, silence_factor
from gateway.runtime.liveview import LiveView
from gateway.runtime.scorecardday import ScorecardDaily
from gateway.runtime.ticker import AlarmTicker, LivenessTicker, StatsStage
from gateway.runtime.uitdpipe import UitdPipeline
from gateway.runtime.validation import ValidateStage, second_copy_filter
from gateway.runtime.work import Work
from gateway.storage.influx.factory import make_sink
from gateway.storage.influx.writer import InfluxWriter
from gateway.storage.private import private_dir
from gateway.storage.walstreams import WalStreams
from rules.alarm import Alarm, Transition
from sensors.errors import ConfigError, ParkWatchError
from sensors.pointmap import load_point_map
from sensors.registry import Registry
from sensors.tenants import load_tenants_for

log = logging.getLogger(__name__)

#: Units of work waiting for the commit stage; beyond it producers wait. A validate stage's
#: work is bounded by its session's PUBACK backlog anyway; the rest (ticks, people's changes,
#: UITD frames each waiting for its ACK) are small, and the commit stage takes them together.
COMMIT_QUEUE = 64

Task = asyncio.Task[None]

#: Priority-log backlog (bytes) under which InfluxDB is taken as caught up for the scorecard.
READY_BACKLOG = 256 << 10


@dataclass
class _Tasks:
    """The running stages by name."""

    writer: Task
    commit: Task
    puback: Task
    stats: Task
    ticker: Task | None = None
    validate: Task | None = None
    lane_validate: Task | None = None
    lane_puback: Task | None = None
    uitd: Task | None = None
    liveness: Task | None = None
    scorecard: Task | None = None
    lease: Task | None = None
    handoffs: Task | None = None
    health: list[Task] = field(default_factory=list)

    def all(self) -> list[Task]:
        named = (self.writer, self.commit, self.puback, self.stats, self.ticker, self.validate,
                 self.lane_validate, self.lane_puback, self.uitd, self.liveness, self.scorecard,
                 self.lease, self.handoffs)
        return [t for t in named if t is not None] + self.health

    def intake(self) -> list[Task]:
        """The stages that read from the broker and the UITD server: stopped first."""
        return [t for t in (self.uitd, self.validate, self.lane_validate) if t is not None]


def _spawn(coro: Coroutine[Any, Any, None], name: str) -> Task:
    return asyncio.create_task(coro, name=name)


class Gateway:
    """Owns the stages, their queues and the state the status endpoints show."""

    def __init__(self, *, settings: Settings, registry: Registry,
                 metrics: Metrics | None = None,
                 on_delivered: Callable[[Sequence[bytes]], None] | None = None,
                 lease: Lease | None = None, role: Role | None = None) -> None:
        self.settings = settings
        #: The parks this instance owns (gateway/cluster/partitions.py); the single box: all.
        self.partition = Partition.from_settings(settings.cluster)
        self.parks = self._owned_parks(registry)
        #: The owned parks' devices: the engine, liveness and the scorecard cover these only,
        #: while validation knows the whole registry (another partition's device is refused
        #: as such). The single box: the whole registry.
        self.owned = self.partition.registry(registry)
        #: The partition's lease, held (gateway/cluster/standby.py) before the gateway runs.
        self.lease = lease
        #: What /status shows of this instance's place in the cluster (None: a single box).
        self.cluster_role = role
        self._on_delivered = on_delivered
        self.registry = registry
        self.metrics = metrics or Metrics()
        self.started_at = time.time()
        self.live = LiveView(self.metrics)
        # The point map places panel points (MQTT and UITD); a bad map stops the start-up
        # with every row's problem (PointMapError is a ConfigError).
        self.points = (load_point_map(settings.uitd.points, registry)
                       if settings.uitd.points is not None else None)
        # The tenant register (issue 12): /tenants and routing's register contacts. Checked
        # against the registry here too, for gateways started without the CLI (tests, embedders).
        self.tenants = (load_tenants_for(settings.tenants, registry)
                        if settings.tenants is not None else None)
        # Display names for messages and the ack page (registry names, tenant companies).
        self.places = PlaceNames.from_devices(registry, self.tenants or ())
        self.validator = Validator(
            registry=registry, root=settings.mqtt.topic_root,
            timezones={p: ZoneInfo(s.timezone) for p, s in settings.parks.items()},
            default_timezone=ZoneInfo(settings.default_timezone),
            max_payload_bytes=settings.ingest.max_payload_bytes,
            max_age_s=settings.ingest.max_age_s, max_future_s=settings.ingest.max_future_s,
            max_batch=settings.ingest.max_batch,
            device_rate_per_s=settings.ingest.device_rate_per_s,
            device_burst=settings.ingest.device_burst,
            points=self.points, on_unmapped=self.metrics.unmapped_points.inc,
            owns_park=None if self.partition.whole else self.partition.owns)
        self.status_topic = f"parkwatch/gateway/{settings.instance}/status"
        self.probe_topic = f"parkwatch/gateway/{settings.instance}/probe"
        self.watchdog: IngestWatchdog | None = None
        hb = settings.observe.heartbeat_url
        self.heartbeat = Heartbeat(url=hb.get_secret_value() if hb else None,
                                   interval_s=settings.observe.heartbeat_s)
        self.health = GatewayHealth(instance=settings.instance,
                                    parks=lambda: (d.park for d in self.owned))
        self.deadletters = DeadLetters(instance=settings.instance, metrics=self.metrics)
        self._commits = CommitQueue(COMMIT_QUEUE)
        self.session: MqttSession | None = None
        self.priority_session: MqttSession | None = None
        self.wal: WalStreams | None = None
        self.writer: InfluxWriter | None = None
        self.ready = asyncio.Event()
        self.alarms: AlarmKeeper | None = None
        self.notifier: Notifier | None = None
        self.ack_links: AckLinks | None = None
        self.alarm_service: GatewayAlarmService | None = None
        #: Device liveness (runtime/liveness.py), made when the gateway starts.
        self.liveness: LivenessFeed | None = None
        self._liveness_ticker: LivenessTicker | None = None
        #: Yesterday's scorecard points each day (runtime/scorecardday.py); alarms on only.
        self.scorecard_daily: ScorecardDaily | None = None
        if settings.alarms.enabled:
            self.alarms = AlarmKeeper.from_paths(rules_path=settings.rules, registry=self.owned,
                                                 state_dir=settings.state_dir,
                                                 lateness_s=settings.alarms.lateness_s,
                                                 points=self.points,
                                                 store=self._alarm_store())
            self.alarm_service = GatewayAlarmService(self.alarms, self.commit_transitions)
        self.changes = Changes(commits=self._commits, keeper=self.alarms,
                               add_transitions=self._add_transitions)
        if self.alarms is not None and settings.notify.ack_secret is not None:
            http = settings.http
            self.ack_links = AckLinks(
                secret=settings.notify.ack_secret.get_secret_value().encode(),
                base_url=settings.notify.public_url or f"http://{http.host}:{http.port}",
                store=self.alarms.store, ttl_s=settings.notify.ack_ttl_s)

        self.uitd = self._uitd_server()

    def _uitd_server(self) -> UitdServer | None:
        s = self.settings
        if s.uitd.listen is None:
            return None
        if self.points is None:
            raise ConfigError("uitd", ["uitd.listen is set but uitd.points is not: without the "
                                       "point map no UITD has a panel"])
        v = self.validator
        return UitdServer(
            settings=s.uitd, points=self.points, registry=self.registry,
            pipeline=UitdPipeline(changes=self.changes, keeper=self.alarms,
                                  registry=self.registry, settings=s.uitd,
                                  liveness=lambda: self.liveness),
            metrics=self.metrics,
            place=lambda panel, t, point, detail, feedback: v.place(panel, t, point, detail,
                                                                    feedback=feedback),
            event_line=lambda dev, t, point, detail, ts: v.event_line(dev, t, point, detail, ts),
            timezone_for=s.timezone_for, max_age_s=s.ingest.max_age_s,
            max_future_s=s.ingest.max_future_s,
            owns_panel=None if self.partition.whole
            else self.partition.owns_device(self.registry))

    def _alarm_store(self) -> AlarmStore:
        """The configured store; a shared one is fenced by this partition's lease and keeps
        the engine's resume state under the partition's name, so a standby taking over
        resumes exactly where the partition's last active left off."""
        s = self.settings
        shared = s.alarms.backend == "postgres"
        return store_for(s.alarms, s.state_dir,
                         fence=self.lease if shared and self.lease is not None else None,
                         partition=s.cluster.partition or "default")

    def _owned_parks(self, registry: Registry) -> list[str]:
        """The registry's parks this partition owns; one that would leave a park unwatched
        does not start (Partition.check)."""
        parks, problems = self.partition.check(registry, self.settings.registry)
        if problems:
            raise ConfigError("cluster", problems)
        return parks

    # -- what the HTTP layer sees (gateway/http/app.py: GatewayView) ---------------------------

    @property
    def latest(self) -> dict[str, Validated]:
        return self.live.latest

    @property
    def untrusted_clock_devices(self) -> set[str]:
        return self.live.untrusted_clock_devices

    def broker_connected(self) -> bool:
        return self.session is not None and self.session.connected

    def device_count(self) -> int:
        return len(self.owned)

    def newest_readings(self, limit: int) -> list[dict[str, Any]]:
        return self.live.newest(limit)

    def active_alarms(self) -> list[Alarm]:
        keeper = self.alarms
        return keeper.engine.active() if keeper is not None and keeper.engine is not None else []

    def _ack_handoffs(self) -> Task | None:
        """On a shared store: answer acknowledgements other instances received for alarms this
        engine holds (gateway/alarms/service.py)."""
        if self.alarm_service is None or self.alarms is None or not self.alarms.store.shared:
            return None
        return _spawn(self.alarm_service.run_handoffs(), "ack-handoffs")

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then drain and shut down in order."""
        s = self.settings
        # Before anything writes into it: alarm data, outbox rows and ack grants live here.
        private_dir(s.state_dir)
        # Priority (alarms, events, status) and bulk telemetry streams under one disk cap.
        wal = self.wal = WalStreams(s.state_dir / "wal", segment_bytes=s.wal.segment_bytes,
                                    max_bytes=s.wal.max_bytes, fsync=s.wal.fsync,
                                    full_policy=s.wal.full_policy,
                                    priority_share=s.wal.priority_share, metrics=self.metrics)
        await wal.open()
        _log_setting_warnings(s)
        if self.alarms is not None:
            await self.alarms.open()
            self._watch_engine(self.alarms)
            if self.ack_links is not None:
                await self.ack_links.open()
            self.notifier = await self._open_notifier(self.alarms, wal)
        liveness = await self._open_liveness()
        sink = await make_sink_for(s)
        # /healthz should tell the truth from the first second, not after the first write.
        self.metrics.influx_reachable.set(1 if await sink.ping() else 0)
        writer = self.writer = InfluxWriter(wal=wal, sink=sink, metrics=self.metrics,
                                            batch_lines=s.influx.batch_lines,
                                            flush_interval_s=s.influx.flush_interval_s,
                                            max_backoff_s=s.influx.max_backoff_s,
                                            on_delivered=self._on_delivered)
        puback, lane_puback = self._puback_stages(wal)
        commit = CommitStage(queue=self._commits, wal=wal, keeper=self.alarms,
                             notifier=self.notifier, publish_alarms=self._publish_alarms,
                             state_save_s=s.alarms.state_save_s, default_pubacks=puback.queue)
        stats = StatsStage(wal=wal, metrics=self.metrics, instance=s.instance,
                           interval_s=s.observe.gateway_interval_s)
        tasks = _Tasks(writer=_spawn(writer.run(), "influx-writer"),
                       commit=_spawn(commit.run(), "commit"),
                       puback=_spawn(puback.run(), "puback"),
                       stats=_spawn(stats.run(), "gateway-stats"),
                       liveness=_spawn(liveness.run(), "liveness"))
        tasks.lease = self._lease_keeper()
        if self.notifier is not None:
            self.notifier.start()
        if self.alarms is not None:
            ticker = AlarmTicker(keeper=self.alarms, health=self.health, notifier=self.notifier,
                                 commit=commit, add_transitions=self._add_transitions,
                                 check_storage=self._check_storage, tick_s=s.alarms.tick_s)
            tasks.ticker = _spawn(ticker.run(), "alarm-ticker")
            tasks.handoffs = self._ack_handoffs()
            if s.observe.scorecard_daily:
                self.scorecard_daily = self._scorecard_daily(wal)
                tasks.scorecard = _spawn(self.scorecard_daily.run(), "scorecard-daily")
        failed: list[Task] = []
        deadline: float | None = None
        session = self.session = MqttSession(
            settings=s.mqtt, client_id=s.client_id, subscriptions=self._subscriptions(),
            metrics=self.metrics, will=Will(self.status_topic, b"offline"),
            online=(self.status_topic, b"online"), queue_size=s.ingest.queue_size)
        try:
            async with session, contextlib.AsyncExitStack() as exits:
                validate = self._validate_stage()
                # Telemetry lingers a little for bigger batches; events and status never do:
                # without the priority lane they share this session, so it does not wait.
                linger_s = s.ingest.linger_ms / 1000 if s.mqtt.priority_session else 0.0
                tasks.validate = _spawn(validate.run(session, puback.queue, linger_s),
                                        "validate")
                exits.callback(self._sync_subscriptions(session).cancel)
                if self.uitd is not None:
                    tasks.uitd = _spawn(self.uitd.run(), "uitd-server")
                if s.mqtt.priority_session:
                    lane = await exits.enter_async_context(self._priority_session(session))
                    tasks.lane_validate = _spawn(validate.run(lane, lane_puback.queue),
                                                 "validate-priority")
                    tasks.lane_puback = _spawn(lane_puback.run(), "puback-priority")
                    exits.callback(self._sync_subscriptions(lane).cancel)
                # Registry, rules and engine state are long-lived: take them out of the cyclic
                # GC's full collections, whose pauses otherwise grow with the park's size.
                gc.freeze()
                tasks.health = self._health_stages(session, tasks.all())
                self.ready.set()
                self.heartbeat.sd_notify("READY=1")
                log.info("gateway running: %d devices, broker %s, influx %s", len(self.owned),
                         s.mqtt.url, s.influx.url)
                failed = await _until_stop_or_failure(stop, tasks.all())
                log.info("stopping: draining in-flight messages")
                self.heartbeat.sd_notify("STOPPING=1")
                deadline = time.monotonic() + s.shutdown_timeout_s
                # Stop reading (both sessions), then let what was read become durable.
                for task in tasks.intake():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await self._drain(tasks, puback, lane_puback, deadline)
                await self.deadletters.drain(_left(deadline, cap=5))
        finally:
            if deadline is None:     # failed before the drain began
                deadline = time.monotonic() + s.shutdown_timeout_s
            await self._close_down(tasks, puback, lane_puback, sink, deadline)
        if failed:
            _raise_if_fenced(failed)
            # A dead stage must not leave a process that looks alive: exit, let the service
            # manager restart us, and let the broker redeliver what got no PUBACK.
            raise StageFailed(", ".join(t.get_name() for t in failed))

    def _sync_subscriptions(self, session: MqttSession) -> Task:
        """A partition's persistent session keeps the subscriptions it had, and the session
        client subscribes only to a fresh one: after its parks changed (a park moved, docs/
        scale.md) the resumed session would still get the park it gave away and never the one
        it took. So, once connected: drop every other park's filters, subscribe to ours."""
        async def sync() -> None:
            if self.partition.whole:
                return
            await session.wait_connected()
            root = self.settings.mqtt.topic_root
            others = sorted(self.registry.parks() - set(self.parks))
            session.unsubscribe(topic_filters(root, others) + priority_filters(root, others))
            session.resubscribe()
        return asyncio.create_task(sync(), name="sync-subscriptions")

    def _lease_keeper(self) -> Task | None:
        """A partition's lease renewal; failing or refused, it ends with LeaseLost and the
        gateway stops."""
        if self.lease is None:
            return None
        return _spawn(keep(self.lease, self.settings.cluster.renew_every_s), "lease")

    def _puback_stages(self, wal: WalStreams) -> tuple[PubackStage, PubackStage]:
        """The main session's and the priority lane's: after the WAL or after InfluxDB, and
        with a partition's lease asked before every PUBACK."""
        after_delivery = self.settings.ingest.ack_after == "influx"
        may_ack = self._may_ack if self.lease is not None else None
        return (PubackStage(wal=wal, session=lambda: self.session, metrics=self.metrics,
                            after_delivery=after_delivery, may_ack=may_ack),
                PubackStage(wal=wal, session=lambda: self.priority_session,
                            metrics=self.metrics, after_delivery=after_delivery,
                            may_ack=may_ack))

    def _may_ack(self) -> None:
        """Before every PUBACK of a partition's active: the local view of the lease must
        still hold (it ends before the database's, so the standby cannot have taken over)."""
        lease = self.lease
        if lease is not None and not lease.valid():
            raise LeaseLost(f"partition {lease.partition}: the lease's local validity ran out "
                            f"(epoch {lease.epoch}); no more PUBACKs from this instance")

    def _validate_stage(self) -> ValidateStage:
        s = self.settings
        copies = SecondCopies() if s.mqtt.priority_session else None
        return ValidateStage(
            validator=self.validator, keeper=self.alarms, add_transitions=self._add_transitions,
            commits=self._commits, deadletters=self.deadletters, live=self.live,
            metrics=self.metrics, batch_size=s.ingest.commit_batch,
            skip=second_copy_filter(copies, self.probe_topic), heard=self._heard,
            liveness=self.liveness)

    def _priority_session(self, main: MqttSession) -> MqttSession:
        """The priority lane: a second persistent session for events and status, with its own
        in-flight window (and its own validate and puback stages)."""
        s = self.settings
        topics = (self.validator.priority_subscriptions() if self.partition.whole
                  else priority_filters(s.mqtt.topic_root, self.parks))
        lane = MqttSession(settings=s.mqtt, client_id=f"{s.client_id}-priority",
                           subscriptions=topics,
                           metrics=self.metrics, queue_size=s.ingest.queue_size, primary=False)
        self.priority_session = lane
        self.metrics.inflight.set_function(lambda: lane.unacked + main.unacked)
        return lane

    async def _open_liveness(self) -> LivenessTicker:
        """Liveness on the silence rule's factor, resumed from the alarm store (alarms off:
        the default factor, and nothing survives a restart)."""
        s, keeper = self.settings, self.alarms
        feed = self.liveness = LivenessFeed(
            list(self.owned), factor=silence_factor(keeper.rules if keeper else None),
            started_ms=now_ms())
        if keeper is not None:
            feed.restore(await keeper.store.load_liveness())
        self._liveness_ticker = LivenessTicker(
            feed=feed, commits=self._commits,
            save=keeper.store.save_liveness if keeper is not None else None,
            tick_s=s.alarms.tick_s, snapshot_s=s.observe.liveness_snapshot_s,
            save_s=s.alarms.state_save_s)
        return self._liveness_ticker

    def _scorecard_daily(self, wal: WalStreams) -> ScorecardDaily:
        def ready() -> bool:
            # Yesterday's device_status must be in InfluxDB before it is read back: wait while
            # InfluxDB is unreachable or the priority log holds more than a moment's backlog.
            reachable = self.metrics.value("parkwatch_influx_reachable") == 1
            return reachable and not wal.full and wal.priority.pending_bytes < READY_BACKLOG
        return ScorecardDaily(settings=self.settings, registry=self.owned,
                              append=wal.append, ready=ready,
                              overdue=self.health.scorecard_overdue)

    def _watch_engine(self, keeper: AlarmKeeper) -> None:
        engine = keeper.engine
        if engine is not None:
            self.metrics.event_points_refused.set_function(lambda: engine.refused_point_events)
            self.metrics.events_rate_limited.set_function(lambda: engine.rate_limited_events)

    async def _open_notifier(self, keeper: AlarmKeeper, wal: WalStreams) -> Notifier | None:
        def active() -> list[Alarm]:
            return keeper.engine.active() if keeper.engine is not None else []

        def dead(pending: Pending, why: str) -> None:
            n = pending.notification
            self.health.notification_dead(channel=n.channel, key=n.key, alarm=n.alarm,
                                          fire_class=pending.fire_class, why=why)
        notifier = Notifier.from_settings(self.settings, store=keeper.store,
                                          metrics=self.metrics, audit=wal.append, active=active,
                                          ack_links=self.ack_links, on_dead=dead,
                                          on_outcome=self.health.notification_outcome,
                                          tenants=self.tenants,
                                          places=self.places)
        if notifier is not None:
            await notifier.open()
        return notifier

    async def commit_transitions(self, change: Callable[[], list[Transition]]
                                 ) -> list[Transition]:
        """A person's change (acknowledgement, maintenance), in engine order; see Changes."""
        return await self.changes.commit_transitions(change)

    def _add_transitions(self, work: Work, transitions: list[Transition]) -> None:
        work.transitions.extend(transitions)
        if self.notifier is not None and transitions:
            work.outbox.extend(self.notifier.plan(transitions, now_ms()))
            work.grants.extend(self.notifier.take_grants())
        work.lines.extend(alarm_line(t.after) for t in transitions if t.published)

    def _publish_alarms(self, transitions: list[Transition]) -> None:
        """Retained documents on parkwatch/alarms/...; the session resends them on reconnect."""
        if self.session is None:
            return
        for t in transitions:
            if t.published:
                self.session.publish(alarm_topic(t.after), retained_payload(t.after, None),
                                     qos=1, retain=True)

    # -- shutdown ------------------------------------------------------------------------------

    async def _drain(self, tasks: _Tasks, puback: PubackStage, lane_puback: PubackStage,
                     deadline: float) -> None:
        """Wait for queued work to become durable and get its PUBACKs, but not past the
        deadline: with the WAL full (InfluxDB down, block policy) that could be forever.
        Cutting it short is safe: whatever got no PUBACK stays with the broker."""
        waits = [(tasks.commit, self._commits.queue), (tasks.puback, puback.queue),
                 (tasks.lane_puback, lane_puback.queue)]
        try:
            for task, queue in waits:
                if task is not None and not task.done():
                    await asyncio.wait_for(queue.join(), timeout=_left(deadline))
        except TimeoutError:
            log.error("shutdown: in-flight work did not become durable within %.0f s "
                      "(shutdown_timeout_s; is the WAL full?); messages without a PUBACK stay "
                      "with the broker and are redelivered on the next start",
                      self.settings.shutdown_timeout_s)
            for task, _ in waits:
                if task is not None:
                    task.cancel()

    async def _close_down(self, tasks: _Tasks, puback: PubackStage, lane_puback: PubackStage,
                          sink: Any, deadline: float) -> None:
        """After intake stopped: last state save, notifier, flush, close — within the deadline."""
        assert self.writer is not None
        assert self.wal is not None
        core = (tasks.writer, tasks.commit, tasks.puback, tasks.stats)
        for task in tasks.all():
            if task not in core:
                await _reap(task)
        if self._liveness_ticker is not None:
            # Last-heard times, so the next start resumes where this one stopped.
            try:
                await self._liveness_ticker.save()
            except ParkWatchError as exc:
                log.error("shutdown: device liveness not saved: %s", exc)
        if self.alarms is not None and not tasks.commit.done():
            # Last words: device last-seen times, so silence timers resume where they were.
            await self._commits.submit(lambda: Work(save_state=True))
            await self._drain(tasks, puback, lane_puback, deadline)
        for task in (tasks.commit, tasks.puback, tasks.stats):
            await _reap(task)
        if self.notifier is not None:
            await self.notifier.close(timeout_s=_left(deadline, cap=5))
        flushed = await self.writer.flush(timeout_s=_left(deadline, cap=10))
        if not flushed:
            log.warning("InfluxDB not reachable at shutdown; the WAL keeps the backlog "
                        "and replays it on the next start")
        await _reap(tasks.writer)
        await sink.close()
        await self.wal.close()
        if self.alarms is not None:
            await self.alarms.close()
        log.info("gateway stopped")

    # -- the gateway's own health --------------------------------------------------------------

    def _subscriptions(self) -> list[str]:
        topics = (self.validator.subscriptions() if self.partition.whole
                  else topic_filters(self.settings.mqtt.topic_root, self.parks))
        if self.settings.mqtt.watchdog_s > 0:
            topics.append(self.probe_topic)
        return topics

    def _heard(self) -> None:
        if self.watchdog is not None:
            self.watchdog.heard()

    def _health_stages(self, session: MqttSession, pipeline: list[Task]) -> list[Task]:
        """The ingest watchdog (ingest/watchdog.py) and the heartbeat (runtime/heartbeat.py)."""
        s = self.settings
        tasks = [_spawn(self.heartbeat.run(lambda: not any(t.done() for t in pipeline)),
                        "heartbeat")]
        if s.mqtt.watchdog_s > 0:
            def probe(payload: bytes) -> None:
                session.publish(self.probe_topic, payload, qos=1)
            self.watchdog = IngestWatchdog(
                interval_s=s.mqtt.watchdog_s, probe=probe, connected=lambda: session.connected,
                resubscribe=session.resubscribe, reconnect=session.reconnect,
                stalled=self.health.ingest_stalled,
                paused=lambda: self.wal is not None and self.wal.full)
            tasks.append(_spawn(self.watchdog.run(), "watchdog"))
        return tasks

    def _check_storage(self) -> None:
        """A full write-ahead log is raised as an alarm: the park is (partly) unmonitored."""
        self.health.storage(full=self.wal is not None and self.wal.full,
                            block=self.settings.wal.full_policy == "block")


class StageFailed(ParkWatchError):
    """A pipeline stage stopped on its own; the gateway shut down instead of limping on."""


def _log_setting_warnings(s: Settings) -> None:
    for warning in s.plaintext_warnings():
        log.warning("insecure setting in use: %s", warning)
    for warning in s.startup_warnings():   # costs, not dangers: ack_after vs the window
        log.warning("%s", warning)


def _raise_if_fenced(failed: list[Task]) -> None:
    """The lease's verdict among the failed stages' errors (a TaskGroup wraps it) is raised
    as is: "lost the lease", not "stage failed" (crash-only: the supervisor restarts this
    instance as a standby)."""
    for task in failed:
        exc: BaseException | None = None if task.cancelled() else task.exception()
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        if isinstance(exc, FencedOut):
            raise exc


def _left(deadline: float, cap: float | None = None) -> float:
    """Seconds until ``deadline`` (at least a moment), at most ``cap``."""
    left = max(0.1, deadline - time.monotonic())
    return min(left, cap) if cap is not None else left


async def _reap(task: Task) -> None:
    """Cancel and await a stage during shutdown, reporting (not re-raising) its failure so
    the rest of the shutdown — flushing the WAL, closing the store — still happens."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception as exc:  # noqa: BLE001 - reported here, and run() raises StageFailed
        log.error("stage %s ended with %r", task.get_name(), exc)


async def _until_stop_or_failure(stop: asyncio.Event, stages: list[Task]) -> list[Task]:
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


async def make_sink_for(s: Settings) -> Any:
    """The InfluxDB sink ``influx:`` configures (also the standby's, runtime/leftovers.py)."""
    i = s.influx
    return await make_sink(
        url=i.url, version=i.version, database=i.database, retention_policy=i.retention_policy,
        username=i.username, password=i.password.get_secret_value() if i.password else None,
        org=i.org, bucket=i.bucket, token=i.token.get_secret_value() if i.token else None,
        timeout_s=i.timeout_s, create_database=i.create_database)
