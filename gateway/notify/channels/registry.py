"""Channels from the routing config's ``channels:`` section, with secrets from the environment.

A channel entry names its provider ``type``, non-secret ``settings`` and, under ``secret_env``,
the environment variable holding each secret (or ``file:/path`` for a secret file). Secrets are
never read from YAML and never logged. :data:`PROVIDERS` is the one place mapping ``type`` to a
provider module; each module validates its own settings (see :mod:`.provider`). ``--dry-run``
swaps every channel for a :class:`~gateway.notify.channels.dryrun.LoggingChannel`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gateway.notify.base import Channel
from gateway.notify.channels.dryrun import LoggingChannel
from gateway.notify.channels.provider import Provider
from gateway.notify.routing import ChannelConfig, ChannelType, NotifyConfig
from sensors.errors import ConfigError

# One loader per provider, each a plain import of a fixed module: imported on first use (the
# cloud SMS SDKs take a second to import, and a park that uses neither should not pay for it),
# and no name from configuration ever chooses the code that is imported.


def _sms_aliyun() -> Provider[Any]:
    from gateway.notify.channels import sms_aliyun
    return sms_aliyun.PROVIDER


def _sms_tencent() -> Provider[Any]:
    from gateway.notify.channels import sms_tencent
    return sms_tencent.PROVIDER


def _sms_http() -> Provider[Any]:
    from gateway.notify.channels import sms_http
    return sms_http.PROVIDER


def _dingtalk() -> Provider[Any]:
    from gateway.notify.channels import dingtalk
    return dingtalk.PROVIDER


def _wecom() -> Provider[Any]:
    from gateway.notify.channels import wecom
    return wecom.PROVIDER


def _feishu() -> Provider[Any]:
    from gateway.notify.channels import feishu
    return feishu.PROVIDER


def _email() -> Provider[Any]:
    from gateway.notify.channels import email
    return email.PROVIDER


def _webhook() -> Provider[Any]:
    from gateway.notify.channels import webhook
    return webhook.PROVIDER


#: The one place mapping a channel type to its provider.
PROVIDERS: Mapping[ChannelType, Callable[[], Provider[Any]]] = {
    ChannelType.SMS_ALIYUN: _sms_aliyun,
    ChannelType.SMS_TENCENT: _sms_tencent,
    ChannelType.SMS_HTTP: _sms_http,
    ChannelType.DINGTALK: _dingtalk,
    ChannelType.WECOM: _wecom,
    ChannelType.FEISHU: _feishu,
    ChannelType.EMAIL: _email,
    ChannelType.WEBHOOK: _webhook,
}


def provider(type_: ChannelType) -> Provider[Any]:
    """The provider record of one channel type (importing its module)."""
    return PROVIDERS[type_]()


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


def settings_problem(error: ErrorDetails, known: Mapping[str, Any]) -> str:
    """One pydantic error as a line about a setting (the caller adds source and channel)."""
    loc = ".".join(str(part) for part in error["loc"])
    if not loc:   # a rule across several settings: its message names them
        return str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing" or error["type"] == "string_too_short":
        return f"setting {loc!r} is required"   # absent or empty: the same to an operator
    if error["type"] == "extra_forbidden":
        return f"unknown setting {loc!r} (known: {', '.join(sorted(known))})"
    return f"setting {loc!r}: {str(error['msg']).removeprefix('Value error, ')}"


def build_channel(name: str, cfg: ChannelConfig, *, env: Mapping[str, str],
                  source: str = "notify") -> Channel:
    """One configured channel, ready to send (no network I/O here); every problem of the
    channel (unset variable, missing secret, bad or unknown setting) is reported at once."""
    where = f"{source}: channel {name!r}"
    entry = provider(cfg.type)
    problems: list[str] = []
    try:
        secrets = read_secrets(name, cfg, env, source)
    except ConfigError as exc:
        problems.extend(exc.problems)
        secrets = {}
    # A secret whose variable is unset was reported just now; name only those never given.
    problems.extend(f"{where}: secret {key!r} is required" for key in entry.secrets
                    if not secrets.get(key) and (key in secrets or key not in cfg.secret_env))
    try:
        settings = entry.settings.model_validate(cfg.settings)
    except ValidationError as exc:
        known = {f.alias or k: f for k, f in entry.settings.model_fields.items()}
        problems.extend(f"{where}: {settings_problem(e, known)}" for e in exc.errors())
    if problems:
        raise ConfigError(source, problems)
    try:
        return entry.build(name, settings, secrets)
    except ValueError as exc:       # a malformed URL or secret: a start-up error, not 3 a.m.
        raise ConfigError(source, [f"{where}: {exc}"]) from None


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
