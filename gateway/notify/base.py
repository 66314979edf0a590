"""What every notification channel shares.

A channel is a dumb adapter (Alertmanager's notify/webhook in spirit): it builds the provider's
request, sends it once, and says whether a failure is worth retrying. Retries, backoff, rate
limits, fallbacks and the durable outbox live outside the channels, in one place.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class SendOutcome(enum.StrEnum):
    SENT = "sent"          # the provider accepted it
    RETRY = "retry"        # temporary: network, 5xx, throttled; try again later
    FAILED = "failed"      # permanent: bad credentials, bad number, rejected template


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one recipient on one channel.

    ``key`` is the idempotency key (alarm id + state change + recipient + channel): a retry or a
    restart re-sends with the same key, and providers that support it get it as their own
    idempotency/dedup id.
    """

    key: str
    channel: str
    recipient: str                     # phone number, email address, or "" for group robots
    title: str
    text: str                          # the rendered body (already in the right language)
    alarm: Mapping[str, Any] = field(default_factory=dict)   # the alarm document (docs/alarms.md)
    ack_url: str | None = None
    template_params: Mapping[str, str] = field(default_factory=dict)  # SMS template variables


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: SendOutcome
    detail: str = ""
    retry_after_s: float | None = None
    provider_id: str | None = None     # the provider's message/request id, for the audit trail

    @classmethod
    def sent(cls, provider_id: str | None = None, detail: str = "") -> SendResult:
        return cls(SendOutcome.SENT, detail, None, provider_id)

    @classmethod
    def retry(cls, detail: str, retry_after_s: float | None = None) -> SendResult:
        return cls(SendOutcome.RETRY, detail, retry_after_s)

    @classmethod
    def failed(cls, detail: str) -> SendResult:
        return cls(SendOutcome.FAILED, detail)


class Channel(Protocol):
    """A provider adapter. ``send`` never raises for provider errors: it returns a SendResult."""

    name: str

    async def send(self, notification: Notification) -> SendResult: ...

    async def close(self) -> None: ...
