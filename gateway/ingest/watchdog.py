"""The "connected but nothing arrives" watchdog of the broker path.

Telegraf users report an MQTT consumer that silently stops after a reconnect: the TCP session is
up, keepalives flow, but the subscription is gone (a broker restarted without persistence, an
ACL change, a proxy that stalls one direction). The keepalive cannot see that. So the gateway
checks the whole path itself: every ``interval_s`` it publishes a probe to its own probe topic,
which it subscribes to like any device topic, and expects it back (any inbound message counts
too). When nothing came back:

    1st miss → resubscribe      2nd miss → reconnect      2nd miss on → ingest_stalled alarm

The alarm goes through the notification channels (HTTP, SMTP: none needs the broker) and
resolves when messages flow again. The gateway's *own* death or hang needs an outside observer:
that is :mod:`gateway.runtime.heartbeat`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

#: Misses before the alarm (the first miss only resubscribes).
ALARM_AFTER_MISSES = 2


class IngestWatchdog:
    """Probes the subscription path; escalates resubscribe → reconnect → alarm."""

    def __init__(self, *, interval_s: float, probe: Callable[[bytes], None],
                 connected: Callable[[], bool], resubscribe: Callable[[], None],
                 reconnect: Callable[[], Awaitable[None]],
                 stalled: Callable[[bool, str], None],
                 paused: Callable[[], bool] = lambda: False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._probe = probe
        self._connected = connected
        self._resubscribe = resubscribe
        self._reconnect = reconnect
        self._stalled = stalled
        # Ingest paused on purpose (the write-ahead log is full): silence is expected then,
        # reconnecting would not help, and storage_full already says what is wrong.
        self._paused = paused
        self._clock = clock
        self._heard_at = clock()
        self.misses = 0
        self.alarmed = False
        self.resubscribes = 0
        self.reconnects = 0

    def heard(self) -> None:
        """Something arrived from the broker (the probe or any message)."""
        self._heard_at = self._clock()

    async def run(self) -> None:
        while True:
            asked = self._clock()
            if self._connected():
                self._probe(f"{time.time():.3f}".encode())
            await asyncio.sleep(self._interval_s)
            await self.check(asked)

    async def check(self, asked: float) -> None:
        """One round: did anything arrive since ``asked``?"""
        if self._paused():
            self._heard_at = self._clock()
        if self._heard_at > asked:
            if self.alarmed:
                log.warning("ingest flows again after %d missed probe(s)", self.misses)
                self._stalled(False, "messages arrive again")
            self.misses, self.alarmed = 0, False
            return
        self.misses += 1
        silent_s = self._clock() - self._heard_at
        if not self._connected():
            why = f"not connected to the broker for {silent_s:.0f} s"
        elif self.misses == 1:
            log.warning("watchdog: connected but nothing arrived for %.0f s (not even our probe): "
                        "resubscribing", silent_s)
            self.resubscribes += 1
            self._resubscribe()
            return
        else:
            log.warning("watchdog: still nothing after resubscribing (%.0f s): reconnecting",
                        silent_s)
            self.reconnects += 1
            await self._reconnect()
            why = f"connected but nothing arrived for {silent_s:.0f} s"
        if self.misses >= ALARM_AFTER_MISSES and not self.alarmed:
            self.alarmed = True
            self._stalled(True, why)
