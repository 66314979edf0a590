"""What a parsed GB/T 26875.3 ADU becomes: panel events, telemetry lines and observations.

Pure: no I/O, no clock (the receive time comes in), no state beyond what the caller passes. One
call per ADU of one UITD, whose panel is known (the point map's ``panel_for_uitd``):

==========================  ==================================================================
type                        becomes
==========================  ==================================================================
1 system status             on the panel, point ``sys{type}-{addr}``: bits below; bit 13 reset
2 component status          on the point (placed by the map): bit 1 ``fire_alarm``, 2 ``fault``,
                            3 屏蔽 ``isolated``, 4 ``supervisory``, 8 ``fault`` (power fault);
                            5/6 started/feedback ``supervisory`` (start/feedback); none of these
                            ``restored``. Bit 0 is never read: its polarity differs in the field.
3 analog values             telemetry of the kind it fits (pressure → ``water_pressure``
                            ``pressure_mpa``, height → ``water_level`` ``level_m``, temperature
                            → ``temperature_c``, %LEL → ``gas`` ``lel_pct``), else ``panel_analog``
4 facility operations       ``reset`` (whole panel), ``mute``, self-test ``test``
21 UITD status              on the panel, point ``uitd``: fire, fault, power and link faults
24 UITD operations          reset / mute / test; bit 5 answers a duty check (its time recorded)
28 UITD time                the UITD clock's offset from ours (an untrusted clock is flagged)
==========================  ==================================================================

Object time labels are local time in the park's zone; a label outside the ingest window
(``max_age_s`` / ``max_future_s``), a bad label or a UITD whose clock is untrusted gives the
receive time instead, exactly as for MQTT devices (sensors/timestamps.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.storage.lineprotocol import encode_line, escape_measurement, tag_set
from rules.observation import DeviceEvent, Observation
from rules.placement import Placed
from sensors.base import EventType
from sensors.gb26875.adu import (
    Adu,
    AnalogValue,
    ComponentStatus,
    FacilityOperation,
    SystemStatus,
    UitdOperation,
    UitdStatus,
    UitdTime,
)
from sensors.gb26875.bits import (
    ComponentStatusBits,
    FacilityOperationFlags,
    SystemStatusBits,
    UitdOperationFlags,
    UitdStatusBits,
    alarm_bits,
)
from sensors.gb26875.codes import component_label
from sensors.pointmap import MappedPoint, PointMap
from sensors.registry import Device

#: The point of the UITD's own status events on its panel.
UITD_POINT = "uitd"

#: (panel, type, point, detail, feedback) → the placed event (gateway/ingest/validate.py).
PlaceFn = Callable[[Device, EventType, str, str, bool], Placed]
#: (panel, type, point, detail, ts_ms) → its ``events`` line, as for an MQTT panel event.
EventLineFn = Callable[[str, EventType, str, str, int], str]


@dataclass(frozen=True)
class Context:
    """Everything one ADU's translation needs about its UITD and our clock."""

    panel: Device
    uitd_address: bytes
    serial: int
    received_at_ms: int
    timezone: ZoneInfo
    max_age_s: float
    max_future_s: float
    points: PointMap | None
    place: PlaceFn
    event_line: EventLineFn
    #: The UITD's clock was found wrong (type 28): every event gets the receive time.
    clock_untrusted: bool = False


@dataclass
class Translated:
    lines: list[str] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    #: Events whose time label was not used (bad, outside the window, or an untrusted UITD).
    untrusted: int = 0
    #: The UITD answered a duty check (type 24 bit 5) at this time (epoch ms).
    duty_answer_ms: int | None = None
    #: The UITD clock minus ours, in seconds (type 28).
    clock_offset_s: float | None = None


def dedup_base(uitd_address: bytes, serial: int, adu: bytes) -> str:
    """A resend's identity: the UITD, the frame serial and the ADU content."""
    digest = hashlib.blake2b(adu, digest_size=8).hexdigest()
    return f"uitd:{uitd_address.hex()}|{serial}|{digest}"


def translate(adu: Adu, adu_bytes: bytes, ctx: Context) -> Translated:
    out = Translated()
    key = dedup_base(ctx.uitd_address, ctx.serial, adu_bytes)
    emit = _Emitter(ctx, out, key)
    for obj in adu.objects:
        if isinstance(obj, ComponentStatus):
            _component(obj, ctx, emit)
        elif isinstance(obj, SystemStatus):
            _system(obj, emit)
        elif isinstance(obj, AnalogValue):
            _analog(obj, ctx, out)
        elif isinstance(obj, FacilityOperation):
            _facility_operation(obj, emit)
        elif isinstance(obj, UitdStatus):
            _uitd_status(obj, emit)
        elif isinstance(obj, UitdOperation):
            _uitd_operation(obj, ctx, emit, out)
        elif isinstance(obj, UitdTime) and obj.time is not None:
            ours = ctx.received_at_ms / 1000
            out.clock_offset_s = obj.time.replace(tzinfo=ctx.timezone).timestamp() - ours
        # Versions and facility time (5, 8, 25) are acknowledged and change nothing.
    return out


