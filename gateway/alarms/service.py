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
        store for one that already resolved; then committed like any alarm change. On a shared
        store, an active alarm another instance's engine holds is handed to that instance
        (:meth:`run_handoffs` there) and this call waits for its answer.

        ``by`` is who the channel vouches for, ``name`` an unverified typed name. Raises
        :class:`AlreadyAcknowledged` for a second acknowledgement (the first one stands)."""
        async with self._lock:
            try:
                made = await self._commit(lambda: [self._keeper.acknowledge(
                    alarm_id, by=by, disposition=disposition, channel=channel, name=name)])
                return made[0].after
            except KeyError:
                alarm = await self._keeper.store.get(alarm_id)
                if alarm is None:
                    raise
                if not self._held_elsewhere(alarm):
                    transition = await self._acknowledge_resolved(
                        alarm_id, by=by, disposition=disposition, channel=channel, name=name)
                    made = await self._commit(lambda: [transition])
                    return made[0].after
        # Outside the lock: waiting for another instance must not hold up this one's changes.
        return await self._hand_off(AckRequest(
            alarm_id=alarm_id, acknowledged_by=by, disposition=disposition, channel=channel,
            name=name, requested_at_ms=now_ms()))

    def _held_elsewhere(self, alarm: Alarm) -> bool:
        """Active, unacknowledged, and not in this engine: another instance's engine owns it."""
        return (self._keeper.store.shared and alarm.state is not AlarmState.RESOLVED
                and not alarm.acknowledged)

    async def _hand_off(self, request: AckRequest) -> Alarm:
        store = self._keeper.store
        first = await store.request_ack(request)
        deadline = time.monotonic() + self._handoff_wait_s
        while True:
            # Read the request before the alarm: its owner commits the acknowledgement first
            # and drops the request after, so a gone request and an unacknowledged alarm mean
            # a refusal, never an answer not seen yet.
            waiting = first != request or request in await store.ack_requests()
            alarm = await store.get(request.alarm_id)
            if alarm is None:
                raise KeyError(request.alarm_id)
            if alarm.acknowledged:
                if first == request and alarm.acknowledged_by == request.acknowledged_by \
                        and alarm.ack_channel == request.channel:
                    return alarm
                raise AlreadyAcknowledged(alarm)
            if not waiting:
                # Taken and dropped without an acknowledgement: its owner refused it.
                raise ValueError(f"alarm {request.alarm_id} is {alarm.state.value}: the "
                                 "instance that holds it could not acknowledge it")
            if time.monotonic() >= deadline:
                if first == request:
                    await store.drop_ack_request(request)
                raise ValueError(f"alarm {request.alarm_id} is held by another instance, which "
                                 f"did not answer within {self._handoff_wait_s:g} s; try again")
            await asyncio.sleep(HANDOFF_POLL_S)

    async def run_handoffs(self) -> None:
        """Answer acknowledgements other instances filed for alarms this engine holds (and for
        alarms that resolved meanwhile, which any instance may answer: the store lets one
        acknowledgement through). Runs while the gateway runs, on a shared store only."""
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
            alarm = await store.get(request.alarm_id)
            if alarm is not None and self._held_elsewhere(alarm):
                if now_ms() - request.requested_at_ms > HANDOFF_FORGET_MS:
                    await store.drop_ack_request(request)   # nobody owns it: the asker gave up
                return                                      # else its owner answers
        try:
            await self.acknowledge(request.alarm_id, by=request.acknowledged_by,
                                   disposition=request.disposition, channel=request.channel,
                                   name=request.name)
        except (KeyError, ValueError) as exc:   # AlreadyAcknowledged is a ValueError
            log.info("acknowledgement handed over for alarm %s not applied: %s",
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
