"""Per-client token buckets for routes anyone on the Internet can call (the ack page).

A client earns ``rate_per_s`` tokens a second up to ``burst``; each request spends one. Only the
``max_clients`` most recently seen addresses are remembered (IPv6 gives an attacker endless
addresses): a forgotten one starts again with a full bucket, which costs an attacker nothing it
could not get from a fresh address anyway, and memory stays bounded.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web


class ClientThrottle:
    """``retry_after(client)`` is 0 when the request may pass, else the seconds to wait."""

    def __init__(self, *, rate_per_s: float, burst: int, max_clients: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate_per_s, burst and max_clients must be positive")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._max = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def __len__(self) -> int:
        return len(self._buckets)

    def retry_after(self, client: str) -> int:
        now = self._clock()
        tokens, at = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(now - at, 0.0) * self.rate_per_s)
        wait = 0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = max(1, math.ceil((1.0 - tokens) / self.rate_per_s))
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait


def client_key(request: web.Request) -> str:
    """Who is asking: the peer address, or behind a reverse proxy on this machine the address
    the proxy appended last to ``X-Forwarded-For`` (earlier entries are the client's to forge).
    An IPv6 client counts per /64, the block one subscriber usually gets."""
    remote = request.remote or ""
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded and _loopback(remote):
        remote = forwarded.rsplit(",", 1)[-1].strip()
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote[:64]
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _loopback(remote: str) -> bool:
    try:
        return ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False
