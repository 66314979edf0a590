"""WeCom group robot (企业微信群机器人), domain brief §3.4.

``url`` is the webhook URL as WeCom shows it (``…/cgi-bin/webhook/send?key=…``). There is no
signing: the key *is* the credential, so it is kept out of every log and detail. Errors come back
as HTTP 200 with ``errcode``.
"""

from __future__ import annotations

from typing import Any

from gateway.notify.base import Notification
from gateway.notify.channels.robot import ACK_LABEL as ACK_LABEL
from gateway.notify.channels.robot import RobotChannel, provider

API_URL = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
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


class WeComChannel(RobotChannel):
    # ``secret`` is accepted (the robots share a constructor) but unused: no signing on WeCom.
    label = "wecom"
    token_param = "key"
    throttled = frozenset({_THROTTLED})
    throttle_retry_s = THROTTLE_RETRY_S
    busy = frozenset({_BUSY})

    def payload(self, n: Notification) -> dict[str, Any]:
        return {"msgtype": "markdown", "markdown": {"content": markdown(n)}}


PROVIDER = provider(WeComChannel)
