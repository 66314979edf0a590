"""InfluxDB 2.x/3.x adapter (``POST /api/v2/write``) through the official async client.

The client raises ``ApiException`` for non-2xx answers and lets aiohttp's errors through; both
are turned back into the plain :class:`SinkResponse` / :class:`SinkUnreachable` shape so that
:mod:`gateway.storage.influx.classify` judges 1.x and 2.x answers the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import aiohttp
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.write_api_async import WriteApiAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from gateway.storage.influx.sink import SinkResponse, SinkUnreachable, lower_headers

_NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
# The generated enum class exposes its values as plain str attributes.
_MS = cast(WritePrecision, WritePrecision.MS)


def _from_api_exception(exc: ApiException) -> SinkResponse:
    status = int(exc.status or 0)
    if status == 0:  # the client's own "cannot prepare the request": no HTTP answer exists
        raise SinkUnreachable(f"InfluxDB request not sent: {exc.reason}") from exc
    raw_headers: Any = exc.headers or {}
    headers: Mapping[str, str] = lower_headers({str(k): str(v) for k, v in raw_headers.items()})
    body = exc.body
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    return SinkResponse(status, headers, text)


class InfluxV2Sink:
    """Writes line protocol to one bucket of an InfluxDB 2.x/3.x organization."""

    def __init__(self, *, url: str, org: str, bucket: str, token: str,
                 timeout_s: float = 10.0, gzip: bool = False) -> None:
        self.url = url.rstrip("/")
        self.org = org
        self.bucket = bucket
        self._token = token
        self._timeout_ms = int(timeout_s * 1000)
        self._gzip = gzip
        self._client: InfluxDBClientAsync | None = None
        self._write_api: WriteApiAsync | None = None

    def __repr__(self) -> str:  # no token
        return f"InfluxV2Sink(url={self.url!r}, org={self.org!r}, bucket={self.bucket!r})"

    def _api(self) -> tuple[InfluxDBClientAsync, WriteApiAsync]:
        # Created lazily: the client opens an aiohttp session, which wants a running loop.
        if self._client is None or self._write_api is None:
            self._client = InfluxDBClientAsync(url=self.url, token=self._token, org=self.org,
                                               timeout=self._timeout_ms,
                                               enable_gzip=self._gzip)
            self._write_api = self._client.write_api()
        return self._client, self._write_api

    async def write(self, body: bytes) -> SinkResponse:
        _, write_api = self._api()
        try:
            await write_api.write(bucket=self.bucket, org=self.org, record=body,
                                  write_precision=_MS)
        except ApiException as exc:
            return _from_api_exception(exc)
        except _NETWORK_ERRORS as exc:
            raise SinkUnreachable(f"InfluxDB {self.url} unreachable: {exc!r}") from exc
        return SinkResponse(204)

    async def ping(self) -> bool:
        client, _ = self._api()
        try:
            return bool(await client.ping())
        except (ApiException, *_NETWORK_ERRORS):
            return False

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]
            self._client = None
            self._write_api = None
