"""Rule schemas: rules are data, validated into frozen pydantic models.

A closed set of kinds, discriminated on ``type``. Conditions use the fixed operator table
:data:`OPS` (no expression language, no ``eval``); messages are :class:`string.Template` strings
whose placeholders are checked at load time against the kind's table of names.
"""

from __future__ import annotations

import operator
import string
from collections.abc import Callable, Mapping
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rules.alarm import Severity
from sensors.base import EventType
from sensors.catalogue import KIND_BY_NAME
from sensors.registry import DOOR_MODES, Device

Op = Literal["<", "<=", ">", ">=", "==", "!="]
OPS: Mapping[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}
#: +1 when larger values breach, -1 when smaller values breach, 0 for (in)equality.
DIRECTION: Mapping[str, int] = {"<": -1, "<=": -1, ">": 1, ">=": 1, "==": 0, "!=": 0}

RULE_NAME = r"^[a-z][a-z0-9_]{0,63}$"
SOURCE = Field(min_length=3, description="the standard clause or practice this number comes from")

#: Placeholders every message may use: the subject of the alarm.
COMMON_PLACEHOLDERS = frozenset({"rule", "severity", "device", "kind", "location", "park",
                                 "building", "floor", "zone", "tenant"})

#: Display units by metric name (the unit lives in the name, docs/device-protocol.md, Telemetry).
UNITS: Mapping[str, str] = {
    "lel_pct": "%LEL", "co_ppm": "ppm", "pressure_mpa": "MPa", "level_m": "m",
    "residual_current_ma": "mA", "temp_l1_c": "°C", "temp_l2_c": "°C", "temp_l3_c": "°C",
    "temp_n_c": "°C", "temperature_c": "°C", "humidity_pct": "%RH", "obscuration_pct_m": "%/m",
    "voltage_v": "V", "current_a": "A", "power_kw": "kW", "energy_kwh": "kWh",
    "power_factor": "", "frequency_hz": "Hz", "open": "",
}


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Match(Frozen):
    """Scope: a device is in scope when it matches every list that is given."""

    kinds: tuple[str, ...] | None = None
    parks: tuple[str, ...] | None = None
    buildings: tuple[str, ...] | None = None
    zones: tuple[str, ...] | None = None
    tenants: tuple[str, ...] | None = None
    devices: tuple[str, ...] | None = None
    modes: tuple[str, ...] | None = None
    #: Kinds left out of scope: a kind with a rule of its own (a fire panel's silence is major)
    #: while every other kind, including kinds added later, stays in the general rule.
    not_kinds: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _known(self) -> Match:
        unknown = [k for k in (*(self.kinds or ()), *(self.not_kinds or ()))
                   if k not in KIND_BY_NAME]
        if unknown:
            raise ValueError(f"unknown kind(s) {unknown}; known: {sorted(KIND_BY_NAME)}")
        bad_modes = [m for m in self.modes or () if m not in DOOR_MODES]
        if bad_modes:
            raise ValueError(f"unknown mode(s) {bad_modes}; known: {list(DOOR_MODES)}")
        return self

    def applies(self, d: Device) -> bool:
        pairs = ((self.kinds, d.kind), (self.parks, d.park), (self.buildings, d.building),
                 (self.zones, d.zone), (self.tenants, d.tenant), (self.devices, d.device),
                 (self.modes, d.mode))
        if self.not_kinds is not None and d.kind in self.not_kinds:
            return False
        return all(allowed is None or value in allowed for allowed, value in pairs)


class Condition(Frozen):
    """``value <op> threshold``; ``limit`` names a registry ``limits`` key that overrides it."""

    op: Op
    value: float | None = None
    limit: str | None = None
    offset: float = 0.0       # added to the (possibly overridden) value: clear bands on limits
    source: str | None = None

    @model_validator(mode="after")
    def _has_value(self) -> Condition:
        if self.value is None and self.limit is None:
            raise ValueError("a condition needs a value, a limit name, or both")
        return self

    def threshold_for(self, d: Device) -> float | None:
        """The effective threshold for one device; None when neither value nor limit is set."""
        base = d.limit(self.limit) if self.limit else None
        if base is None:
            base = self.value
        return None if base is None else base + self.offset


class Tier(Condition):
    severity: Severity
    for_s: float = Field(default=0.0, ge=0.0)
    source: str = SOURCE  # required on tiers (optional on a clear condition)


class RuleBase(Frozen):
    name: str = Field(pattern=RULE_NAME)
    description: str = ""
    match: Match = Match()
    message: str | None = None

    placeholders: ClassVar[frozenset[str]] = frozenset()
    default_message: ClassVar[str] = "$rule on $device"

    @model_validator(mode="after")
    def _template(self) -> RuleBase:
        check_template(self.message_template, self.placeholders)
        return self

    @property
    def message_template(self) -> string.Template:
        return string.Template(self.message or self.default_message)

    def sub_rules(self) -> tuple[str, ...]:
        """Rule names this rule raises besides its own (they share the namespace)."""
        return ()


