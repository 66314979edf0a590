"""flood: what one device's events may cost, whatever the device sends.

A panel reports each loop point in alarm as its own alarm (``event.py``), so a device that
varies ``point`` could otherwise open unlimited alarms, retained topics and saved engine state.
Per device, an :class:`EventGuard`:

* caps the points with an active alarm per event rule (``max_points`` in the registry, else
  :data:`DEFAULT_MAX_POINTS`); an event for a new point beyond the cap is refused, counted, and
  raises one ``too_many_points`` alarm for the device, at the highest severity among the
  refused events (a fire flood still pages as critical), its message and ``value`` the count;
* rate-limits the events that are not fire-class (a token bucket on the gateway's receive time,
  which a device cannot forge; only ever moving forward): a fault or test storm cannot keep
  the engine busy. Fire-class events (``fire_alarm``, anything from a manual call point) are
  never limited, and events that only close alarms (``reset``, ``restored``) are not either.

The ``too_many_points`` alarm resolves when every rule that refused was reset for the whole
device (a ``reset`` / ``restored`` without a point).
"""

from __future__ import annotations

from typing import Any

from rules.alarm import Alarm, Severity
from rules.kinds.base import Ledger, device_fp, subject_of
from sensors.base import EventType
from sensors.registry import Device

TOO_MANY_POINTS = "too_many_points"
#: Points in alarm per device and rule when the registry gives no ``max_points``.
DEFAULT_MAX_POINTS = 64
#: Non-fire events per device: sustained rate and burst.
EVENT_RATE_PER_S = 10.0
EVENT_BURST = 50.0
#: While a flood lasts its count is published at 2, 4, 8, ... refused events, and by the clock
#: at most this often, so the alarm ends up exact without one update per event.
PUBLISH_EVERY_MS = 10_000

FIRE_KINDS = frozenset({"manual_call_point"})
_UNLIMITED = frozenset({EventType.FIRE_ALARM, EventType.RESET, EventType.RESTORED})


class EventGuard:
    __slots__ = ("_at", "_device", "_fp", "_published", "_published_at", "_rules", "_severity",
                 "_subject", "_tokens", "_unlimited", "key", "max_points", "refused",
                 "refused_total")

    def __init__(self, device: Device, max_points: int | None = None) -> None:
        self._device = device
        self._subject = subject_of(device)
        self._fp = device_fp(TOO_MANY_POINTS, device.device)
        self._unlimited = device.kind in FIRE_KINDS
        # The registry's cap wins; else the panel's point count in the point map (max_points).
        self.max_points = device.max_points or max_points or DEFAULT_MAX_POINTS
        self.key = f"{TOO_MANY_POINTS}|{device.device}"
        self._tokens = EVENT_BURST
        self._at: int | None = None
        self.refused = 0               # since the too_many_points alarm opened
        self.refused_total = 0         # since start (a counter, not saved)
        self._severity: Severity | None = None
        self._rules: set[str] = set()  # rules that refused since the alarm opened
        self._published = 0            # the count the alarm says
        self._published_at: int | None = None

    # ---- rate ---------------------------------------------------------------------------

    def admit(self, type_: EventType, rx_ms: int) -> bool:
        """False when this non-fire event is over the device's rate."""
        if self._unlimited or type_ in _UNLIMITED:
            return True
        if self._at is not None and rx_ms > self._at:
            self._tokens = min(EVENT_BURST,
                               self._tokens + (rx_ms - self._at) / 1000 * EVENT_RATE_PER_S)
        if self._at is None or rx_ms > self._at:
            self._at = rx_ms
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    # ---- points -------------------------------------------------------------------------

    def refuse(self, rule: str, type_: EventType, severity: Severity, ts: int,
               book: Ledger) -> None:
        """An event for a point beyond the cap: counted, and said by the device's one alarm."""
        self.refused += 1
        self.refused_total += 1
        self._rules.add(rule)
        cur = book.get(self._fp)
        if self._severity is None or severity.rank > self._severity.rank:
            self._severity = severity
        if cur is None or self._severity.rank > cur.severity.rank:
            book.open(self._fp, rule=TOO_MANY_POINTS, subject=self._subject,
                      severity=self._severity, message=self._message(), at_ms=ts,
                      value=float(self.refused), labels={"event": type_.value})
            self._published = self.refused
        elif self.refused & (self.refused - 1) == 0:
            # A flood of 10^4 is 14 updates, not 10^4; publish() makes the count exact later.
            self._publish(cur, ts, book)

    def publish(self, now_ms: int, book: Ledger) -> None:
        """On the clock: the alarm's count catches up with the refused events."""
        if self.refused == self._published or (
                self._published_at is not None and now_ms - self._published_at < PUBLISH_EVERY_MS):
            return
        cur = book.get(self._fp)
        if cur is not None:
            self._publish(cur, now_ms, book)
            self._published_at = now_ms

    def _publish(self, cur: Alarm, at_ms: int, book: Ledger) -> None:
        book.put(cur, cur.evolve(message=self._message(), value=float(self.refused),
                                 updated_at_ms=max(at_ms, cur.updated_at_ms)))
        self._published = self.refused

    def cleared(self, rule: str, ts: int, book: Ledger) -> None:
        """``rule`` was reset for the whole device; the alarm ends once every such rule was."""
        self._rules.discard(rule)
        if self._rules:
            return
        cur = book.get(self._fp)
        if cur is not None and cur.started_at_ms <= ts:
            book.resolve(self._fp, ts, self._message() + " (reset)")
        if cur is None or cur.started_at_ms <= ts:
            self.refused, self._published, self._severity = 0, 0, None

    def _message(self) -> str:
        return (f"{self.refused} event(s) refused on {self._device.device} "
                f"({self._device.location or '-'}): more than {self.max_points} points in alarm "
                "at once; check the device")

    # ---- restart ------------------------------------------------------------------------

    def dump(self) -> dict[str, Any] | None:
        if self._at is None and not self._rules:
            return None
        return {"tokens": self._tokens, "at": self._at, "refused": self.refused,
                "published": self._published,
                "severity": self._severity.value if self._severity else None,
                "rules": sorted(self._rules)}

    def load(self, data: dict[str, Any]) -> None:
        self._tokens = min(EVENT_BURST, float(data["tokens"]))
        self._at = data["at"]
        self.refused = int(data["refused"])
        self._published = int(data.get("published", self.refused))
        self._severity = Severity(data["severity"]) if data["severity"] else None
        self._rules = set(data["rules"])
