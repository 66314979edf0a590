"""The gateway's side of the alarm API: reads come from the store, changes go through the
engine and the commit stage, so an acknowledgement is durable before the API answers."""

from __future__ import annotations

from typing import Any

from gateway.alarms.book import AlarmKeeper, now_ms
from gateway.runtime.gateway import Gateway
from rules.alarm import Alarm, AlarmState, Disposition, Maintenance, Transition


class GatewayAlarmService:
    """Implements :class:`gateway.http.alarmapi.AlarmService` for a running :class:`Gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    @property
    def _book(self) -> AlarmKeeper:
        if self._gateway.alarms is None:
            raise ValueError("alarms are disabled in this gateway's configuration")
        return self._gateway.alarms

    async def list_alarms(self, **filters: Any) -> list[Alarm]:
        return await self._book.store.list(**filters)

    async def get_alarm(self, alarm_id: str) -> Alarm | None:
        return await self._book.store.get(alarm_id)

    async def alarm_history(self, alarm_id: str) -> list[dict[str, Any]]:
        return await self._book.store.history(alarm_id)

    async def acknowledge(self, alarm_id: str, *, by: str, disposition: Disposition,
                          channel: str) -> Alarm:
        try:
            transition = self._book.acknowledge(alarm_id, by=by, disposition=disposition,
                                                channel=channel)
        except KeyError:
            transition = await self._acknowledge_resolved(alarm_id, by=by,
                                                          disposition=disposition,
                                                          channel=channel)
        await self._gateway.commit_transitions([transition])
        return transition.after

    async def _acknowledge_resolved(self, alarm_id: str, *, by: str, disposition: Disposition,
                                    channel: str) -> Transition:
        """An alarm that cleared before anyone answered still needs a human verdict (was it a
        false alarm?) — and its retained document is cleared only once it has one."""
        alarm = await self._book.store.get(alarm_id)
        if alarm is None:
            raise KeyError(alarm_id)
        if alarm.state is not AlarmState.RESOLVED or alarm.acknowledged_by is not None:
            raise ValueError(f"alarm {alarm_id} is {alarm.state.value} and was acknowledged by "
                             f"{alarm.acknowledged_by}")
        at = now_ms()
        return Transition(alarm, alarm.evolve(acknowledged_by=by, acknowledged_at_ms=at,
                                              ack_channel=channel, disposition=disposition,
                                              updated_at_ms=at))

    async def set_maintenance(self, *, scope: str, target: str, mode: Maintenance,
                              until_ms: int | None, by: str) -> None:
        transitions = self._book.set_maintenance(scope=scope, target=target, mode=mode,
                                                 until_ms=until_ms, by=by)
        # Saved even without transitions: the maintenance window itself is engine state.
        await self._gateway.commit_transitions(transitions)

    async def list_maintenance(self) -> list[dict[str, Any]]:
        return self._book.maintenance_rows()

    def ack_url(self, alarm: Alarm) -> str | None:
        return None  # signed ack links arrive with notifications (issue 4)
