"""What ParkWatch writes to InfluxDB (docs/device-protocol.md, "What lands in InfluxDB"), taken
from the code that writes it.

Dashboards name measurements, tags and fields only through this module, so a renamed metric or
a new sensor kind changes the generated JSON (and fails the committed-JSON test) instead of
leaving a panel silently empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.ingest.validate import MessageType
from rules.loader import load_rules
from rules.model import (
    EventRule,
    PlausibilityRule,
    RuleBase,
    RuleSet,
    SilentRule,
    ThresholdRule,
)
from sensors.base import EventType, RejectReason
from sensors.catalogue import KIND_BY_NAME, KINDS

#: The identity tags every device-related point carries (``tenant`` only when set).
LOCATION_TAGS = ("park", "building", "floor", "zone", "device")

ALARMS = "alarms"
EVENTS = "events"
DEVICE_STATUS = "device_status"
GATEWAY = "gateway"
NOTIFICATIONS = "notifications"

#: The repository's default rule pack: thresholds drawn on panels come from here.
DEFAULT_RULES = Path(__file__).resolve().parents[3] / "config" / "rules"

#: Device events that say the equipment (not the building) needs attention.
_FAULT_EVENTS = frozenset({EventType.FAULT, EventType.TAMPER, EventType.LOW_BATTERY})


def telemetry_kinds() -> list[str]:
    """Kinds that send readings; each is its own measurement."""
    return [k.name for k in KINDS if k.values_model is not None]


def metrics_of(kind: str) -> list[str]:
    """Canonical metric fields of one kind, in the catalogue's order."""
    model = KIND_BY_NAME[kind].values_model
    return list(model.model_fields) if model is not None else []


def boolean_metrics_of(kind: str) -> frozenset[str]:
    model = KIND_BY_NAME[kind].values_model
    return model.boolean_metrics if model is not None else frozenset()


def kinds_with_metric(metric: str) -> list[str]:
    return [k for k in telemetry_kinds() if metric in metrics_of(k)]


# ---- the gateway measurement: one field per Prometheus sample (gateway.metrics.Metrics.flat)

def received_field(message_type: str) -> str:
    return f"messages_received_total_{message_type}"


def rejected_field(reason: RejectReason) -> str:
    return f"messages_rejected_total_{reason.value}"


def queue_field(queue: str) -> str:
    return f"queue_depth_{queue}"


#: Message types the pipeline counts (``other`` = a topic that is none of the three).
MESSAGE_TYPES = (*(t.value for t in MessageType), "other")
#: The pipeline's bounded queues (gateway.ingest.mqtt inbox, gateway.runtime.gateway commit queue).
QUEUES = ("inbox", "commit")


# ---- rules

@dataclass(frozen=True, slots=True)
class Limit:
    """One alarm tier of a threshold rule: breached when ``value op limit``."""

    rule: str
    severity: str
    op: str
    value: float


def rules(path: Path = DEFAULT_RULES) -> RuleSet:
    return load_rules(path)


def limits(ruleset: RuleSet, metric: str) -> list[Limit]:
    """Default limits of every threshold rule on ``metric`` (tiers without a default value,
    i.e. site-specific registry limits only, cannot be drawn and are left out)."""
    out: list[Limit] = []
    for rule in ruleset.rules:
        if isinstance(rule, ThresholdRule) and rule.metric == metric:
            out.extend(Limit(rule.name, t.severity.value, t.op, t.value)
                       for t in rule.tiers if t.value is not None)
    return out


def _names(rule: RuleBase) -> Iterator[str]:
    yield rule.name
    yield from rule.sub_rules()


def fault_rules(ruleset: RuleSet) -> list[str]:
    """Rules whose alarms mean broken or silent equipment rather than a hazard."""
    names: list[str] = []
    for rule in ruleset.rules:
        if isinstance(rule, SilentRule | PlausibilityRule):
            names.extend(_names(rule))
        elif isinstance(rule, EventRule) and set(rule.events) <= _FAULT_EVENTS:
            names.append(rule.name)
    return sorted(names)


def silence_rules(ruleset: RuleSet) -> list[str]:
    return sorted(n for r in ruleset.rules if isinstance(r, SilentRule) for n in _names(r))


def rules_for_kinds(ruleset: RuleSet, kinds: set[str]) -> list[str]:
    """Rules scoped to any of ``kinds`` (by their ``match.kinds``)."""
    return sorted(n for r in ruleset.rules if r.match.kinds and kinds & set(r.match.kinds)
                  for n in _names(r))
