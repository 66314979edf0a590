"""The "connected but nothing arrives" watchdog, and signs of life that do not need the broker.

Telegraf users report an MQTT consumer that silently stops after a reconnect: the TCP session is
up, keepalives flow, but the subscription is gone (a broker restarted without persistence, an
ACL change, a proxy that stalls one direction). The keepalive cannot see that. So the gateway
checks the whole path itself: every ``interval_s`` it publishes a probe to its own probe topic,
which it subscribes to like any device topic, and expects it back (any inbound message counts
too). When nothing came back:

    1st miss → resubscribe      2nd miss → reconnect      2nd miss on → ingest_stalled alarm

The alarm goes through the notification channels (HTTP, SMTP: none needs the broker) and
resolves when messages flow again. For the gateway's *own* death or hang, an outside observer is
needed: ``observe.heartbeat_url`` is pinged over HTTP every ``heartbeat_s`` (a dead man's switch
such as a healthchecks or Uptime Kuma push monitor alerts when the pings stop), and under
systemd with ``WatchdogSec=`` the loop sends ``WATCHDOG=1`` so a hung process is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable

import aiohttp

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


class Heartbeat:
    """Signs of life for observers outside the broker: an HTTP ping and systemd's watchdog."""

    def __init__(self, *, url: str | None, interval_s: float,
                 notify_socket: str | None = None) -> None:
        self._url = url
        self._interval_s = interval_s
        self._notify_socket = notify_socket if notify_socket is not None else os.environ.get(
            "NOTIFY_SOCKET")
        self.pings = 0
        self.failures = 0

    def sd_notify(self, state: str) -> None:
        """systemd's notify protocol: one datagram to $NOTIFY_SOCKET (no library needed)."""
        path = self._notify_socket
        if not path:
            return
        if path.startswith("@"):          # abstract socket namespace
            path = "\0" + path[1:]
        with contextlib.suppress(OSError), \
                socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), path)

    async def run(self, alive: Callable[[], bool]) -> None:
        """Every interval: if ``alive()`` (the pipeline is making progress), tell the
        observers. A hung pipeline stops the pings, and the observers raise the alarm."""
        timeout = aiohttp.ClientTimeout(total=max(1.0, self._interval_s / 2))
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                if alive():
                    self.sd_notify("WATCHDOG=1")
                    if self._url:
                        await self._ping(http)
                await asyncio.sleep(self._interval_s)

    async def _ping(self, http: aiohttp.ClientSession) -> None:
        assert self._url is not None
        try:
            async with http.get(self._url) as reply:
                ok = reply.status < 400
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok = False
            log.warning("heartbeat ping failed: %s", type(exc).__name__)
        if ok:
            self.pings += 1
        else:
            self.failures += 1
