"""Email over SMTP with the standard library, one connection per message in a worker thread.

``smtplib`` is blocking; a connection per message keeps the adapter stateless (alarm email is
rare, and a long-lived SMTP session would need keep-alive and reconnect logic of its own).
The ``Message-ID`` is derived from the idempotency key, so a duplicate (a retry after a lost
reply) carries the same id and mail clients and servers can recognise it.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import html
import logging
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from pydantic import Field

from gateway.notify.base import Channel, Notification, SendResult
from gateway.notify.channels.provider import (
    ChannelSettings,
    Provider,
    RequiredText,
    off_machine,
    refuse_plaintext,
    warn_plaintext,
)

log = logging.getLogger(__name__)

_ACK_LABEL = "确认 / Acknowledge"


class SmtpSecurity(enum.StrEnum):
    NONE = "none"            # plain SMTP; only for a relay on localhost or a trusted LAN
    STARTTLS = "starttls"    # submission, port 587; refuses to continue in plain text
    SSL = "ssl"              # implicit TLS, port 465

    @property
    def default_port(self) -> int:
        return {"none": 25, "starttls": 587, "ssl": 465}[self.value]


def message_id(key: str, domain: str) -> str:
    """The same key always gives the same Message-ID; a hash keeps the key's contents (alarm id,
    recipient) out of a header every relay logs, and keeps it a valid msg-id."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}.parkwatch@{domain}>"


def build_message(n: Notification, *, sender: str) -> EmailMessage:
    domain = parseaddr(sender)[1].rpartition("@")[2] or "parkwatch.invalid"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = n.recipient
    msg["Subject"] = n.title
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = message_id(n.key, domain)
    msg["Auto-Submitted"] = "auto-generated"   # RFC 3834: no vacation replies to an alarm
    text = n.text
    if n.ack_url and n.ack_url not in text:
        text = f"{text}\n\n{_ACK_LABEL}: {n.ack_url}"
    msg.set_content(text)
    msg.add_alternative(_html(n), subtype="html")
    return msg


def _html(n: Notification) -> str:
    paragraphs = "".join(
        f"<p>{html.escape(line)}</p>" for line in n.text.splitlines() if line.strip()
    )
    link = ""
    if n.ack_url:
        href = html.escape(n.ack_url, quote=True)
        link = (f'<p><a href="{href}" style="display:inline-block;padding:10px 18px;'
                f'background:#c0392b;color:#fff;text-decoration:none;border-radius:4px">'
                f"{_ACK_LABEL}</a></p><p style=\"font-size:small\">{href}</p>")
    return (f'<!doctype html><html><body><h3>{html.escape(n.title)}</h3>'
            f"{paragraphs}{link}</body></html>")


def _classify_code(code: int, detail: str) -> SendResult:
    # RFC 5321: 4yz is a transient failure, 5yz a permanent one.
    if 400 <= code < 500:
        return SendResult.retry(detail)
    return SendResult.failed(detail)


class EmailChannel:
    """One SMTP transaction per notification; ``n.recipient`` is the address."""

    def __init__(
        self,
        *,
        host: str,
        sender: str,
        port: int | None = None,
        security: SmtpSecurity = SmtpSecurity.STARTTLS,
        username: str | None = None,
        password: str | None = None,
        name: str = "email",
        timeout_s: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self._host = host
        self._port = port or security.default_port
        self._security = security
        self._username = username
        self._password = password or ""
        self._sender = sender
        self._timeout_s = timeout_s
        self._ssl_context = ssl_context or ssl.create_default_context()

    async def send(self, notification: Notification) -> SendResult:
        msg = build_message(notification, sender=self._sender)
        try:
            await asyncio.to_thread(self._deliver, msg, notification.recipient)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            result = _classify_code(code, self._redact(f"recipient refused: {code} {reply!r}"))
        except smtplib.SMTPNotSupportedError as exc:
            # STARTTLS or AUTH missing on the server: a configuration error, never a downgrade.
            result = SendResult.failed(self._redact(f"{type(exc).__name__}: {exc}"))
        except smtplib.SMTPResponseException as exc:
            result = _classify_code(
                exc.smtp_code,
                self._redact(f"{type(exc).__name__}: {exc.smtp_code} {exc.smtp_error!r}"),
            )
        except (OSError, smtplib.SMTPException) as exc:
            # Refused/reset connections, timeouts, TLS failures, a server hanging up.
            result = SendResult.retry(self._redact(f"{type(exc).__name__}: {exc}"))
        else:
            result = SendResult.sent(msg["Message-ID"], "250 accepted")
        log.info("email %s key=%s: %s %s", self.name, notification.key, result.outcome,
                 result.detail)
        return result

    def _deliver(self, msg: EmailMessage, recipient: str) -> None:
        """Blocking; runs in a worker thread. Never turns on smtplib's debug output, which
        would print the AUTH exchange (the password, base64-encoded) to stderr."""
        smtp: smtplib.SMTP
        if self._security is SmtpSecurity.SSL:
            smtp = smtplib.SMTP_SSL(self._host, self._port, timeout=self._timeout_s,
                                    context=self._ssl_context)
        else:
            smtp = smtplib.SMTP(self._host, self._port, timeout=self._timeout_s)
        with smtp:
            if self._security is SmtpSecurity.STARTTLS:
                smtp.starttls(context=self._ssl_context)
            if self._username:
                smtp.login(self._username, self._password)
            smtp.send_message(msg, from_addr=parseaddr(self._sender)[1], to_addrs=[recipient])

    def _redact(self, text: str) -> str:
        return text.replace(self._password, "***") if len(self._password) >= 4 else text

    async def close(self) -> None:
        """Nothing to release: each message uses its own connection."""


class EmailSettings(ChannelSettings):
    host: RequiredText
    sender: RequiredText = Field(alias="from")
    port: int | None = None                 # None: the security mode's standard port
    security: SmtpSecurity | None = None    # None: from `starttls` and `port`, see below
    starttls: bool = True
    timeout_s: float = 10.0
    allow_plaintext: bool = False           # accept a password without TLS off this machine

    @property
    def cleartext(self) -> bool:
        return self.effective_security() is SmtpSecurity.NONE and off_machine(self.host)

    def effective_security(self) -> SmtpSecurity:
        """``security`` if given; else port 465 means implicit TLS, and otherwise STARTTLS
        unless ``starttls: false`` (the older way of saying ``security: none``)."""
        if self.security is not None:
            return self.security
        if self.port == 465:
            return SmtpSecurity.SSL
        return SmtpSecurity.STARTTLS if self.starttls else SmtpSecurity.NONE


def build(name: str, settings: EmailSettings, secrets: Mapping[str, str]) -> Channel:
    # The password is a secret from the environment, so this is the first place that sees both.
    if settings.cleartext and secrets.get("password"):
        if not settings.allow_plaintext:
            raise ValueError(refuse_plaintext("security 'none' with a password: the SMTP "
                                              "password"))
        warn_plaintext(name, "the SMTP password")
    return EmailChannel(host=settings.host, sender=settings.sender, port=settings.port,
                        security=settings.effective_security(),
                        username=secrets.get("username"), password=secrets.get("password"),
                        name=name, timeout_s=settings.timeout_s)


PROVIDER = Provider(EmailSettings, build)