class _Emitter:
    """Turns one event into its ``events`` line and its observation (with its dedup key)."""

    def __init__(self, ctx: Context, out: Translated, key: str) -> None:
        self._ctx = ctx
        self._out = out
        self._key = key

    def ts(self, when: datetime | None) -> int:
        ctx = self._ctx
        rx = ctx.received_at_ms
        if when is None or ctx.clock_untrusted:
            self._out.untrusted += 1
            return rx
        ms = int(when.replace(tzinfo=ctx.timezone).timestamp() * 1000)
        if ms > rx + ctx.max_future_s * 1000 or ms < rx - ctx.max_age_s * 1000:
            self._out.untrusted += 1
            return rx
        return ms

    def __call__(self, type_: EventType, point: str, detail: str, when: datetime | None, *,
                 feedback: bool = False, placed: bool = False) -> None:
        ctx = self._ctx
        ts = self.ts(when)
        place = None
        if placed:
            p = ctx.place(ctx.panel, type_, point, detail, feedback)
            type_, detail, place = p.type, p.detail, p.place
        out = self._out
        out.lines.append(ctx.event_line(ctx.panel.device, type_, point, detail, ts))
        # One frame may carry many objects: each event has its own key, and a resend of the
        # frame repeats all of them (rules/engine.py remembers keys with its saved state).
        key = f"{self._key}#{len(out.observations)}"
        out.observations.append(DeviceEvent(ctx.panel.device, ts, type_, ctx.received_at_ms,
                                            point, detail, dedup_key=key, place=place))


def component_point(ctx: Context, obj: ComponentStatus | AnalogValue) -> tuple[str,
                                                                                MappedPoint | None]:
    """The point label of a component: the map's, else its raw address (paged on the panel)."""
    mapped = (ctx.points.by_address(ctx.uitd_address, obj.sys_type, obj.sys_addr, obj.comp_addr)
              if ctx.points is not None else None)
    if mapped is not None:
        return mapped.point, mapped
    return f"{obj.sys_type}-{obj.sys_addr}-{obj.comp_addr}", None


def _component(obj: ComponentStatus, ctx: Context, emit: _Emitter) -> None:
    point, _ = component_point(ctx, obj)
    label = component_label(obj.comp_type).zh
    detail = " ".join(p for p in (label, obj.description.strip()) if p)
    bits = alarm_bits(obj.status)
    status = ComponentStatusBits(obj.status)
    any_event = False
    if bits & ComponentStatusBits.FIRE:
        emit(EventType.FIRE_ALARM, point, detail, obj.time, placed=True)
        any_event = True
    if bits & (ComponentStatusBits.FAULT | ComponentStatusBits.POWER_FAULT):
        power = "power fault " if bits & ComponentStatusBits.POWER_FAULT else ""
        emit(EventType.FAULT, point, (power + detail).strip(), obj.time, placed=True)
        any_event = True
    if bits & ComponentStatusBits.DISABLED:
        emit(EventType.ISOLATED, point, detail, obj.time, placed=True)
        any_event = True
    if bits & ComponentStatusBits.SUPERVISORY:
        emit(EventType.SUPERVISORY, point, detail, obj.time, placed=True)
        any_event = True
    if status & ComponentStatusBits.STARTED and not bits & ComponentStatusBits.FIRE:
        emit(EventType.SUPERVISORY, point, f"start {detail}".strip(), obj.time, placed=True)
        any_event = True
    if status & ComponentStatusBits.FEEDBACK:
        emit(EventType.SUPERVISORY, point, f"feedback {detail}".strip(), obj.time, placed=True)
        any_event = True
    if not any_event:
        emit(EventType.RESTORED, point, detail, obj.time, placed=True)


