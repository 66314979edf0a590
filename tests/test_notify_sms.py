"""SMS channels against local servers that check the provider's exact request and signature.

The official Aliyun and Tencent SDKs are pointed at a local endpoint over plain HTTP; the servers
in ``tests/support/sms_servers.py`` recompute each signature with the documented algorithm.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from types import SimpleNamespace
from urllib.parse import parse_qsl

import pytest
from pydantic import ValidationError

from gateway.notify.base import Notification, SendOutcome
from gateway.notify.channels.sms_aliyun import AliyunSms
from gateway.notify.channels.sms_http import BodyFormat, HttpSms, HttpSmsSettings, json_path
from gateway.notify.channels.sms_tencent import TencentSms, to_e164
from tests.support.sms_servers import (
    AliyunSmsServer,
    Scripted,
    TencentSmsServer,
    VendorSmsServer,
    acs3_signature,
)

AK_ID, AK_SECRET = "LTAI5tTestKeyId", "aliyun-Secret+/=Value"
TC_ID, TC_KEY = "AKIDtestSecretId", "tencent-SecretKey-XYZ"
API_KEY = "vendor-api-key-123"
SECRETS = (AK_SECRET, TC_KEY, API_KEY)

NOTE = Notification(
    key="alarm-42:raised:duty:sms",
    channel="sms",
    recipient="13800138000",
    title="火警",
    text="【园区消防】一园B3 2F东发生火警，时间03:00，请立即处置。确认 https://pw.example/a/Xy",
    ack_url="https://pw.example/a/Xy",
    template_params={"park": "一园 A+B", "location": "B3 2F东*~/", "event": "火警",
                     "time": "03:00"},
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


# --- Aliyun ----------------------------------------------------------------------------------

@pytest.fixture
async def aliyun_server() -> AsyncIterator[AliyunSmsServer]:
    server = AliyunSmsServer(access_key_id=AK_ID, access_key_secret=AK_SECRET)
    await server.start()
    yield server
    await server.stop()


def _aliyun(server: AliyunSmsServer, *, secret: str = AK_SECRET, key_id: str = AK_ID) -> AliyunSms:
    return AliyunSms(access_key_id=key_id, access_key_secret=secret, sign_name="园区消防",
                     template_code="SMS_153055065", endpoint=server.endpoint, protocol="http",
                     timeout_s=2)


async def test_aliyun_sends_the_exact_signed_request(aliyun_server: AliyunSmsServer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    result = await _aliyun(aliyun_server).send(NOTE)

    assert result.outcome is SendOutcome.SENT, result
    assert result.provider_id == "900001^0"
    [req] = aliyun_server.requests
    assert req.problems == ()
    assert (req.method, req.path) == ("POST", "/")
    assert req.query == {
        "PhoneNumbers": "13800138000",
        "SignName": "园区消防",
        "TemplateCode": "SMS_153055065",
        "TemplateParam": json.dumps(dict(NOTE.template_params), ensure_ascii=False),
        "OutId": NOTE.key,
    }
    assert json.loads(req.query["TemplateParam"]) == dict(NOTE.template_params)
    assert req.header("x-acs-action") == "SendSms"
    assert req.header("x-acs-version") == "2017-05-25"
    auth = req.header("Authorization") or ""
    assert auth.startswith(f"ACS3-HMAC-SHA256 Credential={AK_ID},SignedHeaders=")
    _assert_no_secrets(auth, req.raw_query, result.detail, caplog.text)


async def test_aliyun_server_rejects_a_wrong_signature(aliyun_server: AliyunSmsServer) -> None:
    """The server really verifies: a client with the wrong secret is told SignatureDoesNotMatch,
    and that is permanent."""
    result = await _aliyun(aliyun_server, secret="not-the-secret").send(NOTE)
    assert result.outcome is SendOutcome.FAILED
    assert "SignatureDoesNotMatch" in result.detail
    assert aliyun_server.requests[0].problems == ("SignatureDoesNotMatch",)


async def test_aliyun_unknown_access_key_is_permanent(aliyun_server: AliyunSmsServer) -> None:
    result = await _aliyun(aliyun_server, key_id="LTAIunknown").send(NOTE)
    assert result.outcome is SendOutcome.FAILED
    assert "InvalidAccessKeyId.NotFound" in result.detail


def test_acs3_signature_matches_the_sdk_on_a_known_request() -> None:
    """The server's algorithm is the documented one, not a copy of the SDK: pin one vector."""
    sig = acs3_signature(
        secret="secret", method="POST", path="/", query={"A": "a b", "B": "~*/"},
        headers={"host": "h", "x-acs-date": "2025-01-01T00:00:00Z"},
        signed_headers=["host", "x-acs-date"], body=b"",
    )
    from alibabacloud_tea_openapi.utils import Utils  # type: ignore[import-untyped]

    request = SimpleNamespace(method="POST", pathname="/", query={"A": "a b", "B": "~*/"},
                              headers={"host": "h", "x-acs-date": "2025-01-01T00:00:00Z"})
    sdk = Utils.get_authorization(request, "ACS3-HMAC-SHA256",
                                  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                                  "id", "secret")
    assert sdk.endswith(f"Signature={sig}")


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (Scripted(code="isv.BUSINESS_LIMIT_CONTROL", message="触发分钟级流控"), SendOutcome.RETRY),
        (Scripted(code="isv.DAY_LIMIT_CONTROL"), SendOutcome.RETRY),
        (Scripted(status=400, code="Throttling.User"), SendOutcome.RETRY),
        (Scripted(status=400, code="Throttling.Api", headers={"x-acs-retry-after": "1500"}),
         SendOutcome.RETRY),
        (Scripted(status=503, code="ServiceUnavailable"), SendOutcome.RETRY),
        (Scripted(status=500), SendOutcome.RETRY),                          # bare 500, not JSON
        (Scripted(code="isv.MOBILE_NUMBER_ILLEGAL"), SendOutcome.FAILED),
        (Scripted(code="isv.TEMPLATE_MISSING_PARAMETERS"), SendOutcome.FAILED),
        (Scripted(code="isv.SMS_TEMPLATE_ILLEGAL"), SendOutcome.FAILED),
        (Scripted(code="isv.SMS_SIGNATURE_ILLEGAL"), SendOutcome.FAILED),
        (Scripted(code="isv.SMS_SIGNATURE_SCENE_ILLEGAL"), SendOutcome.FAILED),
        (Scripted(code="isv.OUT_OF_SERVICE"), SendOutcome.FAILED),
    ],
    ids=lambda v: f"{v.status}-{v.code}" if isinstance(v, Scripted) else str(v),
)
async def test_aliyun_outcomes(aliyun_server: AliyunSmsServer, answer: Scripted,
                               outcome: SendOutcome) -> None:
    aliyun_server.script(answer)
    result = await _aliyun(aliyun_server).send(NOTE)
    assert result.outcome is outcome, result
    assert len(aliyun_server.requests) == 1         # no retries hidden in the channel or SDK
    if answer.code:
        assert answer.code in result.detail
    if "x-acs-retry-after" in answer.headers:
        assert result.retry_after_s == 1.5
    _assert_no_secrets(result.detail)


