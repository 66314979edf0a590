"""The alarm side of the gateway: the rule engine, its durable store and its outputs.

The pure :class:`rules.engine.Engine` decides; this module gives it time and makes its
decisions durable and visible:

    validate stage ── observe() ──▶ transitions ─┐
    ticker (1 s)   ── tick() ─────▶ transitions ─┤  (same commit queue as readings)
    HTTP/CLI ack   ── acknowledge() ─────────────┘
                                                 ▼
    commit stage: WAL (readings + `alarms` points) → AlarmStore.apply (SQLite, one transaction)
                  → PUBACK the messages → retained MQTT alarm documents

A message is acknowledged to the broker only after the alarm changes it caused are in SQLite,
so a crash can neither lose an alarm nor, thanks to one-active-alarm-per-fingerprint, double it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.alarms.acklinks import AckGrant, insert_grants
from gateway.alarms.store import AlarmStore
from gateway.storage.lineprotocol import encode_line, escape_measurement, tag_set
from rules.alarm import Alarm, AlarmState, Disposition, Maintenance, Transition
from rules.engine import Engine, EngineState
from rules.loader import load_rules
from rules.model import RuleSet
from rules.observation import Observation
from rules.system import HealthCondition
from sensors.registry import Registry

log = logging.getLogger(__name__)

ALARM_TOPIC_ROOT = "parkwatch/alarms"
_ALARMS = escape_measurement("alarms")
_TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_alarm_id() -> str:
    return uuid.uuid4().hex[:12]


def alarm_topic(alarm: Alarm) -> str:
    """parkwatch/alarms/{park}/{building}/{device}/{rule}; a panel point's alarm adds
    ``@{point}`` to the rule level, or its points would overwrite one another's document."""
    s = alarm.subject
    rule = alarm.rule
    point = alarm.labels.get("point")
    if point:
        rule += "@" + _TOPIC_UNSAFE.sub("_", point)
    return f"{ALARM_TOPIC_ROOT}/{s.park}/{s.building}/{s.topic_device}/{rule}"


def alarm_line(alarm: Alarm) -> str:
    """The `alarms` point of one state change (contract §5)."""
    s = alarm.subject
    tags = tag_set({"park": s.park, "building": s.building, "floor": s.floor, "zone": s.zone,
                    "device": s.device, "tenant": s.tenant or "", "kind": s.kind,
                    "rule": alarm.rule, "severity": alarm.severity.value})
    fields: dict[str, float | int | bool | str] = {
        "alarm_id": alarm.alarm_id, "state": alarm.state.value, "message": alarm.message,
        # Beyond contract §5 (which only ever grows): what Grafana's alarm tables need without
        # joining points — since when, who acknowledged, what it was, how long that took.
        "started_at_ms": alarm.started_at_ms}
    if alarm.value is not None and math.isfinite(alarm.value):
        fields["value"] = float(alarm.value)
    if alarm.acknowledged_by is not None:
        fields["acknowledged_by"] = alarm.acknowledged_by
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


class AlarmKeeper:
    """Owns the engine and the store. Every method runs on the event loop; the engine is only
    ever touched from here, so concurrent messages cannot race on alarm state."""

    def __init__(self, *, rules: RuleSet, registry: Registry, store: AlarmStore,
                 lateness_s: float) -> None:
        self.rules = rules
        self.registry = registry
        self.store = store
        self._lateness_s = lateness_s
        self.engine: Engine | None = None

    @classmethod
    def from_paths(cls, *, rules_path: Path, registry: Registry, state_dir: Path,
                   lateness_s: float) -> AlarmKeeper:
        return cls(rules=load_rules(rules_path), registry=registry,
                   store=AlarmStore(state_dir / "alarms.sqlite3"), lateness_s=lateness_s)

    async def open(self) -> None:
        await self.store.open()
        blob = await self.store.load_engine_state()
        restored = EngineState.from_json(blob) if blob else None
        self.engine = Engine(rules=self.rules, registry=self.registry,
                             lateness_s=self._lateness_s, new_id=new_alarm_id, restored=restored)
        if restored is not None:
            log.info("alarm engine resumed: %d active alarm(s)", len(self.engine.active()))

    async def close(self) -> None:
        await self.store.close()

    def observe(self, observations: Sequence[Observation], at_ms: int) -> list[Transition]:
        assert self.engine is not None
        out: list[Transition] = []
        for obs in observations:
            out.extend(self.engine.observe(obs, at_ms))
        return out

    def tick(self, at_ms: int) -> list[Transition]:
        assert self.engine is not None
        return self.engine.tick(at_ms)

    def conditions(self, conditions: Sequence[HealthCondition], at_ms: int) -> list[Transition]:
        """Gateway-health alarms raised or cleared (rules/system.py)."""
        assert self.engine is not None
        out: list[Transition] = []
        for cond in conditions:
            out.extend(self.engine.condition(cond, at_ms))
        return out

    def acknowledge(self, alarm_id: str, *, by: str, disposition: Disposition,
                    channel: str) -> Transition:
        assert self.engine is not None
        return self.engine.acknowledge(alarm_id, by=by, disposition=disposition,
                                       channel=channel, now_ms=now_ms())

    def set_maintenance(self, *, scope: str, target: str, mode: Maintenance,
                        until_ms: int | None, by: str) -> list[Transition]:
        assert self.engine is not None
        return self.engine.set_maintenance(scope=scope,  # type: ignore[arg-type]
                                           target=target, mode=mode, until_ms=until_ms, by=by,
                                           now_ms=now_ms())

    def state_json(self) -> str:
        assert self.engine is not None
        return self.engine.state().to_json()

    async def persist(self, transitions: Sequence[Transition], *, with_state: bool,
                      outbox: Sequence[tuple[Any, ...]] = (),
                      grants: Sequence[AckGrant] = ()) -> None:
        # Ack-link rows go in the same transaction as the messages that carry the links.
        also = [functools.partial(insert_grants, grants=list(grants))] if grants else []
        await self.store.apply(transitions,
                               engine_state_json=self.state_json() if with_state else None,
                               outbox=outbox, also=also)

    def maintenance_rows(self) -> list[dict[str, Any]]:
        assert self.engine is not None
        state = json.loads(self.state_json())
        rows: list[dict[str, Any]] = state.get("maintenance", [])
        return rows
