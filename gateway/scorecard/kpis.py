"""The scorecard's figures as pure functions: plain data in, exact numbers out.

Every formula is written out in docs/scorecard.md; this module is its executable form. Durations
are integer milliseconds, so sums are exact; a ratio is a float made from two exact integers, or
None when its denominator is zero (nothing to measure is not 100 %).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gateway.scorecard.model import AlarmFact, DeviceRef, MaintenanceSpan, Period, StatusPoint

#: Fire-class alarms: a detector's or panel's fire alarm (manual call points included: their
#: fire_alarm events go through the ``fire_alarm`` rule, and the engine makes them critical) and
#: a zone's confirmed fire (coincidence of two signals).
FIRE_RULES = frozenset({"fire_alarm", "fire_confirmed"})
#: Rules whose lifetime makes a device not intact (完好率): it is broken, silent or isolated (屏蔽).
IMPAIRING_RULES = frozenset({"device_fault", "device_offline", "fire_panel_offline",
                             "point_isolated"})
FAULT_RULE = "device_fault"
#: Per kind: the rules whose lifetime is time outside the point's limits (水压/液位合格率).
LIMIT_RULES: Mapping[str, frozenset[str]] = {
    "water_pressure": frozenset({"water_pressure_low", "water_pressure_high"}),
    "water_level": frozenset({"water_level_low", "water_level_high"}),
}
#: Acknowledgement target for critical alarms.
ACK_TARGET_MS = 3 * 60_000
#: A fire-class alarm should have a disposition this long after it fired.
DISPOSITION_DUE_MS = 24 * 3_600_000
NOISIEST = 10

Interval = tuple[int, int]


# --- intervals -----------------------------------------------------------------------------------

def union_length(intervals: Iterable[Interval], period: Period) -> int:
    """Milliseconds of ``period`` covered by at least one interval (overlaps counted once)."""
    clipped = sorted((max(a, period.start_ms), min(b, period.end_ms)) for a, b in intervals)
    total = 0
    cur_a = cur_b = period.start_ms
    for a, b in clipped:
        if b <= a:
            continue
        if a > cur_b:
            total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    return total + (cur_b - cur_a)


def intersect(xs: Sequence[Interval], ys: Sequence[Interval]) -> list[Interval]:
    """Pairwise intersections of two interval lists (each list may overlap itself)."""
    out: list[Interval] = []
    for a, b in xs:
        for c, d in ys:
            lo, hi = max(a, c), min(b, d)
            if lo < hi:
                out.append((lo, hi))
    return out


def alarm_span(a: AlarmFact, period: Period) -> Interval:
    """From when the condition began until it resolved (or the period's end, still active)."""
    return (a.started_at_ms, a.resolved_at_ms if a.resolved_at_ms is not None else period.end_ms)


def online_spans(points: Sequence[StatusPoint], period: Period) -> list[Interval]:
    """The spans of ``period`` a device was online, from its status points (any order; one
    point before the period gives its state at the start). No point: offline throughout."""
    spans: list[Interval] = []
    online_since: int | None = None
    for p in sorted(points, key=lambda p: p.at_ms):
        at = max(p.at_ms, period.start_ms)
        if at >= period.end_ms:
            break
        if p.online and online_since is None:
            online_since = at
        elif not p.online and online_since is not None:
            spans.append((online_since, at))
            online_since = None
    if online_since is not None:
        spans.append((online_since, period.end_ms))
    return spans


# --- 在线率 online rate ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Online:
    devices: int
    never_seen: int            # devices without any status point up to the period's end
    registered_ms: int         # devices × period length
    online_ms: int
    maintenance_ms: int        # device-time under a maintenance window (reported apart)
    online_outside_maintenance_ms: int

    @property
    def rate(self) -> float | None:
        return _ratio(self.online_ms, self.registered_ms)

    @property
    def rate_outside_maintenance(self) -> float | None:
        return _ratio(self.online_outside_maintenance_ms, self.registered_ms - self.maintenance_ms)


def maintenance_spans(d: DeviceRef, windows: Sequence[MaintenanceSpan]) -> list[Interval]:
    return [(w.since_ms, w.until_ms) for w in windows if w.covers(d)]


def online(devices: Sequence[DeviceRef], status: Mapping[str, Sequence[StatusPoint]],
           windows: Sequence[MaintenanceSpan], period: Period) -> Online:
    online_ms = maint_ms = online_out_ms = never = 0
    for d in devices:
        points = status.get(d.device, ())
        if not any(p.at_ms < period.end_ms for p in points):
            never += 1
        up = online_spans(points, period)
        maint = maintenance_spans(d, windows)
        up_len = union_length(up, period)
        m_len = union_length(maint, period)
        online_ms += up_len
        maint_ms += m_len
        online_out_ms += up_len - union_length(intersect(up, maint), period)
    return Online(devices=len(devices), never_seen=never,
                  registered_ms=len(devices) * period.length_ms, online_ms=online_ms,
                  maintenance_ms=maint_ms, online_outside_maintenance_ms=online_out_ms)


# --- 火警误报率 fire false-alarm rate ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FalseAlarms:
    fired: int                 # fire-class alarms that fired in the period, not under maintenance
    judged: int                # of those, with disposition real, false_alarm or fault
    false_alarms: int
    tests: int                 # disposition test: reported apart, not in the rate
    due: int                   # fired at least 24 h before the scorecard was made
    undisposed_after_24h: int  # of those, no disposition within 24 h of firing

    @property
    def rate(self) -> float | None:
        return _ratio(self.false_alarms, self.judged)

    @property
    def undisposed_share(self) -> float | None:
        return _ratio(self.undisposed_after_24h, self.due)


def fired_in(a: AlarmFact, period: Period) -> bool:
    return a.fired_at_ms is not None and period.start_ms <= a.fired_at_ms < period.end_ms


def false_alarms(alarms: Iterable[AlarmFact], period: Period, as_of_ms: int) -> FalseAlarms:
    fired = judged = false = tests = due = late = 0
    for a in alarms:
        if a.rule not in FIRE_RULES or not fired_in(a, period) or a.maintenance != "none":
            continue
        assert a.fired_at_ms is not None
        fired += 1
        if a.disposition == "test":
            tests += 1
        elif a.disposition is not None:
            judged += 1
            false += a.disposition == "false_alarm"
        if a.fired_at_ms + DISPOSITION_DUE_MS <= as_of_ms:
            due += 1
            answered = (a.disposition is not None and a.acknowledged_at_ms is not None
                        and a.acknowledged_at_ms - a.fired_at_ms <= DISPOSITION_DUE_MS)
            late += not answered
    return FalseAlarms(fired=fired, judged=judged, false_alarms=false, tests=tests, due=due,
                       undisposed_after_24h=late)


# --- response ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Response:
    critical: int              # critical alarms paged (fired in the period, not maintenance,
                               # not inhibited)
    acknowledged: int
    within_target: int         # acknowledged within 3 min of firing
    p50_ms: int | None
    p90_ms: int | None

    @property
    def within_target_share(self) -> float | None:
        return _ratio(self.within_target, self.critical)


def percentile(sorted_values: Sequence[int], p: float) -> int | None:
    """Nearest rank: the smallest observed value with at least p % of values at or below it."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def response(alarms: Iterable[AlarmFact], period: Period) -> Response:
    critical = 0
    times: list[int] = []
    for a in alarms:
        if (a.severity != "critical" or not fired_in(a, period) or a.maintenance != "none"
                or a.inhibited_by is not None):
            continue
        critical += 1
        if a.acknowledged_at_ms is not None and a.fired_at_ms is not None:
            times.append(max(0, a.acknowledged_at_ms - a.fired_at_ms))
    times.sort()
    return Response(critical=critical, acknowledged=len(times),
                    within_target=sum(t <= ACK_TARGET_MS for t in times),
                    p50_ms=percentile(times, 50), p90_ms=percentile(times, 90))


# --- 完好率 intactness -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Intactness:
    device_ms: int             # devices × period length
    impaired_ms: int           # device-time with a fault, offline or isolated alarm (or offline
                               # per liveness), overlaps counted once per device
    faults_repaired: int       # device_fault alarms resolved in the period
    repair_ms_total: int

    @property
    def rate(self) -> float | None:
        r = _ratio(self.impaired_ms, self.device_ms)
        return None if r is None else 1 - r

    @property
    def mean_time_to_repair_ms(self) -> int | None:
        if not self.faults_repaired:
            return None
        return self.repair_ms_total // self.faults_repaired


def intactness(devices: Sequence[DeviceRef], alarms: Iterable[AlarmFact],
               status: Mapping[str, Sequence[StatusPoint]], period: Period) -> Intactness:
    impairing: dict[str, list[Interval]] = defaultdict(list)
    repaired = repair_ms = 0
    for a in alarms:
        if a.rule not in IMPAIRING_RULES or not a.device or a.fired_at_ms is None:
            continue
        impairing[a.device].append(alarm_span(a, period))
        if (a.rule == FAULT_RULE and a.resolved_at_ms is not None
                and period.start_ms <= a.resolved_at_ms < period.end_ms):
            repaired += 1
            repair_ms += a.resolved_at_ms - a.started_at_ms
    # With liveness data for the park (any device_status point), the time it says a device was
    # offline is impaired too, a device never heard included (the registry is the denominator);
    # without any, only the alarms count.
    liveness = any(status.values())
    impaired = 0
    for d in devices:
        spans = impairing.get(d.device, [])
        if liveness:
            spans = spans + _complement(online_spans(status.get(d.device, ()), period), period)
        impaired += union_length(spans, period)
    return Intactness(device_ms=len(devices) * period.length_ms, impaired_ms=impaired,
                      faults_repaired=repaired, repair_ms_total=repair_ms)


def _complement(spans: Sequence[Interval], period: Period) -> list[Interval]:
    out: list[Interval] = []
    at = period.start_ms
    for a, b in sorted(spans):
        if a > at:
            out.append((at, a))
        at = max(at, b)
    if at < period.end_ms:
        out.append((at, period.end_ms))
    return out


# --- 水压/液位合格率 water pressure and level compliance -----------------------------------

@dataclass(frozen=True, slots=True)
class PointCompliance:
    device: str
    kind: str
    outside_ms: int
    period_ms: int

    @property
    def rate(self) -> float:
        return 1 - self.outside_ms / self.period_ms


@dataclass(frozen=True, slots=True)
class Compliance:
    points: tuple[PointCompliance, ...]

    def rate(self, kind: str | None = None) -> float | None:
        chosen = [p for p in self.points if kind is None or p.kind == kind]
        total = sum(p.period_ms for p in chosen)
        return _ratio(total - sum(p.outside_ms for p in chosen), total)


def compliance(devices: Sequence[DeviceRef], alarms: Iterable[AlarmFact],
               period: Period) -> Compliance:
    """Every pending start counts: a breach shorter than a rule's ``for_s`` is still time
    outside the limits, even though it never paged."""
    outside: dict[str, list[Interval]] = defaultdict(list)
    for a in alarms:
        rules = LIMIT_RULES.get(a.kind)
        if rules is not None and a.rule in rules and a.device:
            outside[a.device].append(alarm_span(a, period))
    return Compliance(tuple(
        PointCompliance(d.device, d.kind, union_length(outside.get(d.device, []), period),
                        period.length_ms)
        for d in sorted(devices, key=lambda d: d.device) if d.kind in LIMIT_RULES))


# --- counts --------------------------------------------------------------------------------------

#: Alarm classes for the counts: fire (fire alarms and pre-alarms); device health (fault,
#: offline, isolation and the other device-state events); the gateway's own alarms (system);
#: everything else is a hazard measured by a sensor (gas, water, electrical, doors, ...).
_DEVICE_RULES = frozenset({"device_fault", "device_offline", "fire_panel_offline",
                           "building_silent", "point_isolated",
                           "supervisory", "tamper", "low_battery", "pressure_sensor_fault",
                           "too_many_points", "device_test", "device_mute", "uitd_offline",
                           "maintenance_expired"})


#: Counted as fire in the counts (not in the false-alarm rate): the signals before a fire.
_FIRE_SIGNAL_RULES = FIRE_RULES | {"pre_alarm", "zone_pre_alarm"}


def alarm_class(a: AlarmFact) -> str:
    if a.rule in _FIRE_SIGNAL_RULES:
        return "fire"
    if a.rule in _DEVICE_RULES:
        return "device"
    if a.kind == "parkwatch":
        return "system"
    return "hazard"


@dataclass(frozen=True, slots=True)
class Counts:
    total: int
    by_class: dict[str, int]
    by_severity: dict[str, int]
    noisiest: tuple[tuple[str, int], ...]     # (device, alarms), most first, then by ID


def counts(alarms: Iterable[AlarmFact], period: Period) -> Counts:
    fired = [a for a in alarms if fired_in(a, period)]
    per_device = Counter(a.device for a in fired if a.device)
    noisiest = sorted(per_device.items(), key=lambda kv: (-kv[1], kv[0]))[:NOISIEST]
    return Counts(total=len(fired), by_class=dict(sorted(Counter(map(alarm_class, fired)).items())),
                  by_severity=dict(sorted(Counter(a.severity for a in fired).items())),
                  noisiest=tuple(noisiest))


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None
