"""DingTalk, WeCom and Feishu robots against local fakes that check requests like the real APIs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote_plus

import pytest

from gateway.notify.base import Channel, Notification, SendOutcome
from gateway.notify.channels import dingtalk, feishu, wecom
from tests.support.notify_servers import (
    DINGTALK_TOKEN,
    DINGTALK_URL,
    FEISHU_TOKEN,
    FEISHU_URL,
    WECOM_KEY,
    WECOM_URL,
    ProviderServer,
    Step,
    closed_port_url,
)

NOW = 1_700_000_000.0
DT_SECRET = "SEC0123456789abcdef"        # the brief's vector secret
FS_SECRET = "abcdefg123"                 # the brief's vector secret
ACK = "https://pw.example/ack/Zx81"
Factory = Callable[..., Channel]


def note(**kw: Any) -> Notification:
    base: dict[str, Any] = dict(key="a1:1:firing:critical:robot", channel="robot", recipient="",
                                title="火警 Fire: B3 2F", text="烟感报警\n2F east riser",
                                ack_url=ACK)
    return Notification(**(base | kw))


def make_dingtalk(srv: ProviderServer, **kw: Any) -> Channel:
    args: dict[str, Any] = dict(url=DINGTALK_URL, secret=DT_SECRET, base_url=srv.url,
                                clock=lambda: NOW, timeout_s=2.0)
    return dingtalk.DingTalkChannel(**(args | kw))


def make_wecom(srv: ProviderServer, **kw: Any) -> Channel:
    args: dict[str, Any] = dict(url=WECOM_URL, base_url=srv.url, clock=lambda: NOW, timeout_s=2.0)
    return wecom.WeComChannel(**(args | kw))


def make_feishu(srv: ProviderServer, **kw: Any) -> Channel:
    args: dict[str, Any] = dict(url=FEISHU_URL, secret=FS_SECRET, base_url=srv.url,
                                clock=lambda: NOW, timeout_s=2.0)
    return feishu.FeishuChannel(**(args | kw))


@asynccontextmanager
async def served(make: Factory, **kw: Any) -> AsyncIterator[tuple[ProviderServer, Channel]]:
    async with ProviderServer(dingtalk_secret=DT_SECRET, feishu_secret=FS_SECRET,
                              clock=lambda: NOW) as srv:
        channel = make(srv, **kw)
        try:
            yield srv, channel
        finally:
            await channel.close()


# --- signing vectors (domain brief §3.3, §3.5) ---

def test_dingtalk_signing_vector() -> None:
    sig = dingtalk.sign(DT_SECRET, 1_700_000_000_000)
    assert sig == "TSZbRFUuvaSQaRKUpF970OPCb2/LcQAP3wOvwZIzBZk="
    assert quote_plus(sig) == "TSZbRFUuvaSQaRKUpF970OPCb2%2FLcQAP3wOvwZIzBZk%3D"


def test_dingtalk_url_carries_the_encoded_vector() -> None:
    ch = dingtalk.DingTalkChannel(url=DINGTALK_URL, secret=DT_SECRET, clock=lambda: NOW)
    url = str(ch.request_url())
    assert url.startswith(f"https://oapi.dingtalk.com/robot/send?access_token={DINGTALK_TOKEN}")
    assert url.endswith("&timestamp=1700000000000"
                        "&sign=TSZbRFUuvaSQaRKUpF970OPCb2%2FLcQAP3wOvwZIzBZk%3D")


def test_feishu_signing_vector_and_body() -> None:
    assert feishu.sign(FS_SECRET, 1_700_000_000) == "TVBWOy47sbwXef9cvtkIrqlnYUcpOn8TmSXRHVlFL3M="
    ch = feishu.FeishuChannel(url=FEISHU_URL, secret=FS_SECRET, clock=lambda: NOW)
    body = ch.payload(note())
    assert body["timestamp"] == "1700000000"   # a string, as Feishu requires
    assert body["sign"] == "TVBWOy47sbwXef9cvtkIrqlnYUcpOn8TmSXRHVlFL3M="


@pytest.mark.parametrize(("cls", "url"), [
    (dingtalk.DingTalkChannel, "https://oapi.dingtalk.com/robot/send"),
    (wecom.WeComChannel, "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?x=1"),
    (feishu.FeishuChannel, "https://open.feishu.cn/open-apis/bot/v2/"),
])
def test_a_url_without_its_token_is_a_config_error(cls: type[Any], url: str) -> None:
    with pytest.raises(ValueError, match="url"):
        cls(url=url)


# --- exact requests, accepted by the fake provider ---

async def test_dingtalk_signed_markdown_accepted() -> None:
    async with served(make_dingtalk) as (srv, ch):
        result = await ch.send(note(recipient="13800138000"))
        assert result.outcome is SendOutcome.SENT
        req = srv.requests[-1]
        assert (req.provider, req.problem, req.method) == ("dingtalk", None, "POST")
        assert req.query == {"access_token": DINGTALK_TOKEN, "timestamp": "1700000000000",
                             "sign": "TSZbRFUuvaSQaRKUpF970OPCb2/LcQAP3wOvwZIzBZk="}
        assert req.headers["Content-Type"].startswith("application/json")
        doc = req.json()
        assert doc["msgtype"] == "markdown"
        assert doc["markdown"]["title"] == "火警 Fire: B3 2F"
        assert f"]({ACK})" in doc["markdown"]["text"]
        assert "@13800138000" in doc["markdown"]["text"]
        assert doc["at"] == {"atMobiles": ["13800138000"], "isAtAll": False}


async def test_wecom_markdown_accepted() -> None:
    async with served(make_wecom) as (srv, ch):
        assert (await ch.send(note())).outcome is SendOutcome.SENT
        req = srv.requests[-1]
        assert (req.provider, req.problem, req.query) == ("wecom", None, {"key": WECOM_KEY})
        content = req.json()["markdown"]["content"]
        assert content.startswith("**火警 Fire: B3 2F**\n烟感报警")
        assert content.endswith(f"]({ACK})")


async def test_feishu_signed_post_accepted() -> None:
    async with served(make_feishu) as (srv, ch):
        assert (await ch.send(note())).outcome is SendOutcome.SENT
        req = srv.requests[-1]
        assert (req.provider, req.problem) == ("feishu", None)
        assert req.path == f"/open-apis/bot/v2/hook/{FEISHU_TOKEN}"
        post = req.json()["content"]["post"]["zh_cn"]
        assert post["title"] == "火警 Fire: B3 2F"
        assert post["content"][-1] == [{"tag": "a", "text": feishu.ACK_LABEL, "href": ACK}]


# --- the providers' own rejections ---

@pytest.mark.parametrize(("make", "kw", "code"), [
    (make_dingtalk, {"secret": "SECwrong"}, "errcode 310000"),
    (make_dingtalk, {"clock": lambda: NOW - 7200}, "errcode 310000"),       # stale timestamp
    (make_dingtalk, {"url": DINGTALK_URL.replace("dt0", "xx0")}, "errcode 300001"),
    (make_wecom, {"url": WECOM_URL.replace("693a", "0000")}, "errcode 93000"),
    (make_feishu, {"secret": "wrong"}, "code 19021"),
    (make_feishu, {"clock": lambda: NOW + 7200}, "code 19021"),
    (make_feishu, {"url": FEISHU_URL[:-4] + "0000"}, "code 19001"),
])
async def test_rejections_are_permanent(make: Factory, kw: dict[str, Any], code: str) -> None:
    async with served(make, **kw) as (srv, ch):
        result = await ch.send(note())
        assert result.outcome is SendOutcome.FAILED
        assert code in result.detail
        assert srv.requests[-1].problem is not None


def _dt(code: int) -> Step:
    return Step(json={"errcode": code, "errmsg": "x"})


def _fs(code: int, msg: str = "x") -> Step:
    return Step(json={"code": code, "msg": msg, "data": {}})


@pytest.mark.parametrize(("make", "step", "outcome", "retry_after"), [
    (make_dingtalk, _dt(130101), SendOutcome.RETRY, dingtalk.THROTTLE_RETRY_S),
    (make_dingtalk, _dt(410100), SendOutcome.RETRY, dingtalk.THROTTLE_RETRY_S),
    (make_dingtalk, _dt(-1), SendOutcome.RETRY, None),
    (make_dingtalk, _dt(460101), SendOutcome.FAILED, None),
    (make_wecom, _dt(45009), SendOutcome.RETRY, wecom.THROTTLE_RETRY_S),
    (make_wecom, _dt(-1), SendOutcome.RETRY, None),
    (make_wecom, _dt(40058), SendOutcome.FAILED, None),
    (make_feishu, _fs(11232), SendOutcome.RETRY, feishu.THROTTLE_RETRY_S),
    (make_feishu, _fs(9499, "too many request"), SendOutcome.RETRY, feishu.THROTTLE_RETRY_S),
    (make_feishu, _fs(9499, "Bad Request"), SendOutcome.FAILED, None),
    (make_feishu, Step(json={"Extra": None, "StatusCode": 0, "StatusMessage": "success"}),
     SendOutcome.SENT, None),
    (make_dingtalk, Step(500), SendOutcome.RETRY, None),
    (make_wecom, Step(502, headers={"Retry-After": "7"}), SendOutcome.RETRY, 7.0),
    (make_feishu, Step(429, headers={"Retry-After": "3"}), SendOutcome.RETRY, 3.0),
    (make_dingtalk, Step(404), SendOutcome.FAILED, None),
    (make_wecom, Step(302, headers={"Location": "http://elsewhere/"}), SendOutcome.FAILED, None),
    (make_feishu, Step(200), SendOutcome.RETRY, None),                       # empty 200: unknown
])
async def test_provider_answers_map_to_outcomes(make: Factory, step: Step, outcome: SendOutcome,
                                                retry_after: float | None) -> None:
    async with served(make) as (srv, ch):
        srv.script(step)
        result = await ch.send(note())
        assert (result.outcome, result.retry_after_s) == (outcome, retry_after)
        assert srv.requests[-1].problem is None
        # The script is spent: the next attempt is the provider's normal success.
        assert (await ch.send(note())).outcome is SendOutcome.SENT


@pytest.mark.parametrize("make", [make_dingtalk, make_wecom, make_feishu])
async def test_timeout_is_retryable(make: Factory) -> None:
    async with served(make, timeout_s=0.2) as (srv, ch):
        srv.script(Step(delay_s=5))
        result = await ch.send(note())
        assert result.outcome is SendOutcome.RETRY
        assert "timeout" in result.detail


@pytest.mark.parametrize("make", [make_dingtalk, make_wecom, make_feishu])
async def test_connection_refused_is_retryable(make: Factory) -> None:
    async with served(make, base_url=closed_port_url()) as (_, ch):
        result = await ch.send(note())
        assert result.outcome is SendOutcome.RETRY
        assert "network error" in result.detail


async def test_secrets_never_reach_details_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    details: list[str] = []
    for make in (make_dingtalk, make_wecom, make_feishu):
        for kw in ({}, {"base_url": closed_port_url()}, {"secret": "SECwrong"}):
            async with served(make, **kw) as (srv, ch):
                srv.script(Step(json={"errcode": 310000, "code": 19021,
                                      "errmsg": f"echo {DINGTALK_URL} {WECOM_URL}",
                                      "msg": f"echo {FEISHU_URL}"}))
                details.append((await ch.send(note())).detail)
    text = caplog.text + "\n".join(details)
    assert "robot/send" in caplog.text     # something was logged
    for secret in (DINGTALK_TOKEN, WECOM_KEY, FEISHU_TOKEN, DT_SECRET, FS_SECRET, "SECwrong"):
        assert secret not in text


# --- WeCom's 4096-byte markdown limit ---

def test_truncate_utf8_never_splits_a_character() -> None:
    text = "压力 low 🔥 0.08 MPa é"
    raw = text.encode()
    for limit in range(len(raw) + 2):
        cut = wecom.truncate_utf8(text, limit)
        assert len(cut.encode()) <= limit
        assert raw.startswith(cut.encode())
        assert len(cut.encode()) >= min(limit, len(raw)) - 3   # lost at most one partial char


async def test_wecom_long_message_is_cut_and_keeps_the_ack_link() -> None:
    async with served(make_wecom) as (srv, ch):
        result = await ch.send(note(text="火灾报警🔥" * 1000))        # ~16 KB of UTF-8
        assert result.outcome is SendOutcome.SENT
        req = srv.requests[-1]
        assert req.problem is None
        content: str = req.json()["markdown"]["content"]
        assert 4000 < len(content.encode()) <= wecom.MAX_MARKDOWN_BYTES
        assert content.endswith(f"…\n[{wecom.ACK_LABEL}]({ACK})")
