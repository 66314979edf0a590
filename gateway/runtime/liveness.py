"""Device liveness owned by the gateway: online/offline for every registered device.

A device is online while anything it sends keeps arriving: any accepted message (telemetry,
event, status ``online``) and any UITD frame of a panel. It goes offline after ``factor`` ×
its ``report_interval_s`` of silence, the allowance, on the same clock and with the same
factor as the silence rule (``device_silent``, config/rules/devices.yaml ``device_offline``),
and at once on a ``status: offline`` (its Last Will). The registry is the denominator: a
device never heard since ParkWatch first met it is offline once its first allowance after the
start has passed, and flagged ``never_seen``.

Every change of state is one ``device_status`` point, plus a snapshot of every device at a
fixed interval so that a dashboard reads the latest point per device and never guesses:

===============  ============================================================================
field            meaning
===============  ============================================================================
``online``       bool: the device's state from this point on
``reason``       status messages: ``reported`` or ``retained`` (unchanged meaning); traffic:
                 ``heard`` or ``silent``; startup: ``never_seen`` or ``grace_expired``;
                 snapshots repeat the reason of the device's last change
``source``       ``traffic`` | ``status`` | ``will`` | ``startup`` | ``snapshot``
``never_seen``   bool: no message of this device was ever heard (persisted across restarts)
===============  ============================================================================

The tags are the device's (park, building, floor, zone, device, tenant when set) plus ``kind``.
A silence transition is stamped with the moment the allowance ran out, not the tick that saw it.

A restart does not flip every device: the saved last-heard times and states come back (the
``device_liveness`` table of the alarm store), and a device saved online stays online until one
allowance after the start has passed without a word from it (the grace). This module is pure:
time comes in as arguments (tested with an injected clock in tests/test_liveness.py).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gateway.ingest.validate import MessageType, Validated
from gateway.storage.lineprotocol import (
    escape_field_key,
    escape_measurement,
    format_field_value,
    tag_set,
)
from rules.model import RuleSet, SilentRule
from sensors.registry import Device

#: The silence factor when the rule pack has no ``device_silent`` rule (or alarms are off);
#: config/rules/devices.yaml ``device_offline`` uses the same value.
DEFAULT_FACTOR = 3.0
#: The rule whose factor liveness follows when a pack has several ``device_silent`` rules.
SILENCE_RULE = "device_offline"
MEASUREMENT = "device_status"


class Source(enum.StrEnum):
    TRAFFIC = "traffic"
    STATUS = "status"
    WILL = "will"
    STARTUP = "startup"
    SNAPSHOT = "snapshot"


@dataclass(frozen=True, slots=True)
class Change:
    """One ``device_status`` point: a transition or a snapshot row."""

    device: str
    online: bool
    at_ms: int
    source: Source
    reason: str
    never_seen: bool


@dataclass(frozen=True, slots=True)
class Saved:
    """What survives a restart, per device (the alarm store's ``device_liveness`` row)."""

    device: str
    last_heard_ms: int | None
    online: bool
    reason: str


def silence_factor(rules: RuleSet | None) -> float:
    """The factor of the pack's silence rule (``device_offline`` first), so liveness and the
    ``device_offline`` alarm never disagree; :data:`DEFAULT_FACTOR` without one."""
    silent = [r for r in (rules.rules if rules is not None else ()) if isinstance(r, SilentRule)]
    named = [r for r in silent if r.name == SILENCE_RULE]
    chosen = (named or silent)[:1]
    return chosen[0].factor if chosen else DEFAULT_FACTOR


class _State:
    __slots__ = ("allowance_ms", "deadline_ms", "dirty", "last_heard_ms", "online", "reason",
                 "saved_heard_ms")

    def __init__(self, allowance_ms: int) -> None:
        self.allowance_ms = allowance_ms
        self.last_heard_ms: int | None = None
        self.online: bool | None = None        # None: not judged yet (first allowance)
        self.deadline_ms: int | None = None    # offline when not heard by then
        self.reason = ""
        self.dirty = False
        #: Last-heard time as last saved: a chatty device is saved once per allowance, not on
        #: every message (after a restart the grace, not this time, decides).
        self.saved_heard_ms: int | None = None


class Liveness:
    """Online/offline of every registered device; every method returns the points to write."""

    def __init__(self, devices: Iterable[Device], *, factor: float, started_ms: int) -> None:
        self.factor = factor
        self._started_ms = started_ms
        self._states = {d.device: _State(int(factor * d.report_interval_s * 1000))
                        for d in devices}
        for st in self._states.values():
            st.deadline_ms = started_ms + st.allowance_ms

    def __contains__(self, device: str) -> bool:
        return device in self._states

    def allowance_ms(self, device: str) -> int:
        return self._states[device].allowance_ms

    def online(self, device: str) -> bool | None:
        """True, False, or None while a device never heard is still within its allowance."""
        return self._states[device].online

    def restore(self, saved: Iterable[Saved]) -> None:
        """Saved states back after a restart: an online device keeps its state until one
        allowance after the start (the grace), an offline one stays offline until heard."""
        for row in saved:
            st = self._states.get(row.device)
            if st is None:          # no longer registered
                continue
            st.last_heard_ms, st.online, st.reason = row.last_heard_ms, row.online, row.reason
            st.saved_heard_ms = row.last_heard_ms
            st.deadline_ms = self._started_ms + st.allowance_ms if row.online else None

    def heard(self, device: str, at_ms: int, source: Source = Source.TRAFFIC,
              reason: str = "heard") -> list[Change]:
        """A sign of life: online from ``at_ms``, offline one allowance later unless heard."""
        st = self._states.get(device)
        if st is None:
            return []
        was_never = st.last_heard_ms is None
        if st.last_heard_ms is None or at_ms > st.last_heard_ms:
            st.last_heard_ms = at_ms
            st.deadline_ms = at_ms + st.allowance_ms
            if st.saved_heard_ms is None or at_ms - st.saved_heard_ms >= st.allowance_ms:
                st.dirty = True
        if st.online:
            return []
        assert st.last_heard_ms is not None
        st.deadline_ms = st.last_heard_ms + st.allowance_ms
        return [self._set(device, st, True, at_ms, source, reason, never_seen=was_never)]

    def status(self, device: str, online: bool, at_ms: int, *, retained: bool) -> list[Change]:
        """A status message. A retained ``online`` is an old announcement, not a sign of life;
        ``offline`` (the Last Will, retained or not) is the truth at once."""
        reason = "retained" if retained else "reported"
        if online:
            return [] if retained else self.heard(device, at_ms, Source.STATUS, reason)
        st = self._states.get(device)
        if st is None or st.online is False:
            return []
        st.deadline_ms = None
        return [self._set(device, st, False, at_ms, Source.WILL, reason,
                          never_seen=st.last_heard_ms is None)]

    def tick(self, now_ms: int) -> list[Change]:
        """Devices whose allowance ran out by ``now_ms``, stamped when it ran out."""
        out: list[Change] = []
        for device, st in self._states.items():
            deadline = st.deadline_ms
            if deadline is None or now_ms < deadline:
                continue
            st.deadline_ms = None
            if st.last_heard_ms is None:
                source, reason = Source.STARTUP, "never_seen"
            elif st.last_heard_ms + st.allowance_ms < deadline:   # ran out in the grace
                source, reason = Source.STARTUP, "grace_expired"
            else:
                source, reason = Source.TRAFFIC, "silent"
            if st.online is not False:
                out.append(self._set(device, st, False, deadline, source, reason,
                                     never_seen=st.last_heard_ms is None))
        return out

    def snapshot(self, now_ms: int) -> list[Change]:
        """One point per judged device (a device within its first allowance has no state)."""
        return [Change(device, st.online, now_ms, Source.SNAPSHOT, st.reason,
                       st.last_heard_ms is None)
                for device, st in self._states.items() if st.online is not None]

    def take_dirty(self) -> list[Saved]:
        """Rows changed since the last call, for the alarm store."""
        out = []
        for device, st in self._states.items():
            if st.dirty and st.online is not None:
                st.dirty, st.saved_heard_ms = False, st.last_heard_ms
                out.append(Saved(device, st.last_heard_ms, st.online, st.reason))
        return out

    def _set(self, device: str, st: _State, online: bool, at_ms: int, source: Source,
             reason: str, *, never_seen: bool) -> Change:
        st.online, st.reason, st.dirty = online, reason, True
        return Change(device, online, at_ms, source, reason, never_seen)


class StatusLines:
    """``device_status`` lines for :class:`Change` points: the head (measurement and tags) is
    computed once per device and the field set once per state, so a snapshot of a 10,000-device
    park is string concatenation."""

    def __init__(self, devices: Iterable[Device]) -> None:
        measurement = escape_measurement(MEASUREMENT)
        self._heads: Mapping[str, str] = {
            d.device: measurement + tag_set({**d.tags(), "kind": d.kind}) + " " for d in devices}
        self._fields: dict[tuple[bool, str, Source, bool], str] = {}

    def lines(self, changes: Iterable[Change]) -> list[str]:
        return [f"{self._heads[c.device]}{self._field_set(c)} {c.at_ms}" for c in changes]

    def _field_set(self, c: Change) -> str:
        key = (c.online, c.reason, c.source, c.never_seen)
        fields = self._fields.get(key)
        if fields is None:
            values: dict[str, float | int | bool | str] = {
                "online": c.online, "reason": c.reason, "source": c.source.value,
                "never_seen": c.never_seen}
            fields = self._fields[key] = ",".join(
                f"{escape_field_key(k)}={format_field_value(v)}" for k, v in values.items())
        return fields


class LivenessFeed:
    """The tracker as the pipeline uses it: accepted messages, UITD frames and the clock in,
    ``device_status`` lines out (they travel with the work that caused them)."""

    def __init__(self, devices: Sequence[Device], *, factor: float, started_ms: int) -> None:
        self.tracker = Liveness(devices, factor=factor, started_ms=started_ms)
        self._lines = StatusLines(devices)

    def accepted(self, validated: Validated, received_at_ms: int, retained: bool) -> list[str]:
        """Any accepted message of a registered device; a status message says so itself."""
        device = validated.device.device
        if validated.type is MessageType.STATUS:
            online = bool(validated.latest.get("online"))
            return self._lines.lines(self.tracker.status(device, online, received_at_ms,
                                                         retained=retained))
        return self._lines.lines(self.tracker.heard(device, received_at_ms))

    def heard(self, device: str, received_at_ms: int) -> list[str]:
        """A sign of life from outside MQTT (a UITD frame of a panel)."""
        return self._lines.lines(self.tracker.heard(device, received_at_ms))

    def tick(self, now_ms: int) -> list[str]:
        return self._lines.lines(self.tracker.tick(now_ms))

    def snapshot(self, now_ms: int) -> list[str]:
        return self._lines.lines(self.tracker.snapshot(now_ms))

    def restore(self, rows: Iterable[tuple[str, int | None, bool, str]]) -> None:
        self.tracker.restore(Saved(*row) for row in rows)

    def take_dirty(self) -> list[tuple[str, int | None, bool, str]]:
        return [(s.device, s.last_heard_ms, s.online, s.reason)
                for s in self.tracker.take_dirty()]
