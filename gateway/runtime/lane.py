"""The priority lane's duplicate filter.

With ``mqtt.priority_session`` on, events and status reach the gateway on both sessions: the
main one (subscribed to everything) and the priority lane (events and status only, with its own
in-flight window, so they never wait behind telemetry). The first copy is evaluated, the second
only gets its PUBACK.
"""

from __future__ import annotations

import collections
import hashlib
import time

from gateway.ingest.mqtt import Inbound

#: Event/status messages remembered to recognise the other session's copy.
LANE_MEMORY = 200_000
#: How long a first copy waits for its twin.
LANE_WINDOW_S = 3600.0


class SecondCopies:
    """Recognises the other session's copy of an event or status message (topic + payload)."""

    def __init__(self) -> None:
        self._seen: collections.OrderedDict[bytes, float] = collections.OrderedDict()

    def is_second(self, msg: Inbound) -> bool:
        if not msg.topic.endswith(("/event", "/status")):
            return False
        key = hashlib.blake2b(msg.topic.encode() + b"\0" + msg.payload,
                              digest_size=16).digest()
        now = time.monotonic()
        seen = self._seen
        while seen and (len(seen) > LANE_MEMORY
                        or next(iter(seen.values())) < now - LANE_WINDOW_S):
            seen.popitem(last=False)
        if key in seen:
            del seen[key]           # each copy is expected once more at most
            return True
        seen[key] = now
        return False
