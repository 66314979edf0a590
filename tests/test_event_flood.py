"""A lying device against the engine: unlimited points, event storms (rules/kinds/flood.py).

One panel sent 3,000 fire events on 3,000 invented points in 3 s and got 3,000 alarms, 3,000
retained topics and an engine state of 2.2 MB rewritten on every save.
"""

from __future__ import annotations

import itertools

from rules.alarm import AlarmState, Severity
from rules.engine import Engine
from rules.engine_state import EngineState
from rules.kinds.flood import DEFAULT_MAX_POINTS, EVENT_BURST, EVENT_RATE_PER_S, TOO_MANY_POINTS
from rules.loader import load_rules
from rules.observation import DeviceEvent
from sensors.base import EventType
from sensors.registry import Registry, build_registry
from tests.support.paths import ROOT

T0 = 1_764_000_000_000
PACK = load_rules(ROOT / "config" / "rules")
FLOOD = 10_000
#: The saved state after the flood: 64 point alarms, the flood alarm and the event keys the
#: engine remembers (SEEN_EVENTS, most of it: 167 kB). Uncapped, 3,000 points made 2.2 MB.
MAX_STATE_CHARS = 200_000


def registry(*rows: dict[str, object]) -> Registry:
    base = {"park": "p1", "building": "b1", "floor": "1", "zone": "z", "report_interval_s": 3600}
    return build_registry([(i, {**base, **r}) for i, r in enumerate(rows)], source="test")


def engine(reg: Registry, restored: EngineState | None = None) -> Engine:
    ids = itertools.count(1)
    return Engine(rules=PACK, registry=reg, new_id=lambda: f"a{next(ids)}", restored=restored)


def event(type_: EventType, at_ms: int, point: str = "", device: str = "fp-1",
          seq: int | None = None) -> DeviceEvent:
    return DeviceEvent(device=device, ts_ms=T0 + at_ms, type=type_, received_at_ms=T0 + at_ms,
                       point=point, detail="loop 1",
                       dedup_key=f"{device}|{seq}|0123456789abcdef" if seq is not None else None)


PANELS = registry({"device": "fp-1", "kind": "fire_panel", "location": "control room"},
                  {"device": "fp-2", "kind": "fire_panel"},
                  {"device": "fp-3", "kind": "fire_panel", "max_points": 3},
                  {"device": "mc-1", "kind": "manual_call_point"})


