"""Rejected messages, published on ``parkwatch/deadletter/{reason}`` (contract §2).

A rejected QoS 1 message is acknowledged to the broker only after its dead-letter copy has been
acknowledged by the broker, so a rejection is never lost either.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

from sensors.base import Rejection, RejectReason

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
