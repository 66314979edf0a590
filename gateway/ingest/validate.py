"""From (topic, payload) to InfluxDB lines, or to a rejection with a reason.

The validator knows the topic layout (docs/device-protocol.md, Topics), the device registry and the
spoofing guard, and hands the payload to the sensor kind's decoder, then applies the per-device
rate limit. It does no I/O and reads no clock: time comes in with the message, so it is tested
without a broker. Its only state is the rate limiter's buckets.

Whatever the bytes, :meth:`Validator.validate` returns :class:`Validated` or raises
:class:`Rejection`; any other exception is a bug (tests/test_decoders_fuzz.py and
tests/test_fuzz_corpus.py).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from gateway.ingest.ratelimit import DeviceRateLimiter
from gateway.storage.lineprotocol import (
    encode_line,
    encode_numeric_fields,
    escape_measurement,
    tag_set,
)
from rules.observation import DeviceEvent, Observation, Reading, StatusChange
from rules.placement import Placed, place_event
from sensors.base import EventType, Rejection, RejectReason, TimeContext
from sensors.catalogue import KIND_BY_NAME
from sensors.decode import (
    MAX_BATCH_READINGS,
    Canonical,
    decode_canonical,
    decode_event,
    decode_status,
    decode_telemetry,
)
from sensors.pointmap import PANEL_KIND, PointMap
from sensors.registry import Device, Registry, is_valid_id

#: What a topic that is not UTF-8 contains (gateway/ingest/mqttcodec.py decodes with "replace").
_REPLACEMENT = "\ufffd"


class MessageType(enum.StrEnum):
    TELEMETRY = "telemetry"
    EVENT = "event"
    STATUS = "status"


@dataclass(slots=True)
class Validated:
    """An accepted message: the lines to make durable and what the live view shows.

    Not frozen, though nothing changes one: one is made per message, and a frozen dataclass's
    ``__init__`` (``object.__setattr__`` per field) cost 2 µs of a message's ~25 (issue 15).
    """

    device: Device
    type: MessageType
    lines: list[str]
    samples: int
    untrusted: int
    latest: Mapping[str, float | bool | str] = field(default_factory=dict)
    latest_ts_ms: int = 0
    seq: int | None = None
    #: What the rule engine sees of this message (readings, an event or a status change).
    observations: tuple[Observation, ...] = ()


@dataclass(frozen=True, slots=True)
class _DeviceWire:
    """Per-device strings computed once at start-up: the hot path only concatenates."""

    device: Device
    measurement: str
    tags: str
    event_tags: Mapping[EventType, str]
    timezone: ZoneInfo


class Validator:
    """Validates topics against the registry and decodes payloads into line protocol."""

    def __init__(self, *, registry: Registry, root: str, timezones: Mapping[str, ZoneInfo],
                 default_timezone: ZoneInfo, max_payload_bytes: int, max_age_s: float,
                 max_future_s: float, max_batch: int = MAX_BATCH_READINGS,
                 device_rate_per_s: float = 0.0, device_burst: int = 0,
                 points: PointMap | None = None,
                 on_unmapped: Callable[[], None] | None = None,
                 owns_park: Callable[[str], bool] | None = None) -> None:
        self._prefix = root.rstrip("/") + "/"
        # With partitions (gateway/cluster/partitions.py) the registry is still the whole one,
        # so another partition's device is recognised and refused as such, not as unknown.
        self._owns_park = owns_park
        self._max_payload = max_payload_bytes
        self._max_batch = max_batch
        self.limiter = DeviceRateLimiter(rate_per_s=device_rate_per_s, burst=device_burst)
        self._max_age_s = max_age_s
        self.points = points
        self._on_unmapped = on_unmapped
        self._max_future_s = max_future_s
        self._wires: dict[str, _DeviceWire] = {}
        for device in registry:
            base_tags = device.tags()
            self._wires[device.device] = _DeviceWire(
                device=device,
                measurement=escape_measurement(device.kind),
                tags=tag_set(base_tags),
                event_tags={t: tag_set({**base_tags, "kind": device.kind, "type": t.value})
                            for t in EventType},
                timezone=timezones.get(device.park, default_timezone),
            )
        self._events_measurement = escape_measurement("events")
        # Topics that resolved (a device's telemetry, event and status topics): each device
        # publishes on the same few, so the split, the ID checks and the registry lookup run
        # once per topic. Only what passed is kept, so its size is bounded by the registry.
        self._resolved: dict[str, tuple[_DeviceWire, MessageType]] = {}
        self._resolved_max = 3 * len(self._wires) + 16

    def subscriptions(self) -> list[str]:
        # Everything under the root, not just the three valid shapes: a device publishing to a
        # mistyped topic must show up as a counted bad_topic, not vanish unseen.
        return [f"{self._prefix}#"]

    def priority_subscriptions(self) -> list[str]:
        """Events and status only: the priority lane's own session, so that they keep flowing
        when the main session's in-flight window is full of telemetry waiting for room."""
        return [f"{self._prefix}+/+/+/event", f"{self._prefix}+/+/+/status"]

    def validate(self, topic: str | bytes, payload: bytes, received_at_ms: int,
              retained: bool = False) -> Validated:
        """Decode one message or raise :class:`Rejection`."""
        resolved = self._resolved.get(topic) if type(topic) is str else None
        if resolved is None:
            resolved = self._resolve(_topic_text(topic))
            if type(topic) is str and len(self._resolved) < self._resolved_max:
                self._resolved[topic] = resolved
        wire, mtype = resolved
        if len(payload) > self._max_payload:
            raise Rejection(RejectReason.OVERSIZE,
                            f"{len(payload)} bytes > limit {self._max_payload}")
        if mtype is MessageType.EVENT:
            # Never rate-limited (docs/device-protocol.md, Events): a panel or detector in a real
            # fire bursts, and a fire alarm held back is worse than any flood.
            return self._event(wire, payload, received_at_ms)
        if mtype is MessageType.TELEMETRY:
            validated = self._telemetry(wire, payload, received_at_ms)
        else:
            validated = self._status(wire, payload, received_at_ms, retained)
        # After decoding: a broken message is reported for what it is, and the device's own
        # (trusted) time is known, which lets a replayed backlog through (ingest/ratelimit.py).
        if not self.limiter.allow(wire.device.device, received_ms=received_at_ms,
                                  device_ms=validated.latest_ts_ms):
            raise Rejection(RejectReason.RATE_LIMITED,
                            f"device {wire.device.device!r} sends more than "
                            f"{self.limiter.rate_per_s:g} messages/s (burst "
                            f"{self.limiter.burst})")
        return validated

    def _resolve(self, topic: str) -> tuple[_DeviceWire, MessageType]:
        if _REPLACEMENT in topic:
            raise Rejection(RejectReason.BAD_UTF8, "topic is not valid UTF-8")
        if not topic.startswith(self._prefix):
            raise Rejection(RejectReason.BAD_TOPIC, "topic outside the configured root")
        parts = topic[len(self._prefix):].split("/")
        if len(parts) != 4:
            raise Rejection(RejectReason.BAD_TOPIC,
                            "expected {root}/{park}/{building}/{device}/{telemetry|event|status}")
        park, building, device_id, suffix = parts
        try:
            mtype = MessageType(suffix)
        except ValueError:
            raise Rejection(RejectReason.BAD_TOPIC,
                            f"unknown message type {suffix[:40]!r}") from None
        for label, value in (("park", park), ("building", building), ("device", device_id)):
            if not is_valid_id(value):
                raise Rejection(RejectReason.BAD_ID, f"{label} id {value[:80]!r} is not a valid ID")
        wire = self._wires.get(device_id)
        if wire is None:
            raise Rejection(RejectReason.UNKNOWN_DEVICE, f"device {device_id!r} is not registered")
        dev = wire.device
        if dev.park != park or dev.building != building:
            # A device publishing under someone else's building is a spoof or a mis-wired unit.
            raise Rejection(RejectReason.TOPIC_MISMATCH,
                            f"device {device_id!r} is registered in {dev.park}/{dev.building}, "
                            f"not {park}/{building}")
        if self._owns_park is not None and not self._owns_park(park):
            raise Rejection(RejectReason.OTHER_PARTITION,
                            f"park {park!r} belongs to another partition")
        return wire, mtype

    def _ctx(self, wire: _DeviceWire, received_at_ms: int) -> TimeContext:
        return TimeContext(received_at_ms=received_at_ms, timezone=wire.timezone,
                           max_age_s=self._max_age_s, max_future_s=self._max_future_s)

    def _telemetry(self, wire: _DeviceWire, payload: bytes, received_at_ms: int) -> Validated:
        dev = wire.device
        canonical = decode_canonical(payload, KIND_BY_NAME[dev.kind], received_at_ms,
                                     max_age_s=self._max_age_s, max_future_s=self._max_future_s)
        if canonical is not None:
            return self._canonical(wire, canonical, received_at_ms)
        tel = decode_telemetry(payload, KIND_BY_NAME[dev.kind], self._ctx(wire, received_at_ms),
                               limits=dev.limits, max_bytes=self._max_payload,
                               max_readings=self._max_batch)
        extra: dict[str, float | int | bool | str] = {}
        if tel.battery_pct is not None:
            extra["battery_pct"] = float(tel.battery_pct)
        if tel.rssi_dbm is not None:
            extra["rssi_dbm"] = float(tel.rssi_dbm)
        if tel.seq is not None:
            extra["seq"] = int(tel.seq)
        lines: list[str] = []
        observations: list[Observation] = []
        untrusted = 0
        last = len(tel.samples) - 1
        for index, sample in enumerate(tel.samples):
            fields: dict[str, float | int | bool | str] = {**sample.values, **extra}
            ts_ms = sample.ts_ms
            if not sample.clock_trusted:
                untrusted += 1
                # Every untrusted reading got the receive time; in a batch they would land on
                # one timestamp and overwrite each other. Keep them distinct and in order.
                ts_ms -= last - index
            if fields:
                lines.append(encode_line(wire.measurement, wire.tags, fields, ts_ms))
            observations.append(Reading(dev.device, ts_ms, sample.values, received_at_ms,
                                        sample.clock_trusted))
        newest = tel.samples[-1] if tel.samples else None
        return Validated(dev, MessageType.TELEMETRY, lines, len(tel.samples), untrusted,
                      dict(newest.values) if newest else {},
                      newest.ts_ms if newest else received_at_ms, tel.seq, tuple(observations))

    @staticmethod
    def _canonical(wire: _DeviceWire, canonical: Canonical, received_at_ms: int) -> Validated:
        """The common message, the short way: what :meth:`_telemetry` makes of one sample."""
        ts_ms, trusted, values, seq, battery, rssi = canonical
        fields = encode_numeric_fields(values)
        if battery is not None:
            fields += f",battery_pct={battery!r}" if fields else f"battery_pct={battery!r}"
        if rssi is not None:
            fields += f",rssi_dbm={rssi!r}" if fields else f"rssi_dbm={rssi!r}"
        if seq is not None:
            fields += f",seq={seq}i" if fields else f"seq={seq}i"
        lines = [f"{wire.measurement}{wire.tags} {fields} {ts_ms}"] if fields else []
        device = wire.device
        return Validated(device, MessageType.TELEMETRY, lines, 1, 0 if trusted else 1,
                         dict(values), ts_ms, seq,
                         (Reading(device.device, ts_ms, values, received_at_ms, trusted),))

    def _event(self, wire: _DeviceWire, payload: bytes, received_at_ms: int) -> Validated:
        ev = decode_event(payload, self._ctx(wire, received_at_ms), max_bytes=self._max_payload)
        type_, detail, place = ev.type, ev.detail, None
        if wire.device.kind == PANEL_KIND and ev.point:
            placed = self.place(wire.device, ev.type, ev.point, ev.detail)
            type_, detail, place = placed.type, placed.detail, placed.place
        fields: dict[str, float | int | bool | str] = {"detail": detail, "point": ev.point}
        if ev.seq is not None:
            fields["seq"] = int(ev.seq)
        line = encode_line(self._events_measurement, wire.event_tags[type_], fields, ev.ts_ms)
        obs = DeviceEvent(wire.device.device, ev.ts_ms, type_, received_at_ms, ev.point,
                          detail, place=place)
        return Validated(wire.device, MessageType.EVENT, [line], 0,
                      0 if ev.clock_trusted else 1, {"event": type_.value}, ev.ts_ms, ev.seq,
                      (obs,))

    def place(self, panel: Device, type_: EventType, point: str, detail: str, *,
              feedback: bool = False) -> Placed:
        """A panel point's event placed by the point map (rules/placement.py); a point the map
        does not know still pages on the panel, and is counted (unmapped_point)."""
        placed = place_event(self.points, panel, type_, point, detail, feedback=feedback)
        if not placed.mapped and self.points is not None and self._on_unmapped is not None:
            self._on_unmapped()
        return placed

    def event_line(self, device: str, type_: EventType, point: str, detail: str, ts_ms: int,
                   extra: Mapping[str, float | int | bool | str] | None = None) -> str:
        """An ``events`` line exactly as an MQTT event of ``device`` would give (UITD events)."""
        wire = self._wires[device]
        fields: dict[str, float | int | bool | str] = {"detail": detail, "point": point,
                                                      **(extra or {})}
        return encode_line(self._events_measurement, wire.event_tags[type_], fields, ts_ms)

    def timezone_of(self, device: str) -> ZoneInfo | None:
        wire = self._wires.get(device)
        return wire.timezone if wire is not None else None

    def _status(self, wire: _DeviceWire, payload: bytes, received_at_ms: int,
                retained: bool) -> Validated:
        status = decode_status(payload)
        # No line here: device_status points are the gateway's liveness tracker's
        # (gateway/runtime/liveness.py), which sees this message and every other one.
        # A retained "online" is an old announcement and must not make a dead device look alive;
        # a retained "offline" (a Will) is still the truth about the device.
        observations: tuple[Observation, ...] = () if retained and status.online else (
            StatusChange(wire.device.device, status.online, received_at_ms),)
        return Validated(wire.device, MessageType.STATUS, [], 0, 0,
                      {"online": status.online}, received_at_ms, None, observations)



def _topic_text(topic: str | bytes) -> str:
    if isinstance(topic, str):
        return topic
    try:
        return topic.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejection(RejectReason.BAD_UTF8, "topic is not valid UTF-8") from None
