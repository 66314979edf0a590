"""From alarm transitions to outbox rows, and the dispatcher that sends them.

Two sources of notifications, both written to the durable outbox in the same SQLite
transaction as the alarm change (or ticker pass) that caused them:

- the catch-all generic webhook of docs/configuration.md (``PARKWATCH_NOTIFY__WEBHOOK_URL`` /
  ``__WEBHOOK_SECRET``): every published alarm state change, signed per Standard Webhooks;
- the routing tree of ``notify.config`` (:mod:`gateway.notify.routing`): tier 0 when an alarm
  changes (:meth:`Notifier.plan`), later escalation tiers and fire-class repeats when they fall
  due (:meth:`Notifier.tick`, called by the gateway's alarm ticker every second).

Both :meth:`plan` and :meth:`tick` run inside the pipeline, so they are synchronous and do no
I/O: the keys already in the outbox are kept in memory (loaded by :meth:`open`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from gateway.alarms.acklinks import AckGrant, AckLinks
from gateway.alarms.store import AlarmStore, OutboxRow
from gateway.config import NotifySettings, Settings
from gateway.metrics import Metrics
from gateway.notify.base import Channel, Notification
from gateway.notify.channels.dryrun import LoggingChannel
from gateway.notify.channels.registry import build_channels
from gateway.notify.channels.webhook import WebhookChannel
from gateway.notify.dispatcher import Dispatcher, RateLimit
from gateway.notify.outbox import Outbox, Pending, outbox_row
from gateway.notify.plan import Context, Planned, due_escalations, next_due_ms
from gateway.notify.plan import plan as plan_transition
from gateway.notify.routing import (
    ChannelKind,
    NotifyConfig,
    load_notify_config,
    with_tenant_register,
)
from gateway.notify.templates import NO_NAMES, PlaceNames
from rules.alarm import Alarm, AlarmState, Severity, Transition
from sensors.errors import ConfigError
from sensors.tenants import TenantRegister

#: How long ParkWatch keeps trying one notification before it is declared dead.
DEADLINE_MS = 24 * 3600 * 1000
#: How long the outbox keys of an alarm that is no longer active stay in memory.
KEY_MEMORY_MS = 3600 * 1000
#: The catch-all webhook's channel name (docs/configuration.md).
CATCH_ALL = "webhook"
_NEVER = 2**62

ActiveAlarms = Callable[[], Iterable[Alarm]]
ContextFor = Callable[[str], Context]


def _no_alarms() -> list[Alarm]:
    return []


def _default_context(park: str) -> Context:
    return Context()


class Notifier:
    def __init__(self, *, store: AlarmStore, metrics: Metrics,
                 audit: Callable[[list[str]], Awaitable[None]],
                 channels: dict[str, Channel], config: NotifyConfig | None = None,
                 active: ActiveAlarms = _no_alarms, context: ContextFor = _default_context,
                 catch_all: bool | None = None, ack_links: AckLinks | None = None,
                 on_dead: Callable[[Pending, str], None] | None = None,
                 on_outcome: Callable[[str, bool], None] | None = None) -> None:
        self._channels = channels
        self._ack_links = ack_links
        # Ack-link rows minted while planning, written with the outbox rows that carry them.
        self._grants: list[AckGrant] = []
        if ack_links is not None:
            context = _with_ack_links(context, self._ack_link)
        self.config = config
        self._active = active
        self._context = context
        self._catch_all = CATCH_ALL in channels if catch_all is None else catch_all
        self.outbox = Outbox(store)
        rate_limits: dict[str, RateLimit] = {}
        fallbacks: dict[str, str] = {}
        if config is not None:
            for name, ch in config.channels.items():
                if ch.rate_limit_per_min:
                    rate_limits[name] = RateLimit(ch.rate_limit_per_min, 60.0)
                if ch.fallback:
                    fallbacks[name] = ch.fallback
        webhooks = {CATCH_ALL} if self._catch_all else set()
        if config is not None:
            webhooks |= {n for n, ch in config.channels.items() if ch.kind is ChannelKind.WEBHOOK}
        self.dispatcher = Dispatcher(outbox=self.outbox, channels=channels, metrics=metrics,
                                     audit=audit, rate_limits=rate_limits, fallbacks=fallbacks,
                                     unmergeable=webhooks, on_dead=on_dead,
                                     on_outcome=on_outcome,
                                     prepare=self._fill_links if ack_links else None)
        self._task: asyncio.Task[None] | None = None
        # Every outbox key per alarm id: what plan() and tick() must not enqueue again.
        self._keys: dict[str, set[str]] = {}
        # When the ticker next needs to look at an alarm (escalation schedule), per alarm id.
        self._next_check: dict[str, int] = {}
        # Last time plan() saw each alarm: keys of alarms gone from the active set for longer
        # than KEY_MEMORY_MS are forgotten (the outbox's unique key still refuses a repeat).
        self._touched: dict[str, int] = {}
        self._last_forget_ms = 0

    @classmethod
    def from_settings(cls, settings: Settings | NotifySettings, *, store: AlarmStore,
                      metrics: Metrics, audit: Callable[[list[str]], Awaitable[None]],
                      active: ActiveAlarms = _no_alarms,
                      env: Mapping[str, str] | None = None,
                      ack_links: AckLinks | None = None,
                      on_dead: Callable[[Pending, str], None] | None = None,
                      on_outcome: Callable[[str, bool], None] | None = None,
                      tenants: TenantRegister | None = None,
                      places: PlaceNames = NO_NAMES
                      ) -> Notifier | None:
        """The notifier the settings ask for, or None when no notification is configured.

        Raises ConfigError for a bad routing file or a channel secret missing from the
        environment."""
        full = settings if isinstance(settings, Settings) else None
        ns = settings.notify if isinstance(settings, Settings) else settings
        env = os.environ if env is None else env
        channels: dict[str, Channel] = {}
        config: NotifyConfig | None = None
        if ns.config is not None:
            config = load_notify_config(ns.config)
            if config.tenant_register is not None and tenants is None:
                raise ConfigError(str(ns.config), [
                    f"{ns.config}: notify.tenant_register: set, but no tenant register is "
                    "configured: set tenants (PARKWATCH_TENANTS) or remove tenant_register"])
            if tenants is not None:
                config = with_tenant_register(config, tenants, str(ns.config))
            if ns.webhook_url and CATCH_ALL in config.channels:
                raise ConfigError(str(ns.config), [
                    f"{ns.config}: notify.channels.{CATCH_ALL}: the name is taken by the "
                    "catch-all notify.webhook_url; rename the channel"])
            channels.update(build_channels(config, env=env, source=str(ns.config),
                                           dry_run=ns.dry_run))
        if ns.webhook_url:
            if ns.dry_run:
                channels[CATCH_ALL] = LoggingChannel(name=CATCH_ALL, kind="webhook")
            else:
                secret = ns.webhook_secret.get_secret_value() if ns.webhook_secret else None
                channels[CATCH_ALL] = WebhookChannel(url=ns.webhook_url, secret=secret)
        if not channels:
            return None
        context = _contexts(full, places) if full is not None else _default_context
        return cls(store=store, metrics=metrics, audit=audit, channels=channels, config=config,
                   active=active, context=context, catch_all=bool(ns.webhook_url),
                   ack_links=ack_links, on_dead=on_dead, on_outcome=on_outcome)

    @property
    def channels(self) -> Mapping[str, Channel]:
        return self._channels

    def _ack_link(self, alarm: Alarm, contact: str, channel: str) -> str:
        """A reference to a new link, not the link: outbox rows are readable on disk, so the
        URL (a capability) is rebuilt from the grant only when the message is sent."""
        assert self._ack_links is not None
        ref, grant = self._ack_links.reserve(alarm.alarm_id, contact=contact, channel=channel)
        self._grants.append(grant)
        return ref

    async def _fill_links(self, n: Notification) -> Notification:
        """The message as it leaves: every link reference replaced by its signed URL."""
        links = self._ack_links
        assert links is not None
        alarm_id = str(n.alarm.get("alarm_id") or "")

        async def fill(text: str) -> str:
            return await links.fill(text, alarm_id=alarm_id)
        alarm = dict(n.alarm)
        if isinstance(alarm.get("ack_url"), str):
            alarm["ack_url"] = await fill(alarm["ack_url"]) or None
        return dataclasses.replace(
            n, title=await fill(n.title), text=await fill(n.text), alarm=alarm,
            ack_url=(await fill(n.ack_url) or None) if n.ack_url else None,
            template_params={k: await fill(v) for k, v in n.template_params.items()})

    def take_grants(self) -> list[AckGrant]:
        """Ack-link rows minted since the last call (they go into the same transaction)."""
        grants, self._grants = self._grants, []
        return grants

    async def open(self) -> None:
        """Load the keys already in the outbox, so a restart never enqueues a message twice."""
        for key in await self.outbox.sent_keys(""):
            self._remember(key)
        await self.dispatcher.open(int(time.time() * 1000))

    def _remember(self, key: str) -> None:
        alarm_id = key.split(":", 1)[0]
        self._keys.setdefault(alarm_id, set()).add(key)

    # -- planning (synchronous: runs inside the pipeline) ---------------------------------------

    def plan(self, transitions: Sequence[Transition], now_ms: int) -> list[OutboxRow]:
        """Outbox rows for these transitions (committed with them, in one transaction)."""
        rows: list[OutboxRow] = []
        if self._catch_all:
            rows.extend(self._catch_all_rows(transitions, now_ms))
        if self.config is None:
            return rows
        published = [t for t in transitions if t.published]
        if not published:
            return rows
        active = list(self._active())
        for t in published:
            alarm = t.after
            self._touched[alarm.alarm_id] = now_ms
            self._next_check.pop(alarm.alarm_id, None)    # its schedule may have changed
            sent = self._keys.setdefault(alarm.alarm_id, set())
            planned = plan_transition(self.config, t, now_ms, already_sent=sent,
                                      active=active, ctx=self._context(alarm.subject.park))
            rows.extend(self._rows(planned, now_ms))
            if alarm.state is not AlarmState.FIRING:
                self._next_check[alarm.alarm_id] = _NEVER
        return rows

    def tick(self, now_ms: int) -> list[OutboxRow]:
        """Escalation tiers and fire-class repeats that fell due, as outbox rows."""
        if self.config is None:
            return []
        active = list(self._active())
        rows: list[OutboxRow] = []
        live = set()
        for alarm in active:
            live.add(alarm.alarm_id)
            if alarm.state is not AlarmState.FIRING:
                continue
            if now_ms < self._next_check.get(alarm.alarm_id, 0):
                continue
            sent = self._keys.setdefault(alarm.alarm_id, set())
            planned = due_escalations(self.config, alarm, now_ms, sent, active=active,
                                      ctx=self._context(alarm.subject.park))
            rows.extend(self._rows(planned, now_ms))
            nxt = next_due_ms(self.config, alarm, now_ms)
            self._next_check[alarm.alarm_id] = _NEVER if nxt is None else nxt
        for gone in [k for k in self._next_check if k not in live]:
            del self._next_check[gone]
        self._forget(live, now_ms)
        return rows

    def _forget(self, live: set[str], now_ms: int) -> None:
        """Drop the remembered keys of alarms resolved (not active) for KEY_MEMORY_MS."""
        if now_ms - self._last_forget_ms < KEY_MEMORY_MS // 60:
            return
        self._last_forget_ms = now_ms
        horizon = now_ms - KEY_MEMORY_MS
        for alarm_id in [a for a in self._keys if a not in live
                         and self._touched.get(a, 0) < horizon]:
            del self._keys[alarm_id]
            self._touched.pop(alarm_id, None)

    @property
    def remembered_alarms(self) -> int:
        """How many alarms' outbox keys are held in memory (bounded by _forget)."""
        return len(self._keys)

    def _rows(self, planned: Iterable[Planned], now_ms: int) -> list[OutboxRow]:
        rows = []
        for p in planned:
            self._remember(p.notification.key)
            rows.append(outbox_row(p.notification, now_ms=now_ms, due_ms=p.due_ms,
                                   deadline_ms=max(now_ms, p.due_ms) + DEADLINE_MS,
                                   fire_class=p.fire_class, group_key=p.group_key,
                                   group_interval_ms=p.group_interval_ms))
        return rows

    def _catch_all_rows(self, transitions: Sequence[Transition],
                        now_ms: int) -> list[OutboxRow]:
        rows: list[OutboxRow] = []
        for t in transitions:
            if not t.published:
                continue
            a = t.after
            doc = a.document()
            # One key per state change of one alarm: a replayed transition maps to the same
            # key and the outbox ignores it.
            key = f"{a.alarm_id}:{a.updated_at_ms}:{a.state.value}:{a.severity.value}:webhook"
            n = Notification(key=key, channel=CATCH_ALL, recipient="", title=a.rule,
                             text=a.message, alarm=doc)
            rows.append(outbox_row(n, now_ms=now_ms, due_ms=now_ms,
                                   deadline_ms=now_ms + DEADLINE_MS,
                                   fire_class=a.severity is Severity.CRITICAL))
        return rows

    # -- running ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self.dispatcher.run(), name="notify-dispatcher")

    def wake(self) -> None:
        self.dispatcher.wake()

    async def close(self, timeout_s: float = 5.0) -> None:
        await self.dispatcher.drain(timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for channel in self._channels.values():
            await channel.close()


def _with_ack_links(context: ContextFor,
                    link: Callable[[Alarm, str, str], str]) -> ContextFor:
    def with_links(park: str) -> Context:
        return dataclasses.replace(context(park), ack_link=link)
    return with_links


def _contexts(settings: Settings, places: PlaceNames = NO_NAMES) -> ContextFor:
    """Per park: its time zone and display name, the registry's place names (ack links are added
    by the ack-link module)."""
    cache: dict[str, Context] = {}

    def context(park: str) -> Context:
        ctx = cache.get(park)
        if ctx is None:
            ps = settings.parks.get(park)
            tz: dt.tzinfo = settings.timezone_for(park)
            ctx = cache[park] = Context(tz=tz, park_name=(ps.name if ps else "") or park,
                                        places=places)
        return ctx
    return context
