"""Per-UITD state the server keeps between frames and connections: liveness, clock, duty checks.

Keyed by the UITD address (the frame source), not by the connection: a UITD reconnects often
(GPRS/4G links drop), and its last frame, clock verdict and pending duty check belong to it.
The number of sessions is bounded by the point map (only mapped UITDs get one).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

#: A UITD clock further off than this (seconds) is untrusted: its events get the receive time.
CLOCK_TOLERANCE_S = 300.0


@dataclass(eq=False)   # identity: one object per UITD, kept in sets per connection
class UitdSession:
    address: bytes
    panel: str
    #: Monotonic and wall times of its last frame (any frame is a sign of life).
    last_frame_mono: float | None = None
    last_frame_ms: int | None = None
    connected: int = 0
    #: The UITD clock minus ours, from its last type 28 (None: never told).
    clock_offset_s: float | None = None
    clock_untrusted: bool = False
    last_clock_sync_mono: float | None = None
    #: The last duty check (查岗) we sent, and when it was answered (epoch ms).
    duty_asked_ms: int | None = None
    duty_answered_ms: int | None = None
    #: The link is reported down (uitd_offline raised); None: not known yet (after a start, an
    #: alarm raised before it may still be active, so the first frame clears it).
    offline: bool | None = None
    #: The connection's writer, to send commands 90/91 (None while not connected).
    writer: asyncio.StreamWriter | None = field(default=None, repr=False)
    serial: int = 0

    def next_serial(self) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        return self.serial

    def clock(self, offset_s: float) -> None:
        self.clock_offset_s = offset_s
        self.clock_untrusted = abs(offset_s) > CLOCK_TOLERANCE_S

    def view(self) -> dict[str, Any]:
        """What GET /uitd shows."""
        return {"address": self.address.hex().upper(), "panel": self.panel,
                "connected": self.connected > 0, "last_frame_ms": self.last_frame_ms,
                "clock_offset_s": self.clock_offset_s, "clock_untrusted": self.clock_untrusted,
                "offline": self.offline, "duty_check_asked_ms": self.duty_asked_ms,
                "duty_check_answered_ms": self.duty_answered_ms}
