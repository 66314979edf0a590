"""What the GB/T 26875.3 server sees of the gateway (gateway/ingest/uitd/server.py: Pipeline).

A frame is ACKed only after what it caused is durable (:meth:`UitdPipeline.commit_observed`);
any frame is a sign of life of its panel (liveness and the silence rules); a UITD silent past
its allowance raises the panel's ``uitd_offline`` alarm (major).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.alarms.keeper import AlarmKeeper, now_ms
from gateway.config import UitdSettings
from gateway.runtime.changes import Changes
from gateway.runtime.liveness import LivenessFeed
from rules.alarm import Severity
from rules.kinds.base import subject_of
from rules.observation import Observation, StatusChange
from rules.system import UITD_OFFLINE, HealthCondition
from sensors.registry import Registry


class UitdPipeline:
    def __init__(self, *, changes: Changes, keeper: AlarmKeeper | None, registry: Registry,
                 settings: UitdSettings, liveness: Callable[[], LivenessFeed | None]) -> None:
        self._changes = changes
        self._keeper = keeper
        self._registry = registry
        self._settings = settings
        # The liveness feed exists once the gateway runs; the server starts after it.
        self._liveness = liveness

    async def commit_observed(self, lines: list[str],
                              observations: Sequence[Observation]) -> None:
        await self._changes.commit_observed(lines, observations)

    def seen_event(self, dedup_key: str) -> bool:
        engine = self._keeper.engine if self._keeper is not None else None
        return engine is not None and engine.seen_event(dedup_key)

    def panel_heard(self, panel: str, received_at_ms: int) -> None:
        """Any UITD frame is a sign of life of its panel (liveness, silence rules)."""
        feed = self._liveness()
        lines = feed.heard(panel, received_at_ms) if feed is not None else []
        if lines:
            self._changes.later(self._changes.commit_lines(lines))
        keeper = self._keeper
        if keeper is None:
            return
        self._changes.later(self._changes.commit_change(
            lambda: keeper.observe([StatusChange(panel, True, received_at_ms)], now_ms())))

    def panel_link(self, panel: str, up: bool, silent_s: float) -> None:
        """Raise (``up`` false) or clear the panel's uitd_offline alarm (major)."""
        device = self._registry.get(panel)
        keeper = self._keeper
        if keeper is None or device is None:
            return
        allowance = self._settings.heartbeat_allowance_s
        message = (f"Panel {panel} ({device.location}) UITD link up" if up else
                   f"Panel {panel} ({device.location}): UITD silent for {silent_s:.0f} s "
                   f"(allowance {allowance:.0f} s); fires on this panel go unseen")
        cond = HealthCondition(rule=UITD_OFFLINE, key=panel, subject=subject_of(device),
                               severity=Severity.MAJOR, message=message, active=not up,
                               value=None if up else round(silent_s))
        self._changes.later(self._changes.commit_change(
            lambda: keeper.conditions([cond], now_ms())))
