"""The alarm keeper: the pure rule engine and its durable store, driven from the event loop.

The pure :class:`rules.engine.Engine` decides; the keeper gives it time and makes its decisions
durable (the outputs are in :mod:`gateway.alarms.outputs`):

    validate stage ── observe() ──▶ transitions ─┐
    ticker (1 s)   ── tick() ─────▶ transitions ─┤  (same commit queue as readings)
    HTTP/CLI ack   ── acknowledge() ─────────────┘
                                                 ▼
    commit stage: WAL (readings + `alarms` points) → AlarmStore.apply (one transaction)
                  → PUBACK the messages → retained MQTT alarm documents

A message is acknowledged to the broker only after the alarm changes it caused are stored,
so a crash can neither lose an alarm nor, thanks to one-active-alarm-per-fingerprint, double it.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.alarms.acklinks import AckGrant, insert_grants
from gateway.alarms.store import SQLITE_FILE, AlarmStore, OutboxRow
from rules.alarm import AlarmState, Disposition, Maintenance, Transition
from rules.engine import Engine, EngineState
from rules.loader import load_rules
from rules.model import RuleSet
from rules.observation import Observation
from rules.system import HealthCondition
from sensors.pointmap import PointMap
from sensors.registry import Registry

log = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_alarm_id() -> str:
    return uuid.uuid4().hex[:12]


class AlarmKeeper:
    """Owns the engine and the store. Every method runs on the event loop; the engine is only
    ever touched from here, so concurrent messages cannot race on alarm state."""

    def __init__(self, *, rules: RuleSet, registry: Registry, store: AlarmStore,
                 lateness_s: float, points: PointMap | None = None) -> None:
        self.rules = rules
        self.points = points
        self.registry = registry
        self.store = store
        self._lateness_s = lateness_s
        self.engine: Engine | None = None

    @classmethod
    def from_paths(cls, *, rules_path: Path, registry: Registry, state_dir: Path,
                   lateness_s: float, points: PointMap | None = None,
                   store: AlarmStore | None = None) -> AlarmKeeper:
        """``store``: the configured one (:func:`gateway.alarms.store.store_for`); default
        ``state_dir/alarms.sqlite3``."""
        return cls(rules=load_rules(rules_path), registry=registry,
                   store=store or AlarmStore(state_dir / SQLITE_FILE), lateness_s=lateness_s,
                   points=points)

    async def open(self) -> None:
        await self.store.open()
        blob = await self.store.load_engine_state()
        restored = EngineState.from_json(blob) if blob else None
        self.engine = Engine(rules=self.rules, registry=self.registry,
                             lateness_s=self._lateness_s, new_id=new_alarm_id, restored=restored,
                             points=self.points)
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
                    channel: str, name: str | None = None) -> Transition:
        assert self.engine is not None
        return self.engine.acknowledge(alarm_id, by=by, disposition=disposition,
                                       channel=channel, now_ms=now_ms(), name=name)

    def reclassify(self, alarm_id: str, *, by: str, disposition: Disposition,
                   reason: str) -> Transition:
        assert self.engine is not None
        return self.engine.reclassify(alarm_id, by=by, disposition=disposition, reason=reason,
                                      now_ms=now_ms())

    def set_maintenance(self, *, scope: str, target: str, mode: Maintenance,
                        until_ms: int | None, by: str) -> list[Transition]:
        assert self.engine is not None
        return self.engine.set_maintenance(scope=scope,  # type: ignore[arg-type]
                                           target=target, mode=mode, until_ms=until_ms, by=by,
                                           now_ms=now_ms())

    def holds(self, alarm_id: str) -> bool:
        """This engine owns the alarm (active here, so only this instance may change it)."""
        assert self.engine is not None
        alarm = self.engine.get(alarm_id)
        return alarm is not None and alarm.state is not AlarmState.RESOLVED

    def state_json(self) -> str:
        assert self.engine is not None
        return self.engine.state_json()

    async def persist(self, transitions: Sequence[Transition], *, with_state: bool,
                      outbox: Sequence[OutboxRow] = (),
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
