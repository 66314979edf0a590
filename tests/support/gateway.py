"""A gateway under test: settings of its own, run in this event loop or as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml

from gateway.config import Settings
from gateway.runtime.gateway import Gateway
from sensors.registry import Registry
from tests.support.ids import unique
from tests.support.paths import ROOT, SAMPLE_REGISTRY
from tests.support.waiting import wait_for


def make_settings(tmp_path: Path, *, mqtt_url: str, influx_url: str, **overrides: Any) -> Settings:
    """Settings for one test: its own topic root, client id, database and state dir."""
    name = unique("t")
    data: dict[str, Any] = {
        "instance": name,
        "registry": str(SAMPLE_REGISTRY),
        "rules": str(ROOT / "config" / "rules"),
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"url": mqtt_url, "topic_root": f"{name}/parks", "reconnect_min_s": 0.1,
                 "reconnect_max_s": 1.0, "keepalive_s": 10},
        "influx": {"url": influx_url, "version": "1", "database": name,
                   "flush_interval_s": 0.05, "max_backoff_s": 1.0},
        "observe": {"gateway_interval_s": 1.0},
        "http": {"enabled": False},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Settings(**data)


@asynccontextmanager
async def running_gateway(settings: Settings, registry: Registry,
                          timeout_s: float = 20.0) -> AsyncIterator[Gateway]:
    """Run a Gateway in this event loop until the block exits, then stop it gracefully."""
    gateway = Gateway(settings=settings, registry=registry)
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop), name="gateway-under-test")
    try:
        await wait_for(lambda: gateway.session is not None and gateway.session.connected,
                       timeout_s=timeout_s, what="gateway connected", task=task)
        # The subscription is sent right after CONNACK; give the broker a round trip for it.
        await asyncio.sleep(0.2)
        yield gateway
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


def write_config(tmp_path: Path, mqtt_url: str, influx_url: str,
                 **overrides: Any) -> tuple[Path, str, str]:
    """``make_settings`` written as a config file: (path, topic root, database)."""
    settings = make_settings(tmp_path, mqtt_url=mqtt_url, influx_url=influx_url, **overrides)
    doc = json.loads(settings.model_dump_json())
    doc["http"] = {"enabled": False}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, settings.mqtt.topic_root, settings.influx.database


def spawn_gateway(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``parkwatch run`` as a real process (for SIGKILL and SIGTERM), its output appended to
    ``log``; the caller stops it."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "gateway.tools.cli", "run", "--config",
                                 str(config)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
