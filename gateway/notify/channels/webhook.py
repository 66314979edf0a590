"""Generic webhook: the contract §6 alarm document, signed per Standard Webhooks.

Headers (https://www.standardwebhooks.com/):

- ``webhook-id``: the notification's idempotency key, identical on every retry, so a receiver
  that saw it already can drop the duplicate;
- ``webhook-timestamp``: integer seconds, so a receiver can refuse replays;
- ``webhook-signature``: ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")).

The secret is normally ``whsec_`` + base64 of the key bytes (the spec's format). A secret without
that prefix is taken as the key itself, UTF-8 encoded, for receivers that hand out a plain shared
secret. Without a secret the request carries id and timestamp but no signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping

from gateway.notify.base import Channel, Notification, SendResult
from gateway.notify.channels.httpclient import HttpClient
from gateway.notify.channels.provider import ChannelSettings, Provider, Text, signing_secret

_PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    """The HMAC key bytes of a ``whsec_<base64>`` secret, or of a raw secret."""
    if secret.startswith(_PREFIX):
        try:
            return base64.b64decode(secret[len(_PREFIX):], validate=True)
        except binascii.Error as exc:
            raise ValueError("webhook secret: whsec_ must be followed by base64") from exc
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one message."""
    mac = hmac.new(secret_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float,
           tolerance_s: float = 300) -> bool:
    """For receivers: True if the headers carry a valid, fresh signature of ``body``.

    The signature header may list several space-separated signatures (key rotation); one valid
    ``v1`` entry is enough. Comparison is constant-time.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = (lower.get(f"webhook-{h}", "") for h in ("id", "timestamp", "signature"))
    if not (msg_id and ts.isdigit() and sigs) or abs(now - int(ts)) > tolerance_s:
        return False
    expected = sign(secret, msg_id, int(ts), body).encode()
    return any(hmac.compare_digest(candidate.encode(), expected) for candidate in sigs.split())


class WebhookChannel:
    def __init__(self, *, url: str, secret: str | None = None, timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.time, name: str = "webhook") -> None:
        if secret is not None:
            secret_key(secret)  # a malformed secret is a config error now, not at 3 a.m.
        self.name = name
        self._url = url
        self._secret = secret
        self._clock = clock
        self._http = HttpClient(timeout_s=timeout_s, secrets=[secret or ""], clock=clock)

    def body(self, n: Notification) -> bytes:
        doc = dict(n.alarm)
        if n.ack_url is not None or "ack_url" not in doc:
            doc["ack_url"] = n.ack_url
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str).encode()

    async def send(self, n: Notification) -> SendResult:
        body = self.body(n)
        ts = int(self._clock())
        headers = {"webhook-id": n.key, "webhook-timestamp": str(ts)}
        if self._secret is not None:
            headers["webhook-signature"] = sign(self._secret, n.key, ts, body)
        return await self._http.send(
            self.name, self._url, body=body, headers=headers,
            judge=lambda reply: SendResult.sent(detail=f"HTTP {reply.status}"))

    async def close(self) -> None:
        await self._http.close()


class WebhookSettings(ChannelSettings):
    # The URL is normally a secret (it may carry a token); a plain one may sit in settings.
    url: Text | None = None
    timeout_s: float = 10.0


def build(name: str, settings: WebhookSettings, secrets: Mapping[str, str]) -> Channel:
    url = secrets.get("url") or settings.url
    if not url:
        raise ValueError("setting 'url' is required")
    return WebhookChannel(url=url, secret=signing_secret(secrets), timeout_s=settings.timeout_s,
                          name=name)


PROVIDER = Provider(WebhookSettings, build)
