"""Channels from the routing config's ``channels:`` section, with secrets from the environment.

A channel entry names its provider ``type``, non-secret ``settings`` and, under ``secret_env``,
the environment variable holding each secret (or ``file:/path`` for a secret file). Secrets are
never read from YAML and never logged. :func:`build_channel` is the one place mapping ``type`` to
a channel class; ``--dry-run`` swaps every channel for a :class:`LoggingChannel`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.notify.base import Channel
from gateway.notify.channels.dryrun import LoggingChannel
from gateway.notify.routing import ChannelConfig, ChannelType, NotifyConfig
from sensors.errors import ConfigError


def read_secrets(name: str, cfg: ChannelConfig, env: Mapping[str, str],
                 source: str = "notify") -> dict[str, str]:
    """Every secret of one channel, or ConfigError naming the channel and the variable."""
    out: dict[str, str] = {}
    problems: list[str] = []
    for key, ref in cfg.secret_env.items():
        if ref.startswith("file:"):
            path = Path(ref.removeprefix("file:"))
            try:
                out[key] = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                problems.append(f"{source}: channel {name!r}: secret {key!r}: cannot read "
                                f"{path}: {exc.strerror}")
            continue
        value = env.get(ref)
        if not value:
            problems.append(f"{source}: channel {name!r}: secret {key!r}: environment "
                            f"variable {ref} is not set")
            continue
        out[key] = value
    if problems:
        raise ConfigError(source, problems)
    return out


def _str(settings: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = settings.get(key, default)
    return None if value is None else str(value)


def _need(name: str, values: Mapping[str, Any], key: str, source: str, what: str) -> str:
    value = values.get(key)
    if value in (None, ""):
        raise ConfigError(source, [f"{source}: channel {name!r}: {what} {key!r} is required"])
    return str(value)


def build_channel(name: str, cfg: ChannelConfig, *, env: Mapping[str, str],
                  source: str = "notify") -> Channel:
    """One configured channel, ready to send (no network I/O here)."""
    secrets = read_secrets(name, cfg, env, source)
    s = cfg.settings
    try:
        timeout = float(s.get("timeout_s", 10.0))  # type: ignore[arg-type]  # checked below
    except (TypeError, ValueError):
        raise ConfigError(source, [f"{source}: channel {name!r}: timeout_s must be a number"]
                          ) from None
    try:
        return _build(name, cfg.type, s, secrets, timeout, source)
    except ValueError as exc:       # a malformed URL or secret: a start-up error, not 3 a.m.
        raise ConfigError(source, [f"{source}: channel {name!r}: {exc}"]) from None


def _build(name: str, type_: ChannelType, s: Mapping[str, Any], secrets: Mapping[str, str],
           timeout: float, source: str) -> Channel:
    if type_ is ChannelType.WEBHOOK:
        from gateway.notify.channels.webhook import WebhookChannel

        url = secrets.get("url") or _need(name, s, "url", source, "setting")
        return WebhookChannel(url=url, secret=secrets.get("signing") or secrets.get("secret"),
                              timeout_s=timeout, name=name)
    if type_ in (ChannelType.DINGTALK, ChannelType.WECOM, ChannelType.FEISHU):
        from gateway.notify.channels.dingtalk import DingTalkChannel
        from gateway.notify.channels.feishu import FeishuChannel
        from gateway.notify.channels.wecom import WeComChannel

        cls: Any = {ChannelType.DINGTALK: DingTalkChannel, ChannelType.WECOM: WeComChannel,
                    ChannelType.FEISHU: FeishuChannel}[type_]
        url = _need(name, secrets, "url", source, "secret")
        channel: Channel = cls(url=url, secret=secrets.get("signing") or secrets.get("secret"),
                               timeout_s=timeout, base_url=_str(s, "base_url"), name=name)
        return channel
    if type_ is ChannelType.SMS_ALIYUN:
        from gateway.notify.channels.sms_aliyun import DEFAULT_ENDPOINT as ALIYUN_ENDPOINT
        from gateway.notify.channels.sms_aliyun import AliyunSms

        return AliyunSms(
            access_key_id=_need(name, secrets, "access_key_id", source, "secret"),
            access_key_secret=_need(name, secrets, "access_key_secret", source, "secret"),
            sign_name=_need(name, s, "sign_name", source, "setting"),
            template_code=_need(name, s, "template_code", source, "setting"),
            name=name, endpoint=_str(s, "endpoint", ALIYUN_ENDPOINT) or ALIYUN_ENDPOINT,
            protocol=_str(s, "protocol", "https") or "https",
            region_id=_str(s, "region", "cn-hangzhou") or "cn-hangzhou",
            timeout_s=float(s.get("timeout_s", 5.0)))
    if type_ is ChannelType.SMS_TENCENT:
        from gateway.notify.channels.sms_tencent import DEFAULT_ENDPOINT as TENCENT_ENDPOINT
        from gateway.notify.channels.sms_tencent import TencentSms

        order = _str(s, "param_order", "") or ""
        return TencentSms(
            secret_id=_need(name, secrets, "secret_id", source, "secret"),
            secret_key=_need(name, secrets, "secret_key", source, "secret"),
            sdk_app_id=_need(name, s, "sdk_app_id", source, "setting"),
            sign_name=_need(name, s, "sign_name", source, "setting"),
            template_id=_need(name, s, "template_id", source, "setting"),
            param_order=tuple(p.strip() for p in order.split(",") if p.strip()),
            name=name, region=_str(s, "region", "ap-guangzhou") or "ap-guangzhou",
            endpoint=_str(s, "endpoint", TENCENT_ENDPOINT) or TENCENT_ENDPOINT,
            protocol=_str(s, "protocol", "https") or "https",
            timeout_s=float(s.get("timeout_s", 5.0)))
    if type_ is ChannelType.SMS_HTTP:
        from pydantic import ValidationError

        from gateway.notify.channels.sms_http import HttpSms, HttpSmsSettings

        try:
            http = HttpSmsSettings.model_validate(dict(s))
        except ValidationError as exc:
            raise ConfigError(source, [f"{source}: channel {name!r}: {e['loc']}: {e['msg']}"
                                       for e in exc.errors()]) from None
        return HttpSms(settings=http, api_key=secrets.get("api_key", ""), name=name)
    if type_ is ChannelType.EMAIL:
        from gateway.notify.channels.email import EmailChannel, SmtpSecurity

        security = s.get("security")
        if security is None:
            port = s.get("port")
            security = ("starttls" if s.get("starttls", True) and port != 465
                        else "ssl" if port == 465 else "none")
        port_value = s.get("port")
        return EmailChannel(
            host=_need(name, s, "host", source, "setting"),
            sender=_need(name, s, "from", source, "setting"),
            port=int(port_value) if port_value is not None else None,
            security=SmtpSecurity(str(security)), username=secrets.get("username"),
            password=secrets.get("password"), name=name, timeout_s=timeout)
    raise ConfigError(source, [f"{source}: channel {name!r}: unknown type {type_!r}"])


def build_channels(cfg: NotifyConfig, *, env: Mapping[str, str], source: str = "notify",
                   dry_run: bool = False) -> dict[str, Channel]:
    """Every configured channel; every missing secret reported at once."""
    out: dict[str, Channel] = {}
    problems: list[str] = []
    for name, ch in cfg.channels.items():
        if dry_run:
            out[name] = LoggingChannel(name=name, kind=ch.kind.value)
            continue
        try:
            out[name] = build_channel(name, ch, env=env, source=source)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(source, problems)
    return out