def check_template(template: string.Template, extra: frozenset[str]) -> None:
    if not template.is_valid():
        raise ValueError(f"message {template.template!r} is not a valid template")
    unknown = set(template.get_identifiers()) - COMMON_PLACEHOLDERS - extra
    if unknown:
        allowed = sorted(COMMON_PLACEHOLDERS | extra)
        raise ValueError(f"message uses unknown placeholder(s) {sorted(unknown)}; "
                         f"allowed: {allowed}")


def check_metric(metric: str, kinds: tuple[str, ...] | None) -> None:
    """The metric must be a canonical metric of at least one matched kind (device-protocol.md)."""
    models = [KIND_BY_NAME[k].values_model for k in (kinds or tuple(KIND_BY_NAME))]
    if not any(m is not None and metric in m.model_fields for m in models):
        raise ValueError(f"metric {metric!r} is not reported by kinds {list(kinds or ['any'])}")


class ThresholdRule(RuleBase):
    type: Literal["threshold"]
    metric: str
    tiers: tuple[Tier, ...] = Field(min_length=1)
    clear: Condition | None = None
    hysteresis: float = Field(default=0.0, ge=0.0)

    placeholders = frozenset({"value", "threshold", "unit", "metric", "for_s"})
    default_message = "$metric $value $unit at $location (threshold $threshold $unit)"

    @model_validator(mode="after")
    def _consistent(self) -> ThresholdRule:
        check_metric(self.metric, self.match.kinds)
        directions = {DIRECTION[t.op] for t in self.tiers}
        if len(directions) != 1 or (0 in directions and len(self.tiers) > 1):
            raise ValueError("all tiers must breach in one direction (all > / >= or all < / <=);"
                             " == / != only in a single-tier rule")
        if len({t.severity for t in self.tiers}) != len(self.tiers):
            raise ValueError("each tier needs its own severity")
        direction = directions.pop()
        ordered = sorted(self.tiers, key=lambda t: t.severity.rank)
        values = [t.value for t in ordered if t.value is not None]
        if direction and values != sorted(values, reverse=direction < 0):
            raise ValueError("a more severe tier must have a more extreme threshold")
        if self.clear is not None and direction:
            self._check_clear(self.clear, ordered[0], direction)
        return self

    @staticmethod
    def _check_clear(clear: Condition, lowest: Tier, direction: int) -> None:
        if DIRECTION[clear.op] != -direction:
            raise ValueError(f"clear must point the other way from the tiers ({clear.op!r})")
        if clear.value is not None and lowest.value is not None and clear.limit == lowest.limit:
            gap = (lowest.value - (clear.value + clear.offset)) * direction
            if gap < 0:
                raise ValueError("clear overlaps the lowest tier: a value could fire and clear")


class RateRule(RuleBase):
    type: Literal["rate_of_change"]
    metric: str
    window_s: float = Field(gt=0)
    direction: Literal["drop", "rise"]
    delta: float = Field(gt=0)
    severity: Severity
    clear_after_s: float | None = Field(default=None, ge=0)   # default: window_s
    source: str = SOURCE

    placeholders = frozenset({"value", "delta", "change", "window_s", "unit", "metric"})
    default_message = "$metric changed by $change $unit within $window_s s at $location"

    @model_validator(mode="after")
    def _metric(self) -> RateRule:
        check_metric(self.metric, self.match.kinds)
        return self


class BuildingGroup(Frozen):
    """One parent alarm when every in-scope device of a building is silent."""

    rule: str = Field(pattern=RULE_NAME)
    severity: Severity = Severity.MAJOR
    min_devices: int = Field(default=2, ge=2)
    #: Longest a silent device's alarm waits (pending) for the building verdict.
    wait_s: float = Field(default=300.0, gt=0)
    message: str = "All $count monitored devices in building $building are silent"


class SilentRule(RuleBase):
    type: Literal["device_silent"]
    factor: float = Field(ge=1.0)
    severity: Severity
    building: BuildingGroup | None = None
    source: str = SOURCE

    placeholders = frozenset({"silent_s", "interval_s", "factor", "count"})
    default_message = "$device ($location) silent for $silent_s s"

    @model_validator(mode="after")
    def _building_template(self) -> SilentRule:
        if self.building is not None:
            check_template(string.Template(self.building.message), self.placeholders)
        return self

    def sub_rules(self) -> tuple[str, ...]:
        return (self.building.rule,) if self.building else ()


#: Event types that record an operator action, never a hazard: they stay ``info``. Isolating a
#: point (屏蔽) is not among them: it disables a fire facility (a warning, major when it lasts).
INFO_EVENTS = frozenset({EventType.TEST, EventType.MUTE})


