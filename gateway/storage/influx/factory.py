"""Pick and build the InfluxDB adapter from the configuration (and, for "auto", from /ping)."""

from __future__ import annotations

import logging
from typing import Literal

import aiohttp

from gateway.errors import InfluxError
from gateway.storage.influx.sink import Sink
from gateway.storage.influx.v1 import InfluxV1Sink
from gateway.storage.influx.v2 import InfluxV2Sink
from sensors.errors import ConfigError

log = logging.getLogger(__name__)


async def detect_major_version(url: str, timeout_s: float) -> int | None:
    """The major version from ``X-Influxdb-Version`` on ``GET /ping``; None if unknown."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http, \
                http.get(f"{url.rstrip('/')}/ping") as resp:
            version = resp.headers.get("X-Influxdb-Version", "")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("InfluxDB %s did not answer /ping (%r); guessing its version", url, exc)
        return None
    digits = version.lstrip("vV").split(".", 1)[0]
    return int(digits) if digits.isdigit() else None


async def make_sink(*, url: str, version: Literal["auto", "1", "2"], database: str,
                    retention_policy: str | None, username: str | None, password: str | None,
                    org: str | None, bucket: str | None, token: str | None, timeout_s: float,
                    create_database: bool = False) -> Sink:
    """Build the adapter. "auto" asks ``/ping``; if that fails, a token/org/bucket means 2.x.

    Never fails because InfluxDB is down: the WAL holds the data until it is back.
    """
    wants_v2 = bool(token or org or bucket)
    if version == "auto":
        major = await detect_major_version(url, timeout_s)
        chosen = "2" if (major is not None and major >= 2) or (major is None and wants_v2) \
            else "1"
        log.info("InfluxDB %s: version %s detected, using the %s.x API", url,
                 major if major is not None else "unknown", chosen)
    else:
        chosen = version
    if chosen == "2":
        if not (org and bucket and token):
            missing = [name for name, value in (("org", org), ("bucket", bucket),
                                                ("token", token)) if not value]
            raise ConfigError("influx", [f"InfluxDB 2.x needs {', '.join(missing)}"])
        if create_database:
            log.info("create_database applies to InfluxDB 1.x only; the bucket %r must exist",
                     bucket)
        return InfluxV2Sink(url=url, org=org, bucket=bucket, token=token, timeout_s=timeout_s)
    sink = InfluxV1Sink(url=url, database=database, retention_policy=retention_policy,
                        username=username, password=password, timeout_s=timeout_s,
                        create_database=create_database)
    if create_database:
        try:
            await sink.ensure_database()
        except InfluxError as exc:
            # Down or refusing now: the writer retries, and the sink creates it on a 404.
            log.warning("could not create InfluxDB database %r yet: %s", database, exc)
    return sink
