"""Gateway-health alarms: ParkWatch reports on itself through the same engine, store, outputs
and notification routing as any sensor alarm (rules/system.py names the rules).

Raised from anywhere in the gateway (the watchdog, the WAL, the notification dispatcher) by
calling :meth:`GatewayHealth.report` or one of its helpers; the alarm ticker takes the pending
conditions with :meth:`GatewayHealth.take` and commits them within a tick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rules.alarm import Severity, Subject
from rules.system import (
    INGEST_STALLED,
    NOTIFICATION_DEAD,
    SCORECARD_OVERDUE,
    STORAGE_FULL,
    SYSTEM_KIND,
    HealthCondition,
)

#: Reports waiting for the next tick; beyond this a storm of them is dropped (one active alarm
#: per condition is all they can produce anyway).
MAX_PENDING_CONDITIONS = 1000
#: The park a gateway-health alarm is shown in when the registry has none.
FALLBACK_PARK = "parkwatch"


def health_subject(*, park: str | None, building: str | None, location: str) -> Subject:
    """Where a gateway-health alarm is shown: a park and building of the registry, else
    ParkWatch's own (so it still reaches the duty officer's routes)."""
    return Subject(park=park or FALLBACK_PARK, building=building or "gateway",
                   kind=SYSTEM_KIND, location=location)


class GatewayHealth:
    """Pending gateway-health conditions of one instance and the rules for raising them."""

    def __init__(self, *, instance: str, parks: Callable[[], Iterable[str]]) -> None:
        self._instance = instance
        self._parks = parks
        self._pending: list[HealthCondition] = []
        self._dead_channels: dict[tuple[str, str], Subject] = {}
        self._storage_alarmed = False

    def report(self, condition: HealthCondition) -> None:
        """Raise or clear a gateway-health alarm at the next tick."""
        if len(self._pending) < MAX_PENDING_CONDITIONS:
            self._pending.append(condition)

    def take(self) -> list[HealthCondition]:
        pending, self._pending = self._pending, []
        return pending

    def _per_park(self, rule: str, key: str, severity: Severity, message: str,
                  active: bool) -> None:
        # Each park this gateway serves is (partly) unmonitored: each gets its own alarm.
        for park in sorted(set(self._parks())) or [FALLBACK_PARK]:
            subject = health_subject(park=park, building=None,
                                     location=f"ParkWatch {self._instance}")
            self.report(HealthCondition(rule, key, subject, severity, message, active=active))

    def storage(self, *, full: bool, block: bool) -> None:
        """A full write-ahead log is raised as an alarm (called every tick; acts on changes)."""
        if full == self._storage_alarmed:
            return
        self._storage_alarmed = full
        why = ("the write-ahead log is full (is InfluxDB reachable?): telemetry is no longer "
               "acknowledged and device events wait at the broker" if block else
               "the write-ahead log is full (is InfluxDB reachable?): the oldest telemetry is "
               "being dropped")
        message = (f"ParkWatch {self._instance}: {why}" if full else
                   f"ParkWatch {self._instance}: the write-ahead log has room again")
        self._per_park(STORAGE_FULL, "wal", Severity.CRITICAL if block else Severity.MAJOR,
                       message, full)

    def ingest_stalled(self, stalled: bool, why: str) -> None:
        """The watchdog's verdict on the broker path (gateway/ingest/watchdog.py)."""
        message = (f"ParkWatch {self._instance} receives nothing from the broker: {why}"
                   if stalled else f"ParkWatch {self._instance}: {why}")
        self._per_park(INGEST_STALLED, "ingest", Severity.CRITICAL, message, stalled)

    def notification_dead(self, *, channel: str, key: str, alarm: Mapping[str, Any],
                          fire_class: bool, why: str) -> None:
        """A notification nobody will deliver any more, shown where its alarm is."""
        subject = health_subject(park=alarm.get("park"), building=alarm.get("building"),
                                 location=f"notification channel {channel}")
        self._dead_channels[(channel, subject.park)] = subject
        self.report(HealthCondition(
            NOTIFICATION_DEAD, channel, subject,
            Severity.CRITICAL if fire_class else Severity.MAJOR,
            f"Notification {key} via {channel} was not delivered ({why})"))

    def scorecard_overdue(self, park: str, overdue: bool, why: str) -> None:
        """A park's daily scorecard not written long after it was due, or written at last."""
        subject = health_subject(park=park, building=None,
                                 location=f"ParkWatch {self._instance} daily scorecard")
        self.report(HealthCondition(SCORECARD_OVERDUE, "scorecard", subject, Severity.MINOR,
                                    why, active=overdue))

    def notification_outcome(self, channel: str, sent: bool) -> None:
        """A channel that delivers again ends its dead-notification alarms."""
        if not sent:
            return
        for (chan, park), subject in list(self._dead_channels.items()):
            if chan == channel:
                del self._dead_channels[(chan, park)]
                self.report(HealthCondition(NOTIFICATION_DEAD, channel, subject,
                                            Severity.MAJOR, f"Channel {channel} delivers again",
                                            active=False))
