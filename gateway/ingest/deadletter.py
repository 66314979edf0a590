"""Rejected messages, published on ``parkwatch/deadletter/{reason}`` (docs/device-protocol.md,
"Rejections").

A rejected QoS 1 message is acknowledged to the broker only after its dead-letter copy has been
acknowledged by the broker, so a rejection is never lost either.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging

from gateway.ingest.mqtt import Inbound, MqttSession
from gateway.logs import RateLimited
from gateway.metrics import Metrics
from sensors.base import Rejection, RejectReason

log = logging.getLogger(__name__)

DEADLETTER_ROOT = "parkwatch/deadletter"
#: A 10 MB garbage message must not become a 13 MB dead letter: keep the head, say it was cut.
MAX_DEADLETTER_PAYLOAD = 64 * 1024


def deadletter_topic(rejection: Rejection) -> str:
    # Only the reason (a fixed vocabulary) goes into the topic, never anything the device sent:
    # a device ID with '+', '#' or '/' must not be able to steer where the dead letter goes.
    return f"{DEADLETTER_ROOT}/{RejectReason(rejection.reason).value}"


def deadletter_document(*, rejection: Rejection, topic: str, payload: bytes,
                        received_at_ms: int, instance: str) -> bytes:
    received = dt.datetime.fromtimestamp(received_at_ms / 1000, tz=dt.UTC)
    kept = payload[:MAX_DEADLETTER_PAYLOAD]
    doc = {
        "reason": rejection.reason.value,
        "detail": rejection.detail,
        "topic": topic,
        "received_at": received.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "payload_b64": base64.b64encode(kept).decode("ascii"),
        "payload_bytes": len(payload),
        "payload_truncated": len(kept) < len(payload),
        "instance": instance,
    }
    # A str topic can only hold a lone surrogate if a caller built it so, but a dead letter must
    # never fail to encode: the message it carries would otherwise be redelivered forever.
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "backslashreplace")


class DeadLetters:
    """Publishes rejections and PUBACKs each original once its dead letter was acknowledged by
    the broker; counts and rate-limits the log line, never one line per message."""

    def __init__(self, *, instance: str, metrics: Metrics) -> None:
        self._instance = instance
        self._metrics = metrics
        self._log = RateLimited(log)
        self.pending: set[asyncio.Future[None]] = set()

    def reject(self, session: MqttSession, msg: Inbound, rejection: Rejection) -> None:
        self._metrics.rejected.labels(reason=rejection.reason.value).inc()
        self._log.warning(rejection.reason.value, "rejected %s: %s (topic %s)",
                          rejection.reason.value, rejection.detail, msg.topic[:200])
        doc = deadletter_document(rejection=rejection, topic=msg.topic, payload=msg.payload,
                                  received_at_ms=msg.received_at_ms, instance=self._instance)
        published = session.publish(deadletter_topic(rejection), doc, qos=1)
        self.pending.add(published)

        def _done(fut: asyncio.Future[None]) -> None:
            self.pending.discard(fut)
            if fut.cancelled() or fut.exception() is not None:
                return  # no PUBACK: the broker redelivers the original and we try again
            self._metrics.deadletter_published.inc()
            session.puback(msg)

        published.add_done_callback(_done)

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for the dead letters in flight, so their originals get PUBACKs."""
        if self.pending:
            await asyncio.wait(self.pending, timeout=timeout_s)
