"""WeCom group robot (企业微信群机器人), domain brief §3.4.

``url`` is the webhook URL as WeCom shows it (``…/cgi-bin/webhook/send?key=…``). There is no
signing: the key *is* the credential, so it is kept out of every log and detail. Errors come back
as HTTP 200 with ``errcode``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gateway.notify.base import Notification, SendResult
from gateway.notify.channels.httpclient import HttpClient, Reply

API_URL = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
ACK_LABEL = "确认 / Acknowledge"
MAX_MARKDOWN_BYTES = 4096          # markdown.content limit, in UTF-8 bytes
ELLIPSIS = "…"
# 20 messages a minute per robot: the window rolls, so a minute from now there is room again.
THROTTLE_RETRY_S = 60.0
_THROTTLED = 45009                 # "api freq out of limit"
_BUSY = -1                         # system busy
# Everything else is permanent: 93000 invalid webhook url (bad key), 40008 bad message type,
# 40058 content too long, 44004 empty content ...


def truncate_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes, never inside a character."""
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    # errors="ignore" drops only the trailing partial character left by the byte cut.
    return raw[:max_bytes].decode("utf-8", errors="ignore")


def markdown(n: Notification) -> str:
    """Title, text and ack link within 4096 bytes; the text is cut, never the ack link."""
    head = f"**{n.title}**\n"
    tail = f"\n[{ACK_LABEL}]({n.ack_url})" if n.ack_url and n.ack_url not in n.text else ""
    content = head + n.text + tail
    if len(content.encode()) <= MAX_MARKDOWN_BYTES:
        return content
    room = MAX_MARKDOWN_BYTES - len((head + tail + ELLIPSIS).encode())
    if room < 0:  # a pathological title: cut everything, keep it valid UTF-8
        return truncate_utf8(content, MAX_MARKDOWN_BYTES)
    return head + truncate_utf8(n.text, room) + ELLIPSIS + tail


class WeComChannel:
    def __init__(self, *, url: str, secret: str | None = None, timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.time, base_url: str | None = None,
                 name: str = "wecom") -> None:
        # ``secret`` is accepted for a uniform constructor; WeCom robots have no signing.
        parts = urlsplit(url)
        key = parse_qs(parts.query).get("key", [""])[0]
        if not key:
            raise ValueError("wecom url: key query parameter is missing")
        origin = base_url.rstrip("/") if base_url else f"{parts.scheme}://{parts.netloc}"
        self.name = name
        self._url = f"{origin}{parts.path}?{parts.query}"
        self._http = HttpClient(timeout_s=timeout_s, secrets=[key, secret or ""], clock=clock)

    async def send(self, n: Notification) -> SendResult:
        msg: dict[str, Any] = {"msgtype": "markdown", "markdown": {"content": markdown(n)}}
        body = json.dumps(msg, ensure_ascii=False).encode()
        return await self._http.send(self.name, self._url, body=body, headers={},
                                     judge=self._judge)

    def _judge(self, reply: Reply) -> SendResult:
        doc = reply.json() or {}
        code = doc.get("errcode")
        if not isinstance(code, int):
            # Maybe delivered, maybe not; a duplicate beats a lost fire alarm.
            return SendResult.retry(f"wecom: unreadable reply (HTTP {reply.status})")
        if code == 0:
            return SendResult.sent(detail="wecom errcode 0")
        detail = f"wecom errcode {code}: {self._http.redact(str(doc.get('errmsg', '')))}"
        if code == _THROTTLED:
            return SendResult.retry(detail, THROTTLE_RETRY_S)
        if code == _BUSY:
            return SendResult.retry(detail)
        return SendResult.failed(detail)

    async def close(self) -> None:
        await self._http.close()
