"""SMS through a generic HTTP gateway described in config (many local vendors offer only that).

The request is data: a method, a URL, and fields whose values are ``string.Template`` strings
over the notification (``$phone $text $title $key $ack_url $api_key`` and the SMS template
parameters by name), sent as a JSON object, a form, or (GET) a query string. Success is a 2xx
status and, optionally, a value at a dotted path in the JSON answer (``code == 0``).
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Mapping
from string import Template
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from gateway.notify.base import Channel, Notification, SendResult
from gateway.notify.channels.provider import (
    Provider,
    host_of,
    off_machine,
    refuse_plaintext,
    warn_plaintext,
)

log = logging.getLogger(__name__)

Scalar = str | int | float | bool


class BodyFormat(enum.StrEnum):
    JSON = "json"
    FORM = "form"


class HttpSmsSettings(BaseModel):
    """One vendor's HTTP SMS API. Example (YAML)::

        url: https://sms.example.cn/api/send
        body_format: json
        headers: {X-Api-Key: $api_key}
        fields: {mobile: $phone, content: $text, msgid: $key}
        success_path: code
        success_value: 0
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    method: Literal["GET", "POST", "PUT"] = "POST"
    body_format: BodyFormat = BodyFormat.JSON    # ignored for GET: fields go in the query
    fields: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    api_key: SecretStr | None = None             # available to templates as $api_key
    success_path: str | None = None              # dotted path into the JSON answer
    success_value: Scalar | None = None
    retry_values: list[Scalar] = Field(default_factory=list)   # e.g. the vendor's "too fast"
    id_path: str | None = None                   # the vendor's message id, for the audit trail
    retry_statuses: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})
    timeout_s: float = Field(default=10.0, gt=0)
    allow_plaintext: bool = False                # accept an http:// url off this machine (warned)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _no_cleartext(self) -> HttpSmsSettings:
        if self.cleartext and not self.allow_plaintext:
            raise ValueError(refuse_plaintext(
                "url is http://: the API key, phone numbers and ack links"))
        return self

    @property
    def cleartext(self) -> bool:
        return urlsplit(self.url).scheme == "http" and off_machine(host_of(self.url))

    @field_validator("fields", "headers")
    @classmethod
    def _valid_templates(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not Template(text).is_valid():
                raise ValueError(f"{key}: invalid $-template {text!r} (write $$ for a dollar)")
        return value


def json_path(document: Any, path: str) -> Any:
    """``a.b.0.c`` into nested objects and lists; a KeyError when it is not there."""
    node = document
    for part in path.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(path)
    return node


def _same(value: Any, expected: Scalar) -> bool:
    # Vendors disagree on 0 vs "0"; compare as text too, but never let True pass for 1.
    if isinstance(value, bool) or isinstance(expected, bool):
        return value is expected or str(value).lower() == str(expected).lower()
    return bool(value == expected) or str(value) == str(expected)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return max(0.0, float(headers.get("Retry-After", "")))
    except ValueError:
        return None   # an HTTP date: rare for SMS vendors; the outbox's own backoff applies


class HttpSms:
    """One HTTP request per notification, shaped by :class:`HttpSmsSettings`."""

    def __init__(
        self,
        *,
        settings: HttpSmsSettings,
        api_key: str = "",
        name: str = "sms_http",
        url: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.name = name
        self._settings = settings
        self._api_key = api_key
        self._url = url or settings.url             # endpoint override (tests)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s or settings.timeout_s)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: HttpSmsSettings, *, name: str = "sms_http") -> HttpSms:
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        return cls(settings=settings, api_key=key, name=name)

    def _values(self, n: Notification) -> dict[str, str]:
        values = {str(k): str(v) for k, v in n.template_params.items()}
        values.update(phone=n.recipient, text=n.text, title=n.title, key=n.key,
                      ack_url=n.ack_url or "", api_key=self._api_key)
        return values

    def build_request(self, n: Notification) -> dict[str, Any]:
        """Keyword arguments for ``ClientSession.request``; KeyError for an unknown $name."""
        values = self._values(n)
        fields = {k: Template(v).substitute(values) for k, v in self._settings.fields.items()}
        headers = {k: Template(v).substitute(values) for k, v in self._settings.headers.items()}
        request: dict[str, Any] = {"method": self._settings.method, "url": self._url,
                                   "headers": headers}
        if self._settings.method == "GET":
            request["params"] = fields
        elif self._settings.body_format is BodyFormat.JSON:
            request["json"] = fields
        else:
            request["data"] = fields
        return request

    async def send(self, notification: Notification) -> SendResult:
        try:
            request = self.build_request(notification)
        except KeyError as exc:
            return SendResult.failed(f"template field {exc} has no value")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.request(**request) as response:
                body = await response.text(errors="replace")
                result = self._classify(response.status, response.headers, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            result = SendResult.retry(self._redact(f"{type(exc).__name__}: {exc}"))
        log.info("http sms %s key=%s: %s %s", self.name, notification.key, result.outcome,
                 result.detail)
        return result

    def _classify(self, status: int, headers: Mapping[str, str], body: str) -> SendResult:
        detail = self._redact(f"HTTP {status}: {body[:200]}")
        if status in self._settings.retry_statuses:
            return SendResult.retry(detail, _retry_after(headers))
        if not 200 <= status < 300:
            return SendResult.failed(detail)
        document: Any = None
        if self._settings.success_path or self._settings.id_path:
            try:
                document = json.loads(body)
            except ValueError:
                return SendResult.failed(f"answer is not JSON: {detail}")
        return self._judge(document, detail)

    def _judge(self, document: Any, detail: str) -> SendResult:
        s = self._settings
        if s.success_path is not None:
            try:
                value = json_path(document, s.success_path)
            except KeyError:
                return SendResult.failed(f"no {s.success_path} in answer: {detail}")
            if any(_same(value, v) for v in s.retry_values):
                return SendResult.retry(detail)
            if s.success_value is not None and not _same(value, s.success_value):
                return SendResult.failed(detail)
        provider_id = None
        if s.id_path is not None:
            try:
                provider_id = str(json_path(document, s.id_path))
            except KeyError:
                provider_id = None   # accepted anyway: the id is only for the audit trail
        return SendResult.sent(provider_id, detail)

    def _redact(self, text: str) -> str:
        # A vendor may echo the request (key included) in an error page.
        return text.replace(self._api_key, "***") if len(self._api_key) >= 4 else text

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def build(name: str, settings: HttpSmsSettings, secrets: Mapping[str, str]) -> Channel:
    if settings.cleartext:
        warn_plaintext(name, "the API key, phone numbers and ack links")
    # The key comes from secret_env; routing refuses an `api_key` among the settings.
    return HttpSms(settings=settings, api_key=secrets.get("api_key", ""), name=name)


PROVIDER = Provider(HttpSmsSettings, build)
