"""The gateway's side of the alarm API: reads come from the store, changes go through the
engine and the commit stage, so an acknowledgement is durable before the API answers."""

from __future__ import annotations

from typing import Any

from gateway.alarms import AlarmBook
from gateway.pipeline import Gateway
from rules.alarm import Alarm, Disposition, Maintenance


class GatewayAlarmService:
    """Implements :class:`gateway.alarmapi.AlarmService` for a running :class:`Gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    @property
    def _book(self) -> AlarmBook:
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
        transition = self._book.acknowledge(alarm_id, by=by, disposition=disposition,
                                            channel=channel)
        await self._gateway.commit_transitions([transition])
        return transition.after

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
