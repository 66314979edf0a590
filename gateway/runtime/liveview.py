"""What the live view (`/status`, `parkwatch top`) shows of accepted traffic: the newest message
per device, the devices whose clocks are not trusted, and seq gaps and repeats (counted)."""

from __future__ import annotations

from typing import Any

from gateway.ingest.validate import Validated
from gateway.metrics import Metrics


class LiveView:
    """Bounded by the registry: one entry per device that sent something."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.latest: dict[str, Validated] = {}
        self.untrusted_clock_devices: set[str] = set()
        self._last_seq: dict[str, int] = {}

    def accepted(self, validated: Validated) -> None:
        device = validated.device.device
        if validated.untrusted:
            self._metrics.untrusted_clock.inc(validated.untrusted)
            self.untrusted_clock_devices.add(device)
        self.latest[device] = validated
        if validated.seq is not None:
            self._track_seq(device, validated.seq)

    def _track_seq(self, device: str, seq: int) -> None:
        """Count drops (forward jumps) and repeats of a device's seq; readings are kept anyway."""
        last = self._last_seq.get(device)
        self._last_seq[device] = max(seq, last) if last is not None else seq
        if last is None:
            return
        if seq > last + 1:
            self._metrics.seq_gaps.inc(seq - last - 1)
        elif seq <= last:
            self._metrics.seq_repeats.inc()

    def newest(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` most recent readings, newest first, as the status page shows them."""
        rows = sorted(self.latest.values(), key=lambda r: r.latest_ts_ms, reverse=True)[:limit]
        return [{"device": r.device.device, "kind": r.device.kind, "building": r.device.building,
                 "ts_ms": r.latest_ts_ms, "values": dict(r.latest)} for r in rows]
