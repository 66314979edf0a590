"""Email channel against a local aiosmtpd server: plain, STARTTLS and implicit TLS, AUTH,
permanent and temporary refusals, and a server that is not there."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from gateway.notify.base import Notification, SendOutcome
from gateway.notify.channels.email import EmailChannel, SmtpSecurity, message_id

USER, PASSWORD = "alarm@park.example", "smtp-P4ssw0rd!"
SENDER = "ParkWatch 告警 <alarm@park.example>"
ACK = "https://pw.example/a/Xy7?t=1&s=2"

NOTE = Notification(
    key="alarm-42:raised:tenant-hs:email",
    channel="email",
    recipient="duty@tenant.example",
    title="【火警】一园 B3 2F 东 烟感报警",
    text="一园 B3 2F 东 烟感报警\n时间 03:00:12\n请立即处置。",
    ack_url=ACK,
)


@dataclass
class Collector:
    """An aiosmtpd handler that keeps what it accepts and refuses on demand."""

    rcpt_reply: str | None = None
    data_reply: str | None = None
    received: list[dict[str, Any]] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply:
            return self.data_reply
        self.received.append({
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "message": message_from_bytes(envelope.original_content, policy=policy.default),
            "tls": session.ssl is not None,
            "authenticated": session.authenticated,
        })
        return "250 Message accepted for delivery"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                  auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (USER.encode(), PASSWORD.encode())
    # handled=False: let aiosmtpd answer 535 itself.
    return AuthResult(success=ok, handled=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cryptography comes with the Aliyun SDK)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _server_tls(cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    return context


def _client_tls(cert: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert[0]))


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def smtp_plain(collector: Collector) -> Iterator[Controller]:
    """Plain SMTP with AUTH allowed without TLS: a LAN relay."""
    controller = Controller(collector, hostname="127.0.0.1", port=_free_port(),
                            authenticator=_authenticate, auth_require_tls=False)
    controller.start()
    yield controller
    controller.stop()


@pytest.fixture
def smtp_starttls(collector: Collector, cert: tuple[Path, Path]) -> Iterator[Controller]:
    controller = Controller(collector, hostname="127.0.0.1", port=_free_port(),
                            tls_context=_server_tls(cert), require_starttls=True,
                            authenticator=_authenticate, auth_require_tls=True)
    controller.start()
    yield controller
    controller.stop()


@pytest.fixture
def smtp_ssl(collector: Collector, cert: tuple[Path, Path]) -> Iterator[Controller]:
    controller = Controller(collector, hostname="127.0.0.1", port=_free_port(),
                            ssl_context=_server_tls(cert),
                            # aiosmtpd counts only STARTTLS as TLS for AUTH; this one is TLS
                            # from the first byte, so the check does not apply.
                            authenticator=_authenticate, auth_require_tls=False)
    controller.start()
    yield controller
    controller.stop()


def _channel(controller: Controller, *, security: SmtpSecurity = SmtpSecurity.NONE,
             password: str = PASSWORD, cert: tuple[Path, Path] | None = None) -> EmailChannel:
    return EmailChannel(host="127.0.0.1", port=controller.port, security=security,
                        username=USER, password=password, sender=SENDER, timeout_s=5,
                        ssl_context=_client_tls(cert) if cert else None)


def _parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    return str(text.get_content()), str(html.get_content())


async def test_email_delivers_headers_body_and_ack_link(
        smtp_plain: Controller, collector: Collector, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    result = await _channel(smtp_plain).send(NOTE)

    assert result.outcome is SendOutcome.SENT, result
    [got] = collector.received
    assert got["mail_from"] == "alarm@park.example"
    assert got["rcpt_tos"] == [NOTE.recipient]
    assert got["authenticated"]
    message = got["message"]
    assert message["To"] == NOTE.recipient
    assert message["From"] == SENDER
    assert message["Subject"] == NOTE.title
    assert message["Message-ID"] == message_id(NOTE.key, "park.example")
    assert result.provider_id == message["Message-ID"]
    assert message["Auto-Submitted"] == "auto-generated"
    text, html = _parts(message)
    assert "一园 B3 2F 东 烟感报警" in text
    assert ACK in text
    assert 'href="https://pw.example/a/Xy7?t=1&amp;s=2"' in html
    _assert_no_password(result.detail, caplog.text)


async def test_a_resend_carries_the_same_message_id(smtp_plain: Controller,
                                                    collector: Collector) -> None:
    channel = _channel(smtp_plain)
    await channel.send(NOTE)
    await channel.send(NOTE)
    other = Notification(key="alarm-43:raised:tenant-hs:email", channel="email",
                         recipient=NOTE.recipient, title="t", text="x")
    await channel.send(other)
    ids = [got["message"]["Message-ID"] for got in collector.received]
    assert ids[0] == ids[1] != ids[2]


async def test_email_starttls_with_auth(smtp_starttls: Controller, collector: Collector,
                                        cert: tuple[Path, Path]) -> None:
    channel = _channel(smtp_starttls, security=SmtpSecurity.STARTTLS, cert=cert)
    result = await channel.send(NOTE)
    assert result.outcome is SendOutcome.SENT, result
    assert collector.received[0]["tls"]
    assert collector.received[0]["authenticated"]


async def test_email_implicit_tls(smtp_ssl: Controller, collector: Collector,
                                  cert: tuple[Path, Path]) -> None:
    # This server speaks TLS from the first byte (aiosmtpd's session.ssl describes STARTTLS
    # only), so getting the message through at all proves the handshake.
    result = await _channel(smtp_ssl, security=SmtpSecurity.SSL, cert=cert).send(NOTE)
    assert result.outcome is SendOutcome.SENT, result
    assert len(collector.received) == 1


async def test_starttls_refused_by_server_is_failed_not_downgraded(
        smtp_plain: Controller, collector: Collector) -> None:
    result = await _channel(smtp_plain, security=SmtpSecurity.STARTTLS).send(NOTE)
    assert result.outcome is SendOutcome.FAILED
    assert collector.received == []


async def test_untrusted_certificate_is_retry(smtp_starttls: Controller) -> None:
    """The default context verifies the certificate; a mismatch is a TLS error (transient as
    far as the channel can tell: certificates get renewed)."""
    result = await _channel(smtp_starttls, security=SmtpSecurity.STARTTLS).send(NOTE)
    assert result.outcome is SendOutcome.RETRY
    assert "SSL" in result.detail


async def test_wrong_password_is_failed_and_not_leaked(
        smtp_plain: Controller, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    result = await _channel(smtp_plain, password="Wr0ng-Secret").send(NOTE)
    assert result.outcome is SendOutcome.FAILED
    assert "535" in result.detail
    assert "Wr0ng-Secret" not in result.detail + caplog.text


@pytest.mark.parametrize(
    ("rcpt", "data", "outcome"),
    [
        ("550 5.1.1 Mailbox unavailable", None, SendOutcome.FAILED),
        ("452 4.2.2 Mailbox full", None, SendOutcome.RETRY),
        (None, "451 4.3.0 Try again later", SendOutcome.RETRY),
        (None, "554 5.7.1 Rejected as spam", SendOutcome.FAILED),
    ],
)
async def test_smtp_reply_codes(smtp_plain: Controller, collector: Collector, rcpt: str | None,
                                data: str | None, outcome: SendOutcome) -> None:
    collector.rcpt_reply, collector.data_reply = rcpt, data
    result = await _channel(smtp_plain).send(NOTE)
    assert result.outcome is outcome, result
    assert (rcpt or data or "")[:3] in result.detail
    _assert_no_password(result.detail)


async def test_server_down_is_retry(caplog: pytest.LogCaptureFixture) -> None:
    channel = EmailChannel(host="127.0.0.1", port=_free_port(), security=SmtpSecurity.NONE,
                           username=USER, password=PASSWORD, sender=SENDER, timeout_s=2)
    result = await channel.send(NOTE)
    assert result.outcome is SendOutcome.RETRY
    _assert_no_password(result.detail, caplog.text)


def test_message_id_is_stable_and_opaque() -> None:
    assert message_id("k1", "d.example") == message_id("k1", "d.example")
    assert message_id("k1", "d.example") != message_id("k2", "d.example")
    assert "k1" not in message_id("k1", "d.example").split("@")[0]


def _assert_no_password(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text
