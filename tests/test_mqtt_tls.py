"""MQTT security against a real mosquitto: TLS, passwords, client certificates and the device ACL.

One broker per module with three listeners on loopback:

- plain (the devservices default, used for the password tests),
- TLS with a server certificate from a test CA; login by password,
- TLS that requires a client certificate and takes its CN as the user name.

Logins come from a ``mosquitto_passwd`` file and topics are limited by the reference ACL of
docs/security.md (a device may write only below its own id; the gateway reads everything).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.config import MqttSettings
from gateway.errors import MqttError
from gateway.ingest.mqtt import MqttSession, _Connection
from gateway.metrics import Metrics
from gateway.tools.devservices import Influxd, Mosquitto, free_port
from sensors.registry import Device, Registry
from tests.support.acl import REFERENCE_ACL
from tests.support.gateway import make_settings, running_gateway
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

GATEWAY_USER = "parkwatch"
GATEWAY_PASSWORD = "gw-Pa55-for-tests"
DEVICE_A, DEVICE_B = "smk-0001", "smk-0002"
DEVICE_PASSWORD = {DEVICE_A: "dev-a-secret", DEVICE_B: "dev-b-secret"}
TOPIC_A = f"parks/p1/b1/{DEVICE_A}/telemetry"
TOPIC_B = f"parks/p1/b1/{DEVICE_B}/telemetry"

# Test only: a user that sees everything, to prove what the broker let through.
AUDITOR, AUDITOR_PASSWORD = "auditor", "auditor-secret"
TEST_ACL = REFERENCE_ACL + f"\nuser {AUDITOR}\ntopic read #\n"


# --- a test PKI ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    other_ca: Path          # a CA that signed nothing the broker presents

    def client(self, name: str) -> tuple[Path, Path]:
        return self.ca.parent / f"{name}.crt", self.ca.parent / f"{name}.key"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


def _ca(directory: Path, cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write(directory / f"{cn}.crt", cert, key)
    return cert, key


def _leaf(directory: Path, cn: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
          *, server: bool) -> None:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca[0].subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.SERVER_AUTH if server
                    else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    _write(directory / f"{cn}.crt", builder.sign(ca[1], hashes.SHA256()), key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = _ca(d, "parkwatch-test-ca")
    _ca(d, "someone-elses-ca")
    _leaf(d, "broker", ca, server=True)
    for client in (GATEWAY_USER, DEVICE_A, DEVICE_B):
        _leaf(d, client, ca, server=False)
    return Pki(ca=d / "parkwatch-test-ca.crt", server_cert=d / "broker.crt",
               server_key=d / "broker.key", other_ca=d / "someone-elses-ca.crt")


# --- the broker ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SecureBroker:
    plain_port: int
    tls_port: int
    cert_port: int


def _registry_devices(registry: Registry) -> list[Device]:
    """Two sample-park devices that get broker logins (user = device id, password pw-{id})."""
    return [d for d in registry if d.kind == "water_pressure"][:2]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki,
           sample_registry: Registry) -> Iterator[SecureBroker]:
    if shutil.which("mosquitto_passwd") is None:
        pytest.fail("mosquitto_passwd not found: apt-get install mosquitto-clients or mosquitto")
    d = tmp_path_factory.mktemp("secure-mosquitto")
    passwd = d / "passwd"
    passwd.touch(mode=0o600)
    users = [(GATEWAY_USER, GATEWAY_PASSWORD), (AUDITOR, AUDITOR_PASSWORD),
             *DEVICE_PASSWORD.items(),
             *((d.device, "pw-" + d.device) for d in _registry_devices(sample_registry))]
    for user, password in users:
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True,
                       capture_output=True)
    acl = d / "acl"
    acl.write_text(TEST_ACL)
    tls_port, cert_port = free_port(), free_port()
    tls = f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
    # Later global options win over the devservices defaults (allow_anonymous true).
    conf = (f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n"
            f"listener {tls_port} 127.0.0.1\n{tls}require_certificate false\n"
            f"listener {cert_port} 127.0.0.1\n{tls}require_certificate true\n"
            "use_identity_as_username true\n")
    mosquitto = Mosquitto(d, extra_conf=conf)
    mosquitto.start()
    yield SecureBroker(plain_port=mosquitto.port, tls_port=tls_port, cert_port=cert_port)
    mosquitto.stop()


# --- a bare paho client for the device side ------------------------------------------------------

class Client:
    """A blocking paho client on its own thread, recording what happens to it."""

    def __init__(self, port: int, *, user: str | None = None, password: str | None = None,
                 ca: Path | None = None, cert: tuple[Path, Path] | None = None) -> None:
        self.connack: queue.Queue[ReasonCode] = queue.Queue()
        self.subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.pubacks: dict[int, ReasonCode] = {}
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._puback_event = threading.Condition()
        self.c = paho.Client(CallbackAPIVersion.VERSION2,
                             client_id=f"test-{user or cert_cn(cert)}-{port}",
                             protocol=MQTTProtocolVersion.MQTTv5)
        if user is not None:
            self.c.username_pw_set(user, password)
        if ca is not None:
            self.c.tls_set(ca_certs=str(ca), certfile=str(cert[0]) if cert else None,
                           keyfile=str(cert[1]) if cert else None)
        self.c.on_connect = lambda c, u, f, rc, p: self.connack.put(rc)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(list(rcs))
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.c.on_publish = self._on_publish
        self.port = port

    def _on_publish(self, c: Any, u: Any, mid: int, rc: ReasonCode, p: Any) -> None:
        with self._puback_event:
            self.pubacks[mid] = rc
            self._puback_event.notify_all()

    def __enter__(self) -> Client:
        self.c.connect("127.0.0.1", self.port)
        self.c.loop_start()
        rc = self.connack.get(timeout=20)
        assert not rc.is_failure, f"login refused: {rc}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.c.disconnect()
        self.c.loop_stop()

    def subscribe(self, topic: str) -> ReasonCode:
        self.c.subscribe(topic, options=SubscribeOptions(qos=1))
        return self.subacks.get(timeout=20)[0]

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """Publish QoS 1 and return the PUBACK reason (mosquitto answers a denied publish with
        success to MQTT 3 clients and 'Not authorized' or success to MQTT 5, so the tests judge
        by what subscribers receive)."""
        mid = self.c.publish(topic, payload, qos=1).mid
        with self._puback_event:
            assert self._puback_event.wait_for(lambda: mid in self.pubacks, timeout=20)
            return self.pubacks[mid]


def cert_cn(cert: tuple[Path, Path] | None) -> str:
    return cert[0].stem if cert else "anonymous"


def _next_message(client: Client) -> tuple[str, bytes]:
    return client.messages.get(timeout=20)


# --- the gateway's session ------------------------------------------------------------------------

async def _session_connects(settings: MqttSettings, subscriptions: list[str]) -> MqttSession:
    session = MqttSession(settings=settings, client_id=f"gw-{free_port()}",
                          subscriptions=subscriptions, metrics=Metrics())
    await session.__aenter__()
    try:
        await session.wait_connected(timeout_s=30)
    except BaseException:
        await session.close()
        raise
    return session


def _settings(url: str, **kwargs: Any) -> MqttSettings:
    return MqttSettings.model_validate({"url": url, "reconnect_min_s": 0.1,
                                        "reconnect_max_s": 0.5, "keepalive_s": 10, **kwargs})


async def _receives(session: MqttSession, device: Client, topic: str, payload: bytes) -> None:
    """The device publishes and the session's inbox gets exactly that message."""
    rc = await asyncio.to_thread(device.publish, topic, payload)
    assert not rc.is_failure, rc
    async for batch in session.batches(100):
        assert [(m.topic, m.payload) for m in batch][:1] == [(topic, payload)]
        session.puback_all(batch)
        return