class EventEscalation(Frozen):
    """An event alarm still active ``after_s`` after it started is raised to ``severity``."""

    after_s: float = Field(gt=0)
    severity: Severity
    source: str = SOURCE


class EventRule(RuleBase):
    type: Literal["event"]
    events: tuple[EventType, ...] = Field(min_length=1)
    severity: Severity
    resolve_on: tuple[EventType, ...] = ()
    auto_resolve: bool = False   # a record, not a condition: fires and resolves at once
    escalate: EventEscalation | None = None

    placeholders = frozenset({"event", "point", "detail"})
    default_message = "$event on $device ($location) $point $detail"

    @model_validator(mode="after")
    def _info_events(self) -> EventRule:
        if INFO_EVENTS & set(self.events) and self.severity is not Severity.INFO:
            raise ValueError("test / isolated / mute events are records: severity must be info")
        if set(self.events) & set(self.resolve_on):
            raise ValueError("an event cannot both raise and resolve the same rule")
        if self.escalate is not None and (self.auto_resolve
                                          or self.escalate.severity.rank <= self.severity.rank):
            raise ValueError("escalate needs a lasting alarm (no auto_resolve) and a higher "
                             "severity than the rule's")
        return self


class SingleSignal(Frozen):
    rule: str = Field(pattern=RULE_NAME)
    severity: Severity = Severity.MAJOR
    message: str = "Fire signal in zone $zone ($building floor $floor): $signals"


class CoincidenceRule(RuleBase):
    type: Literal["zone_coincidence"]
    signals: tuple[str, ...] = Field(min_length=1)   # rule names whose firing alarms count
    window_s: float = Field(gt=0)
    severity: Severity = Severity.CRITICAL
    single: SingleSignal | None = None
    source: str = SOURCE

    placeholders = frozenset({"signals", "count", "window_s"})
    default_message = "Fire confirmed in zone $zone ($building floor $floor): $signals"

    @model_validator(mode="after")
    def _single_template(self) -> CoincidenceRule:
        if self.single is not None:
            check_template(string.Template(self.single.message), self.placeholders)
        return self

    def sub_rules(self) -> tuple[str, ...]:
        return (self.single.rule,) if self.single else ()


class Stuck(Frozen):
    count: int = Field(ge=2)
    min_span_s: float = Field(ge=0)


class Jump(Frozen):
    max_step: float = Field(gt=0)
    within_s: float = Field(gt=0)


class Band(Frozen):
    min: float
    max: float


class PlausibilityRule(RuleBase):
    type: Literal["plausibility"]
    metric: str
    severity: Severity = Severity.MINOR
    stuck: Stuck | None = None
    jump: Jump | None = None
    band: Band | None = None
    settle_count: int = Field(default=3, ge=1)
    source: str = SOURCE

    placeholders = frozenset({"value", "metric", "unit", "reason"})
    default_message = "$device ($location) sensor fault: $reason"

    @model_validator(mode="after")
    def _some_check(self) -> PlausibilityRule:
        check_metric(self.metric, self.match.kinds)
        if self.stuck is None and self.jump is None and self.band is None:
            raise ValueError("give at least one of stuck, jump, band")
        return self


class StateDurationRule(RuleBase):
    type: Literal["state_duration"]
    metric: str
    equals: bool | float
    for_s: float = Field(gt=0)
    severity: Severity
    source: str = SOURCE

    placeholders = frozenset({"value", "metric", "for_s"})
    default_message = "$device ($location) $metric = $value for more than $for_s s"

    @model_validator(mode="after")
    def _metric(self) -> StateDurationRule:
        check_metric(self.metric, self.match.kinds)
        return self


Rule = Annotated[
    ThresholdRule | RateRule | SilentRule | EventRule | CoincidenceRule | PlausibilityRule
    | StateDurationRule,
    Field(discriminator="type"),
]
AnyRule = (ThresholdRule | RateRule | SilentRule | EventRule | CoincidenceRule
           | PlausibilityRule | StateDurationRule)

KIND_NAMES = ("threshold", "rate_of_change", "device_silent", "event", "zone_coincidence",
              "plausibility", "state_duration")


class RuleSet(Frozen):
    """A validated set of rules with unique names; ``origin`` says where each came from."""

    rules: tuple[Rule, ...]
    origin: Mapping[str, str] = Field(default_factory=dict)

    def names(self) -> list[str]:
        return [n for r in self.rules for n in (r.name, *r.sub_rules())]

    def get(self, name: str) -> AnyRule | None:
        return next((r for r in self.rules if r.name == name), None)

    def of_type(self, kind: str) -> list[AnyRule]:
        return [r for r in self.rules if r.type == kind]
