"""Local stand-ins for the Aliyun and Tencent SMS APIs (and a plain HTTP SMS vendor).

Each server accepts what the real API receives and checks it the way the provider does:
the signature is recomputed from the documented algorithm with the secret the server knows,
the API version and action are checked, and a bad request gets the provider's own error answer.
Every request is recorded exactly (method, path, raw query, headers, body) with the server's
verdict, and the answers are programmable (an error code, or a bare HTTP 500, for N calls).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote

from aiohttp import web


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    raw_query: str
    query: dict[str, str]
    headers: dict[str, str]          # as received (case-insensitive lookups: use .header())
    body: bytes
    problems: tuple[str, ...]        # why the server rejected it; empty when it was valid

    def header(self, name: str) -> str | None:
        lowered = {k.lower(): v for k, v in self.headers.items()}
        return lowered.get(name.lower())

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Scripted:
    """A programmed answer: a bare HTTP status, or the provider's error code."""

    status: int = 200
    code: str | None = None
    message: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


class _Server:
    """An aiohttp app on 127.0.0.1 and a free port, recording every request."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._script: deque[Scripted] = deque()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def script(self, answer: Scripted, times: int = 1) -> None:
        """Answer the next ``times`` valid requests with ``answer``; then back to success."""
        self._script.extend([answer] * times)

    def fail_next(self, times: int, status: int = 500) -> None:
        self.script(Scripted(status=status), times)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        raw_query = request.rel_url.raw_query_string
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
        headers = dict(request.headers)
        problems = tuple(self.check(request.method, request.path, query, headers, body))
        self.requests.append(Recorded(request.method, request.path, raw_query, query, headers,
                                      body, problems))
        if problems:
            return self.reject(problems)
        if self._script:
            answer = self._script.popleft()
            if answer.code is None:
                return web.Response(status=answer.status, text="Internal Server Error",
                                    headers=dict(answer.headers))
            return self.error(answer)
        return self.success(query, body)

    # Provider specifics.
    def check(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
              body: bytes) -> list[str]:
        raise NotImplementedError

    def reject(self, problems: tuple[str, ...]) -> web.StreamResponse:
        raise NotImplementedError

    def error(self, answer: Scripted) -> web.StreamResponse:
        raise NotImplementedError

    def success(self, query: dict[str, str], body: bytes) -> web.StreamResponse:
        raise NotImplementedError


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


# --------------------------------------------------------------------------------------------
# Aliyun dysmsapi 2017-05-25, V3 signature (ACS3-HMAC-SHA256), the SDK's default.

def acs3_canonical_query(query: Mapping[str, str]) -> str:
    """Sorted by name; names and values percent-encoded per RFC 3986 (space %20, ``~`` kept)."""
    return "&".join(
        f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in sorted(query.items())
    )


def acs3_signature(*, secret: str, method: str, path: str, query: Mapping[str, str],
                   headers: Mapping[str, str], signed_headers: list[str], body: bytes) -> str:
    """Aliyun's V3 algorithm: hex HMAC-SHA256 over ``ACS3-HMAC-SHA256\\n`` + hex SHA-256 of the
    canonical request (method, URI, query, signed headers, their names, payload hash)."""
    lowered = _lower(headers)
    canonical_headers = "".join(f"{h}:{lowered.get(h, '').strip()}\n" for h in signed_headers)
    canonical_request = "\n".join([
        method, path or "/", acs3_canonical_query(query), canonical_headers,
        ";".join(signed_headers), hashlib.sha256(body).hexdigest(),
    ])
    string_to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical_request.encode()).hexdigest()
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


_ACS3_AUTH = re.compile(
    r"ACS3-HMAC-SHA256 Credential=(?P<ak>[^,]+),SignedHeaders=(?P<signed>[^,]+),"
    r"Signature=(?P<sig>[0-9a-f]{64})$"
)
# The header set Aliyun documents as signed at minimum.
_ACS3_REQUIRED_SIGNED = {"host", "x-acs-action", "x-acs-content-sha256", "x-acs-date",
                         "x-acs-signature-nonce", "x-acs-version"}


class AliyunSmsServer(_Server):
    """Checks the V3-signed RPC ``SendSms`` request; answers like dysmsapi."""

    def __init__(self, *, access_key_id: str, access_key_secret: str) -> None:
        super().__init__()
        self._keys = {access_key_id: access_key_secret}
        self._nonces: set[str] = set()
        self._biz = 0

    def check(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
              body: bytes) -> list[str]:
        h = _lower(headers)
        problems = []
        if h.get("x-acs-action") != "SendSms":
            problems.append(f"InvalidAction.NotFound: x-acs-action={h.get('x-acs-action')}")
        if h.get("x-acs-version") != "2017-05-25":
            problems.append(f"InvalidVersion: x-acs-version={h.get('x-acs-version')}")
        if h.get("x-acs-content-sha256") != hashlib.sha256(body).hexdigest():
            problems.append("ContentSHA256NotMatched: x-acs-content-sha256 is not the body's")
        problems += self._check_time_and_nonce(h)
        problems += self._check_signature(method, path, query, headers, body)
        for name in ("PhoneNumbers", "SignName", "TemplateCode"):
            if not query.get(name):
                problems.append(f"MissingParameter: {name}")
        if "TemplateParam" in query:
            try:
                if not isinstance(json.loads(query["TemplateParam"]), dict):
                    problems.append("isv.INVALID_JSON_PARAM: TemplateParam is not an object")
            except ValueError:
                problems.append("isv.INVALID_JSON_PARAM: TemplateParam is not JSON")
        return problems

    def _check_time_and_nonce(self, h: Mapping[str, str]) -> list[str]:
        problems = []
        try:
            sent = datetime.strptime(h.get("x-acs-date", ""), "%Y-%m-%dT%H:%M:%SZ")
            if abs(sent.replace(tzinfo=UTC).timestamp() - time.time()) > 900:
                problems.append("InvalidTimeStamp.Expired: x-acs-date more than 15 min off")
        except ValueError:
            problems.append(f"InvalidTimeStamp.Format: x-acs-date={h.get('x-acs-date')!r}")
        nonce = h.get("x-acs-signature-nonce", "")
        if not nonce or nonce in self._nonces:
            problems.append("SignatureNonceUsed")
        self._nonces.add(nonce)
        return problems

    def _check_signature(self, method: str, path: str, query: dict[str, str],
                         headers: dict[str, str], body: bytes) -> list[str]:
        match = _ACS3_AUTH.match(_lower(headers).get("authorization", ""))
        if match is None:
            return ["IncompleteSignature: Authorization malformed"]
        secret = self._keys.get(match["ak"])
        if secret is None:
            return ["InvalidAccessKeyId.NotFound"]
        signed = match["signed"].split(";")
        if signed != sorted(signed) or not set(signed) >= _ACS3_REQUIRED_SIGNED:
            return [f"IncompleteSignature: SignedHeaders={match['signed']}"]
        expected = acs3_signature(secret=secret, method=method, path=path, query=query,
                                  headers=headers, signed_headers=signed, body=body)
        if not hmac.compare_digest(expected, match["sig"]):
            return ["SignatureDoesNotMatch"]
        return []

    def reject(self, problems: tuple[str, ...]) -> web.StreamResponse:
        code = problems[0].split(":")[0]   # each problem reads "Code: explanation"
        # Business (isv.*) errors come back with HTTP 200, gateway errors with 4xx.
        status = 200 if code.startswith("isv.") else 404 if code.endswith(".NotFound") else 400
        return self._json({"Code": code, "Message": "; ".join(problems)}, status)

    def error(self, answer: Scripted) -> web.StreamResponse:
        return self._json({"Code": answer.code, "Message": answer.message or answer.code},
                          answer.status, answer.headers)

    def success(self, query: dict[str, str], body: bytes) -> web.StreamResponse:
        self._biz += 1
        return self._json({"Code": "OK", "Message": "OK", "BizId": f"9{self._biz:05d}^0"})

    @staticmethod
    def _json(doc: dict[str, Any], status: int = 200,
              headers: Mapping[str, str] | None = None) -> web.Response:
        doc = {**doc, "RequestId": str(uuid.uuid4()).upper()}
        return web.Response(status=status, text=json.dumps(doc), content_type="application/json",
                            headers=dict(headers or {}))


# --------------------------------------------------------------------------------------------
# Tencent Cloud SMS 2021-01-11, API 3.0 signature TC3-HMAC-SHA256.

def tc3_signature(*, secret_key: str, service: str, timestamp: int, method: str, path: str,
                  raw_query: str, content_type: str, host: str, body: bytes) -> str:
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    canonical_request = "\n".join([
        method, path, raw_query, f"content-type:{content_type}\nhost:{host}\n",
        "content-type;host", hashlib.sha256(body).hexdigest(),
    ])
    string_to_sign = "\n".join([
        "TC3-HMAC-SHA256", str(timestamp), f"{date}/{service}/tc3_request",
        hashlib.sha256(canonical_request.encode()).hexdigest(),
    ])

    def _hmac(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    signing_key = _hmac(_hmac(_hmac(("TC3" + secret_key).encode(), date), service), "tc3_request")
    return hmac.new(signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()


_TC3_AUTH = re.compile(
    r"TC3-HMAC-SHA256 Credential=(?P<sid>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<svc>[a-z]+)/"
    r"tc3_request, SignedHeaders=(?P<signed>[^,]+), Signature=(?P<sig>[0-9a-f]{64})$"
)


class TencentSmsServer(_Server):
    """Checks the TC3-signed ``SendSms`` request; answers like sms.tencentcloudapi.com.

    Besides whole-request errors (``script``), a per-number status code can be programmed with
    ``number_status`` (the API answers 200 and reports each number in ``SendStatusSet``).
    """

    def __init__(self, *, secret_id: str, secret_key: str) -> None:
        super().__init__()
        self._keys = {secret_id: secret_key}
        self._number_status: deque[Scripted] = deque()
        self._serial = 0

    def number_status(self, code: str, message: str = "", times: int = 1) -> None:
        self._number_status.extend([Scripted(code=code, message=message)] * times)

    def check(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
              body: bytes) -> list[str]:
        h = _lower(headers)
        problems = []
        if h.get("x-tc-action") != "SendSms":
            problems.append(f"InvalidAction: X-TC-Action={h.get('x-tc-action')}")
        if h.get("x-tc-version") != "2021-01-11":
            problems.append(f"InvalidParameterValue: X-TC-Version={h.get('x-tc-version')}")
        if not h.get("x-tc-region"):
            problems.append("MissingParameter: X-TC-Region")
        problems += self._check_signature(method, path, h, body)
        if not problems:
            problems += self._check_params(body)
        return problems

    def _check_signature(self, method: str, path: str, h: Mapping[str, str],
                         body: bytes) -> list[str]:
        match = _TC3_AUTH.match(h.get("authorization", ""))
        if match is None:
            return ["AuthFailure.SignatureFailure: Authorization malformed"]
        secret = self._keys.get(match["sid"])
        if secret is None:
            return ["AuthFailure.SecretIdNotFound"]
        try:
            timestamp = int(h.get("x-tc-timestamp", ""))
        except ValueError:
            return ["AuthFailure.InvalidAuthorization: X-TC-Timestamp"]
        if abs(timestamp - time.time()) > 300:
            return ["AuthFailure.SignatureExpire"]
        date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
        if match["date"] != date or match["svc"] != "sms" or match["signed"] != "content-type;host":
            return ["AuthFailure.InvalidAuthorization: credential scope"]
        expected = tc3_signature(
            secret_key=secret, service="sms", timestamp=timestamp, method=method, path=path,
            raw_query="", content_type=h.get("content-type", ""), host=h.get("host", ""),
            body=body,
        )
        if not hmac.compare_digest(expected, match["sig"]):
            return ["AuthFailure.SignatureFailure"]
        return []

    @staticmethod
    def _check_params(body: bytes) -> list[str]:
        try:
            params = json.loads(body)
        except ValueError:
            return ["InvalidParameter: body is not JSON"]
        problems = []
        for name in ("PhoneNumberSet", "SmsSdkAppId", "TemplateId"):
            if not params.get(name):
                problems.append(f"MissingParameter: {name}")
        for name in ("PhoneNumberSet", "TemplateParamSet"):
            value = params.get(name, [])
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                problems.append(f"InvalidParameter: {name} must be an array of strings")
        return problems

    def reject(self, problems: tuple[str, ...]) -> web.StreamResponse:
        return self._error(problems[0].split(":")[0], "; ".join(problems))

    def error(self, answer: Scripted) -> web.StreamResponse:
        return self._error(answer.code or "InternalError", answer.message or str(answer.code))

    def success(self, query: dict[str, str], body: bytes) -> web.StreamResponse:
        params = json.loads(body)
        statuses = []
        for phone in params["PhoneNumberSet"]:
            self._serial += 1
            scripted = self._number_status.popleft() if self._number_status else None
            statuses.append({
                "SerialNo": "" if scripted else f"2028:{self._serial:010d}",
                "PhoneNumber": phone,
                "Fee": 0 if scripted else 1,
                "SessionContext": params.get("SessionContext", ""),
                "Code": scripted.code if scripted else "Ok",
                "Message": scripted.message if scripted else "send success",
                "IsoCode": "CN",
            })
        return self._json({"SendStatusSet": statuses})

    def _error(self, code: str, message: str) -> web.Response:
        # API 3.0 reports request-level errors with HTTP 200 and Response.Error.
        return self._json({"Error": {"Code": code, "Message": message}})

    @staticmethod
    def _json(response: dict[str, Any]) -> web.Response:
        doc = {"Response": {**response, "RequestId": str(uuid.uuid4())}}
        # The SDK only looks for errors when Content-Type is exactly application/json.
        return web.Response(body=json.dumps(doc).encode(), content_type="application/json")


# --------------------------------------------------------------------------------------------
# A typical local vendor: JSON or form in, {"code": 0, "msgid": ...} out, an API key header.

class VendorSmsServer(_Server):
    def __init__(self, *, api_key: str) -> None:
        super().__init__()
        self._api_key = api_key
        self._id = 0

    def check(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
              body: bytes) -> list[str]:
        return [] if _lower(headers).get("x-api-key") == self._api_key else ["bad api key"]

    def reject(self, problems: tuple[str, ...]) -> web.StreamResponse:
        return web.json_response({"code": 401, "msg": problems[0]}, status=401)

    def error(self, answer: Scripted) -> web.StreamResponse:
        return web.json_response({"code": answer.code, "msg": answer.message},
                                 status=answer.status, headers=dict(answer.headers))

    def success(self, query: dict[str, str], body: bytes) -> web.StreamResponse:
        self._id += 1
        return web.json_response({"code": 0, "msg": "ok", "data": {"msgid": f"m{self._id}"}})
