"""The alarm service behind the HTTP API, the ack page and the CLI: reads come from the store,
changes go through the engine and then the pipeline's commit stage, so a person's
acknowledgement is durable (in the alarm store, with its transition) before the API answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.alarms.keeper import AlarmKeeper, now_ms
from rules.alarm import (
    Alarm,
    AlarmState,
    AlreadyAcknowledged,
    Disposition,
    Maintenance,
    Transition,
    reclassification,
)

#: Runs an engine step (the callable) in commit order and makes its transitions durable and
#: visible (the runtime's commit stage: alarm store, `alarms` points, retained documents,
#: notifications); returns them once they are in the store.
Commit = Callable[[Callable[[], list[Transition]]], Awaitable[list[Transition]]]


class GatewayAlarmService:
    """Implements :class:`gateway.http.alarmapi.AlarmService` for a running gateway."""

    def __init__(self, keeper: AlarmKeeper, commit: Commit) -> None:
        self._keeper = keeper
        self._commit = commit
        # One person's change at a time: the check for an earlier acknowledgement of a resolved
        # alarm (read from the store) and the commit must not interleave with another one.
        self._lock = asyncio.Lock()

    async def list_alarms(self, **filters: Any) -> list[Alarm]:
        return await self._keeper.store.list(**filters)

    async def get_alarm(self, alarm_id: str) -> Alarm | None:
        return await self._keeper.store.get(alarm_id)

    async def alarm_history(self, alarm_id: str) -> list[dict[str, Any]]:
        return await self._keeper.store.history(alarm_id)

    async def acknowledge(self, alarm_id: str, *, by: str, disposition: Disposition,
                          channel: str, name: str | None = None) -> Alarm:
        """Where a person's acknowledgement is decided: the engine for an active alarm, the
        store for one that already resolved; then committed like any alarm change.

        ``by`` is who the channel vouches for, ``name`` an unverified typed name. Raises
        :class:`AlreadyAcknowledged` for a second acknowledgement (the first one stands)."""
        async with self._lock:
            try:
                made = await self._commit(lambda: [self._keeper.acknowledge(
                    alarm_id, by=by, disposition=disposition, channel=channel, name=name)])
            except KeyError:
                transition = await self._acknowledge_resolved(
                    alarm_id, by=by, disposition=disposition, channel=channel, name=name)
                made = await self._commit(lambda: [transition])
            return made[0].after

    async def _acknowledge_resolved(self, alarm_id: str, *, by: str, disposition: Disposition,
                                    channel: str, name: str | None) -> Transition:
        """An alarm that cleared before anyone answered still needs a human verdict (was it a
        false alarm?) — and its retained document is cleared only once it has one."""
        alarm = await self._keeper.store.get(alarm_id)
        if alarm is None:
            raise KeyError(alarm_id)
        if alarm.acknowledged:
            raise AlreadyAcknowledged(alarm)
        if alarm.state is not AlarmState.RESOLVED:
            raise ValueError(f"alarm {alarm_id} is {alarm.state.value}")
        at = now_ms()
        return Transition(alarm, alarm.evolve(acknowledged_by=by, acknowledged_at_ms=at,
                                              ack_channel=channel, disposition=disposition,
                                              acknowledged_name=name, updated_at_ms=at))

    async def reclassify(self, alarm_id: str, *, by: str, disposition: Disposition,
                         reason: str) -> Alarm:
        """Correct the disposition of an acknowledged alarm, with its own audit record
        (``reclassifications``), committed like an acknowledgement. KeyError if unknown,
        ValueError if it was never acknowledged (or already has that disposition)."""
        async with self._lock:
            try:
                made = await self._commit(lambda: [self._keeper.reclassify(
                    alarm_id, by=by, disposition=disposition, reason=reason)])
            except KeyError:
                alarm = await self._keeper.store.get(alarm_id)
                if alarm is None:
                    raise
                at = now_ms()
                change = reclassification(alarm, by=by, disposition=disposition, reason=reason,
                                          now_ms=at)
                transition = Transition(alarm, alarm.evolve(disposition=disposition,
                                                             updated_at_ms=at), change)
                made = await self._commit(lambda: [transition])
            return made[0].after

    async def reclassifications(self, alarm_id: str) -> list[dict[str, Any]]:
        return await self._keeper.store.reclassifications(alarm_id)

    async def set_maintenance(self, *, scope: str, target: str, mode: Maintenance,
                              until_ms: int | None, by: str) -> None:
        # Committed even without transitions: the maintenance window itself is engine state.
        await self._commit(lambda: self._keeper.set_maintenance(
            scope=scope, target=target, mode=mode, until_ms=until_ms, by=by))

    async def list_maintenance(self) -> list[dict[str, Any]]:
        return self._keeper.maintenance_rows()
