"""Feishu / Lark custom bot (飞书自定义机器人), domain brief §3.5.

``url`` is the webhook URL as Feishu shows it (``…/open-apis/bot/v2/hook/<token>``; Lark uses
``open.larksuite.com``); the token in the path is a credential. With a secret, ``timestamp``
(seconds, as a string) and ``sign`` go in the JSON body. The signature inverts DingTalk's: the
HMAC *key* is ``f"{timestamp}\\n{secret}"`` and the message is empty.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from gateway.notify.base import Notification, SendResult
from gateway.notify.channels.httpclient import HttpClient, Reply

API_URL = "https://open.feishu.cn/open-apis/bot/v2/hook/"
ACK_LABEL = "确认 / Acknowledge"
# 100/min and 5/s per bot (brief §3.5): a short pause is enough to get out of the window.
THROTTLE_RETRY_S = 10.0
_THROTTLED = frozenset({11232, 11233})  # frequency limited / chat trigger rate limit
# 9499 means "Bad Request" (brief) but Feishu also answers "too many request" with it, so
# the message decides. Everything else is permanent: 19001 bad token, 19021 sign or timestamp,
# 19022 IP allow-list, 19024 keyword ...
_AMBIGUOUS = 9499


def sign(secret: str, timestamp_s: int) -> str:
    """base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b""))."""
    mac = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def message(n: Notification) -> dict[str, Any]:
    """A ``post`` (rich text) message: title, one paragraph per text line, the ack link."""
    lines: list[list[dict[str, str]]] = [[{"tag": "text", "text": line}]
                                         for line in n.text.splitlines() or [""]]
    if n.ack_url and n.ack_url not in n.text:
        lines.append([{"tag": "a", "text": ACK_LABEL, "href": n.ack_url}])
    return {"msg_type": "post",
            "content": {"post": {"zh_cn": {"title": n.title, "content": lines}}}}


class FeishuChannel:
    def __init__(self, *, url: str, secret: str | None = None, timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.time, base_url: str | None = None,
                 name: str = "feishu") -> None:
        parts = urlsplit(url)
        token = parts.path.rstrip("/").rsplit("/", 1)[-1]
        if "/hook/" not in parts.path or not token:
            raise ValueError("feishu url: expected …/open-apis/bot/v2/hook/<token>")
        origin = base_url.rstrip("/") if base_url else f"{parts.scheme}://{parts.netloc}"
        self.name = name
        self._url = f"{origin}{parts.path}"
        self._secret = secret
        self._clock = clock
        self._http = HttpClient(timeout_s=timeout_s, secrets=[token, secret or ""], clock=clock)

    def payload(self, n: Notification) -> dict[str, Any]:
        msg = message(n)
        if self._secret:
            ts = int(self._clock())
            msg = {"timestamp": str(ts), "sign": sign(self._secret, ts), **msg}
        return msg

    async def send(self, n: Notification) -> SendResult:
        body = json.dumps(self.payload(n), ensure_ascii=False).encode()
        return await self._http.send(self.name, self._url, body=body, headers={},
                                     judge=self._judge)

    def _judge(self, reply: Reply) -> SendResult:
        doc = reply.json() or {}
        # Current replies carry ``code``/``msg``; older ones ``StatusCode``/``StatusMessage``.
        code = doc.get("code", doc.get("StatusCode"))
        if not isinstance(code, int):
            # Maybe delivered, maybe not; a duplicate beats a lost fire alarm.
            return SendResult.retry(f"feishu: unreadable reply (HTTP {reply.status})")
        if code == 0:
            return SendResult.sent(detail="feishu code 0")
        msg = str(doc.get("msg", doc.get("StatusMessage", "")))
        detail = f"feishu code {code}: {self._http.redact(msg)}"
        if code in _THROTTLED or (code == _AMBIGUOUS and "too many" in msg.lower()):
            return SendResult.retry(detail, THROTTLE_RETRY_S)
        return SendResult.failed(detail)

    async def close(self) -> None:
        await self._http.close()
