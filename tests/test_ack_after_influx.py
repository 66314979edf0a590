"""``ingest.ack_after: influx`` (issue 16, point 4): a message gets its PUBACK only once InfluxDB
accepted it, so a host lost with its disk loses nothing — the broker still holds it all.

Unit: the puback stage holds PUBACKs until the WAL checkpoints pass the batch, in order, and
asks the lease before each. Integration: InfluxDB unreachable, the gateway stops and its state
dir is deleted (the host is gone); a new instance with an empty state dir and the same client
id gets everything redelivered, and InfluxDB ends with every reading exactly once.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from gateway.alarms.fence import FencedOut
from gateway.ingest.mqtt import Inbound, MqttSession
from gateway.metrics import Metrics
from gateway.runtime.durability import PubackStage
from gateway.runtime.work import Work
from gateway.storage.walstreams import WalStreams
from gateway.tools.devservices import Influxd, Mosquitto, free_port
from sensors.registry import Registry
from tests.support.gateway import make_settings, running_gateway
from tests.support.readings import await_landed, plan, publish
from tests.support.waiting import wait_for

LINE = "water_pressure,device=wp-1 pressure_mpa=0.3 1764059400000"


class _Session:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def puback_all(self, messages: list[Inbound]) -> None:
        self.acked.extend(m.mid for m in messages)


def _as_session(fake: _Session) -> Callable[[], MqttSession | None]:
    return lambda: cast(MqttSession, fake)


def _work(mid: int) -> Work:
    msg = Inbound(topic="t", payload=b"", qos=1, mid=mid, retain=False, received_at_ms=0,
                  generation=0)
    return Work(lines=[LINE], messages=[msg])


async def _deliver_all(wal: WalStreams) -> None:
    for stream in wal.streams:
        batch = await stream.read_batch(1000)
        if batch is not None:
            await stream.mark_delivered(batch)


async def test_pubacks_wait_for_influx_and_keep_their_order(tmp_path: Path) -> None:
    wal = WalStreams(tmp_path / "wal", fsync=False)
    await wal.open()
    session = _Session()
    stage = PubackStage(wal=wal, session=_as_session(session), metrics=Metrics(),
                        after_delivery=True)
    task = asyncio.create_task(stage.run())
    try:
        for mid in (1, 2, 3):
            stage.queue.put_nowait(_work(mid))
        await asyncio.sleep(0.2)
        assert session.acked == []              # in the WAL, not yet in InfluxDB
        await _deliver_all(wal)
        await asyncio.wait_for(stage.queue.join(), 5)
        assert session.acked == [1, 2, 3]
        stage.queue.put_nowait(_work(4))
        await asyncio.sleep(0.1)
        assert session.acked == [1, 2, 3]
        await _deliver_all(wal)
        await asyncio.wait_for(stage.queue.join(), 5)
        assert session.acked == [1, 2, 3, 4]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await wal.close()


async def test_no_puback_once_the_lease_is_gone(tmp_path: Path) -> None:
    wal = WalStreams(tmp_path / "wal", fsync=False)
    await wal.open()
    session = _Session()
    valid = [True]

    def may_ack() -> None:
        if not valid[0]:
            raise FencedOut("lease gone")
    stage = PubackStage(wal=wal, session=_as_session(session), metrics=Metrics(),
                        may_ack=may_ack)
    task = asyncio.create_task(stage.run())
    try:
        stage.queue.put_nowait(_work(1))
        await asyncio.wait_for(stage.queue.join(), 5)
        valid[0] = False
        stage.queue.put_nowait(_work(2))
        with pytest.raises(FencedOut):
            await asyncio.wait_for(task, 5)
        assert session.acked == [1]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await wal.close()


@pytest.mark.integration
async def test_host_lost_before_influx_loses_nothing(tmp_path: Path, mosquitto: Mosquitto,
                                                     influxd: Influxd,
                                                     sample_registry: Registry) -> None:
    dead_influx = f"http://127.0.0.1:{free_port()}"    # nothing listens: no write succeeds
    first = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=dead_influx,
                          ingest={"ack_after": "influx"}, shutdown_timeout_s=1.0,
                          alarms={"enabled": False},
                          mqtt={"client_id": "pw-acktest-" + tmp_path.name[-20:]})
    total = 600
    async with running_gateway(first, sample_registry) as gw:
        await publish(mosquitto.port, plan(sample_registry, first.mqtt.topic_root, total))
        await wait_for(lambda: gw.metrics.value("parkwatch_messages_received_total",
                                                type="telemetry") >= total,
                       timeout_s=30, what="every message received")
        assert gw.metrics.value("parkwatch_messages_accepted_total", type="telemetry") == 0
        assert gw.metrics.value("parkwatch_unacked_in_flight") > 0
    # The host is gone, and with it the WAL holding all of them.
    shutil.rmtree(first.state_dir)
    second = first.model_copy(update={
        "influx": first.influx.model_copy(update={"url": influxd.url}),
        "state_dir": tmp_path / "new-host"})
    async with running_gateway(second, sample_registry) as gw:
        await await_landed(influxd, second.influx.database, sample_registry, total)
        await wait_for(lambda: gw.metrics.value("parkwatch_unacked_in_flight") == 0,
                       timeout_s=20, what="every redelivered message acknowledged")
