"""What the gateway leaves on disk is its user's only (issue 13, point 4).

Outside systemd nothing else makes state_dir private, and the outbox rows carried live ack URLs
any local user could read and use. A real gateway runs here on a real broker and InfluxDB with
the process umask at the permissive 022 (as a library caller might have it), pages a tenant
robot with an ack link, and then every file under state_dir must be 0600, every directory
0700, and no outbox row may hold a link, while the robot got a working one.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.tools.devservices import Influxd, Mosquitto
from gateway.tools.simulator.publisher import MqttPublisher
from sensors.registry import Registry
from tests.support.gateway import make_settings, running_gateway
from tests.support.ids import unique
from tests.support.notify import DT_SECRET, WH_SECRET, routing, set_channel_env, write_notify_config
from tests.support.notify_servers import ProviderServer
from tests.support.paths import ROOT
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
LINK = re.compile(r"/ack/[A-Za-z0-9_-]{24}")


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root.parent)): stat.S_IMODE(p.stat().st_mode)
            for p in [root, *root.rglob("*")]}


def _stored_text(db: Path) -> list[str]:
    """Every text value of every row of every table, read from the file without the store."""
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return [v for t in tables for row in conn.execute(f'SELECT * FROM "{t}"')
                for v in row if isinstance(v, str)]


@pytest.mark.usefixtures("permissive_umask")
async def test_state_is_private_and_outbox_rows_hold_no_ack_link(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry,
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with ProviderServer(dingtalk_secret=DT_SECRET, webhook_secret=WH_SECRET) as srv:
        set_channel_env(monkeypatch, srv)
        config = write_notify_config(tmp_path, routing(srv.url, escalate_after_s=600))
        settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                                 notify={"config": str(config),
                                         "ack_secret": "s3cret-s3cret-s3cret",
                                         "public_url": "https://pw.example.test"})
        smoke = next(d for d in sample_registry if d.tenant == "hs-elec" and d.kind == "smoke")
        topic = f"{settings.mqtt.topic_root}/{smoke.park}/{smoke.building}/{smoke.device}/event"
        async with running_gateway(settings, sample_registry) as gw:
            async with MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("p")) as pub:
                await pub.publish(topic, json.dumps(
                    {"ts": time.time(), "type": "fire_alarm"}).encode())
                await pub.flush(10)
            await wait_for(lambda: len(srv.of("dingtalk")) >= 1, timeout_s=10,
                           what="robot message")
            # The provider got a working link, its length what the SMS accounting assumed.
            text = srv.of("dingtalk")[0].body.decode()
            found = re.search(r"https://pw\.example\.test/ack/([A-Za-z0-9_-]{24})", text)
            assert found is not None, text
            assert gw.ack_links is not None
            grant = await gw.ack_links.verify(found.group(1))
            assert (grant.contact, grant.channel) == ("li-hs", "robot")
            assert len(found.group(0)) == gw.ack_links.url_chars
            assert "{{ack:" not in text
    state = settings.state_dir
    stored = _stored_text(state / "alarms.sqlite3")
    assert not [v for v in stored if LINK.search(v)]   # never a link …
    assert any("{{ack:" in v for v in stored)          # … but a reference to its grant
    modes = _modes(state)
    assert {p: oct(m) for p, m in modes.items()
            if m != (0o700 if (state.parent / p).is_dir() else 0o600)} == {}
    assert any(p.endswith(".wal") for p in modes)
    assert "state/alarms.sqlite3" in modes


@pytest.mark.usefixtures("permissive_umask")
def test_parkwatch_run_sets_umask_0077_before_the_gateway_starts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway import logs
    from gateway.tools import cli

    seen: list[int] = []

    async def fake_run(*_: object) -> int:
        current = os.umask(0o022)
        os.umask(current)
        seen.append(current)
        return 0

    monkeypatch.setattr(cli, "_run", fake_run)
    monkeypatch.setattr(logs, "setup_logging", lambda *_: None)   # leave pytest's logging be
    assert cli.main(["run", "--config", str(ROOT / "config" / "parkwatch.example.yaml")]) == 0
    assert seen == [0o077]

