"""What the chat robots (DingTalk, WeCom, Feishu) share: a webhook URL, a JSON POST, a verdict.

All three take the webhook URL the chat app shows (its token is a credential, kept out of every
log and detail), may point at another origin (``base_url``: a proxy, or the tests' fakes), POST
one JSON message and answer HTTP 200 with a numeric code, 0 meaning delivered. A robot module
states only what differs: where the token sits, how the message looks, how it is signed, and
which codes are worth retrying.
"""

from __future__ import annotations

import abc
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import SplitResult, parse_qs, urlsplit

from yarl import URL

from gateway.notify.base import Channel, Notification, SendResult
from gateway.notify.channels.httpclient import HttpClient, Reply
from gateway.notify.channels.provider import ChannelSettings, Provider, Text, signing_secret

ACK_LABEL = "确认 / Acknowledge"


class RobotChannel(abc.ABC):
    """A group-chat robot behind a webhook URL; subclasses fill in the class attributes."""

    label: ClassVar[str]                  # the provider, in details and errors: "dingtalk"
    token_param: ClassVar[str] = ""       # the query parameter holding the token
    code_field: ClassVar[str] = "errcode"  # the reply's code, as named in details
    throttled: ClassVar[frozenset[int]] = frozenset()
    throttle_retry_s: ClassVar[float]     # how long a throttled robot stays shut
    busy: ClassVar[frozenset[int]] = frozenset()   # "try again later", no particular delay

    def __init__(self, *, url: str, secret: str | None = None, timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.time, base_url: str | None = None,
                 name: str | None = None) -> None:
        parts = urlsplit(url)
        token, path = self.locate(parts)
        origin = base_url.rstrip("/") if base_url else f"{parts.scheme}://{parts.netloc}"
        self.name = name or self.label
        self._url = f"{origin}{path}"
        self._secret = secret
        self._clock = clock
        self._http = HttpClient(timeout_s=timeout_s, secrets=[token, secret or ""], clock=clock)

    def locate(self, parts: SplitResult) -> tuple[str, str]:
        """The token in the webhook URL and the URL's path (and query) to POST to; ValueError
        when the token is missing, so a mistyped URL fails at start-up, not at the first alarm."""
        token = parse_qs(parts.query).get(self.token_param, [""])[0]
        if not token:
            raise ValueError(f"{self.label} url: {self.token_param} query parameter is missing")
        return token, f"{parts.path}?{parts.query}"

    def request_url(self) -> str | URL:
        return self._url

    @abc.abstractmethod
    def payload(self, n: Notification) -> dict[str, Any]:
        """The JSON message for one notification, signed where the provider signs the body."""

    def reply_code(self, doc: dict[str, Any]) -> tuple[object, str]:
        """The provider's code and message in a reply document."""
        return doc.get("errcode"), str(doc.get("errmsg", ""))

    def is_throttled(self, code: int, message: str) -> bool:
        return code in self.throttled

    async def send(self, n: Notification) -> SendResult:
        body = json.dumps(self.payload(n), ensure_ascii=False).encode()
        return await self._http.send(self.name, self.request_url(), body=body, headers={},
                                     judge=self._judge)

    def _judge(self, reply: Reply) -> SendResult:
        code, message = self.reply_code(reply.json() or {})
        if not isinstance(code, int):
            # Maybe delivered, maybe not; a duplicate beats a lost fire alarm.
            return SendResult.retry(f"{self.label}: unreadable reply (HTTP {reply.status})")
        if code == 0:
            return SendResult.sent(detail=f"{self.label} {self.code_field} 0")
        detail = f"{self.label} {self.code_field} {code}: {self._http.redact(message)}"
        if self.is_throttled(code, message):
            return SendResult.retry(detail, self.throttle_retry_s)
        if code in self.busy:
            return SendResult.retry(detail)
        # Everything else (bad token, signature, keyword, message too long ...) is permanent.
        return SendResult.failed(detail)

    async def close(self) -> None:
        await self._http.close()


class RobotSettings(ChannelSettings):
    """The robots' settings; the webhook URL and signing secret are secrets."""

    base_url: Text | None = None          # another origin: a proxy, or the tests' fakes
    timeout_s: float = 10.0


def provider(cls: type[RobotChannel]) -> Provider[RobotSettings]:
    """The registry entry of one robot: same settings and secrets, its own channel class."""

    def build(name: str, settings: RobotSettings, secrets: Mapping[str, str]) -> Channel:
        return cls(url=secrets["url"], secret=signing_secret(secrets),
                   timeout_s=settings.timeout_s, base_url=settings.base_url, name=name)

    return Provider(RobotSettings, build, secrets=("url",))