async def test_gateway_over_tls_with_ca_and_password(broker: SecureBroker, pki: Pki) -> None:
    settings = _settings(f"mqtts://{GATEWAY_USER}:{GATEWAY_PASSWORD}@127.0.0.1:{broker.tls_port}",
                         tls={"ca_file": str(pki.ca)})
    assert settings.tls_enabled
    assert settings.password is not None
    session = await _session_connects(settings, [TOPIC_A])
    try:
        with Client(broker.tls_port, user=DEVICE_A, password=DEVICE_PASSWORD[DEVICE_A],
                    ca=pki.ca) as device:
            await _receives(session, device, TOPIC_A, b'{"smoke": 0.1}')
    finally:
        await session.close()


async def test_gateway_with_client_certificate(broker: SecureBroker, pki: Pki) -> None:
    cert, key = pki.client(GATEWAY_USER)
    # No password at all: the certificate's CN is the login, and the ACL applies to it.
    settings = _settings(f"mqtts://localhost:{broker.cert_port}",
                         tls={"ca_file": str(pki.ca), "cert_file": str(cert),
                              "key_file": str(key)})
    session = await _session_connects(settings, [TOPIC_A])
    try:
        with Client(broker.cert_port, ca=pki.ca, cert=pki.client(DEVICE_A)) as device:
            await _receives(session, device, TOPIC_A, b'{"smoke": 0.2}')
    finally:
        await session.close()


