"""Local fake notification providers for tests: DingTalk, WeCom, Feishu robots and a generic
Standard Webhooks receiver, all behind one aiohttp server on a free port.

Each provider checks the request the way the real API does (token, timestamp freshness,
signature, body shape) and answers with that provider's real error document, so a signing bug
fails the test the way it would fail in production. A response script on top simulates outages
and throttling::

    async with ProviderServer(dingtalk_secret="SEC…") as srv:
        srv.script(Step(500), Step(500))        # the next two requests get 500, then normal
        channel = DingTalkChannel(url=DINGTALK_URL, secret="SEC…", base_url=srv.url)
        ...
        assert srv.requests[-1].problem is None  # the provider's checks passed

Routes: ``/robot/send`` (DingTalk), ``/cgi-bin/webhook/send`` (WeCom),
``/open-apis/bot/v2/hook/{token}`` (Feishu); any other path is the generic webhook.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

DINGTALK_TOKEN = "dt0123456789abcdef0123456789abcdef"
WECOM_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
FEISHU_TOKEN = "2c7a0c8e-1d4e-4b7a-9f3a-5b0c6d7e8f90"
DINGTALK_URL = f"https://oapi.dingtalk.com/robot/send?access_token={DINGTALK_TOKEN}"
WECOM_URL = f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={WECOM_KEY}"
FEISHU_URL = f"https://open.feishu.cn/open-apis/bot/v2/hook/{FEISHU_TOKEN}"
_HOUR = 3600.0
Answer = tuple[str | None, int, Any]  # (problem, status, json) as the real provider would reply


@dataclass(frozen=True, slots=True)
class Step:
    """One scripted answer. Without status and json the provider answers as it normally would
    (after ``delay_s``, which is how tests provoke client timeouts)."""

    status: int | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Captured:
    provider: str
    method: str
    path: str
    query: dict[str, str]        # decoded
    query_string: str            # as sent, still percent-encoded
    headers: CIMultiDict[str]
    body: bytes
    received_at: float
    problem: str | None          # what the real provider would reject, None if it would accept

    def json(self) -> Any:
        return json.loads(self.body)


def closed_port_url() -> str:
    """An http URL on a local port nobody listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class ProviderServer:
    def __init__(self, *, dingtalk_token: str = DINGTALK_TOKEN, dingtalk_secret: str | None = None,
                 wecom_key: str = WECOM_KEY, feishu_token: str = FEISHU_TOKEN,
                 feishu_secret: str | None = None, webhook_secret: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.dingtalk_token, self.dingtalk_secret = dingtalk_token, dingtalk_secret
        self.wecom_key = wecom_key
        self.feishu_token, self.feishu_secret = feishu_token, feishu_secret
        self.webhook_secret = webhook_secret
        self.clock = clock
        self.requests: list[Captured] = []
        self.outage: Step | None = None   # while set, every request gets it (e.g. a 30 s outage)
        self.url = ""
        self._script: list[Step] = []
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    def script(self, *steps: Step) -> None:
        """Queue answers for the next requests, one step per request, then back to normal."""
        self._script.extend(steps)

    def of(self, provider: str) -> list[Captured]:
        return [r for r in self.requests if r.provider == provider]

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> list[Captured]:
        """Await until ``count`` requests have arrived (a condition with a deadline, no sleep)."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.requests) >= count), timeout_s)
        return self.requests

    async def __aenter__(self) -> ProviderServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a delayed answer whose client gave up must not hold shutdown.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0,
                                     access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        path = request.path
        if path == "/robot/send":
            provider, answer = "dingtalk", self._dingtalk(request, body)
        elif path == "/cgi-bin/webhook/send":
            provider, answer = "wecom", self._wecom(request, body)
        elif path.startswith("/open-apis/bot/v2/hook/"):
            provider, answer = "feishu", self._feishu(request, body)
        else:
            provider, answer = "webhook", self._webhook(request, body)
        problem, status, doc = answer
        async with self._arrived:
            self.requests.append(Captured(
                provider, request.method, path, dict(request.query), request.query_string,
                CIMultiDict(request.headers), body, self.clock(), problem))
            self._arrived.notify_all()
        step = self.outage or (self._script.pop(0) if self._script else Step())
        await asyncio.sleep(step.delay_s)
        if step.status is not None or step.json is not None:
            status, doc = step.status or 200, step.json
        if doc is None:
            return web.Response(status=status, headers=step.headers)
        return web.json_response(doc, status=status, headers=step.headers)

    def _dingtalk(self, request: web.Request, body: bytes) -> Answer:
        q = request.query
        if request.method != "POST" or q.get("access_token") != self.dingtalk_token:
            return "token", 200, {"errcode": 300001, "errmsg": "token is not exist"}
        secret = self.dingtalk_secret
        if secret:
            ts, sig = q.get("timestamp", ""), q.get("sign", "")
            if not ts.isdigit() or abs(int(ts) / 1000 - self.clock()) > _HOUR:
                return "timestamp", 200, {"errcode": 310000, "errmsg": "invalid timestamp"}
            if not hmac.compare_digest(sig, _b64mac(secret.encode(), f"{ts}\n{secret}".encode())):
                return "sign", 200, {"errcode": 310000, "errmsg": "sign not match"}
        if request.content_type != "application/json":
            return "content-type", 200, {"errcode": 43004, "errmsg": "invalid Content-Type"}
        doc = _json(body)
        md = doc.get("markdown") if doc.get("msgtype") == "markdown" else {"title": 1, "text": 1}
        if doc.get("msgtype") not in ("text", "markdown", "link", "actionCard", "feedCard") or (
                not isinstance(md, dict) or not (md.get("title") and md.get("text"))):
            return "body", 200, {"errcode": 40035, "errmsg": "缺少参数 json"}
        return None, 200, {"errcode": 0, "errmsg": "ok"}

    def _wecom(self, request: web.Request, body: bytes) -> Answer:
        if request.method != "POST" or request.query.get("key") != self.wecom_key:
            return "key", 200, {"errcode": 93000, "errmsg": "invalid webhook url, hint: [x]"}
        doc = _json(body)
        if doc.get("msgtype") not in ("text", "markdown", "image", "news", "file", "template_card"):
            return "msgtype", 200, {"errcode": 40008, "errmsg": "invalid message type"}
        content = doc.get(doc["msgtype"], {}).get("content", "")
        if not content:
            return "empty", 200, {"errcode": 44004, "errmsg": "empty content"}
        if doc["msgtype"] == "markdown" and len(content.encode()) > 4096:
            return "length", 200, {"errcode": 40058,
                                   "errmsg": "markdown.content exceed max length 4096"}
        return None, 200, {"errcode": 0, "errmsg": "ok"}

    def _feishu(self, request: web.Request, body: bytes) -> Answer:
        token = request.path.rsplit("/", 1)[-1]
        if request.method != "POST" or token != self.feishu_token:
            return "token", 200, {"code": 19001, "data": {},
                                  "msg": "param invalid: incoming webhook access token invalid"}
        doc = _json(body)
        secret = self.feishu_secret
        if secret:
            ts, sig = doc.get("timestamp"), doc.get("sign")
            # The timestamp must be a *string* of seconds; the key/message inversion is the point.
            ok = (isinstance(ts, str) and ts.isdigit() and isinstance(sig, str)
                  and abs(int(ts) - self.clock()) <= _HOUR
                  and hmac.compare_digest(sig, _b64mac(f"{ts}\n{secret}".encode(), b"")))
            if not ok:
                return "sign", 200, {"code": 19021, "data": {}, "msg": "sign match fail or "
                                     "timestamp is not within one hour from current time"}
        kind = doc.get("msg_type")
        part = doc.get("card" if kind == "interactive" else "content")
        if kind not in ("text", "post", "image", "share_chat", "interactive") or \
                not isinstance(part, dict) or len(body) > 20 * 1024:
            return "body", 200, {"code": 9499, "data": {}, "msg": "Bad Request"}
        return None, 200, {"code": 0, "data": {}, "msg": "success"}

    def _webhook(self, request: web.Request, body: bytes) -> Answer:
        h = request.headers
        if not (h.get("webhook-id") and h.get("webhook-timestamp")):
            return "headers", 400, {"error": "missing webhook-id or webhook-timestamp"}
        if self.webhook_secret and not self._webhook_signed(h, body):
            return "signature", 401, {"error": "invalid signature"}
        if not isinstance(_json(body), dict) or request.content_type != "application/json":
            return "body", 400, {"error": "expected a JSON object"}
        return None, 204, None

    def _webhook_signed(self, h: Mapping[str, str], body: bytes) -> bool:
        # Written from the spec, independently of notify/channels/webhook.py, to cross-check it.
        secret = self.webhook_secret or ""
        key = (base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode())
        ts = h.get("webhook-timestamp", "")
        if not ts.isdigit() or abs(int(ts) - self.clock()) > 300:
            return False
        expected = standard_signature(key, h.get("webhook-id", ""), int(ts), body)
        return expected in h.get("webhook-signature", "").split()


def _json(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _b64mac(key: bytes, msg: bytes) -> str:
    return base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()


def whsec(raw: bytes) -> str:
    """A Standard Webhooks secret for these key bytes."""
    return "whsec_" + base64.b64encode(raw).decode()


def standard_signature(key: bytes, msg_id: str, ts: int, body: bytes) -> str:
    """An independent re-implementation of the spec's signature, to cross-check ours."""
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()