async def test_aliyun_recovers_after_500s_with_the_same_out_id(
        aliyun_server: AliyunSmsServer) -> None:
    aliyun_server.fail_next(2)
    channel = _aliyun(aliyun_server)
    outcomes = [(await channel.send(NOTE)).outcome for _ in range(3)]
    assert outcomes == [SendOutcome.RETRY, SendOutcome.RETRY, SendOutcome.SENT]
    assert {r.query["OutId"] for r in aliyun_server.requests} == {NOTE.key}


async def test_aliyun_server_down_is_retry() -> None:
    channel = AliyunSms(access_key_id=AK_ID, access_key_secret=AK_SECRET, sign_name="s",
                        template_code="t", endpoint=f"127.0.0.1:{_free_port()}",
                        protocol="http", timeout_s=1)
    result = await channel.send(NOTE)
    assert result.outcome is SendOutcome.RETRY
    assert "Connection refused" in result.detail
    assert NOTE.recipient not in result.detail      # the SDK's error repeats the URL's query
    _assert_no_secrets(result.detail)


# --- Tencent ---------------------------------------------------------------------------------

@pytest.fixture
async def tencent_server() -> AsyncIterator[TencentSmsServer]:
    server = TencentSmsServer(secret_id=TC_ID, secret_key=TC_KEY)
    await server.start()
    yield server
    await server.stop()


def _tencent(server: TencentSmsServer, *, secret: str = TC_KEY) -> TencentSms:
    return TencentSms(secret_id=TC_ID, secret_key=secret, sdk_app_id="1400006666",
                      sign_name="园区消防", template_id="1234567",
                      param_order=("park", "location", "event", "time"),
                      endpoint=server.endpoint, protocol="http", timeout_s=2)