async def _fails_and_retries(caplog: pytest.LogCaptureFixture, settings: MqttSettings,
                             expected: str) -> str:
    """The session logs ``expected`` and keeps trying (two reconnects) without connecting."""
    caplog.set_level(logging.INFO, logger="gateway.ingest.mqtt")
    metrics = Metrics()
    session = MqttSession(settings=settings, client_id=f"gw-{free_port()}", subscriptions=[],
                          metrics=metrics)
    async with session:
        def failed_twice() -> bool:
            hits = [r for r in caplog.records if expected in r.getMessage()]
            return len(hits) >= 2 and metrics.value("parkwatch_mqtt_reconnects_total") >= 2
        await wait_for(failed_twice, timeout_s=60, what=f"two failures logging {expected!r}")
        assert not session.connected
        assert all(not t.done() for t in session._tasks), "the connection loop must keep going"
    return next(r.getMessage() for r in caplog.records if expected in r.getMessage())


async def test_wrong_ca_fails_clearly(broker: SecureBroker, pki: Pki,
                                      caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(f"mqtts://{GATEWAY_USER}:{GATEWAY_PASSWORD}@127.0.0.1:{broker.tls_port}",
                         tls={"ca_file": str(pki.other_ca)})
    message = await _fails_and_retries(caplog, settings, "certificate is not trusted")
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert "mqtt.tls.ca_file" in message
    assert GATEWAY_PASSWORD not in caplog.text


async def test_plain_mqtt_to_the_tls_port_fails_clearly(
        broker: SecureBroker, caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(f"mqtt://{GATEWAY_USER}:{GATEWAY_PASSWORD}@127.0.0.1:{broker.tls_port}")
    message = await _fails_and_retries(caplog, settings, "closed before the broker answered")
    assert "use mqtts://" in message
    assert GATEWAY_PASSWORD not in caplog.text


async def test_tls_to_a_plain_port_fails_clearly(broker: SecureBroker, pki: Pki,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(f"mqtts://127.0.0.1:{broker.plain_port}", tls={"ca_file": str(pki.ca)})
    await _fails_and_retries(caplog, settings, "TLS handshake failed")


async def test_missing_client_certificate_fails_clearly(
        broker: SecureBroker, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(f"mqtts://127.0.0.1:{broker.cert_port}", tls={"ca_file": str(pki.ca)})
    # TLS 1.3 reports the missing certificate after the handshake, 1.2 during it.
    caplog.set_level(logging.INFO, logger="gateway.ingest.mqtt")
    metrics = Metrics()
    async with MqttSession(settings=settings, client_id=f"gw-{free_port()}", subscriptions=[],
                           metrics=metrics) as session:
        await wait_for(lambda: metrics.value("parkwatch_mqtt_reconnects_total") >= 2, timeout_s=60,
                       what="two failed attempts")
        assert not session.connected
    assert "client certificate" in caplog.text


async def test_wrong_password_is_refused_clearly_and_retried(
        broker: SecureBroker, caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(f"mqtt://{GATEWAY_USER}:not-the-password@127.0.0.1:{broker.plain_port}")
    message = await _fails_and_retries(caplog, settings, "refused the connection")
    assert "Not authorized" in message
    assert "mqtt.username/mqtt.password" in message
    assert "not-the-password" not in caplog.text


def test_unreadable_tls_files_stop_the_session_with_a_config_message(tmp_path: Path) -> None:
    settings = _settings("mqtts://127.0.0.1:8883", tls={"ca_file": str(tmp_path / "none.crt")})

    async def build() -> None:
        MqttSession(settings=settings, client_id="x", subscriptions=[], metrics=Metrics())

    with pytest.raises(MqttError, match="cannot load MQTT TLS files"):
        asyncio.run(build())


# --- the device ACL ------------------------------------------------------------------------------

def test_device_cannot_publish_to_another_devices_topic(broker: SecureBroker) -> None:
    with Client(broker.plain_port, user=GATEWAY_USER, password=GATEWAY_PASSWORD) as gateway, \
            Client(broker.plain_port, user=DEVICE_A, password=DEVICE_PASSWORD[DEVICE_A]) as a:
        assert not gateway.subscribe("parks/#").is_failure
        a.publish(TOPIC_B, b"spoofed by A")
        # Order on one connection is kept: once A's own message arrives, the spoof would have
        # arrived before it if the broker had let it through.
        a.publish(TOPIC_A, b"A's own")
        assert _next_message(gateway) == (TOPIC_A, b"A's own")
        assert gateway.messages.empty()


def test_device_cannot_subscribe_to_other_devices(broker: SecureBroker) -> None:
    with Client(broker.plain_port, user=DEVICE_A, password=DEVICE_PASSWORD[DEVICE_A]) as a, \
            Client(broker.plain_port, user=DEVICE_B, password=DEVICE_PASSWORD[DEVICE_B]) as b, \
            Client(broker.plain_port, user=GATEWAY_USER, password=GATEWAY_PASSWORD) as gateway:
        # mosquitto 2.0 may grant the SUBACK; the ACL is applied to every message delivered.
        a.subscribe(TOPIC_B)
        a.subscribe("parks/#")
        assert not gateway.subscribe(TOPIC_B).is_failure
        b.publish(TOPIC_B, b"B's reading")
        assert _next_message(gateway) == (TOPIC_B, b"B's reading")
        # The broker routed B's message to every subscriber at once. A round trip on A's own
        # connection (publish + PUBACK) arrives after anything queued to A before it.
        a.publish(TOPIC_A, b"flush")
        assert a.messages.empty()


def test_device_certificate_identity_is_its_acl_user(broker: SecureBroker, pki: Pki) -> None:
    """With use_identity_as_username the certificate's CN is %u: the same ACL applies."""
    with Client(broker.cert_port, ca=pki.ca, cert=pki.client(GATEWAY_USER)) as gateway, \
            Client(broker.cert_port, ca=pki.ca, cert=pki.client(DEVICE_A)) as a:
        assert not gateway.subscribe("parks/#").is_failure
        a.publish(TOPIC_B, b"spoofed over TLS")
        a.publish(TOPIC_A, b"own over TLS")
        assert _next_message(gateway) == (TOPIC_A, b"own over TLS")
        assert gateway.messages.empty()


def test_device_may_not_write_gateway_topics(broker: SecureBroker) -> None:
    with Client(broker.plain_port, user=AUDITOR, password=AUDITOR_PASSWORD) as auditor, \
            Client(broker.plain_port, user=DEVICE_A, password=DEVICE_PASSWORD[DEVICE_A]) as a:
        assert not auditor.subscribe("#").is_failure
        a.publish("parkwatch/alarms/p1/b1/x/fire", b"fake alarm")
        a.publish("parkwatch/gateway/parkwatch/status", b"offline")
        a.publish(f"parks/p1/b1/{DEVICE_A}/config", b"not a device topic")
        a.publish(TOPIC_A, b"marker")
        assert _next_message(auditor) == (TOPIC_A, b"marker")
        assert auditor.messages.empty()


async def test_a_real_gateway_under_the_reference_acl(
        tmp_path: Path, broker: SecureBroker, pki: Pki, influxd: Influxd,
        sample_registry: Registry) -> None:
    """TLS + password + the ACL: readings flow, the gateway's own topics are writable, a device
    cannot feed the gateway another device's readings."""
    own, other = _registry_devices(sample_registry)
    settings = make_settings(
        tmp_path, mqtt_url=f"mqtts://127.0.0.1:{broker.tls_port}", influx_url=influxd.url,
        mqtt={"topic_root": "parks", "username": GATEWAY_USER, "password": GATEWAY_PASSWORD,
              "tls": {"ca_file": str(pki.ca)}})

    def topic(dev: Device) -> str:
        return f"parks/{dev.park}/{dev.building}/{dev.device}/telemetry"

    reading = json.dumps({"ts": int(time.time()), "values": {"pressure_mpa": 0.31}}).encode()
    with Client(broker.plain_port, user=AUDITOR, password=AUDITOR_PASSWORD) as auditor:
        auditor.subscribe(f"parkwatch/gateway/{settings.instance}/status")
        async with running_gateway(settings, sample_registry) as gw:
            assert await asyncio.to_thread(_next_message, auditor) == (
                f"parkwatch/gateway/{settings.instance}/status", b"online")
            with Client(broker.tls_port, user=own.device, password="pw-" + own.device,
                        ca=pki.ca) as device:
                await asyncio.to_thread(device.publish, topic(other), reading)
                await asyncio.to_thread(device.publish, topic(own), reading)
            await wait_for(lambda: own.device in gw.latest, timeout_s=30,
                           what="the device's own reading accepted")
            assert gw.metrics.value("parkwatch_messages_received_total", type="telemetry") == 1
            assert other.device not in gw.latest
            assert own.device in gw.latest


async def test_insecure_skip_verify_connects_to_an_untrusted_broker(broker: SecureBroker,
                                                                   pki: Pki) -> None:
    """For a first test only: a certificate from an unknown CA is accepted."""
    settings = _settings(f"mqtts://{GATEWAY_USER}:{GATEWAY_PASSWORD}@127.0.0.1:{broker.tls_port}",
                         tls={"ca_file": str(pki.other_ca), "insecure_skip_verify": True})
    session = await _session_connects(settings, [])
    await session.close()


def test_tls_settings_need_an_mqtts_url(pki: Pki) -> None:
    with pytest.raises(ValueError, match="not mqtts://"):
        _settings("mqtt://broker:1883", tls={"ca_file": str(pki.ca)})
    with pytest.raises(ValueError, match="key_file without cert_file"):
        _settings("mqtts://broker", tls={"key_file": "k.pem"})
    assert _settings("mqtts://broker").port == 8883
    assert _settings("mqtt://broker").port == 1883


async def test_a_write_on_a_closed_tls_transport_is_dropped(broker: SecureBroker,
                                                            pki: Pki) -> None:
    """connection_lost comes a loop turn after the close; a write in between (the session's
    CONNECT) must not reach the stdlib TLS transport, which raises once closed twice."""
    settings = _settings(f"mqtts://127.0.0.1:{broker.tls_port}", tls={"ca_file": str(pki.ca)})
    session = MqttSession(settings=settings, client_id=f"gw-{free_port()}", subscriptions=[],
                          metrics=Metrics())
    conn = _Connection(session, 5)
    transport, _ = await asyncio.get_running_loop().create_connection(
        lambda: conn, "127.0.0.1", broker.tls_port, ssl=session._tls_context,
        server_hostname="127.0.0.1")
    conn.close()
    conn.close()          # a second close, as a shutting-down session may do
    transport.close()     # and the transport's own second close
    assert not conn.lost
    conn.write(b"\xc0\x00")   # PINGREQ: dropped, not an AttributeError
    await wait_for(lambda: conn.lost, timeout_s=10, what="connection_lost")
