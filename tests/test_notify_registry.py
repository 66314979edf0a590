"""The channel registry: every type has a provider, and a bad setting is a clear start-up error."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.notify.channels.email import EmailChannel, SmtpSecurity
from gateway.notify.channels.provider import Provider
from gateway.notify.channels.registry import PROVIDERS, build_channel, provider
from gateway.notify.channels.sms_tencent import TencentSms
from gateway.notify.routing import ChannelConfig, ChannelType
from sensors.errors import ConfigError
from tests.support.notify_servers import DINGTALK_URL

ENV = {"T_URL": DINGTALK_URL, "T_ID": "id", "T_KEY": "key-1234"}


def _build(type_: str, settings: dict[str, Any], secret_env: dict[str, str] | None = None) -> Any:
    cfg = ChannelConfig.model_validate({"type": type_, "settings": settings,
                                        "secret_env": secret_env or {}})
    return build_channel("ops", cfg, env=ENV, source="notify.yaml")


def _problems(type_: str, settings: dict[str, Any],
              secret_env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        _build(type_, settings, secret_env)
    return err.value.problems


@pytest.mark.parametrize("type_", list(ChannelType))
def test_every_channel_type_has_a_provider_with_a_strict_frozen_model(
        type_: ChannelType) -> None:
    assert type_ in PROVIDERS
    entry = provider(type_)
    assert isinstance(entry, Provider)
    assert entry.settings.model_config.get("extra") == "forbid"
    assert entry.settings.model_config.get("frozen") is True


def test_an_unknown_setting_names_the_channel_the_key_and_what_is_known() -> None:
    problems = _problems("dingtalk", {"base_ur": "http://127.0.0.1:1"}, {"url": "T_URL"})
    assert problems == ["notify.yaml: channel 'ops': unknown setting 'base_ur' "
                        "(known: base_url, timeout_s)"]


def test_every_problem_of_a_channel_is_reported_at_once() -> None:
    problems = _problems("sms_tencent", {"sign_name": "", "sdk_app_id": 1400000000,
                                         "timeout_s": "soon"}, {"secret_id": "T_ID"})
    assert problems == [
        "notify.yaml: channel 'ops': secret 'secret_key' is required",
        "notify.yaml: channel 'ops': setting 'sign_name' is required",
        "notify.yaml: channel 'ops': setting 'template_id' is required",
        "notify.yaml: channel 'ops': setting 'timeout_s': Input should be a valid number, "
        "unable to parse string as a number"]


def test_an_unset_variable_is_not_also_reported_as_a_missing_secret() -> None:
    problems = _problems("dingtalk", {}, {"url": "T_NOT_SET"})
    assert problems == ["notify.yaml: channel 'ops': secret 'url': environment variable "
                        "T_NOT_SET is not set"]


def test_numbers_are_taken_as_text_and_blank_means_default() -> None:
    channel = _build("sms_tencent", {"sign_name": "园区消防", "template_id": 1001,
                                     "sdk_app_id": 1400000000, "region": "",
                                     "param_order": "rule, building"},
                     {"secret_id": "T_ID", "secret_key": "T_KEY"})
    assert isinstance(channel, TencentSms)
    assert (channel._sdk_app_id, channel._template_id) == ("1400000000", "1001")
    assert channel._param_order == ("rule", "building")
    assert channel._client.region == "ap-guangzhou"


@pytest.mark.parametrize(("settings", "security", "port"), [
    ({}, SmtpSecurity.STARTTLS, 587),
    ({"port": 465}, SmtpSecurity.SSL, 465),
    ({"port": 465, "starttls": True}, SmtpSecurity.SSL, 465),
    ({"starttls": False}, SmtpSecurity.NONE, 25),
    ({"starttls": False, "port": 2525}, SmtpSecurity.NONE, 2525),
    ({"security": "ssl", "port": 1465}, SmtpSecurity.SSL, 1465),
])
def test_email_security_follows_port_and_starttls_unless_given(
        settings: dict[str, Any], security: SmtpSecurity, port: int) -> None:
    channel = _build("email", {"host": "smtp.example.cn", "from": "pw@example.cn", **settings})
    assert isinstance(channel, EmailChannel)
    assert (channel._security, channel._port) == (security, port)
