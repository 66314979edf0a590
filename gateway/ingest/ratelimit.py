"""Per-device token buckets: one device sending far more than its share is refused, not obeyed.

A device earns ``rate_per_s`` tokens a second up to ``burst``; an accepted message spends one.
Refusing is instant (nothing waits), so a flooding device never delays anyone else.

Time passes in two ways here, and a device is credited with whichever moved further:

* the receive clock, so a device that sends at an honest pace is never refused;
* the device's own trusted timestamps (the newest one seen), so a backlog the broker held while
  ParkWatch was down or disconnected (an hour of readings delivered in one second) replays in
  full instead of being mistaken for a flood.

A device cannot earn credit by sending timestamps out of order: only progress past its newest
timestamp counts, and the decoder already replaces times more than five minutes ahead with the
receive time. The limit stops runaway firmware and floods of current messages; it is not an
access control (that is the broker's ACL, see docs/security.md).

Pure: callers pass the times in; state is bounded by the number of registered devices because
the validator asks only after the registry lookup.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    received_ms: int
    device_ms: int


class DeviceRateLimiter:
    """Token buckets keyed by device ID. ``rate_per_s == 0`` disables the limit."""

    def __init__(self, *, rate_per_s: float, burst: int) -> None:
        if rate_per_s < 0:
            raise ValueError(f"rate_per_s must be >= 0, not {rate_per_s!r}")
        if rate_per_s > 0 and burst < 1:
            raise ValueError(f"burst must be >= 1 when limiting, not {burst!r}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._per_ms = rate_per_s / 1000.0
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0

    def allow(self, device: str, *, received_ms: int, device_ms: int) -> bool:
        """Spend one token of ``device`` if it has one; say whether the message may pass."""
        if not self.enabled:
            return True
        bucket = self._buckets.get(device)
        if bucket is None:
            self._buckets[device] = _Bucket(self.burst - 1.0, received_ms, device_ms)
            return True
        # A receive clock that stepped back (NTP) restarts from the new time rather than
        # starving the device until the old time comes round again.
        received_gain = max(received_ms - bucket.received_ms, 0)
        bucket.received_ms = received_ms
        device_gain = max(device_ms - bucket.device_ms, 0)
        bucket.device_ms = max(device_ms, bucket.device_ms)
        gained = max(received_gain, device_gain) * self._per_ms
        bucket.tokens = min(float(self.burst), bucket.tokens + gained)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def __len__(self) -> int:
        return len(self._buckets)
