"""The vocabulary every sensor kind shares: rejections, decoded records, the decoder signature.

Decoding is pure: bytes and an injected :class:`TimeContext` in, a decoded record or a
:class:`Rejection` out. Nothing here touches the network, the disk or the wall clock.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict


class RejectReason(enum.StrEnum):
    """Why a message was refused. The value is the dead-letter topic suffix and metric label."""

    OVERSIZE = "oversize"
    BAD_UTF8 = "bad_utf8"
    BAD_JSON = "bad_json"
    BAD_TOPIC = "bad_topic"
    BAD_ID = "bad_id"
    UNKNOWN_DEVICE = "unknown_device"
    TOPIC_MISMATCH = "topic_mismatch"
    SCHEMA = "schema"
    UNKNOWN_METRIC = "unknown_metric"
    TYPE = "type"
    UNIT = "unit"
    RANGE = "range"
    NAN = "nan"
    #: The device sent more than its share (ingest.device_rate_per_s): decided by the router,
    #: never by a decoder, and never applied to events (a detector in a fire may burst).
    RATE_LIMITED = "rate_limited"
    #: A registered device of a park another partition owns (docs/scale.md): misrouted by a
    #: broker rule or a stray subscription. Never ``unknown_device``: the device is known.
    OTHER_PARTITION = "other_partition"


#: A detail goes into logs and dead letters; whatever a hostile payload makes a decoder quote,
#: it stays a short line.
MAX_DETAIL_CHARS = 300


class Rejection(Exception):  # no "Error" suffix: it is a verdict, not an unexpected error
    """A message ParkWatch refuses, with a machine-readable reason and a human-readable detail."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        if len(detail) > MAX_DETAIL_CHARS:
            detail = detail[:MAX_DETAIL_CHARS - 3] + "..."
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class TimeContext:
    """Everything a decoder needs to know about time, injected so decoders stay pure."""

    received_at_ms: int
    timezone: ZoneInfo
    max_age_s: float = 7 * 86400.0
    max_future_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One set of values at one instant, in canonical units."""

    ts_ms: int
    values: Mapping[str, float | bool]
    clock_trusted: bool = True


@dataclass(frozen=True, slots=True)
class Telemetry:
    """A decoded telemetry message: one sample, or many for the batch form."""

    samples: tuple[Sample, ...]
    seq: int | None = None
    battery_pct: float | None = None
    rssi_dbm: float | None = None


class EventType(enum.StrEnum):
    """Discrete device events of docs/device-protocol.md, Events."""

    FIRE_ALARM = "fire_alarm"
    PRE_ALARM = "pre_alarm"
    FAULT = "fault"
    SUPERVISORY = "supervisory"
    ISOLATED = "isolated"
    TEST = "test"
    RESTORED = "restored"
    TAMPER = "tamper"
    LOW_BATTERY = "low_battery"
    RESET = "reset"
    MUTE = "mute"


@dataclass(frozen=True, slots=True)
class Event:
    """A decoded device event."""

    ts_ms: int
    type: EventType
    seq: int | None = None
    point: str = ""
    detail: str = ""
    clock_trusted: bool = True


@dataclass(frozen=True, slots=True)
class Status:
    """A device's own online/offline announcement (usually its retained Last Will)."""

    online: bool


class SensorValues(BaseModel):
    """Base of every kind's values model: frozen, strict types, no NaN/Inf, no unknown metrics.

    Units live in the field names (``pressure_mpa``) and a field's type never changes, because
    InfluxDB refuses a field whose type differs from the one it first saw.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", allow_inf_nan=False)

    #: Metrics the kind reports as booleans (written as InfluxDB booleans, not floats).
    boolean_metrics: ClassVar[frozenset[str]] = frozenset()


#: A vendor decoder turns one vendor's JSON object into the canonical telemetry object
#: (``{"ts": ..., "seq": ..., "values": {...}}``), or returns None when the shape is not its own.
#: It may raise :class:`Rejection` (e.g. an unknown unit). It never does I/O.
VendorDecoder = Callable[[Mapping[str, Any]], "dict[str, Any] | None"]


@dataclass(frozen=True, slots=True)
class SensorKind:
    """One sensor kind: its name, its canonical values model and the vendor shapes it accepts."""

    name: str
    values_model: type[SensorValues] | None
    vendor_decoders: tuple[VendorDecoder, ...] = ()
    description: str = ""

    @property
    def has_telemetry(self) -> bool:
        return self.values_model is not None