def _system(obj: SystemStatus, emit: _Emitter) -> None:
    point = f"sys{obj.sys_type}-{obj.sys_addr}"
    flags = SystemStatusBits(obj.status)
    bits = alarm_bits(obj.status)
    any_event = False
    if flags & SystemStatusBits.RESET:
        emit(EventType.RESET, "", f"system {point} reset", obj.time)
        any_event = True
    if bits & ComponentStatusBits.FIRE:
        emit(EventType.FIRE_ALARM, point, "system fire", obj.time)
        any_event = True
    power = flags & (SystemStatusBits.MAINS_POWER_FAULT | SystemStatusBits.BACKUP_POWER_FAULT)
    if bits & ComponentStatusBits.FAULT or power or flags & SystemStatusBits.BUS_FAULT:
        what = "power fault" if power else "bus fault" if flags & SystemStatusBits.BUS_FAULT \
            else "system fault"
        emit(EventType.FAULT, point, what, obj.time)
        any_event = True
    if bits & ComponentStatusBits.DISABLED:
        emit(EventType.ISOLATED, point, "system disabled", obj.time)
        any_event = True
    if bits & ComponentStatusBits.SUPERVISORY:
        emit(EventType.SUPERVISORY, point, "system supervisory", obj.time)
        any_event = True
    if not any_event:
        emit(EventType.RESTORED, point, "system normal", obj.time)


def _facility_operation(obj: FacilityOperation, emit: _Emitter) -> None:
    who = f"sys{obj.sys_type}-{obj.sys_addr} operator {obj.operator}"
    if obj.flags & FacilityOperationFlags.RESET:
        emit(EventType.RESET, "", f"reset {who}", obj.time)
    if obj.flags & FacilityOperationFlags.MUTE:
        emit(EventType.MUTE, "", f"mute {who}", obj.time)
    if obj.flags & (FacilityOperationFlags.SELF_TEST | FacilityOperationFlags.TEST):
        emit(EventType.TEST, "", f"self-test {who}", obj.time)


def _uitd_status(obj: UitdStatus, emit: _Emitter) -> None:
    flags = obj.flags
    any_event = False
    if flags & UitdStatusBits.FIRE:
        emit(EventType.FIRE_ALARM, UITD_POINT, "UITD fire", obj.time)
        any_event = True
    faults = []
    if flags & UitdStatusBits.FAULT:
        faults.append("UITD fault")
    if flags & (UitdStatusBits.MAINS_POWER_FAULT | UitdStatusBits.BACKUP_POWER_FAULT):
        faults.append("power fault")
    if flags & (UitdStatusBits.CENTRE_LINK_FAULT | UitdStatusBits.MONITORED_LINE_FAULT):
        faults.append("comm fault")
    if faults:
        emit(EventType.FAULT, UITD_POINT, ", ".join(faults), obj.time)
        any_event = True
    if not any_event:
        emit(EventType.RESTORED, UITD_POINT, "UITD normal", obj.time)


def _uitd_operation(obj: UitdOperation, ctx: Context, emit: _Emitter, out: Translated) -> None:
    who = f"UITD operator {obj.operator}"
    if obj.flags & UitdOperationFlags.RESET:
        emit(EventType.RESET, "", f"reset {who}", obj.time)
    if obj.flags & UitdOperationFlags.MUTE:
        emit(EventType.MUTE, "", f"mute {who}", obj.time)
    if obj.flags & (UitdOperationFlags.SELF_TEST | UitdOperationFlags.TEST):
        emit(EventType.TEST, "", f"self-test {who}", obj.time)
    if obj.flags & UitdOperationFlags.DUTY_CHECK_ANSWER:
        # When we heard the answer: what the duty check measures is a person at the UITD.
        out.duty_answer_ms = ctx.received_at_ms


#: Table 6 analog type → (measurement, field, factor from the table's unit).
_KINDS: dict[int, tuple[str, str, float]] = {
    2: ("water_level", "level_m", 1.0),
    3: ("temperature", "temperature_c", 1.0),
    4: ("water_pressure", "pressure_mpa", 1.0),
    5: ("water_pressure", "pressure_mpa", 0.001),
    6: ("gas", "lel_pct", 1.0),
}


def _analog(obj: AnalogValue, ctx: Context, out: Translated) -> None:
    point, mapped = component_point(ctx, obj)
    panel = ctx.panel
    tags = {**panel.tags(), "point": point}
    if mapped is not None:
        tags.update(building=mapped.building, floor=mapped.floor, zone=mapped.zone)
        if mapped.tenant:
            tags["tenant"] = mapped.tenant
    ts = _Emitter(ctx, out, "").ts(obj.time)
    fits = _KINDS.get(obj.analog_type)
    if obj.value is not None and fits is not None:
        measurement, name, factor = fits
        fields: dict[str, float | int | bool | str] = {name: obj.value * factor}
    else:
        measurement = "panel_analog"
        fields = {"value": obj.value if obj.value is not None else float(obj.raw),
                  "unit": obj.unit or f"type {obj.analog_type} raw"}
    out.lines.append(encode_line(escape_measurement(measurement), tag_set(tags), fields, ts))