async def test_tencent_sends_the_exact_signed_request(tencent_server: TencentSmsServer,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    result = await _tencent(tencent_server).send(NOTE)

    assert result.outcome is SendOutcome.SENT, result
    assert result.provider_id == "2028:0000000001"
    [req] = tencent_server.requests
    assert req.problems == ()
    assert (req.method, req.path) == ("POST", "/")
    assert req.header("X-TC-Action") == "SendSms"
    assert req.header("X-TC-Version") == "2021-01-11"
    assert req.header("X-TC-Region") == "ap-guangzhou"
    assert req.json() == {
        "PhoneNumberSet": ["+8613800138000"],
        "SmsSdkAppId": "1400006666",
        "SignName": "园区消防",
        "TemplateId": "1234567",
        "TemplateParamSet": ["一园 A+B", "B3 2F东*~/", "火警", "03:00"],
        "SessionContext": NOTE.key,
    }
    auth = req.header("Authorization") or ""
    assert auth.startswith(f"TC3-HMAC-SHA256 Credential={TC_ID}/")
    _assert_no_secrets(auth, req.body.decode(), result.detail, caplog.text)


async def test_tencent_server_rejects_a_wrong_signature(tencent_server: TencentSmsServer) -> None:
    result = await _tencent(tencent_server, secret="wrong").send(NOTE)
    assert result.outcome is SendOutcome.FAILED
    assert "AuthFailure.SignatureFailure" in result.detail
    assert tencent_server.requests[0].problems == ("AuthFailure.SignatureFailure",)


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("LimitExceeded.PhoneNumberThirtySecondLimit", SendOutcome.RETRY),
        ("LimitExceeded.PhoneNumberDailyLimit", SendOutcome.RETRY),
        ("FailedOperation.InsufficientBalanceInSmsPackage", SendOutcome.FAILED),
        ("FailedOperation.TemplateIncorrectOrUnapproved", SendOutcome.FAILED),
        ("InvalidParameterValue.IncorrectPhoneNumber", SendOutcome.FAILED),
        ("UnauthorizedOperation.SmsSdkAppIdVerifyFail", SendOutcome.FAILED),
    ],
)
async def test_tencent_per_number_outcomes(tencent_server: TencentSmsServer, code: str,
                                           outcome: SendOutcome) -> None:
    tencent_server.number_status(code, "scripted")
    result = await _tencent(tencent_server).send(NOTE)
    assert result.outcome is outcome, result
    assert code in result.detail
    assert len(tencent_server.requests) == 1


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (Scripted(code="RequestLimitExceeded"), SendOutcome.RETRY),
        (Scripted(code="InternalError.Timeout"), SendOutcome.RETRY),
        (Scripted(code="AuthFailure.SecretIdNotFound"), SendOutcome.FAILED),
        (Scripted(code="FailedOperation.SignatureIncorrectOrUnapproved"), SendOutcome.FAILED),
        (Scripted(code="InvalidParameterValue.TemplateParameterFormatError"), SendOutcome.FAILED),
        (Scripted(status=500), SendOutcome.RETRY),
        (Scripted(status=502), SendOutcome.RETRY),
    ],
    ids=lambda v: f"{v.status}-{v.code}" if isinstance(v, Scripted) else str(v),
)
async def test_tencent_request_level_outcomes(tencent_server: TencentSmsServer, answer: Scripted,
                                              outcome: SendOutcome) -> None:
    tencent_server.script(answer)
    result = await _tencent(tencent_server).send(NOTE)
    assert result.outcome is outcome, result
    _assert_no_secrets(result.detail)


async def test_tencent_missing_template_parameter_is_failed_without_a_request(
        tencent_server: TencentSmsServer) -> None:
    note = Notification(key="k", channel="sms", recipient="13800138000", title="t", text="x",
                        template_params={"park": "一园"})
    result = await _tencent(tencent_server).send(note)
    assert result.outcome is SendOutcome.FAILED
    assert "location" in result.detail
    assert tencent_server.requests == []


async def test_tencent_server_down_is_retry() -> None:
    channel = TencentSms(secret_id=TC_ID, secret_key=TC_KEY, sdk_app_id="1", sign_name="s",
                         template_id="1", endpoint=f"127.0.0.1:{_free_port()}",
                         protocol="http", timeout_s=1)
    result = await channel.send(NOTE)
    assert result.outcome is SendOutcome.RETRY
    _assert_no_secrets(result.detail)


@pytest.mark.parametrize(
    ("raw", "e164"),
    [("13800138000", "+8613800138000"), ("+8613800138000", "+8613800138000"),
     ("008613800138000", "+8613800138000"), ("8613800138000", "+8613800138000"),
     ("138-0013-8000", "+8613800138000"), ("+85291234567", "+85291234567")],
)
def test_to_e164(raw: str, e164: str) -> None:
    assert to_e164(raw) == e164


# --- generic HTTP gateway --------------------------------------------------------------------

@pytest.fixture
async def vendor() -> AsyncIterator[VendorSmsServer]:
    server = VendorSmsServer(api_key=API_KEY)
    await server.start()
    yield server
    await server.stop()


def _settings(server: VendorSmsServer, **overrides: object) -> HttpSmsSettings:
    doc: dict[str, object] = {
        "url": f"{server.url}/api/send",
        "headers": {"X-Api-Key": "$api_key"},
        "fields": {"mobile": "$phone", "content": "$text", "msgid": "$key", "park": "$park"},
        "api_key": API_KEY,
        "success_path": "code",
        "success_value": 0,
        "retry_values": [1001],
        "id_path": "data.msgid",
        **overrides,
    }
    return HttpSmsSettings.model_validate(doc)


