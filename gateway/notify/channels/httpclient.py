"""The HTTP plumbing every HTTP channel shares: one session, one POST, one status table.

Channels differ in how they build a request and read a provider's JSON verdict; what a network
error or an HTTP status *means* (retry or give up) is decided here, once, in the spirit of
Telegraf's response classification: 2xx is the channel's to judge; 408/429/5xx, timeouts and
connection errors are temporary (honouring ``Retry-After``); 3xx and other 4xx are permanent.

Webhook URLs of robots *are* credentials (a token in the query or path), so nothing here ever
puts a URL or an exception text in a detail string unredacted.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from gateway.notify.base import SendResult

log = logging.getLogger(__name__)
USER_AGENT = "ParkWatch-notify/1"
_QUERY_SECRET = re.compile(r"((?:access_token|key|token|sign|secret)=)[^&\s#'\"]+", re.IGNORECASE)
_TOKEN_LEN = 16  # a path segment this long is treated as a token (robot hook ids are uuids)


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with each known secret and every credential-looking query value replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _QUERY_SECRET.sub(r"\1***", text)


def mask_url(url: str) -> str:
    """A URL safe for logs: host kept, query values and token-like path segments hidden."""
    parts = urlsplit(url)
    path = "/".join("***" if len(seg) >= _TOKEN_LEN else seg for seg in parts.path.split("/"))
    query = "&".join(f"{kv.split('=', 1)[0]}=***" for kv in parts.query.split("&") if kv)
    return f"{parts.scheme}://{parts.netloc}{path}" + (f"?{query}" if query else "")


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.body)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait per ``Retry-After`` (delta-seconds or an HTTP date), or None."""
    value = headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def classify_status(reply: Reply, now: float) -> SendResult | None:
    """None for 2xx (the channel reads the body); otherwise the verdict for this status."""
    status = reply.status
    if 200 <= status < 300:
        return None
    detail = f"HTTP {status}"
    if status in (408, 429) or status >= 500:
        return SendResult.retry(detail, retry_after(reply.headers, now))
    return SendResult.failed(detail)


class HttpClient:
    """One lazily created aiohttp session per channel.

    Lazy because channels are built from config, possibly before an event loop runs, and an
    aiohttp session must be created inside one. Redirects are not followed: a robot URL that
    redirects is misconfigured, and following it could resend the body elsewhere.
    """

    def __init__(self, *, timeout_s: float, secrets: Sequence[str] = (),
                 clock: Callable[[], float]) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._secrets = tuple(s for s in secrets if s)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def send(self, name: str, url: str | URL, *, body: bytes,
                   headers: Mapping[str, str], judge: Callable[[Reply], SendResult]) -> SendResult:
        """POST once; ``judge`` reads a 2xx reply, everything else is classified here."""
        reply = await self._post(url, body=body, headers=headers)
        if isinstance(reply, Reply):
            reply = classify_status(reply, self._clock()) or judge(reply)
        log.debug("%s: POST %s -> %s %s", name, mask_url(str(url)), reply.outcome, reply.detail)
        return reply

    async def _post(self, url: str | URL, *, body: bytes,
                    headers: Mapping[str, str]) -> Reply | SendResult:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers={"User-Agent": USER_AGENT})
        hdrs = {"Content-Type": "application/json; charset=utf-8", **headers}
        try:
            async with self._session.post(url, data=body, headers=hdrs,
                                          allow_redirects=False) as resp:
                return Reply(resp.status, CIMultiDict(resp.headers), await resp.read())
        except TimeoutError:  # aiohttp's timeouts subclass it; catch before ClientError
            return SendResult.retry(f"timeout after {self._timeout_s:g} s")
        except aiohttp.ClientError as exc:
            return SendResult.retry(f"network error: {type(exc).__name__}: {self.redact(str(exc))}")

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
