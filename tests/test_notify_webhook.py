"""The generic Standard Webhooks channel, its verifier, and the shared HTTP classification."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import formatdate
from typing import Any

import pytest

from gateway.notify.base import Notification, SendOutcome
from gateway.notify.channels.httpclient import mask_url, redact, retry_after
from gateway.notify.channels.webhook import WebhookChannel, secret_key, sign, verify
from tests.support.notify_servers import (
    ProviderServer,
    Step,
    closed_port_url,
    standard_signature,
    whsec,
)

NOW = 1_700_000_000.0
KEY = bytes(range(32))
SECRET = whsec(KEY)
ALARM = {"alarm_id": "a1b2c3", "rule": "water_pressure_low", "state": "firing",
         "severity": "major", "park": "xz01", "building": "b3", "device": "wp-0017",
         "value": 0.08, "message": "消火栓压力 0.08 MPa", "acknowledged_by": None}
# The Standard Webhooks specification's published example.
SPEC = ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
        b'{"test": 2432232314}', "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")


def note(**kw: Any) -> Notification:
    base: dict[str, Any] = dict(key="a1b2c3:1764059460000:firing:major:webhook",
                                channel="webhook", recipient="", title="water_pressure_low",
                                text="", alarm=ALARM, ack_url="https://pw.example/ack/Zx81")
    return Notification(**(base | kw))


@asynccontextmanager
async def served(secret: str | None = SECRET, server_secret: str | None = SECRET,
                 path: str = "/hooks/parkwatch", **kw: Any,
                 ) -> AsyncIterator[tuple[ProviderServer, WebhookChannel]]:
    async with ProviderServer(webhook_secret=server_secret, clock=lambda: NOW) as srv:
        ch = WebhookChannel(url=srv.url + path, secret=secret, clock=lambda: NOW,
                            **({"timeout_s": 2.0} | kw))
        try:
            yield srv, ch
        finally:
            await ch.close()


# --- signing and verifying ---

def test_signature_matches_the_spec_example() -> None:
    secret, msg_id, ts, body, expected = SPEC
    assert sign(secret, msg_id, ts, body) == expected
    headers = {"Webhook-Id": msg_id, "Webhook-Timestamp": str(ts), "Webhook-Signature": expected}
    assert verify(secret, headers, body, now=ts + 10)


def test_verify_rejects_what_it_should() -> None:
    secret, msg_id, ts, body, sig = SPEC
    h = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}
    assert not verify(secret, h, body + b" ", now=ts)                       # tampered body
    assert not verify(SECRET, h, body, now=ts)                              # other secret
    assert not verify(secret, h, body, now=ts + 301)                        # too old
    assert not verify(secret, h, body, now=ts - 301)                        # from the future
    assert verify(secret, h, body, now=ts + 599, tolerance_s=600)
    assert not verify(secret, h | {"webhook-id": "msg_other"}, body, now=ts)
    assert not verify(secret, {k: v for k, v in h.items() if k != "webhook-id"}, body, now=ts)
    assert not verify(secret, h | {"webhook-timestamp": "soon"}, body, now=ts)
    assert not verify(secret, h | {"webhook-signature": sig.replace("v1,", "v2,")}, body, now=ts)
    # Key rotation: several signatures, one of them valid, is enough.
    assert verify(secret, h | {"webhook-signature": f"v1,bm9wZQ== {sig}"}, body, now=ts)


def test_secret_formats() -> None:
    assert secret_key(SECRET) == KEY
    assert secret_key("plain-shared-secret") == b"plain-shared-secret"   # raw secrets allowed
    assert sign("raw", "m", 1, b"{}") == standard_signature(b"raw", "m", 1, b"{}")
    with pytest.raises(ValueError, match="base64"):
        WebhookChannel(url="http://127.0.0.1:9/", secret="whsec_!!not base64!!")


# --- sending ---

async def test_signed_delivery_is_verified_by_the_receiver() -> None:
    async with served() as (srv, ch):
        result = await ch.send(note())
        assert (result.outcome, result.detail) == (SendOutcome.SENT, "HTTP 204")
        req = srv.requests[-1]
        assert (req.provider, req.method, req.path, req.problem) == (
            "webhook", "POST", "/hooks/parkwatch", None)
        assert req.headers["webhook-id"] == note().key
        assert req.headers["webhook-timestamp"] == "1700000000"
        assert req.headers["webhook-signature"] == standard_signature(
            KEY, note().key, 1700000000, req.body)
        assert req.headers["Content-Type"].startswith("application/json")
        assert json.loads(req.body) == ALARM | {"ack_url": "https://pw.example/ack/Zx81"}
        assert verify(SECRET, req.headers, req.body, now=NOW)


async def test_a_retry_reuses_the_webhook_id() -> None:
    async with served() as (srv, ch):
        srv.script(Step(503))
        assert (await ch.send(note())).outcome is SendOutcome.RETRY
        assert (await ch.send(note())).outcome is SendOutcome.SENT
        assert [r.headers["webhook-id"] for r in srv.requests] == [note().key] * 2


async def test_document_ack_url_is_kept_when_the_notification_has_none() -> None:
    async with served() as (srv, ch):
        await ch.send(note(ack_url=None, alarm=ALARM | {"ack_url": "https://x/ack/1"}))
        assert srv.requests[-1].json()["ack_url"] == "https://x/ack/1"
        await ch.send(note(ack_url=None))
        assert srv.requests[-1].json()["ack_url"] is None   # the contract always has the key


async def test_unsigned_delivery_has_no_signature_header() -> None:
    async with served(secret=None, server_secret=None) as (srv, ch):
        assert (await ch.send(note())).outcome is SendOutcome.SENT
        assert "webhook-signature" not in srv.requests[-1].headers


async def test_wrong_secret_is_rejected_permanently() -> None:
    async with served(secret=whsec(b"other key")) as (srv, ch):
        result = await ch.send(note())
        assert (result.outcome, result.detail) == (SendOutcome.FAILED, "HTTP 401")
        assert srv.requests[-1].problem == "signature"


@pytest.mark.parametrize(("step", "outcome", "retry_after_s"), [
    (Step(200, json={"ok": True}), SendOutcome.SENT, None),
    (Step(202), SendOutcome.SENT, None),
    (Step(500), SendOutcome.RETRY, None),
    (Step(503, headers={"Retry-After": "30"}), SendOutcome.RETRY, 30.0),
    (Step(429, headers={"Retry-After": formatdate(NOW + 90, usegmt=True)}), SendOutcome.RETRY,
     90.0),
    (Step(408), SendOutcome.RETRY, None),
    (Step(400), SendOutcome.FAILED, None),
    (Step(404), SendOutcome.FAILED, None),
    (Step(410), SendOutcome.FAILED, None),
    (Step(301, headers={"Location": "http://elsewhere/"}), SendOutcome.FAILED, None),
])
async def test_status_classes(step: Step, outcome: SendOutcome,
                              retry_after_s: float | None) -> None:
    async with served() as (srv, ch):
        srv.script(step)
        result = await ch.send(note())
        assert (result.outcome, result.retry_after_s) == (outcome, retry_after_s)
        assert len(srv.requests) == 1     # one attempt, no hidden retries, no redirects


async def test_outage_then_recovery() -> None:
    async with served() as (srv, ch):
        srv.outage = Step(500)
        assert [(await ch.send(note())).outcome for _ in range(3)] == [SendOutcome.RETRY] * 3
        srv.outage = None
        assert (await ch.send(note())).outcome is SendOutcome.SENT
        assert [r.problem for r in await srv.wait_for(4)] == [None] * 4


async def test_timeout_and_refused_connection_are_retryable() -> None:
    async with served(timeout_s=0.2) as (srv, ch):
        srv.script(Step(delay_s=5))
        result = await ch.send(note())
        assert (result.outcome, result.detail) == (SendOutcome.RETRY, "timeout after 0.2 s")
    refused = WebhookChannel(url=closed_port_url() + "/hook", secret=SECRET, clock=lambda: NOW)
    try:
        result = await refused.send(note())
        assert result.outcome is SendOutcome.RETRY
        assert "network error" in result.detail
    finally:
        await refused.close()


async def test_tokens_in_the_url_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = "tok3n-0123456789-abcdef"
    async with served(path=f"/hook/{token}?access_token={token}") as (_, ch):
        result = await ch.send(note())
        assert result.outcome is SendOutcome.SENT
    assert "/hook/***?access_token=***" in caplog.text
    assert token not in caplog.text + result.detail
    assert SECRET not in caplog.text


# --- shared HTTP helpers ---

def test_mask_url_and_redact() -> None:
    assert mask_url("https://open.feishu.cn/open-apis/bot/v2/hook/2c7a0c8e-1d4e-4b7a-9f3a") == (
        "https://open.feishu.cn/open-apis/bot/v2/hook/***")
    assert mask_url("https://oapi.dingtalk.com/robot/send?access_token=abc&x=1") == (
        "https://oapi.dingtalk.com/robot/send?access_token=***&x=***")
    assert redact("GET /send?key=K1&sign=S1 secret=zz", ["zz"]) == (
        "GET /send?key=***&sign=*** secret=***")


def test_retry_after_forms() -> None:
    assert retry_after({"Retry-After": "12"}, NOW) == 12.0
    assert retry_after({"Retry-After": formatdate(NOW + 5, usegmt=True)}, NOW) == 5.0
    assert retry_after({"Retry-After": formatdate(NOW - 5, usegmt=True)}, NOW) == 0.0
    assert retry_after({"Retry-After": "whenever"}, NOW) is None
    assert retry_after({}, NOW) is None
