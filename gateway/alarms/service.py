"""The alarm service behind the HTTP API, the ack page and the CLI: reads come from the store,
changes go through the engine and then the pipeline's commit stage, so a person's
acknowledgement is durable (in the alarm store, with its transition) before the API answers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.alarms.keeper import AlarmKeeper, now_ms
from gateway.alarms.store import AckRequest, AlarmStoreError
from rules.alarm import (
    Alarm,
    AlarmState,
    AlreadyAcknowledged,
    Disposition,
    Maintenance,
    Transition,
    reclassification,
)

log = logging.getLogger(__name__)

#: How long an instance waits for the one whose engine holds an alarm to take its ack.
HANDOFF_WAIT_S = 10.0
HANDOFF_POLL_S = 0.2
#: A request nobody took (its owner is down and no standby took over) is dropped after this.
HANDOFF_FORGET_MS = 60_000

#: Runs an engine step (the callable) in commit order and makes its transitions durable and
#: visible (the runtime's commit stage: alarm store, `alarms` points, retained documents,
#: notifications); returns them once they are in the store.
Commit = Callable[[Callable[[], list[Transition]]], Awaitable[list[Transition]]]


class GatewayAlarmService:
    """Implements :class:`gateway.http.alarmapi.AlarmService` for a running gateway."""

    def __init__(self, keeper: AlarmKeeper, commit: Commit, *,
                 handoff_wait_s: float = HANDOFF_WAIT_S) -> None:
        self._keeper = keeper
        self._commit = commit
        self._handoff_wait_s = handoff_wait_s
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

        On a shared store (docs/scale.md) an alarm this engine does not hold goes through the
        ``ack_requests`` table: the first request for an alarm stands, an active alarm is
        acknowledged by the instance whose engine holds it (:meth:`run_handoffs` there) while
        this call waits, and a resolved one by the instance whose request stands — so of two
        instances only one ever writes the acknowledgement.

        ``by`` is who the channel vouches for, ``name`` an unverified typed name. Raises
        :class:`AlreadyAcknowledged` for a second acknowledgement (the first one stands)."""
        async with self._lock:
            try:
                made = await self._commit(lambda: [self._keeper.acknowledge(
                    alarm_id, by=by, disposition=disposition, channel=channel, name=name)])
                return made[0].after
            except KeyError:
                if not self._keeper.store.shared:
                    transition = await self._acknowledge_resolved(
                        alarm_id, by=by, disposition=disposition, channel=channel, name=name)
                    made = await self._commit(lambda: [transition])
                    return made[0].after
        # Outside the lock: waiting for another instance must not hold up this one's changes.
        return await self._hand_off(AckRequest(
            alarm_id=alarm_id, acknowledged_by=by, disposition=disposition, channel=channel,
            name=name, requested_at_ms=now_ms()))

    async def _hand_off(self, request: AckRequest) -> Alarm:
        store = self._keeper.store
        first = await store.request_ack(request)
        mine = first == request
        deadline = time.monotonic() + self._handoff_wait_s
        try:
            while True:
                # The request before the alarm: an owner commits the acknowledgement, then drops
                # the request, so a gone request and an unacknowledged alarm mean a refusal.
                waiting = not mine or request in await store.ack_requests()
                alarm = await store.get(request.alarm_id)
                if alarm is None:
                    raise KeyError(request.alarm_id)
                if alarm.acknowledged:
                    if mine and (alarm.acknowledged_by, alarm.ack_channel) == (
                            request.acknowledged_by, request.channel):
                        return alarm
                    raise AlreadyAcknowledged(alarm)
                if mine and alarm.state is AlarmState.RESOLVED:
                    # Nobody's engine holds it any more; the request that stands makes this
                    # instance the only one acknowledging it in the store.
                    return await self._acknowledge_in_store(request)
                if not waiting:
                    raise ValueError(f"alarm {request.alarm_id} is {alarm.state.value}: the "
                                     "instance that holds it could not acknowledge it")
                if time.monotonic() >= deadline:
                    raise ValueError(f"alarm {request.alarm_id} is held by another instance, "
                                     f"which did not answer within {self._handoff_wait_s:g} s;"
                                     " try again")
                await asyncio.sleep(HANDOFF_POLL_S)
        finally:
            if mine:
                await store.drop_ack_request(request)

    async def _acknowledge_in_store(self, request: AckRequest) -> Alarm:
        async with self._lock:
            transition = await self._acknowledge_resolved(
                request.alarm_id, by=request.acknowledged_by, disposition=request.disposition,
                channel=request.channel, name=request.name)
            made = await self._commit(lambda: [transition])
        return made[0].after

    async def run_handoffs(self) -> None:
        """Acknowledge the alarms this engine holds that other instances were asked to
        acknowledge. Runs while the gateway runs, on a shared store only."""
        store = self._keeper.store
        while True:
            try:
                for request in await store.ack_requests():
                    await self._answer(request)
            except AlarmStoreError as exc:      # the database is away: try again next round
                log.warning("acknowledgement hand-over: %s", exc)
            await asyncio.sleep(HANDOFF_POLL_S)

    async def _answer(self, request: AckRequest) -> None:
        store = self._keeper.store
        if not self._keeper.holds(request.alarm_id):
            if now_ms() - request.requested_at_ms > HANDOFF_FORGET_MS:
                await store.drop_ack_request(request)   # its asker is gone
            return
        try:
            async with self._lock:
                await self._commit(lambda: [self._keeper.acknowledge(
                    request.alarm_id, by=request.acknowledged_by,
                    disposition=request.disposition, channel=request.channel,
                    name=request.name)])
        except KeyError:
            return          # resolved meanwhile: the asker acknowledges it in the store
        except ValueError as exc:   # already acknowledged here, or still pending: refused
            log.info("acknowledgement of alarm %s handed over by another instance: %s",
                     request.alarm_id, exc)
        await store.drop_ack_request(request)

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
                if self._keeper.store.shared and alarm.state is not AlarmState.RESOLVED:
                    # Its engine, on another instance, would overwrite a change made here.
                    raise ValueError(f"alarm {alarm_id} is active on another instance:"
                                     " reclassify it there, or once it has resolved") from None
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
