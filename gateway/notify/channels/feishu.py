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
from typing import Any
from urllib.parse import SplitResult

from gateway.notify.base import Notification
from gateway.notify.channels.robot import ACK_LABEL as ACK_LABEL
from gateway.notify.channels.robot import RobotChannel, provider

API_URL = "https://open.feishu.cn/open-apis/bot/v2/hook/"
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


class FeishuChannel(RobotChannel):
    label = "feishu"
    code_field = "code"
    throttled = _THROTTLED
    throttle_retry_s = THROTTLE_RETRY_S

    def locate(self, parts: SplitResult) -> tuple[str, str]:
        # The token is the last path segment; the query, if any, is not Feishu's.
        token = parts.path.rstrip("/").rsplit("/", 1)[-1]
        if "/hook/" not in parts.path or not token:
            raise ValueError("feishu url: expected …/open-apis/bot/v2/hook/<token>")
        return token, parts.path

    def payload(self, n: Notification) -> dict[str, Any]:
        msg = message(n)
        if self._secret:
            ts = int(self._clock())
            msg = {"timestamp": str(ts), "sign": sign(self._secret, ts), **msg}
        return msg

    def reply_code(self, doc: dict[str, Any]) -> tuple[object, str]:
        # Current replies carry ``code``/``msg``; older ones ``StatusCode``/``StatusMessage``.
        return (doc.get("code", doc.get("StatusCode")),
                str(doc.get("msg", doc.get("StatusMessage", ""))))

    def is_throttled(self, code: int, message: str) -> bool:
        return code in self.throttled or (code == _AMBIGUOUS and "too many" in message.lower())


PROVIDER = provider(FeishuChannel)
