"""What the outside world sees of an alarm change: the retained MQTT document and its topic, and
the ``alarms`` point in InfluxDB (docs/device-protocol.md, "Alarms out"; docs/alarms.md)."""

from __future__ import annotations

import json
import math

from gateway.storage.lineprotocol import encode_line, escape_measurement, tag_set
from rules.alarm import Alarm, AlarmState

ALARM_TOPIC_ROOT = "parkwatch/alarms"
_ALARMS = escape_measurement("alarms")
#: Bytes a point keeps as they are in a topic level; every other byte is written ``_HH``.
_TOPIC_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-")


def point_level(point: str) -> str:
    """A point as a topic-safe string, one-to-one: ``L1+D2`` and ``L1#D2`` must not share a
    topic, or one alarm's retained document overwrites (or clears) the other's. ``_`` is escaped
    too, so ``_2B`` in the output can only come from ``+``."""
    return "".join(chr(b) if b in _TOPIC_SAFE else f"_{b:02X}" for b in point.encode())


def alarm_topic(alarm: Alarm) -> str:
    """parkwatch/alarms/{park}/{building}/{device}/{rule}; a panel point's alarm adds
    ``@{point}`` (encoded by :func:`point_level`) to the rule level, or its points would
    overwrite one another's document."""
    s = alarm.subject
    rule = alarm.rule
    point = alarm.labels.get("point")
    if point:
        rule += "@" + point_level(point)
    return f"{ALARM_TOPIC_ROOT}/{s.park}/{s.building}/{s.topic_device}/{rule}"


def alarm_line(alarm: Alarm) -> str:
    """The `alarms` point of one state change (docs/device-protocol.md, What lands in InfluxDB)."""
    s = alarm.subject
    tags = tag_set({"park": s.park, "building": s.building, "floor": s.floor, "zone": s.zone,
                    "device": s.device, "tenant": s.tenant or "", "kind": s.kind,
                    "rule": alarm.rule, "severity": alarm.severity.value})
    fields: dict[str, float | int | bool | str] = {
        "alarm_id": alarm.alarm_id, "state": alarm.state.value, "message": alarm.message,
        # Beyond the documented fields (the schema only ever grows): what Grafana's alarm tables
        # need without joining points: since when, who acknowledged, what it was, how long it
        # took.
        "started_at_ms": alarm.started_at_ms}
    if alarm.value is not None and math.isfinite(alarm.value):
        fields["value"] = float(alarm.value)
    if alarm.acknowledged_by is not None:
        fields["acknowledged_by"] = alarm.acknowledged_by
    if alarm.acknowledged_name is not None:   # typed on the ack page, unverified
        fields["acknowledged_name"] = alarm.acknowledged_name
    if alarm.disposition is not None:
        fields["disposition"] = alarm.disposition.value
    if alarm.acknowledged_at_ms is not None:
        fired = alarm.fired_at_ms if alarm.fired_at_ms is not None else alarm.started_at_ms
        fields["ack_s"] = max(0.0, (alarm.acknowledged_at_ms - fired) / 1000)
    return encode_line(_ALARMS, tags, fields, alarm.updated_at_ms)


def retained_payload(alarm: Alarm, ack_url: str | None) -> bytes:
    """The retained document; empty (which clears it) once resolved and acknowledged."""
    if alarm.state is AlarmState.RESOLVED and alarm.acknowledged_by is not None:
        return b""
    return json.dumps(alarm.document(ack_url), ensure_ascii=False).encode()
