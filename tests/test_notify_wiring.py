"""Routing, escalation, fallback, dry run and ``notify test`` wired into the running gateway.

The end-to-end test runs the real gateway on a real broker and InfluxDB, with the tenant's
contact on a DingTalk robot and the duty officer / park manager on webhooks, all served by the
local provider fakes of tests/support/notify_servers.py (which check signatures like the real APIs).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from gateway.metrics import Metrics
from gateway.notify.base import Notification, SendResult
from gateway.notify.channels.dryrun import LoggingChannel
from gateway.notify.channels.registry import build_channels
from gateway.notify.dispatcher import Dispatcher
from gateway.notify.notifier import DEADLINE_MS, Notifier
from gateway.notify.outbox import Outbox, outbox_row
from gateway.notify.routing import NotifyConfig, load_notify_config
from gateway.notify.testsend import send_test
from gateway.tools.cli import main
from gateway.tools.devservices import Influxd, Mosquitto
from gateway.tools.simulator.publisher import MqttPublisher
from rules.alarm import AlarmState, Disposition
from sensors.errors import ConfigError
from sensors.registry import Registry
from tests.support.alarmstores import StoreTarget
from tests.support.gateway import make_settings, running_gateway
from tests.support.ids import unique
from tests.support.influx import influx_rows
from tests.support.mqtt import Collector
from tests.support.notify import (
    DT_SECRET,
    WH_SECRET,
    routing,
    set_channel_env,
    webhook_bodies,
    write_notify_config,
)
from tests.support.notify_servers import DINGTALK_URL, ProviderServer
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.integration
async def test_fire_reaches_tenant_robot_and_duty_webhook_once_escalates_and_ack_stops_it(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry,
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with ProviderServer(dingtalk_secret=DT_SECRET, webhook_secret=WH_SECRET) as srv:
        set_channel_env(monkeypatch, srv)
        config = write_notify_config(tmp_path, routing(srv.url))
        settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                                 notify={"config": str(config)})
        smoke = next(d for d in sample_registry if d.tenant == "hs-elec" and d.kind == "smoke")
        topic = f"{settings.mqtt.topic_root}/{smoke.park}/{smoke.building}/{smoke.device}/event"
        async with running_gateway(settings, sample_registry) as gw, \
                MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("n")) as pub:
            for _ in range(2):  # the same fire alarm twice: one alarm, one message per channel
                await pub.publish(topic, json.dumps(
                    {"ts": time.time(), "type": "fire_alarm", "point": "1-01-001"}).encode())
            await pub.flush(10)
            await wait_for(lambda: len(srv.of("dingtalk")) >= 1
                           and bool(webhook_bodies(srv, "/duty")),
                           timeout_s=10, what="tenant robot and duty webhook paged")
            # Nobody acknowledges: the park manager is paged after escalate_after_s.
            await wait_for(lambda: bool(webhook_bodies(srv, "/manager")), timeout_s=10,
                           what="escalation to the park manager")
            robot = srv.of("dingtalk")
            assert len(robot) == 1
            assert robot[0].problem is None
            assert "li-hs" not in robot[0].body.decode()      # names stay out of the text
            duty, manager = webhook_bodies(srv, "/duty"), webhook_bodies(srv, "/manager")
            assert [(d["rule"], d["state"]) for d in duty] == [("fire_alarm", "firing")]
            assert [(d["rule"], d["state"]) for d in manager] == [("fire_alarm", "firing")]
            assert all(r.problem is None for r in srv.of("webhook"))
            alarm_id = duty[0]["alarm_id"]

            # Acknowledge through the service (as the API and the ack page do).
            assert gw.alarm_service is not None
            acked = await gw.alarm_service.acknowledge(
                alarm_id, by="li-hs", disposition=Disposition.REAL, channel="api")
            assert acked.state is AlarmState.ACKNOWLEDGED
            # Webhooks (systems) hear of the acknowledgement; people are not paged again.
            await wait_for(lambda: len(webhook_bodies(srv, "/duty")) >= 2
                           and len(webhook_bodies(srv, "/manager")) >= 2,
                           timeout_s=10, what="acknowledgement delivered to the webhooks")
            assert gw.notifier is not None
            # Escalation stopped: nothing falls due however long nobody else answers.
            assert gw.notifier.tick(int(time.time() * 1000) + 3_600_000) == []
            counts = await gw.notifier.outbox.counts()
        assert counts == {"sent": 5}
        assert len(srv.of("dingtalk")) == 1
        assert [d["state"] for d in webhook_bodies(srv, "/duty")] == ["firing", "acknowledged"]
        assert [d["state"] for d in webhook_bodies(srv, "/manager")] == ["firing", "acknowledged"]


def test_channel_secrets_come_from_the_environment_and_a_missing_one_is_named(
        tmp_path: Path) -> None:
    cfg = load_notify_config(ROOT / "config" / "notify.example.yaml")
    with pytest.raises(ConfigError) as err:
        build_channels(cfg, env={}, source="notify.yaml")
    text = "\n".join(err.value.problems)
    assert "channel 'ops_dingtalk'" in text
    assert "PARKWATCH_DINGTALK_OPS_URL" in text
    assert "PARKWATCH_SMS_ALIYUN_ACCESS_KEY_SECRET" in text
    env = {"PARKWATCH_SMS_ALIYUN_ACCESS_KEY_ID": "id",
           "PARKWATCH_SMS_ALIYUN_ACCESS_KEY_SECRET": "s",
           "PARKWATCH_SMS_TENCENT_SECRET_ID": "id", "PARKWATCH_SMS_TENCENT_SECRET_KEY": "k",
           "PARKWATCH_DINGTALK_OPS_URL": DINGTALK_URL, "PARKWATCH_DINGTALK_OPS_SECRET": DT_SECRET,
           "PARKWATCH_SMTP_USER": "u", "PARKWATCH_SMTP_PASSWORD": "p",
           "PARKWATCH_BMS_WEBHOOK_URL": "http://127.0.0.1:9/bms",
           "PARKWATCH_BMS_WEBHOOK_SECRET": WH_SECRET}
    channels = build_channels(cfg, env=env)
    assert set(channels) == set(cfg.channels)
    assert {type(c).__name__ for c in channels.values()} == {
        "AliyunSms", "TencentSms", "DingTalkChannel", "EmailChannel", "WebhookChannel"}
    dry = build_channels(cfg, env={}, dry_run=True)
    assert all(isinstance(c, LoggingChannel) for c in dry.values())


class _Failing:
    name = "primary"

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, notification: Notification) -> SendResult:
        self.calls += 1
        return SendResult.failed("number blocked")

    async def close(self) -> None:
        return None


async def test_a_permanent_failure_goes_to_the_fallback_channel_once(
        alarm_target: StoreTarget) -> None:
    primary, backup = _Failing(), LoggingChannel(name="backup")
    audit: list[str] = []

    async def write(lines: list[str]) -> None:
        audit.extend(lines)

    async with alarm_target.store() as store:
        outbox = Outbox(store)
        dispatcher = Dispatcher(outbox=outbox, channels={"primary": primary, "backup": backup},
                                metrics=Metrics(), audit=write, fallbacks={"primary": "backup"})
        now = int(time.time() * 1000)
        n = Notification(key="a1:firing:0:0:li:primary", channel="primary",
                         recipient="+8613800000011", title="t", text="fire")
        await store.apply([], outbox=[outbox_row(n, now_ms=now, due_ms=now,
                                                 deadline_ms=now + DEADLINE_MS,
                                                 fire_class=True)])
        task = asyncio.create_task(dispatcher.run())
        try:
            await wait_for(lambda: len(backup.sent) == 1, timeout_s=5, what="fallback sent")
            await wait_for(lambda: _counts_are(outbox, {"failed": 1, "sent": 1}),
                           timeout_s=5, what="outbox settled")
        finally:
            task.cancel()
            await dispatcher.drain(1)
    assert primary.calls == 1
    assert backup.sent[0].key == "a1:firing:0:0:li:primary:fallback"
    assert backup.sent[0].recipient == "+8613800000011"
    assert len(audit) == 2


async def _counts_are(outbox: Outbox, want: dict[str, int]) -> bool:
    return await outbox.counts() == want


async def test_notifier_without_routing_file_keeps_only_the_catch_all(
        tmp_path: Path, alarm_target: StoreTarget) -> None:
    settings = make_settings(tmp_path, mqtt_url="mqtt://127.0.0.1:1", influx_url="http://x:1",
                             notify={"webhook_url": "http://127.0.0.1:9/hook", "dry_run": True})
    async with alarm_target.store() as store:
        notifier = Notifier.from_settings(settings, store=store, metrics=Metrics(),
                                          audit=_noop_audit)
        assert notifier is not None
        assert notifier.config is None
        assert list(notifier.channels) == ["webhook"]
        assert isinstance(notifier.channels["webhook"], LoggingChannel)
        await notifier.open()
        assert notifier.tick(0) == []
        assert Notifier.from_settings(make_settings(tmp_path, mqtt_url="mqtt://127.0.0.1:1",
                                                    influx_url="http://x:1"),
                                      store=store, metrics=Metrics(), audit=_noop_audit) is None


async def _noop_audit(lines: list[str]) -> None:
    return None


async def test_notify_test_sends_through_one_channel(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    async with ProviderServer(dingtalk_secret=DT_SECRET, webhook_secret=WH_SECRET) as srv:
        set_channel_env(monkeypatch, srv)
        config = write_notify_config(tmp_path, routing(srv.url))
        result = await send_test(config, "robot")
        assert result.outcome.value == "sent", result.detail
        assert len(srv.of("dingtalk")) == 1
        assert srv.of("dingtalk")[0].problem is None
        with pytest.raises(ConfigError, match="no channel 'nope'"):
            await send_test(config, "nope")
        monkeypatch.delenv("T_DUTY_URL")
        with pytest.raises(ConfigError, match="T_DUTY_URL"):
            await send_test(config, "duty_hook")


def test_notify_test_cli_reports_a_missing_secret(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = write_notify_config(tmp_path, routing("http://127.0.0.1:9"))
    assert main(["notify", "test", "--channel", "robot", "--config", str(config)]) == 2
    assert "T_DT_URL" in capsys.readouterr().err


def test_run_accepts_dry_run() -> None:
    from gateway.tools.cli import _parser

    args = _parser().parse_args(["run", "--dry-run"])
    assert args.dry_run is True


@pytest.mark.integration
async def test_the_ack_link_in_a_robot_message_acknowledges_once(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    import aiohttp

    from gateway.http.app import start_http
    from gateway.tools.devservices import free_port

    async with ProviderServer(dingtalk_secret=DT_SECRET, webhook_secret=WH_SECRET) as srv:
        set_channel_env(monkeypatch, srv)
        config = write_notify_config(tmp_path, routing(srv.url, escalate_after_s=600))
        port = free_port()
        settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                                 notify={"config": str(config),
                                         "ack_secret": "s3cret-s3cret-s3cret"},
                                 http={"enabled": True, "port": port})
        smoke = next(d for d in sample_registry if d.tenant == "hs-elec" and d.kind == "smoke")
        topic = f"{settings.mqtt.topic_root}/{smoke.park}/{smoke.building}/{smoke.device}/event"
        async with running_gateway(settings, sample_registry) as gw:
            runner = await start_http(gw, "127.0.0.1", port)
            try:
                async with MqttPublisher("127.0.0.1", mosquitto.port,
                                         client_id=unique("a")) as pub:
                    await pub.publish(topic, json.dumps(
                        {"ts": time.time(), "type": "fire_alarm"}).encode())
                    await pub.flush(10)
                await wait_for(lambda: len(srv.of("dingtalk")) >= 1, timeout_s=10,
                               what="robot message")
                text = srv.of("dingtalk")[0].body.decode()
                found = re.search(rf"http://127\.0\.0\.1:{port}/ack/[A-Za-z0-9_-]{{24}}", text)
                assert found is not None, text
                link = found.group(0)
                async with aiohttp.ClientSession() as http:
                    async with http.get(link) as resp:
                        page = await resp.text()
                    assert resp.status == 200
                    assert smoke.location in page
                    form = {"disposition": "false_alarm", "name": "李安全"}
                    async with http.post(link, data=form) as resp:
                        assert resp.status == 200, await resp.text()
                    async with http.post(link, data=form) as resp:
                        assert resp.status == 410      # single use
                alarm = next(a for a in await gw.alarms.store.list(active=None)  # type: ignore[union-attr]
                             if a.rule == "fire_alarm")
                assert alarm.state is AlarmState.ACKNOWLEDGED
                # The link vouches for its contact; the typed name is kept apart, unverified.
                assert alarm.acknowledged_by == "li-hs"
                assert alarm.acknowledged_name == "李安全"
                assert alarm.ack_channel == "robot"
                assert alarm.disposition is Disposition.FALSE_ALARM
                # ... and it shows as acknowledged everywhere: the retained document and
                # the alarms measurement (the API read above is the store).
                topic = (f"parkwatch/alarms/{smoke.park}/{smoke.building}/{smoke.device}/"
                         "fire_alarm")
                retained = Collector(mosquitto.port, topic)
                try:
                    await wait_for(lambda: any(p and json.loads(p)["state"] == "acknowledged"
                                               for _, p in retained.snapshot()),
                                   timeout_s=10, what="retained document acknowledged")
                finally:
                    retained.close()

                def states() -> list[str]:
                    rows = influx_rows(influxd, settings.influx.database,
                                       'SELECT "state" FROM "alarms" WHERE "alarm_id" = '
                                       f"'{alarm.alarm_id}'")
                    return [str(r[1]) for r in rows]
                await wait_for(lambda: states() == ["firing", "acknowledged"], timeout_s=10,
                               what="alarms points firing, acknowledged")
            finally:
                await runner.cleanup()


async def test_outbox_keys_of_alarms_long_gone_are_forgotten(alarm_target: StoreTarget) -> None:
    from gateway.notify.notifier import KEY_MEMORY_MS
    from rules.alarm import Alarm, Severity, Subject, Transition

    cfg = NotifyConfig.model_validate(routing("http://127.0.0.1:9")["notify"])
    subject = Subject(park="xz01", building="b1", device="sd-1", tenant="hs-elec", kind="smoke")
    fired = Alarm(alarm_id="a1", fingerprint="fire_alarm|sd-1", rule="fire_alarm",
                  severity=Severity.CRITICAL, state=AlarmState.FIRING, subject=subject,
                  message="fire", started_at_ms=1_000, updated_at_ms=1_000, fired_at_ms=1_000)
    active = [fired]
    async with alarm_target.store() as store:
        notifier = Notifier(store=store, metrics=Metrics(), audit=_noop_audit,
                            channels={"robot": LoggingChannel(name="robot", kind="dingtalk")},
                            config=cfg, active=lambda: active)
        assert notifier.plan([Transition(None, fired)], 1_000)
        notifier.tick(2_000)
        assert notifier.remembered_alarms == 1
        # Still active an hour later: its keys must stay (escalation and repeats use them).
        notifier.tick(1_000 + KEY_MEMORY_MS + 60_000)
        assert notifier.remembered_alarms == 1
        resolved = fired.evolve(state=AlarmState.RESOLVED, resolved_at_ms=5_000,
                                updated_at_ms=5_000)
        active = []
        notifier.plan([Transition(fired, resolved)], 5_000 + KEY_MEMORY_MS)
        notifier.tick(5_000 + KEY_MEMORY_MS + 60_000)
        assert notifier.remembered_alarms == 1            # resolved just now: kept a while
        notifier.tick(5_000 + 3 * KEY_MEMORY_MS)
        assert notifier.remembered_alarms == 0
