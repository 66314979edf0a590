"""Shared fixtures: real mosquitto and influxd processes, and a gateway running in-process.

Services are session-scoped and isolated per test by a unique topic root, client id and
database; tests that restart or kill a service start their own instance.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings
from gateway.runtime.gateway import Gateway
from gateway.tools.devservices import Influxd, Mosquitto
from sensors.registry import Registry, load_registry

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_REGISTRY = ROOT / "config" / "sample-park" / "registry.yaml"
_counter = itertools.count(1)


@pytest.fixture(autouse=True)
def _no_parkwatch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's PARKWATCH_* variables must not leak into test settings."""
    for key in list(os.environ):
        if key.upper().startswith("PARKWATCH_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    server = Influxd(tmp_path_factory.mktemp("influxd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sample_registry() -> Registry:
    return load_registry(SAMPLE_REGISTRY)


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid()}x{next(_counter)}"


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


async def wait_for(condition: Callable[[], bool | Awaitable[bool]], *, timeout_s: float,
                   what: str, interval: float = 0.05,
                   task: asyncio.Task[Any] | None = None) -> None:
    """Poll ``condition`` until true or fail with ``what``; never a fixed sleep in a test."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if task is not None and task.done():
            task.result()
            raise AssertionError(f"task ended before: {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for: {what}")
        await asyncio.sleep(interval)


def influx_rows(influxd: Influxd, db: str, query: str) -> list[list[Any]]:
    """All values rows of a query (first series), or [] when there is none."""
    result: Any = influxd.query(query, db)
    series = result["results"][0].get("series", [])
    rows: list[list[Any]] = []
    for s in series:
        rows.extend(s["values"])
    return rows


def influx_count(influxd: Influxd, db: str, measurement: str, field: str) -> int:
    rows = influx_rows(influxd, db, f'SELECT count("{field}") FROM "{measurement}"')
    return int(rows[0][1]) if rows else 0
