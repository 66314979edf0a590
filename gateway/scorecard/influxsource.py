"""InfluxDB for the scorecard: read ``device_status`` (InfluxQL over ``/query``) and write the
daily ``scorecard`` points (through the gateway's own sink adapters).

Both 1.x and 2.x/3.x answer InfluxQL on ``/query`` (2.x through its 1.x compatibility API, with
the bucket mapped as a database), which is also what the Grafana dashboards use.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import aiohttp

from gateway.config import InfluxSettings
from gateway.errors import InfluxError
from gateway.scorecard.model import Period, StatusPoint
from gateway.storage.influx.factory import make_sink


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxReader:
    """InfluxQL queries against the configured database (1.x) or bucket (2.x)."""

    def __init__(self, settings: InfluxSettings) -> None:
        self._settings = settings
        # 2.x answers InfluxQL for a database mapped to the bucket (DBRP), the same mapping
        # Grafana uses (docs/grafana.md); influx.database names it.
        self._db = settings.database
        headers: dict[str, str] = {}
        token = _secret(settings.token)
        if token:
            headers["Authorization"] = f"Token {token}"
        elif settings.username:
            basic = f"{settings.username}:{_secret(settings.password) or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(basic).decode("ascii")
        self._headers = headers

    async def query(self, q: str) -> list[dict[str, Any]]:
        """The series of the first statement's result ([] when there are none)."""
        timeout = aiohttp.ClientTimeout(total=max(self._settings.timeout_s, 60.0))
        try:
            async with aiohttp.ClientSession(timeout=timeout, headers=self._headers) as http, \
                    http.post(f"{self._settings.url}/query",
                              data={"q": q, "db": self._db, "epoch": "ms"}) as resp:
                body: dict[str, Any] = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise InfluxError(f"InfluxDB {self._settings.url}: query failed: "
                              f"{type(exc).__name__}: {exc}") from exc
        if status != 200:
            raise InfluxError(f"InfluxDB {self._settings.url}: query answered {status}: {body}")
        result = body.get("results", [{}])[0]
        if "error" in result:
            raise InfluxError(f"InfluxDB {self._settings.url}: {result['error']}")
        series: list[dict[str, Any]] = result.get("series", [])
        return series

    async def device_status(self, *, park: str,
                            period: Period) -> dict[str, list[StatusPoint]]:
        """Per device: its last ``device_status`` point before the period (its state at the
        start) and every point inside it. Works with the points ParkWatch writes today
        (``online``, ``reason``) and with gateway-owned liveness (``online``, ``source``)."""
        where = f'"park" = {_quote(park)}'
        before = (f'SELECT last("online") FROM "device_status" WHERE {where}'
                  f" AND time < {period.start_ms}ms GROUP BY \"device\"")
        # Inside the period only transitions matter: periodic snapshots (source "snapshot")
        # repeat the state and would make a month's read grow with the snapshot rate. Points
        # without a source (written before gateway-owned liveness) carry a reason instead.
        inside = (f'SELECT "online" FROM "device_status" WHERE {where}'
                  f" AND time >= {period.start_ms}ms AND time < {period.end_ms}ms"
                  " AND (\"source\" != 'snapshot' OR \"reason\" =~ /./)"
                  ' GROUP BY "device"')
        out: dict[str, list[StatusPoint]] = defaultdict(list)
        for q in (before, inside):
            for s in await self.query(q):
                device = s.get("tags", {}).get("device", "")
                for t, value in s["values"]:
                    if value is not None:
                        out[device].append(StatusPoint(device, int(t), bool(value)))
        return dict(out)


async def write_lines(settings: InfluxSettings, lines: Sequence[str]) -> None:
    """Write ``lines`` (millisecond timestamps) straight to InfluxDB; raise on failure.

    Not through the gateway's WAL: the command runs on its own, and a daily row it failed to
    write is simply written again by the next run (the same day's point overwrites itself).
    """
    sink = await make_sink(url=settings.url, version=settings.version,
                           database=settings.database,
                           retention_policy=settings.retention_policy,
                           username=settings.username, password=_secret(settings.password),
                           org=settings.org, bucket=settings.bucket,
                           token=_secret(settings.token), timeout_s=settings.timeout_s,
                           create_database=settings.create_database)
    try:
        for start in range(0, len(lines), 5000):
            body = "\n".join(lines[start:start + 5000]).encode() + b"\n"
            answer = await sink.write(body)
            if answer.status // 100 != 2:
                raise InfluxError(f"InfluxDB {settings.url}: scorecard write answered "
                                  f"{answer.status}: {answer.text[:200]}")
    finally:
        await sink.close()
