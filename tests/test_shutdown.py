"""SIGTERM exits within a bounded time, even when in-flight work cannot become durable.

With InfluxDB down and the write-ahead log full (block policy), the commit stage waits for room
that will not come. SIGTERM must still end the process within ``shutdown_timeout_s`` (plus the
fixed steps after it), publish ``offline``, and lose nothing: what was not acknowledged stays
with the broker and lands after the restart.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from gateway.tools.devservices import Influxd, Mosquitto
from sensors.registry import Registry
from tests.support.gateway import spawn_gateway, write_config
from tests.support.mqtt import retained_payload
from tests.support.readings import await_landed, plan, publish
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


async def test_sigterm_with_a_full_wal_exits_in_bounded_time_and_loses_nothing(
        tmp_path: Path, mosquitto: Mosquitto, sample_registry: Registry) -> None:
    influx = Influxd(tmp_path / "influx")
    influx.start()
    try:
        config, root, db = write_config(tmp_path, mosquitto.url, influx.url)
        doc = yaml.safe_load(config.read_text())
        doc["wal"] = {**doc.get("wal", {}), "max_bytes": 1 << 20, "segment_bytes": 1 << 16}
        doc["shutdown_timeout_s"] = 3.0
        config.write_text(yaml.safe_dump(doc))
        instance = doc["instance"]
        log = tmp_path / "gateway.log"
        proc = spawn_gateway(config, log)
        try:
            await wait_for(lambda: b"mqtt connected" in log.read_bytes(), timeout_s=30,
                           what="gateway connected")
            influx.stop()       # nothing can leave the WAL now
            total = 15_000      # ~2.5 MB of lines: more than the 1 MiB WAL holds
            # The broker takes them all; the gateway acks only what fits in the WAL.
            await publish(mosquitto.port, plan(sample_registry, root, total))
            await wait_for(lambda: b"is full" in log.read_bytes(), timeout_s=60,
                           what="the WAL filled up", interval=0.2)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
            took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        text = log.read_text(errors="replace")
        assert code == 0, text[-2000:]
        assert "did not become durable within 3 s" in text
        assert "gateway stopped" in text
        print(f"SIGTERM with a full WAL: exited in {took:.1f} s (shutdown_timeout_s 3)")
        # The broker got our offline status (retained) before we left.
        status = retained_payload(mosquitto.port, f"parkwatch/gateway/{instance}/status", 3)
        assert status == b"offline"
        # Nothing lost: InfluxDB back, gateway restarted, every reading lands exactly once.
        influx.start()
        proc = spawn_gateway(config, log)
        try:
            await await_landed(influx, db, sample_registry, total, timeout_s=120)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    finally:
        influx.stop()
