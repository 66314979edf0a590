"""Transports that would carry a secret in clear text are refused unless explicitly allowed, and
an allowed one is warned about at start (issue 13, point 9). Loopback targets are exempt."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from gateway.config import (
    HttpSettings,
    InfluxSettings,
    MqttSettings,
    NotifySettings,
    Settings,
    load_settings,
)
from gateway.notify.channels.registry import build_channel
from gateway.notify.routing import ChannelConfig
from gateway.tools.devservices import Influxd, Mosquitto
from sensors.errors import ConfigError
from sensors.registry import Registry
from tests.support.gateway import make_settings, running_gateway

# --- gateway settings -----------------------------------------------------------------------------

def test_plain_mqtt_with_a_password_off_the_machine(tmp_path: Path) -> None:
    cfg = tmp_path / "pw.yaml"
    cfg.write_text("mqtt:\n  url: mqtt://broker.park.example\n  username: pw\n"
                   "  password: s3cret-pass\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    text = str(err.value)
    assert f"{cfg}:2: mqtt:" in text or f"{cfg}:1: mqtt:" in text
    assert "mqtt.allow_plaintext" in text
    assert "mqtts://" in text
    assert "s3cret-pass" not in text
    with pytest.raises(ValidationError, match="allow_plaintext"):
        MqttSettings(url="mqtt://u:pw@10.0.0.5:1883")
    allowed = MqttSettings(url="mqtt://u:pw@10.0.0.5:1883", allow_plaintext=True)
    assert "mqtt.allow_plaintext" in Settings(mqtt=allowed).plaintext_warnings()[0]
    # Not refused: TLS, loopback, or nothing secret to carry.
    for ok in ("mqtts://u:pw@broker.park.example", "mqtt://u:pw@127.0.0.1:1883",
               "mqtt://u:pw@localhost", "mqtt://broker.park.example"):
        assert Settings(mqtt=MqttSettings(url=ok)).plaintext_warnings() == []


@pytest.mark.parametrize("secret", [{"token": "tok-0123456789"}, {"username": "u",
                                                                  "password": "p-0123456789"}])
def test_plain_influx_with_a_secret_off_the_machine(secret: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=r"influx\.allow_plaintext"):
        InfluxSettings(url="http://influx.park.example:8086", **secret)
    allowed = InfluxSettings(url="http://influx.park.example:8086", allow_plaintext=True,
                             **secret)
    assert "influx.allow_plaintext" in Settings(influx=allowed).plaintext_warnings()[0]
    for ok in ("https://influx.park.example:8086", "http://127.0.0.1:8086", "http://[::1]:8086"):
        assert Settings(influx=InfluxSettings(url=ok, **secret)).plaintext_warnings() == []
    assert InfluxSettings(url="http://influx.park.example:8086").url   # nothing secret


def test_plain_public_url(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"notify\.allow_plaintext_public_url"):
        NotifySettings(public_url="http://pw.park.example")
    allowed = NotifySettings(public_url="http://pw.park.example",
                             allow_plaintext_public_url=True)
    settings = Settings(notify=allowed, http=HttpSettings(token=SecretStr("t" * 20)))
    assert "notify.allow_plaintext_public_url" in settings.plaintext_warnings()[0]
    assert NotifySettings(public_url="https://pw.park.example").public_url
    assert NotifySettings(public_url="http://127.0.0.1:8080").public_url
    with pytest.raises(ValidationError, match="http:// or https://"):
        NotifySettings(public_url="pw.park.example")


@pytest.mark.integration
async def test_an_allowed_plaintext_setting_is_logged_at_start(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry,
        caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                             notify={"public_url": "http://pw.park.example",
                                     "allow_plaintext_public_url": True},
                             http={"token": "t" * 20})
    with caplog.at_level(logging.WARNING):
        async with running_gateway(settings, sample_registry):
            pass
    assert "insecure setting in use: notify.allow_plaintext_public_url" in caplog.text


# --- channels in the routing file ----------------------------------------------------------------

ENV = {"ID": "id", "KEY": "key-0123456789", "PW": "smtp-pass-123", "API": "api-key-123"}


def _build(type_: str, settings: dict[str, Any], secret_env: dict[str, str]) -> Any:
    cfg = ChannelConfig.model_validate({"type": type_, "settings": settings,
                                        "secret_env": secret_env})
    return build_channel("ops", cfg, env=ENV, source="notify.yaml")


ALIYUN = ("sms_aliyun", {"sign_name": "园区", "template_code": "SMS_1",
                         "endpoint": "dysmsapi.aliyuncs.com"},
          {"access_key_id": "ID", "access_key_secret": "KEY"})
TENCENT = ("sms_tencent", {"sdk_app_id": "1400000000", "sign_name": "园区", "template_id": "1",
                           "endpoint": "sms.tencentcloudapi.com"},
           {"secret_id": "ID", "secret_key": "KEY"})
SMS_HTTP = ("sms_http", {"url": "https://sms.example.cn/send", "fields": {"m": "$phone"}},
            {"api_key": "API"})
EMAIL = ("email", {"host": "smtp.park.example", "from": "pw@park.example", "security": "none"},
         {"username": "ID", "password": "PW"})


@pytest.mark.parametrize(("channel", "cleartext", "needle"), [
    (ALIYUN, {"protocol": "http"}, "protocol 'http'"),
    (TENCENT, {"protocol": "HTTP"}, "protocol 'http'"),
    (SMS_HTTP, {"url": "http://sms.example.cn/send"}, "url is http://"),
    (EMAIL, {}, "security 'none' with a password"),
    (EMAIL, {"starttls": False, "security": None}, "security 'none' with a password"),
])
def test_cleartext_channels_need_allow_plaintext(
        channel: tuple[str, dict[str, Any], dict[str, str]], cleartext: dict[str, Any],
        needle: str, caplog: pytest.LogCaptureFixture) -> None:
    type_, settings, secret_env = channel
    plain = {k: v for k, v in {**settings, **cleartext}.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        _build(type_, plain, secret_env)
    [problem] = err.value.problems
    assert problem.startswith("notify.yaml: channel 'ops': ")
    assert needle in problem
    assert "allow_plaintext: true" in problem
    assert not any(secret in problem for secret in ENV.values())
    with caplog.at_level(logging.WARNING):
        _build(type_, {**plain, "allow_plaintext": True}, secret_env)
    assert "channel 'ops': allow_plaintext is set" in caplog.text


@pytest.mark.parametrize(("channel", "fine"), [
    (ALIYUN, {}), (TENCENT, {"protocol": "https"}),
    (ALIYUN, {"protocol": "http", "endpoint": "127.0.0.1:8099"}),
    (SMS_HTTP, {"url": "http://127.0.0.1:9/send"}),
    (EMAIL, {"security": "starttls"}), (EMAIL, {"host": "127.0.0.1"}),
])
def test_tls_or_loopback_channels_are_accepted_silently(
        channel: tuple[str, dict[str, Any], dict[str, str]], fine: dict[str, Any],
        caplog: pytest.LogCaptureFixture) -> None:
    type_, settings, secret_env = channel
    with caplog.at_level(logging.WARNING):
        _build(type_, {**settings, **fine}, secret_env)
    assert "allow_plaintext" not in caplog.text


def test_smtp_without_tls_and_without_a_password_is_fine() -> None:
    _build("email", EMAIL[1], {})
