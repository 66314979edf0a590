"""From alarm transitions to outbox rows, and the dispatcher that sends them.

This release wires the catch-all generic webhook of contract §7
(``PARKWATCH_NOTIFY__WEBHOOK_URL`` / ``__WEBHOOK_SECRET``): every published alarm state change
is delivered to it, signed per Standard Webhooks, exactly once. The routing tree, escalation and
the other channels plug into :meth:`Notifier.plan` and the channel map.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gateway.alarmstore import AlarmStore
from gateway.config import NotifySettings
from gateway.metrics import Metrics
from gateway.notify.base import Channel, Notification
from gateway.notify.dispatcher import Dispatcher
from gateway.notify.outbox import Outbox, outbox_row
from gateway.notify.webhook import WebhookChannel
from rules.alarm import Severity, Transition

#: How long ParkWatch keeps trying one notification before it is declared dead.
DEADLINE_MS = 24 * 3600 * 1000


class Notifier:
    def __init__(self, *, store: AlarmStore, metrics: Metrics,
                 audit: Callable[[list[str]], Awaitable[None]],
                 channels: dict[str, Channel]) -> None:
        self._channels = channels
        self.outbox = Outbox(store)
        self.dispatcher = Dispatcher(outbox=self.outbox, channels=channels, metrics=metrics,
                                     audit=audit)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: NotifySettings, *, store: AlarmStore, metrics: Metrics,
                      audit: Callable[[list[str]], Awaitable[None]]) -> Notifier | None:
        channels: dict[str, Channel] = {}
        if settings.webhook_url:
            secret = (settings.webhook_secret.get_secret_value()
                      if settings.webhook_secret else None)
            channels["webhook"] = WebhookChannel(url=settings.webhook_url, secret=secret)
        if not channels:
            return None
        return cls(store=store, metrics=metrics, audit=audit, channels=channels)

    def plan(self, transitions: Sequence[Transition], now_ms: int) -> list[tuple[Any, ...]]:
        """Outbox rows for these transitions (committed with them, in one transaction)."""
        rows: list[tuple[Any, ...]] = []
        if "webhook" not in self._channels:
            return rows
        for t in transitions:
            if not t.published:
                continue
            a = t.after
            doc = a.document()
            # One key per state change of one alarm: a replayed transition maps to the same
            # key and the outbox ignores it.
            key = f"{a.alarm_id}:{a.updated_at_ms}:{a.state.value}:{a.severity.value}:webhook"
            n = Notification(key=key, channel="webhook", recipient="", title=a.rule,
                             text=a.message, alarm=doc)
            rows.append(outbox_row(n, now_ms=now_ms, due_ms=now_ms,
                                   deadline_ms=now_ms + DEADLINE_MS,
                                   fire_class=a.severity is Severity.CRITICAL))
        return rows

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
