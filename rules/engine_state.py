"""EngineState: everything the engine needs to resume after a restart, as plain JSON.

The ids of all non-resolved alarms (pending ones too; the alarms themselves are rows of the
alarm store, saved in the same transaction), per-device clocks (newest reading time and last
receive time), the rule-kind memory that drives timers (for-durations,
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

    def to_json(self, cache: StateJson | None = None) -> str:
        """The state as JSON text (format 2): active alarms by id only.

        The alarms themselves are rows of the alarm store, written in the same transaction as
        this state, so naming them is enough; writing them out again with every commit cost a
        quarter of the event loop in a fire storm (bench/RESULTS.md, GB/T 26875.3 section).
        ``cache`` keeps each memory entry's text while its content is unchanged.
        """
        text = cache or StateJson()
        head = json.dumps({
            "version": 2, "saved_at_ms": self.saved_at_ms, "started_at_ms": self.started_at_ms,
            "alarm_ids": [a.alarm_id for a in self.alarms],
            "clocks": {k: list(v) for k, v in self.clocks.items()},
            "maintenance": [dict(m) for m in self.maintenance],
            "late_readings": self.late_readings, "seen_events": list(self.seen_events),
        }, ensure_ascii=False)
        return head[:-1] + ', "memory": ' + text.memory(self.memory) + "}"

    @staticmethod
    def alarm_ids(text: str) -> list[str] | None:
        """The ids of the active alarms a saved state names (format 2), or None (format 1
        carries the alarms themselves)."""
        doc = json.loads(text)
        ids = doc.get("alarm_ids")
        return [str(i) for i in ids] if ids is not None else None

    @classmethod
    def from_json(cls, text: str, alarms: Mapping[str, Alarm] | None = None) -> EngineState:
        """Parse a saved state; format 2 takes its alarms from ``alarms`` (by id, as the store
        holds them). An id the store does not have is left out (see :meth:`missing`)."""
        doc = json.loads(text)
        version = doc.get("version")
        if version == 1:
            restored = tuple(alarm_from_dict(a) for a in doc["alarms"])
        elif version == 2:
            found = alarms or {}
            restored = tuple(found[i] for i in doc["alarm_ids"] if i in found)
        else:
            raise ValueError(f"unknown engine state version {version!r}")
        return cls(saved_at_ms=doc["saved_at_ms"], started_at_ms=doc["started_at_ms"],
                   alarms=restored,
                   clocks={k: (v[0], v[1]) for k, v in doc["clocks"].items()},
                   memory=doc["memory"], maintenance=tuple(doc["maintenance"]),
                   late_readings=int(doc["late_readings"]),
                   # Absent in state saved before event dedup existed.
                   seen_events=tuple(doc.get("seen_events", ())))


class StateJson:
    """The JSON text of each memory entry, reused while the entry's content is unchanged.

    Most of a park's rule memory (silence timers, plausibility runs, coincidence signals) does
    not change between two commits; comparing a fresh dump with the last one is much cheaper
    than encoding it again."""

    def __init__(self) -> None:
        self._texts: dict[str, tuple[Any, str]] = {}

    def memory(self, memory: Mapping[str, Any]) -> str:
        parts = []
        texts = self._texts
        for key, data in memory.items():
            hit = texts.get(key)
            if hit is None or hit[0] != data:
                hit = texts[key] = (data, json.dumps(key, ensure_ascii=False) + ": "
                                    + json.dumps(data, ensure_ascii=False))
            parts.append(hit[1])
        if len(texts) > 2 * len(memory) + 64:
            self._texts = {k: v for k, v in texts.items() if k in memory}
        return "{" + ", ".join(parts) + "}"


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