@pytest.mark.parametrize("body_format", [BodyFormat.JSON, BodyFormat.FORM])
async def test_http_sms_success(vendor: VendorSmsServer, body_format: BodyFormat,
                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    channel = HttpSms.from_settings(_settings(vendor, body_format=body_format))
    try:
        result = await channel.send(NOTE)
    finally:
        await channel.close()
    assert result.outcome is SendOutcome.SENT, result
    assert result.provider_id == "m1"
    [req] = vendor.requests
    assert (req.method, req.path) == ("POST", "/api/send")
    expected = {"mobile": NOTE.recipient, "content": NOTE.text, "msgid": NOTE.key,
                "park": "一园 A+B"}
    if body_format is BodyFormat.JSON:
        assert (req.header("Content-Type") or "").startswith("application/json")
        assert req.json() == expected
    else:
        assert req.header("Content-Type") == "application/x-www-form-urlencoded"
        assert dict(parse_qsl(req.body.decode())) == expected
    _assert_no_secrets(result.detail, caplog.text)


async def test_http_sms_get_puts_fields_in_the_query(vendor: VendorSmsServer) -> None:
    channel = HttpSms.from_settings(_settings(vendor, method="GET"))
    try:
        result = await channel.send(NOTE)
    finally:
        await channel.close()
    assert result.outcome is SendOutcome.SENT
    assert vendor.requests[0].query["mobile"] == NOTE.recipient
    assert vendor.requests[0].body == b""


@pytest.mark.parametrize(
    ("answer", "outcome", "retry_after"),
    [
        (Scripted(status=500), SendOutcome.RETRY, None),
        (Scripted(status=503, headers={"Retry-After": "7"}), SendOutcome.RETRY, 7.0),
        (Scripted(status=429, code="1001", message="too fast"), SendOutcome.RETRY, None),
        (Scripted(status=200, code="1001", message="too fast"), SendOutcome.RETRY, None),
        (Scripted(status=200, code="2002", message="bad number"), SendOutcome.FAILED, None),
        (Scripted(status=400, code="4000", message="bad request"), SendOutcome.FAILED, None),
    ],
    ids=lambda v: f"{v.status}-{v.code}" if isinstance(v, Scripted) else str(v),
)
async def test_http_sms_outcomes(vendor: VendorSmsServer, answer: Scripted, outcome: SendOutcome,
                                 retry_after: float | None) -> None:
    vendor.script(answer)
    channel = HttpSms.from_settings(_settings(vendor))
    try:
        result = await channel.send(NOTE)
    finally:
        await channel.close()
    assert result.outcome is outcome, result
    assert result.retry_after_s == retry_after


async def test_http_sms_wrong_key_is_failed_and_not_echoed(vendor: VendorSmsServer) -> None:
    channel = HttpSms(settings=_settings(vendor), api_key="leaked-wrong-key")
    try:
        result = await channel.send(NOTE)
    finally:
        await channel.close()
    assert result.outcome is SendOutcome.FAILED
    assert "leaked-wrong-key" not in result.detail


async def test_http_sms_unknown_template_field_is_failed(vendor: VendorSmsServer) -> None:
    settings = _settings(vendor, fields={"mobile": "$phone", "x": "$nope"})
    channel = HttpSms.from_settings(settings)
    result = await channel.send(NOTE)
    await channel.close()
    assert result.outcome is SendOutcome.FAILED
    assert "nope" in result.detail
    assert vendor.requests == []


async def test_http_sms_server_down_is_retry() -> None:
    settings = HttpSmsSettings(url=f"http://127.0.0.1:{_free_port()}/send",
                               fields={"m": "$phone"})
    channel = HttpSms.from_settings(settings)
    result = await channel.send(NOTE)
    await channel.close()
    assert result.outcome is SendOutcome.RETRY


def test_http_sms_settings_are_strict() -> None:
    with pytest.raises(ValidationError, match="extra"):
        HttpSmsSettings.model_validate({"url": "https://x", "fileds": {}})
    with pytest.raises(ValidationError, match="template"):
        HttpSmsSettings.model_validate({"url": "https://x", "fields": {"a": "$"}})
    with pytest.raises(ValidationError, match="http"):
        HttpSmsSettings.model_validate({"url": "ftp://x"})
    settings = HttpSmsSettings.model_validate({"url": "https://x", "api_key": "k3y"})
    assert "k3y" not in repr(settings)


def test_json_path() -> None:
    doc = {"a": {"b": [{"c": 0}]}}
    assert json_path(doc, "a.b.0.c") == 0
    with pytest.raises(KeyError):
        json_path(doc, "a.x")
