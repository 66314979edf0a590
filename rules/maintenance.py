"""Maintenance windows: a device, zone or building in ``test`` or ``isolated`` until an expiry.

Readings are still evaluated and alarms still created, but marked (``Alarm.maintenance``) so
they are recorded and not paged. A ``test`` window simply ends at its expiry (the alarms it
marked become ordinary alarms again, so a condition still present is paged). An ``isolated``
window stays in force after its expiry, because the isolation is physical (a panel point
switched off) and only a person can undo it; the engine raises ``maintenance_expired``
(warning, never marked) until someone lifts or extends it.

Targets: a device ID, a zone as ``park/building/floor/zone``, a building as ``park/building``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from rules.alarm import Maintenance, Severity, Subject
from rules.kinds.base import Ledger, building_key, subject_of, zone_key
from sensors.registry import Registry

Scope = Literal["device", "zone", "building"]
MAINTENANCE_EXPIRED = "maintenance_expired"
#: Stronger mode wins when windows overlap (a zone in test, one of its devices isolated).
_STRENGTH = {Maintenance.NONE: 0, Maintenance.TEST: 1, Maintenance.ISOLATED: 2}


@dataclass(frozen=True, slots=True)
class Window:
    scope: Scope
    target: str
    mode: Maintenance
    until_ms: int
    by: str
    since_ms: int


class MaintenanceBook:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._zones = {zone_key(d) for d in registry}
        self._buildings = {building_key(d) for d in registry}
        self.windows: dict[tuple[str, str], Window] = {}

    def mode_for(self, s: Subject) -> Maintenance:
        if not self.windows:   # the hot path: nothing under maintenance
            return Maintenance.NONE
        keys = [("building", building_key(s))]
        if s.zone:
            keys.append(("zone", zone_key(s)))
        if s.device:
            keys.append(("device", s.device))
        modes = [w.mode for k in keys if (w := self.windows.get(k)) is not None]
        return max(modes, key=_STRENGTH.__getitem__, default=Maintenance.NONE)

    def set(self, *, scope: Scope, target: str, mode: Maintenance, until_ms: int | None,
            by: str, now_ms: int, book: Ledger) -> None:
        self._check_target(scope, target)
        if mode is Maintenance.NONE:
            self.windows.pop((scope, target), None)
        else:
            if until_ms is None or until_ms <= now_ms:
                raise ValueError("maintenance needs an expiry (until_ms) in the future")
            self.windows[(scope, target)] = Window(scope, target, mode, until_ms, by, now_ms)
        # Lifted or extended: the expiry alarm (if any) is answered.
        book.resolve(expired_fp(scope, target), now_ms)
        self.remark(book, now_ms)

    def expire(self, now_ms: int, book: Ledger) -> None:
        for key, w in list(self.windows.items()):
            if now_ms < w.until_ms:
                continue
            if w.mode is Maintenance.TEST:
                del self.windows[key]
                self.remark(book, now_ms)
            elif book.get(expired_fp(w.scope, w.target)) is None:
                book.open(expired_fp(w.scope, w.target), rule=MAINTENANCE_EXPIRED,
                          subject=self._subject(w.scope, w.target), severity=Severity.WARNING,
                          message=f"{w.scope} {w.target} still {w.mode.value} after its expiry "
                                  f"(set by {w.by})", at_ms=now_ms, started_ms=w.until_ms,
                          maintenance=Maintenance.NONE)

    def remark(self, book: Ledger, now_ms: int) -> None:
        for fp, alarm in list(book.active.items()):
            if alarm.rule != MAINTENANCE_EXPIRED:
                book.mark(fp, self.mode_for(alarm.subject), now_ms)

    def _check_target(self, scope: Scope, target: str) -> None:
        known = {"device": self._registry.devices.keys(), "zone": self._zones,
                 "building": self._buildings}[scope]
        if target not in known:
            raise ValueError(f"unknown {scope} {target!r} (zone: park/building/floor/zone, "
                             "building: park/building)")

    def _subject(self, scope: Scope, target: str) -> Subject:
        if scope == "device":
            device = self._registry.get(target)
            assert device is not None  # checked when the window was set
            return subject_of(device)
        parts = target.split("/")
        if scope == "zone":
            return Subject(park=parts[0], building=parts[1], floor=parts[2], zone=parts[3],
                           kind="zone")
        return Subject(park=parts[0], building=parts[1], kind="building")

    def dump(self) -> list[dict[str, Any]]:
        return [asdict(w) for w in self.windows.values()]

    def load(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            w = Window(**{**row, "mode": Maintenance(row["mode"])})
            self.windows[(w.scope, w.target)] = w


def expired_fp(scope: str, target: str) -> str:
    return f"{MAINTENANCE_EXPIRED}|{scope}:{target}"
