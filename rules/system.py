"""Alarms about ParkWatch itself (gateway health), raised by the gateway, not by sensor rules.

A notification nobody will deliver any more, or ingest that stalled, is as urgent as a sensor
fault: it goes through the same engine, store, outputs and notification routing as any alarm.
The gateway reports a :class:`HealthCondition` (raised or cleared); the engine turns it into the
usual transitions, one active alarm per (rule, key).
"""

from __future__ import annotations

from dataclasses import dataclass

from rules.alarm import Severity, Subject

#: A notification failed for good or passed its deadline with no fallback left.
NOTIFICATION_DEAD = "notification_dead"
#: Connected to the broker, but nothing arrives although devices should be reporting.
INGEST_STALLED = "ingest_stalled"

#: The write-ahead log reached its cap (InfluxDB unreachable for long): ingest paused or
#: telemetry being dropped, per wal.full_policy.
STORAGE_FULL = "storage_full"

#: A fire-alarm panel's UITD sent nothing for uitd.heartbeat_allowance_s (gateway/ingest/uitd):
#: a dead panel link means fires go unseen, so it is major and pages the duty officer.
UITD_OFFLINE = "uitd_offline"

#: Yesterday's scorecard of a park could not be written for hours after it was due
#: (gateway/runtime/scorecardday.py): the record the park is graded on has a gap.
SCORECARD_OVERDUE = "scorecard_overdue"

SYSTEM_RULES = frozenset({NOTIFICATION_DEAD, INGEST_STALLED, STORAGE_FULL, UITD_OFFLINE,
                          SCORECARD_OVERDUE})
#: The ``kind`` of a system alarm's subject (no sensor kind has this name).
SYSTEM_KIND = "parkwatch"


@dataclass(frozen=True, slots=True)
class HealthCondition:
    """A gateway-health condition that holds (``active``) or stopped holding."""

    rule: str
    key: str                # what it is about: a channel name, the broker, …
    subject: Subject
    severity: Severity
    message: str
    active: bool = True
    value: float | None = None

    def __post_init__(self) -> None:
        if self.rule not in SYSTEM_RULES:
            raise ValueError(f"unknown system rule {self.rule!r}")

    @property
    def fingerprint(self) -> str:
        return f"system:{self.rule}:{self.subject.park}:{self.key}"
