"""The ``--dry-run`` channel: everything but the sending is real."""

from __future__ import annotations

import logging

from gateway.notify.base import Notification, SendResult

log = logging.getLogger(__name__)


class LoggingChannel:
    """Sends nothing: logs and records what it would have sent (``--dry-run``)."""

    def __init__(self, *, name: str, kind: str = "") -> None:
        self.name = name
        self.kind = kind
        self.sent: list[Notification] = []

    async def send(self, notification: Notification) -> SendResult:
        self.sent.append(notification)
        log.info("dry run: would send via %s (%s) to %s: %s | %s", self.name, self.kind or "-",
                 notification.recipient or "(group)", notification.title,
                 notification.text.replace("\n", " ")[:300])
        return SendResult.sent(provider_id="dry-run", detail="dry run: not sent")

    async def close(self) -> None:
        return None
