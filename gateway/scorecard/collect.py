"""Gather a scorecard's :class:`~gateway.scorecard.report.Inputs` from a configuration: the
registry (the denominator), the alarm store (file or PostgreSQL) and InfluxDB's
``device_status``."""

from __future__ import annotations

import asyncio

from gateway.alarms.store import SQLITE_FILE
from gateway.config import Settings
from gateway.scorecard.alarmsource import (
    AlarmSource,
    PostgresSource,
    read_alarms,
    read_maintenance,
)
from gateway.scorecard.influxsource import InfluxReader
from gateway.scorecard.model import DeviceRef, Period
from gateway.scorecard.report import Inputs
from sensors.registry import Registry


def device_refs(registry: Registry, park: str) -> list[DeviceRef]:
    return [DeviceRef(device=d.device, park=d.park, building=d.building, floor=d.floor,
                      zone=d.zone, kind=d.kind, tenant=d.tenant)
            for d in registry if d.park == park]


async def collect(settings: Settings, registry: Registry, *, park: str, period: Period,
                  as_of_ms: int) -> Inputs:
    store: AlarmSource = (PostgresSource(settings.alarms.dsn())
                          if settings.alarms.backend == "postgres"
                          else settings.state_dir / SQLITE_FILE)
    alarms = await asyncio.to_thread(read_alarms, store, park=park, period=period)
    windows = await asyncio.to_thread(read_maintenance, store, as_of_ms=as_of_ms)
    status = await InfluxReader(settings.influx).device_status(park=park, period=period)
    return Inputs(devices=device_refs(registry, park), alarms=alarms, status=status,
                  maintenance=windows)
