"""Tencent Cloud SMS (腾讯云短信) ``SendSms`` 2021-01-11 through the official SDK.

The SDK (``tencentcloud-sdk-python-sms``) is synchronous, so each send runs in a worker thread.
It signs with TC3-HMAC-SHA256; no retryer is configured, so it sends exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import model_validator
from tencentcloud.common import credential  # type: ignore[import-untyped]
from tencentcloud.common.exception.tencent_cloud_sdk_exception import (  # type: ignore[import-untyped]
    TencentCloudSDKException,
)
from tencentcloud.common.profile.client_profile import ClientProfile  # type: ignore[import-untyped]
from tencentcloud.common.profile.http_profile import HttpProfile  # type: ignore[import-untyped]
from tencentcloud.sms.v20210111 import models, sms_client  # type: ignore[import-untyped]

from gateway.notify.base import Channel, Notification, SendResult
from gateway.notify.channels.provider import (
    ChannelSettings,
    Provider,
    RequiredText,
    Text,
    host_of,
    off_machine,
    refuse_plaintext,
    warn_plaintext,
)

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "sms.tencentcloudapi.com"

# Raised by the SDK itself: no answer at all, or a non-200 HTTP status.
_TRANSPORT_CODES = frozenset({"ClientNetworkError", "ServerNetworkError"})
# Error-code prefixes (request-level ``Response.Error.Code`` or per-number ``SendStatusSet[].Code``)
# that pass with time. Everything else - FailedOperation.*, InvalidParameter(Value).*,
# UnauthorizedOperation.*, AuthFailure.*, unknown codes - fails the same way next time.
_RETRYABLE_PREFIXES = ("LimitExceeded.", "RequestLimitExceeded", "InternalError")
_LIMIT_RETRY_AFTER_S = 60.0   # a hint: the tightest per-number limit is 30 s


def is_retryable_code(code: str) -> bool:
    return code in _TRANSPORT_CODES or code.startswith(_RETRYABLE_PREFIXES)


def to_e164(phone: str, *, default_country: str = "86") -> str:
    """Tencent wants E.164; Chinese contacts are usually written as bare 11-digit numbers."""
    digits = re.sub(r"[\s-]", "", phone)
    if digits.startswith("+"):
        return digits
    if digits.startswith("00"):
        return "+" + digits[2:]
    if digits.startswith(default_country) and len(digits) == len(default_country) + 11:
        return "+" + digits
    return f"+{default_country}{digits}"


class TencentSms:
    """One ``SendSms`` call per notification; ``n.recipient`` is the phone number.

    Tencent templates are positional (``{1}``, ``{2}`` …): ``param_order`` names the
    ``template_params`` in template order; without it the mapping's own order is used.
    """

    def __init__(
        self,
        *,
        secret_id: str,
        secret_key: str,
        sdk_app_id: str,
        sign_name: str,
        template_id: str,
        param_order: Sequence[str] = (),
        name: str = "sms_tencent",
        region: str = "ap-guangzhou",
        endpoint: str = DEFAULT_ENDPOINT,
        protocol: str = "https",
        timeout_s: float = 5.0,
    ) -> None:
        self.name = name
        self._secret = secret_key
        self._sdk_app_id = sdk_app_id
        self._sign_name = sign_name
        self._template_id = template_id
        self._param_order = tuple(param_order)
        http = HttpProfile(endpoint=endpoint, protocol=protocol, reqTimeout=timeout_s)
        self._client: Any = sms_client.SmsClient(
            credential.Credential(secret_id, secret_key), region, ClientProfile(httpProfile=http)
        )

    def build_request(self, n: Notification) -> Any:
        """The SDK request model; raises KeyError when a template parameter is missing."""
        names = self._param_order or tuple(n.template_params)
        request = models.SendSmsRequest()
        request.PhoneNumberSet = [to_e164(n.recipient)]
        request.SmsSdkAppId = self._sdk_app_id
        request.SignName = self._sign_name
        request.TemplateId = self._template_id
        request.TemplateParamSet = [str(n.template_params[k]) for k in names]
        # Echoed back in the response and in delivery receipts: our idempotency key.
        request.SessionContext = n.key
        return request

    async def send(self, notification: Notification) -> SendResult:
        try:
            request = self.build_request(notification)
        except KeyError as exc:
            return SendResult.failed(f"template parameter {exc} missing")
        try:
            response = await asyncio.to_thread(self._client.SendSms, request)
        except TencentCloudSDKException as exc:
            result = self._from_error(str(exc.code or ""), str(exc.message or ""),
                                      exc.requestId)
        except Exception as exc:  # noqa: BLE001 - anything the SDK did not wrap is transport
            result = SendResult.retry(self._redact(f"{type(exc).__name__}: {exc}"))
        else:
            result = self._from_response(response)
        log.info("tencent sms %s key=%s: %s %s", self.name, notification.key, result.outcome,
                 result.detail)
        return result

    def _from_response(self, response: Any) -> SendResult:
        statuses = response.SendStatusSet or []
        if not statuses:
            return SendResult.retry(f"empty SendStatusSet (RequestId={response.RequestId})")
        status = statuses[0]   # one number per request
        if status.Code == "Ok":
            return SendResult.sent(status.SerialNo, f"RequestId={response.RequestId}")
        return self._from_error(str(status.Code or ""), str(status.Message or ""),
                                response.RequestId)

    def _from_error(self, code: str, message: str, request_id: Any) -> SendResult:
        detail = self._redact(f"{code}: {message[:300]} (RequestId={request_id})")
        if code in _TRANSPORT_CODES:
            return SendResult.retry(detail)
        if is_retryable_code(code):
            retry_after = _LIMIT_RETRY_AFTER_S if "LimitExceeded" in code else None
            return SendResult.retry(detail, retry_after)
        return SendResult.failed(detail)

    def _redact(self, text: str) -> str:
        # Error texts come from the SDK and the network stack; keep the key out of logs anyway.
        return text.replace(self._secret, "***") if len(self._secret) >= 4 else text

    async def close(self) -> None:
        """Nothing to release explicitly: the sync SDK has no close(); its requests session
        goes with the client. (The SDK's async client needs httpx, which is not installed.)"""


class TencentSmsSettings(ChannelSettings):
    sdk_app_id: RequiredText                # SmsSdkAppId, 1400…
    sign_name: RequiredText
    template_id: RequiredText
    param_order: Text = ""                  # template parameter names, comma-separated
    region: Text = "ap-guangzhou"
    endpoint: Text = DEFAULT_ENDPOINT
    protocol: Text = "https"
    timeout_s: float = 5.0                  # an SMS API that takes longer is better retried
    allow_plaintext: bool = False           # accept protocol http off this machine (warned)

    @model_validator(mode="after")
    def _no_cleartext(self) -> TencentSmsSettings:
        if self.cleartext and not self.allow_plaintext:
            raise ValueError(refuse_plaintext(
                "protocol 'http': the signed requests, phone numbers and ack links"))
        return self

    @property
    def cleartext(self) -> bool:
        return self.protocol.lower() == "http" and off_machine(host_of(self.endpoint))

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.param_order.split(",") if p.strip())


def build(name: str, settings: TencentSmsSettings, secrets: Mapping[str, str]) -> Channel:
    if settings.cleartext:
        warn_plaintext(name, "the signed requests, phone numbers and ack links")
    return TencentSms(secret_id=secrets["secret_id"], secret_key=secrets["secret_key"],
                      sdk_app_id=settings.sdk_app_id, sign_name=settings.sign_name,
                      template_id=settings.template_id, param_order=settings.params, name=name,
                      region=settings.region, endpoint=settings.endpoint,
                      protocol=settings.protocol, timeout_s=settings.timeout_s)


PROVIDER = Provider(TencentSmsSettings, build, secrets=("secret_id", "secret_key"))