def flood(eng: Engine, n: int = FLOOD, device: str = "fp-1") -> None:
    for i in range(n):   # 10^4 events in 3 s, each on a point of its own
        eng.observe(event(EventType.FIRE_ALARM, i * 3000 // n, f"L{i}", device, seq=i),
                    T0 + i * 3000 // n)


def test_ten_thousand_points_give_the_cap_and_one_flood_alarm() -> None:
    eng = engine(PANELS)
    flood(eng)
    active = eng.active()
    assert len(active) == DEFAULT_MAX_POINTS + 1
    [alarm] = [a for a in active if a.rule == TOO_MANY_POINTS]
    refused = FLOOD - DEFAULT_MAX_POINTS
    assert alarm.severity is Severity.CRITICAL       # a fire flood still pages as a fire
    assert alarm.value == 8192                   # published at powers of two meanwhile,
    eng.tick(T0 + 4000)                          # and exact on the clock
    [alarm] = [a for a in eng.active() if a.rule == TOO_MANY_POINTS]
    assert alarm.value == refused
    assert alarm.message.startswith(f"{refused} event(s) refused on fp-1 (control room)")
    assert eng.refused_point_events == refused
    assert len(eng.state().to_json()) < MAX_STATE_CHARS
    # Another device's fire on a new point still alarms.
    [t] = eng.observe(event(EventType.FIRE_ALARM, 4000, "L9-99", "fp-2"), T0 + 4001)
    assert (t.after.rule, t.after.labels["point"], t.after.state) == \
        ("fire_alarm", "L9-99", AlarmState.FIRING)


def test_the_flood_alarm_updates_its_count_a_logarithmic_number_of_times() -> None:
    eng = engine(PANELS)
    changes = []
    for i in range(FLOOD):
        changes += [t for t in eng.observe(event(EventType.FIRE_ALARM, i, f"L{i}"), T0 + i)
                    if t.after.rule == TOO_MANY_POINTS]
    assert changes[0].before is None
    assert len(changes) <= 16


def test_the_flood_alarm_survives_a_restart_and_ends_with_a_reset() -> None:
    eng = engine(PANELS)
    flood(eng, 200)
    state = eng.state()   # through JSON; the store gives back the alarms it names by id
    eng = engine(PANELS, EngineState.from_json(state.to_json(),
                                               {a.alarm_id: a for a in state.alarms}))
    eng.observe(event(EventType.FIRE_ALARM, 5000, "new"), T0 + 5000)
    [alarm] = [a for a in eng.active() if a.rule == TOO_MANY_POINTS]
    assert alarm.value == 128                    # the count is published at powers of two
    out = eng.observe(event(EventType.RESET, 6000), T0 + 6000)
    assert {t.after.rule for t in out} == {"fire_alarm", TOO_MANY_POINTS}
    [end] = [t.after for t in out if t.after.rule == TOO_MANY_POINTS]
    assert end.message.startswith(f"{200 - DEFAULT_MAX_POINTS + 1} event(s) refused")
    assert eng.active() == []
    # After the reset the panel has its whole cap again.
    eng.observe(event(EventType.FIRE_ALARM, 7000, "L1"), T0 + 7000)
    assert [a.rule for a in eng.active()] == ["fire_alarm"]


def test_the_registry_sets_the_cap_and_severity_is_the_highest_refused() -> None:
    eng = engine(PANELS)
    for i in range(5):
        eng.observe(event(EventType.FAULT, i * 1000, f"F{i}", "fp-3"), T0 + i * 1000)
    [alarm] = [a for a in eng.active() if a.rule == TOO_MANY_POINTS]
    assert alarm.severity is Severity.MINOR
    assert alarm.value == 2
    for i in range(4):
        eng.observe(event(EventType.FIRE_ALARM, 9000 + i, f"X{i}", "fp-3"), T0 + 9000 + i)
    [alarm] = [a for a in eng.active() if a.rule == TOO_MANY_POINTS]
    assert alarm.severity is Severity.CRITICAL
    assert sum(a.rule == "fire_alarm" for a in eng.active()) == 3


def test_non_fire_events_are_rate_limited_fire_events_never() -> None:
    eng = engine(PANELS)
    created = 0
    for i in range(1000):                        # 1000 test events in one second
        out = eng.observe(event(EventType.TEST, i, f"T{i % 10}"), T0 + i)
        created += sum(t.before is None for t in out)
    assert created <= EVENT_BURST + EVENT_RATE_PER_S
    assert eng.rate_limited_events == 1000 - created
    # The bucket is empty, yet a fire on a point is evaluated.
    out = eng.observe(event(EventType.FIRE_ALARM, 1000, "L1"), T0 + 1000)
    assert [t.after.rule for t in out] == ["fire_alarm"]
    # A manual call point is fire-class whatever it sends.
    for i in range(200):
        eng.observe(event(EventType.FAULT, 1000 + i, "", "mc-1"), T0 + 1000 + i)
    assert eng.rate_limited_events == 1000 - created
    # Ten seconds later the panel may report again.
    out = eng.observe(event(EventType.TEST, 11_000, "T0"), T0 + 11_000)
    assert out


def test_a_device_cannot_refill_its_bucket_with_lying_timestamps() -> None:
    eng = engine(PANELS)
    for i in range(500):   # ts jumps about; the bucket runs on the gateway's receive time
        eng.observe(DeviceEvent(device="fp-1", ts_ms=T0 + (i % 2) * 86_400_000,
                                type=EventType.TEST, received_at_ms=T0 + i), T0 + i)
    assert eng.rate_limited_events >= 500 - EVENT_BURST - EVENT_RATE_PER_S
