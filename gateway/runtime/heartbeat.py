"""Signs of life that do not need the broker, for the gateway's own death or hang.

``observe.heartbeat_url`` is pinged over HTTP every ``heartbeat_s`` (a dead man's switch such as
a healthchecks or Uptime Kuma push monitor alerts when the pings stop), and under systemd with
``WatchdogSec=`` the loop sends ``WATCHDOG=1`` so a hung process is restarted. Both only while
the pipeline makes progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

import aiohttp

log = logging.getLogger(__name__)


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
