"""``parkwatch notify test --channel NAME``: one test message through one configured channel,
sent directly (not through the outbox), so an operator can check credentials and addresses."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from gateway.notify.base import Channel, Notification, SendResult
from gateway.notify.channels.registry import build_channel
from gateway.notify.routing import ChannelKind, NotifyConfig, load_notify_config
from gateway.notify.templates import render
from sensors.errors import ConfigError

_ROUTING_KEYS = {"channels", "contacts", "route", "escalation", "tenants", "inhibit"}


def is_routing_file(path: Path) -> bool:
    """A routing file has ``notify: {channels: …}``; a gateway config has ``notify:
    {webhook_url, config, …}``."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    notify = doc.get("notify") if isinstance(doc, dict) else None
    return isinstance(notify, dict) and bool(_ROUTING_KEYS & set(notify))


def make_test_notification(name: str, kind: ChannelKind, *, to: str = "", lang: str = "zh-CN",
                      tz: dt.tzinfo = dt.UTC) -> Notification:
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    doc: dict[str, Any] = {
        "alarm_id": "test", "rule": "test", "state": "firing", "severity": "info",
        "park": "test", "building": "-", "message": "ParkWatch test message / 测试消息",
        "fired_at": now, "started_at": now}
    text = render(kind, lang, doc, ack_url=None, tz=tz)
    return Notification(key=f"test:{uuid.uuid4().hex}", channel=name, recipient=to,
                        title=f"ParkWatch test: {text.title}", text=text.text, alarm=doc,
                        template_params=text.template_params)


def _routing(config: Path | None) -> tuple[NotifyConfig, str, dict[str, Channel]]:
    """The routing config named by ``config`` (a routing file or a gateway config), plus any
    catch-all webhook the gateway config defines."""
    if config is not None and is_routing_file(config):
        return load_notify_config(config), str(config), {}
    from gateway.config import load_settings
    from gateway.notify.channels.webhook import WebhookChannel

    settings = load_settings(config)
    extra: dict[str, Channel] = {}
    ns = settings.notify
    if ns.webhook_url:
        secret = ns.webhook_secret.get_secret_value() if ns.webhook_secret else None
        extra["webhook"] = WebhookChannel(url=ns.webhook_url, secret=secret)
    if ns.config is None:
        return NotifyConfig(), str(config or "(defaults)"), extra
    return load_notify_config(ns.config), str(ns.config), extra


async def send_test(config: Path | None, channel_name: str, *, to: str | None = None,
                    env: Mapping[str, str] | None = None) -> SendResult:
    """Build one channel from the config and send it a test message; ConfigError if the
    channel is unknown or a secret is missing."""
    cfg, source, extra = _routing(config)
    env = os.environ if env is None else env
    if channel_name in cfg.channels:
        ch_cfg = cfg.channels[channel_name]
        for other in extra.values():
            await other.close()
        channel = build_channel(channel_name, ch_cfg, env=env, source=source)
        kind = ch_cfg.kind
    elif channel_name in extra:
        channel, kind = extra.pop(channel_name), ChannelKind.WEBHOOK
        for other in extra.values():
            await other.close()
    else:
        known = sorted([*cfg.channels, *extra]) or ["(none configured)"]
        raise ConfigError(source, [f"{source}: no channel {channel_name!r}; known: "
                                   f"{', '.join(known)}"])
    if kind in (ChannelKind.SMS, ChannelKind.EMAIL) and not to:
        await channel.close()
        raise ConfigError(source, [f"{source}: channel {channel_name!r} is {kind.value}: "
                                   "give a recipient with --to"])
    n = make_test_notification(channel_name, kind, to=to or "")
    started = time.monotonic()
    try:
        result = await channel.send(n)
    finally:
        await channel.close()
    elapsed = time.monotonic() - started
    detail = f"{result.detail}; {elapsed * 1000:.0f} ms" if result.detail else \
        f"{elapsed * 1000:.0f} ms"
    return SendResult(result.outcome, detail, result.retry_after_s, result.provider_id)
