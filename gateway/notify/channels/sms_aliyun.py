"""Aliyun SMS (阿里云短信服务) ``SendSms`` via the official SDK ``alibabacloud_dysmsapi20170525``.

The SDK is synchronous (requests underneath), so each send runs in a worker thread. The SDK
signs with V3 ``ACS3-HMAC-SHA256`` by default (``Config.signature_algorithm`` unset); we leave it
so. Its built-in retry stays off (``Config.retry_options`` unset): retries belong to the outbox.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from alibabacloud_dysmsapi20170525 import models as sms_models  # type: ignore[import-untyped]
from alibabacloud_dysmsapi20170525.client import Client  # type: ignore[import-untyped]
from alibabacloud_tea_openapi import exceptions as ali_exc  # type: ignore[import-untyped]
from alibabacloud_tea_openapi.utils_models import Config  # type: ignore[import-untyped]
from darabonba.runtime import RuntimeOptions  # type: ignore[import-untyped]
from pydantic import model_validator

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

DEFAULT_ENDPOINT = "dysmsapi.aliyuncs.com"

# Flow control (per-number minute/hour/day limits, API throttling) and server-side trouble. They
# pass with time, so the outbox retries; its deadline and fallback channel bound the wait.
_RETRYABLE_CODES = frozenset({
    "isv.BUSINESS_LIMIT_CONTROL",
    "isv.DAY_LIMIT_CONTROL",
    "Throttling",
    "Throttling.User",
    "Throttling.Api",
    "Throttling.Concurrent",
    "ServiceUnavailable",
    "InternalError",
    "isp.SYSTEM_ERROR",
})
_URL_IN_ERROR = re.compile(r"url: \S+")
_FLOW_CONTROL_RETRY_AFTER_S = 60.0   # a hint: per-number limits are per minute at the finest


def _retry_after(code: str) -> float | None:
    return _FLOW_CONTROL_RETRY_AFTER_S if "LIMIT_CONTROL" in code or "Throttling" in code else None


def is_retryable_code(code: str) -> bool:
    """True when an Aliyun error code is worth retrying.

    Everything else (bad number, template or signature name, credentials, signature mismatch,
    account out of service) will fail the same way next time, so it is permanent.
    """
    return code in _RETRYABLE_CODES or code.startswith(("Throttling.", "isp."))


def _transport_detail(exc: BaseException) -> str:
    """The SDK wraps transport errors; their text repeats the request URL, whose query holds
    the phone number and template values - personal data that has no place in a detail."""
    inner = getattr(exc, "inner_exception", None) or exc
    text = _URL_IN_ERROR.sub("url: <request>", str(inner))
    return f"{type(inner).__name__}: {text[:300]}"


class AliyunSms:
    """One ``SendSms`` call per notification; ``n.recipient`` is the phone number."""

    def __init__(
        self,
        *,
        access_key_id: str,
        access_key_secret: str,
        sign_name: str,
        template_code: str,
        name: str = "sms_aliyun",
        endpoint: str = DEFAULT_ENDPOINT,
        protocol: str = "https",
        region_id: str = "cn-hangzhou",
        timeout_s: float = 5.0,
    ) -> None:
        self.name = name
        self._secret = access_key_secret
        self._sign_name = sign_name
        self._template_code = template_code
        timeout_ms = max(1, int(timeout_s * 1000))
        self._client: Any = Client(Config(
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            endpoint=endpoint,
            protocol=protocol,
            region_id=region_id,
            connect_timeout=timeout_ms,
            read_timeout=timeout_ms,
        ))

    def build_request(self, n: Notification) -> Any:
        params = dict(n.template_params)
        return sms_models.SendSmsRequest(
            phone_numbers=n.recipient,
            sign_name=self._sign_name,
            template_code=self._template_code,
            # The template's ${var}s as a JSON object; Chinese kept as-is (the API is UTF-8).
            template_param=json.dumps(params, ensure_ascii=False) if params else None,
            # Echoed in delivery receipts: ties a receipt back to our idempotency key.
            out_id=n.key,
        )

    async def send(self, notification: Notification) -> SendResult:
        request = self.build_request(notification)
        try:
            response = await asyncio.to_thread(
                self._client.send_sms_with_options, request, RuntimeOptions()
            )
        except ali_exc.AlibabaCloudException as exc:
            result = self._from_api_error(exc)
        except Exception as exc:  # noqa: BLE001 - network, timeouts, unparsable 5xx bodies
            result = SendResult.retry(self._redact(_transport_detail(exc)))
        else:
            result = self._from_body(response.body)
        log.info("aliyun sms %s key=%s: %s %s", self.name, notification.key, result.outcome,
                 result.detail)
        return result

    def _from_body(self, body: Any) -> SendResult:
        code = str(getattr(body, "code", "") or "")
        message = str(getattr(body, "message", "") or "")
        request_id = getattr(body, "request_id", None)
        if code == "OK":
            return SendResult.sent(getattr(body, "biz_id", None), f"RequestId={request_id}")
        detail = self._redact(f"{code}: {message} (RequestId={request_id})")
        if is_retryable_code(code):
            return SendResult.retry(detail, _retry_after(code))
        return SendResult.failed(detail)

    def _from_api_error(self, exc: Any) -> SendResult:
        """HTTP 4xx/5xx answers: the SDK raises with the error code from the JSON body."""
        code = str(exc.code or "")
        status = exc.status_code or 0
        detail = self._redact(f"HTTP {status} {code}: {exc.message}")
        if isinstance(exc, ali_exc.ThrottlingException):
            # x-acs-retry-after is in milliseconds (the SDK sleeps retry_after / 1000).
            return SendResult.retry(detail, (exc.retry_after or 0) / 1000 or None)
        if status >= 500 or status in (408, 429) or is_retryable_code(code):
            return SendResult.retry(detail, _retry_after(code))
        return SendResult.failed(detail)

    def _redact(self, text: str) -> str:
        # Belt and braces: nothing we build contains the secret, but error texts come from the
        # SDK and the network stack, and a detail ends up in logs and the audit trail.
        return text.replace(self._secret, "***") if len(self._secret) >= 4 else text

    async def close(self) -> None:
        """Nothing to release: the SDK pools connections per endpoint process-wide."""


class AliyunSmsSettings(ChannelSettings):
    sign_name: RequiredText                 # the approved signature (签名)
    template_code: RequiredText             # the approved template, SMS_…
    region: Text = "cn-hangzhou"
    endpoint: Text = DEFAULT_ENDPOINT
    protocol: Text = "https"
    timeout_s: float = 5.0                  # an SMS API that takes longer is better retried
    allow_plaintext: bool = False           # accept protocol http off this machine (warned)

    @model_validator(mode="after")
    def _no_cleartext(self) -> AliyunSmsSettings:
        if self.cleartext and not self.allow_plaintext:
            raise ValueError(refuse_plaintext(
                "protocol 'http': the access key signature, phone numbers and ack links"))
        return self

    @property
    def cleartext(self) -> bool:
        return self.protocol.lower() == "http" and off_machine(host_of(self.endpoint))


def build(name: str, settings: AliyunSmsSettings, secrets: Mapping[str, str]) -> Channel:
    if settings.cleartext:
        warn_plaintext(name, "the access key signature, phone numbers and ack links")
    return AliyunSms(access_key_id=secrets["access_key_id"],
                     access_key_secret=secrets["access_key_secret"],
                     sign_name=settings.sign_name, template_code=settings.template_code,
                     name=name, endpoint=settings.endpoint, protocol=settings.protocol,
                     region_id=settings.region, timeout_s=settings.timeout_s)


PROVIDER = Provider(AliyunSmsSettings, build, secrets=("access_key_id", "access_key_secret"))
