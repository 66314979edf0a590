"""EngineState: everything the engine needs to resume after a restart, as plain JSON.

All non-resolved alarms (pending ones with their start time), per-device clocks (newest
reading time and last receive time), the rule-kind memory that drives timers (for-durations,
door-open-since, silence, rate windows with an active alarm, plausibility runs, coincidence
signals) and the maintenance windows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from rules.alarm import Alarm, AlarmState, Disposition, Maintenance, Severity, Subject


@dataclass(frozen=True, slots=True)
class EngineState:
    saved_at_ms: int | None
    started_at_ms: int | None
    alarms: tuple[Alarm, ...] = ()
    clocks: Mapping[str, tuple[int | None, int | None]] = field(default_factory=dict)
    memory: Mapping[str, Any] = field(default_factory=dict)
    maintenance: tuple[Mapping[str, Any], ...] = ()
    late_readings: int = 0
    #: Recently seen event dedup keys, oldest first (see Engine.seen_event).
    seen_events: tuple[str, ...] = ()

    def to_json(self, cache: AlarmJson | None = None) -> str:
        """The state as JSON text; with ``cache`` each alarm is serialised once per version
        (the state is saved with every commit, and a park in a storm has many active alarms)."""
        text = cache or AlarmJson()
        rest = json.dumps({
            "version": 1, "saved_at_ms": self.saved_at_ms, "started_at_ms": self.started_at_ms,
            "clocks": {k: list(v) for k, v in self.clocks.items()},
            "memory": dict(self.memory), "maintenance": [dict(m) for m in self.maintenance],
            "late_readings": self.late_readings, "seen_events": list(self.seen_events),
        }, sort_keys=True, ensure_ascii=False)
        alarms = ", ".join(text(a) for a in self.alarms)
        text.forget_all_but(self.alarms)
        # "alarms" sorts first: the same text json.dumps(sort_keys=True) gives for the whole.
        return '{"alarms": [' + alarms + "], " + rest[1:]

    @classmethod
    def from_json(cls, text: str) -> EngineState:
        doc = json.loads(text)
        if doc.get("version") != 1:
            raise ValueError(f"unknown engine state version {doc.get('version')!r}")
        return cls(saved_at_ms=doc["saved_at_ms"], started_at_ms=doc["started_at_ms"],
                   alarms=tuple(alarm_from_dict(a) for a in doc["alarms"]),
                   clocks={k: (v[0], v[1]) for k, v in doc["clocks"].items()},
                   memory=doc["memory"], maintenance=tuple(doc["maintenance"]),
                   late_readings=int(doc["late_readings"]),
                   # Absent in state saved before event dedup existed.
                   seen_events=tuple(doc.get("seen_events", ())))


class AlarmJson:
    """Each alarm's JSON text, kept while the alarm object lives in the state. Alarms are
    immutable values: a change makes a new object, so the identity is the version."""

    def __init__(self) -> None:
        self._texts: dict[int, tuple[Alarm, str]] = {}

    def __call__(self, alarm: Alarm) -> str:
        hit = self._texts.get(id(alarm))
        if hit is not None and hit[0] is alarm:
            return hit[1]
        text = json.dumps(alarm_to_dict(alarm), sort_keys=True, ensure_ascii=False)
        self._texts[id(alarm)] = (alarm, text)
        return text

    def forget_all_but(self, alarms: tuple[Alarm, ...]) -> None:
        if len(self._texts) > 2 * len(alarms) + 64:
            keep = {id(a) for a in alarms}
            self._texts = {k: v for k, v in self._texts.items() if k in keep}


def alarm_to_dict(a: Alarm) -> dict[str, Any]:
    out = {f.name: getattr(a, f.name) for f in fields(a)}
    out["subject"] = {f.name: getattr(a.subject, f.name) for f in fields(a.subject)}
    out["labels"] = dict(a.labels)
    for key in ("severity", "state", "maintenance", "disposition"):
        out[key] = out[key].value if out[key] is not None else None
    return out


def alarm_from_dict(d: Mapping[str, Any]) -> Alarm:
    data = dict(d)
    data["subject"] = Subject(**data["subject"])
    data["severity"] = Severity(data["severity"])
    data["state"] = AlarmState(data["state"])
    data["maintenance"] = Maintenance(data["maintenance"])
    data["disposition"] = Disposition(data["disposition"]) if data["disposition"] else None
    return Alarm(**data)
