"""DingTalk custom group robot (钉钉自定义机器人), domain brief §3.3.

``url`` is the webhook URL as DingTalk shows it (``…/robot/send?access_token=…``); the token in
it is a credential. With a ``SEC…`` secret (加签) each request adds ``timestamp`` (ms, within 1 h
of DingTalk's clock) and ``sign`` to the query. Errors come back as HTTP 200 with ``errcode``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import quote_plus

from yarl import URL

from gateway.notify.base import Notification
from gateway.notify.channels.robot import ACK_LABEL as ACK_LABEL
from gateway.notify.channels.robot import RobotChannel, provider

API_URL = "https://oapi.dingtalk.com/robot/send"
# Over 20 messages a minute the robot is throttled for 10 minutes (brief §3.3); retrying sooner
# only hits the throttle again. The dispatcher's fallback channel covers the gap for fire alarms.
THROTTLE_RETRY_S = 600.0
_THROTTLED = frozenset({130101, 410100, 660026})  # "send too fast" in old and new API generations
_BUSY = -1  # "系统繁忙": DingTalk's own advice is to try again later
# Everything else is permanent: 300001/300005 bad token, 310000 sign/keyword/IP allow-list,
# 40035 missing parameter, 460101 message too long ... retrying cannot fix those.


def sign(secret: str, timestamp_ms: int) -> str:
    """base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}")), before URL-encoding."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def message(n: Notification) -> dict[str, Any]:
    """A markdown message; a phone-number recipient is @-mentioned (list *and* text, per API)."""
    text = f"### {n.title}\n\n{n.text}"
    if n.ack_url and n.ack_url not in text:
        text += f"\n\n[{ACK_LABEL}]({n.ack_url})"
    mobiles = [n.recipient] if n.recipient.lstrip("+").isdigit() else []
    if mobiles:
        text += f"\n\n@{n.recipient}"
    return {"msgtype": "markdown", "markdown": {"title": n.title, "text": text},
            "at": {"atMobiles": mobiles, "isAtAll": False}}


class DingTalkChannel(RobotChannel):
    label = "dingtalk"
    token_param = "access_token"
    throttled = _THROTTLED
    throttle_retry_s = THROTTLE_RETRY_S
    busy = frozenset({_BUSY})

    def request_url(self) -> URL:
        url = self._url
        if self._secret:
            ts = int(self._clock() * 1000)
            url += f"&timestamp={ts}&sign={quote_plus(sign(self._secret, ts))}"
        # encoded=True: send the query byte for byte; re-quoting could alter the signature.
        return URL(url, encoded=True)

    def payload(self, n: Notification) -> dict[str, Any]:
        return message(n)


PROVIDER = provider(DingTalkChannel)
