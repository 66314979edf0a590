"""The rule engine: observations and clock ticks in, alarm transitions out. Pure: no I/O, no
wall clock (every call takes ``now_ms``), no global state.

    observe(obs, now) ─► device clock, lateness ─┬─► plausibility ─► threshold / rate / duration
                                                 ├─► event rules (always: events are facts)
                                                 └─► silence (any message is a sign of life)
                      ─► zone coincidence, fed with this call's transitions ─► [Transition]
    tick(now) ─► for-durations, rate clears, door timers ─► flood counts ─► silence
              ─► maintenance expiry
              ─► zone coincidence ─► [Transition]

Rules are bound to devices once, at construction (``rules.kinds.bind``: one small object per
rule and device, limits resolved), so ``observe()`` does one dict lookup per device and no
scope matching.
Event time: readings are judged on their ``ts_ms``; a reading older than the newest one seen
for its device, or older than ``now - lateness``, is late and neither fires nor clears anything.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

from rules.alarm import (
    Alarm,
    AlarmState,
    AlreadyAcknowledged,
    Disposition,
    Maintenance,
    Transition,
    reclassification,
)
from rules.engine_state import EngineState, StateJson
from rules.kinds import Plan, Timed, bind
from rules.kinds.base import DeviceClock, Ledger, zone_key
from rules.kinds.coincidence import is_new_signal
from rules.kinds.flood import TOO_MANY_POINTS
from rules.maintenance import MAINTENANCE_EXPIRED, MaintenanceBook
from rules.model import EventRule, RuleSet
from rules.observation import DeviceEvent, Observation, Reading
from rules.system import SYSTEM_RULES, HealthCondition
from sensors.pointmap import PointMap
from sensors.registry import Registry

__all__ = ["Engine", "EngineState"]

#: Event dedup keys remembered. A redelivery comes from the messages in flight when an ack was
#: lost (at most mqtt.receive_maximum, default 1000) or a device resending its last publish, so
#: a few thousand recent keys cover it while the saved state stays small.
SEEN_EVENTS = 4096


class Engine:
    """One park's alarm state. Not thread-safe: call it from one task (the gateway's)."""

    def __init__(self, *, rules: RuleSet, registry: Registry, lateness_s: float = 60.0,
                 new_id: Callable[[], str], restored: EngineState | None = None,
                 points: PointMap | None = None) -> None:
        self._lateness_ms = int(lateness_s * 1000)
        self._maintenance = MaintenanceBook(registry)
        self._book = Ledger(new_id=new_id, maintenance_for=self._maintenance.mode_for)
        self._clocks = {d.device: DeviceClock() for d in registry}
        self._timers: set[Timed] = set()
        bound = bind(rules, registry, self._clocks, points)
        self._plans, self._memory = bound.plans, bound.memory
        self._groups, self._listeners = bound.groups, bound.listeners
        self._guards = tuple(bound.guards.values())
        self._rule_names = {*rules.names(), MAINTENANCE_EXPIRED, TOO_MANY_POINTS, *SYSTEM_RULES}
        #: Event rules whose alarms are raised when they last (a point isolated for a day).
        self._escalations = {r.name: r.escalate for r in rules.of_type("event")
                             if isinstance(r, EventRule) and r.escalate is not None}
        self.late_readings = 0
        #: Non-fire events over their device's rate (rules/kinds/flood.py), not evaluated.
        self.rate_limited_events = 0
        self.unknown_devices = 0
        self._started_ms: int | None = None
        self._last_now: int | None = None
        self._resume_from: int | None = None
        # Redelivered events (same dedup key) must not open a second alarm: once an alarm was
        # opened and resolved (auto_resolve, or reset), the repeat would fire it again and
        # notify people twice. Saved with the state, so it survives a restart.
        self._seen_events: OrderedDict[str, None] = OrderedDict()
        self._state_json = StateJson()
        self.duplicate_events = 0
        if restored is not None:
            self._restore(restored)

    # ---- the hot path ---------------------------------------------------------------------

    def observe(self, obs: Observation, now_ms: int) -> list[Transition]:
        out = self._book.out = []
        self._advance(now_ms)
        plan = self._plans.get(obs.device)
        if plan is None:
            self.unknown_devices += 1
            return out
        if isinstance(obs, Reading):
            self._heard(plan, obs.received_at_ms)
            self._reading(plan, obs, now_ms)
        elif isinstance(obs, DeviceEvent):
            if obs.dedup_key is not None:
                if obs.dedup_key in self._seen_events:
                    self.duplicate_events += 1
                    return out
                self._remember_event(obs.dedup_key)
            self._heard(plan, obs.received_at_ms)
            if plan.guard is not None and not plan.guard.admit(obs.type, obs.received_at_ms):
                self.rate_limited_events += 1
                return out
            for check in (plan.events or {}).get(obs.type, ()):
                check.on_event(obs.type, obs.point, obs.detail, obs.ts_ms, self._book, obs.place)
        elif obs.online:
            self._heard(plan, obs.received_at_ms)
        else:  # its Last Will: silent now, not after k intervals
            for group, member in plan.silent:
                group.went_offline(member, obs.received_at_ms, self._book, self._start())
        if out and self._listeners:
            self._coincide()
        return out

    @property
    def refused_point_events(self) -> int:
        """Events for points beyond their device's cap (counted into ``too_many_points``)."""
        return sum(g.refused_total for g in self._guards)

    def seen_event(self, dedup_key: str) -> bool:
        """True when an event with this key was already evaluated (a redelivery)."""
        return dedup_key in self._seen_events

    def _remember_event(self, dedup_key: str) -> None:
        self._seen_events[dedup_key] = None
        if len(self._seen_events) > SEEN_EVENTS:
            self._seen_events.popitem(last=False)

    def _reading(self, plan: Plan, obs: Reading, now_ms: int) -> None:
        clock, ts = plan.clock, obs.ts_ms
        if (clock.newest_ts is not None and ts < clock.newest_ts) or \
                ts < now_ms - self._lateness_ms:
            self.late_readings += 1
            return
        clock.newest_ts = ts
        values = obs.values
        book = self._book
        if plan.plaus:
            bad = {p.metric for p in plan.plaus
                   if p.metric in values and not p.check(float(values[p.metric]), ts, book)}
            if bad:  # withheld from the hazard rules of this device (see plausibility.py)
                values = {k: v for k, v in values.items() if k not in bad}
        for check in plan.readers:
            value = values.get(check.metric)
            if value is not None:
                check.on_reading(value, ts, book)
                if check.wants_tick:
                    self._timers.add(check)

    def _heard(self, plan: Plan, rx: int) -> None:
        clock = plan.clock
        if clock.last_rx is None or rx > clock.last_rx:
            clock.last_rx = rx
        for group, member in plan.silent:
            if member.since is not None or member.offline:
                group.heard(member, rx, self._book)

    def _coincide(self) -> None:
        out, i = self._book.out, 0
        while i < len(out):   # coincidence appends its own (non-signal) transitions
            t = out[i]
            i += 1
            for scope, zones in self._listeners.get(t.after.rule, ()):
                zc = zones.get(zone_key(t.after.subject))
                device = t.after.subject.device
                # A panel point is in scope on its own ("panel:point", rules/kinds/__init__.py).
                if zc is None or (device not in scope and
                                  f"{device}:{t.after.labels.get('point', '')}" not in scope):
                    continue
                # A device under test or isolated does not confirm a fire in its zone.
                if is_new_signal(t.before, t.after) and \
                        t.after.maintenance is Maintenance.NONE:
                    zc.on_signal(t.after, self._book)
                elif t.after.state is AlarmState.RESOLVED:
                    zc.on_signal_gone(t.after.updated_at_ms, self._book)

    # ---- the clock ------------------------------------------------------------------------

    def tick(self, now_ms: int) -> list[Transition]:
        out = self._book.out = []
        self._advance(now_ms)
        for timed in list(self._timers):
            timed.on_tick(now_ms, self._book)
            if not timed.wants_tick:
                self._timers.discard(timed)
        for guard in self._guards:
            guard.publish(now_ms, self._book)
        start = self._start()
        for group in self._groups:
            group.tick(now_ms, self._book, start)
        self._maintenance.expire(now_ms, self._book)
        if self._escalations:
            self._escalate(now_ms)
        if out and self._listeners:
            self._coincide()
        return out

    def _escalate(self, now_ms: int) -> None:
        # Judged from the stored alarm (its rule and start), not from a timer: it holds across
        # a restart and for alarms restored from the saved state.
        for alarm in list(self._book.active.values()):
            esc = self._escalations.get(alarm.rule)
            if (esc is not None and alarm.severity.rank < esc.severity.rank
                    and now_ms - alarm.started_at_ms >= esc.after_s * 1000):
                self._book.open(alarm.fingerprint, rule=alarm.rule, subject=alarm.subject,
                                severity=esc.severity, message=alarm.message, at_ms=now_ms,
                                value=alarm.value)

    def _advance(self, now_ms: int) -> None:
        if self._resume_from is not None:
            # The gateway was down, not the devices: silence countdowns pause for the downtime.
            shift = max(0, now_ms - self._resume_from)
            for clock in self._clocks.values():
                if clock.last_rx is not None:
                    clock.last_rx += shift
            if self._started_ms is not None:
                self._started_ms += shift
            self._resume_from = None
            for alarm in list(self._book.active.values()):
                if alarm.rule not in self._rule_names:
                    self._book.resolve(alarm.fingerprint, now_ms,
                                       f"{alarm.message} (rule {alarm.rule} no longer exists)")
        if self._started_ms is None:
            self._started_ms = now_ms
        if self._last_now is None or now_ms > self._last_now:
            self._last_now = now_ms

    def _start(self) -> int:
        assert self._started_ms is not None  # set by _advance in every public call
        return self._started_ms

    # ---- the gateway's own health ---------------------------------------------------------

    def condition(self, cond: HealthCondition, now_ms: int) -> list[Transition]:
        """Raise (or, when ``cond.active`` is false, resolve) a gateway-health alarm."""
        out = self._book.out = []
        self._advance(now_ms)
        if cond.active:
            self._book.open(cond.fingerprint, rule=cond.rule, subject=cond.subject,
                            severity=cond.severity, message=cond.message, at_ms=now_ms,
                            value=cond.value, maintenance=Maintenance.NONE)
        else:
            self._book.resolve(cond.fingerprint, now_ms, cond.message)
        return out

    # ---- people ---------------------------------------------------------------------------

    def acknowledge(self, alarm_id: str, *, by: str, disposition: Disposition, channel: str,
                    now_ms: int, name: str | None = None) -> Transition:
        """``by`` is who the channel vouches for (an ack link's contact, the API caller);
        ``name`` what a person typed, kept apart because nothing checks it. Raises
        :class:`AlreadyAcknowledged` when someone already answered: the first answer stands;
        KeyError when the alarm is unknown or resolved (not active any more)."""
        alarm = self._book.by_id(alarm_id)
        if alarm is None:
            raise KeyError(alarm_id)
        if alarm.acknowledged:
            raise AlreadyAcknowledged(alarm)
        if alarm.state is AlarmState.RESOLVED:
            # No longer the engine's: the gateway acknowledges it in its store.
            raise KeyError(alarm_id)
        if alarm.state is AlarmState.PENDING:
            raise ValueError(f"alarm {alarm_id} is pending (not firing yet)")
        self._book.out = []
        self._book.put(alarm, alarm.evolve(
            state=AlarmState.ACKNOWLEDGED, acknowledged_by=by, acknowledged_at_ms=now_ms,
            ack_channel=channel, disposition=disposition, updated_at_ms=now_ms,
            acknowledged_name=name))
        return self._book.out[0]

    def reclassify(self, alarm_id: str, *, by: str, disposition: Disposition, reason: str,
                   now_ms: int) -> Transition:
        """Correct the disposition of an active, acknowledged alarm (KeyError when it is not
        active: a resolved one is corrected in the store). The acknowledgement itself stays."""
        fp = self._book.fp_by_id.get(alarm_id)
        if fp is None:
            raise KeyError(alarm_id)
        alarm = self._book.active[fp]
        change = reclassification(alarm, by=by, disposition=disposition, reason=reason,
                                  now_ms=now_ms)
        self._book.out = []
        self._book.put(alarm, alarm.evolve(disposition=disposition, updated_at_ms=now_ms))
        return dataclasses.replace(self._book.out[0], reclassification=change)

    def set_maintenance(self, *, scope: Literal["device", "zone", "building"], target: str,
                        mode: Maintenance, until_ms: int | None, by: str,
                        now_ms: int) -> list[Transition]:
        out = self._book.out = []
        self._advance(now_ms)
        self._maintenance.set(scope=scope, target=target, mode=mode, until_ms=until_ms, by=by,
                              now_ms=now_ms, book=self._book)
        return out

    def active(self) -> list[Alarm]:
        return sorted(self._book.active.values(), key=lambda a: (a.started_at_ms, a.fingerprint))

    def get(self, alarm_id: str) -> Alarm | None:
        return self._book.by_id(alarm_id)

    # ---- restart --------------------------------------------------------------------------

    def state_json(self) -> str:
        """The resume state as JSON (what the alarm store saves with every commit)."""
        return self.state().to_json(self._state_json)

    def state(self) -> EngineState:
        memory = {k: d for k, m in self._memory.items() if (d := m.dump()) is not None}
        return EngineState(
            saved_at_ms=self._last_now, started_at_ms=self._started_ms,
            # Ledger order, not active()'s sort: the state only names them (by id).
            alarms=tuple(self._book.active.values()),
            clocks={d: (c.newest_ts, c.last_rx) for d, c in self._clocks.items()
                    if c.newest_ts is not None or c.last_rx is not None},
            memory=memory, maintenance=tuple(self._maintenance.dump()),
            late_readings=self.late_readings, seen_events=tuple(self._seen_events))

    def _restore(self, st: EngineState) -> None:
        for alarm in st.alarms:
            self._book.restore(alarm)
        for device, (newest_ts, last_rx) in st.clocks.items():
            clock = self._clocks.get(device)
            if clock is not None:
                clock.newest_ts, clock.last_rx = newest_ts, last_rx
        for key, data in st.memory.items():
            target = self._memory.get(key)
            if target is not None:   # a rule removed since: its memory is dropped
                target.load(data)
                if isinstance(target, Timed) and target.wants_tick:
                    self._timers.add(target)
        self._maintenance.load([dict(m) for m in st.maintenance])
        self.late_readings = st.late_readings
        for key in st.seen_events[-SEEN_EVENTS:]:
            self._seen_events[key] = None
        self._started_ms = st.started_at_ms
        self._last_now = self._resume_from = st.saved_at_ms

