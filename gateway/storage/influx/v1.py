"""InfluxDB 1.x adapter: ``POST /write?db=…&precision=ms``, ``GET /ping``, ``CREATE DATABASE``.

Credentials go in a Basic ``Authorization`` header (1.x accepts it like ``u``/``p``) so they
never appear in a URL that might be logged.
"""

from __future__ import annotations

import base64
import logging

import aiohttp

from gateway.errors import InfluxError
from gateway.storage.influx.sink import SinkResponse, SinkUnreachable, lower_headers

log = logging.getLogger(__name__)

_NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


class InfluxV1Sink:
    """Writes line protocol to one InfluxDB 1.x database (and retention policy)."""

    def __init__(self, *, url: str, database: str, retention_policy: str | None = None,
                 username: str | None = None, password: str | None = None,
                 timeout_s: float = 10.0, create_database: bool = False) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self._params = {"db": database, "precision": "ms"}
        if retention_policy:
            self._params["rp"] = retention_policy
        # Built by hand: aiohttp.BasicAuth is deprecated in 3.14 and its successor is not in 3.10.
        self._headers: dict[str, str] = {}
        if username:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._create_database = create_database
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # no credentials
        return f"InfluxV1Sink(url={self.url!r}, database={self.database!r})"

    def _http(self) -> aiohttp.ClientSession:
        # Created lazily: aiohttp wants its session made inside the running loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._session

    async def write(self, body: bytes) -> SinkResponse:
        response = await self._post_write(body)
        if response.status == 404 and self._create_database and "database not found" in \
                response.text:
            # The database vanished (a wiped data dir, a DROP): recreate it and try once more.
            log.warning("InfluxDB database %r not found; creating it", self.database)
            try:
                await self.ensure_database()
            except InfluxError as exc:
                # Not allowed or not now: hand back the 404, which the writer retries.
                log.warning("%s", exc)
                return response
            response = await self._post_write(body)
        return response

    async def _post_write(self, body: bytes) -> SinkResponse:
        try:
            async with self._http().post(
                    f"{self.url}/write", params=self._params, data=body,
                    headers={"Content-Type": "text/plain; charset=utf-8"}) as resp:
                text = await resp.text(errors="replace")
                return SinkResponse(resp.status, lower_headers(resp.headers), text)
        except _NETWORK_ERRORS as exc:
            raise SinkUnreachable(f"InfluxDB {self.url} unreachable: {exc!r}") from exc

    async def ping(self) -> bool:
        try:
            async with self._http().get(f"{self.url}/ping") as resp:
                return 200 <= resp.status < 300
        except _NETWORK_ERRORS:
            return False

    async def ensure_database(self) -> None:
        """``CREATE DATABASE`` (a no-op in 1.x when it exists)."""
        name = self.database.replace("\\", "\\\\").replace('"', '\\"')
        try:
            async with self._http().post(f"{self.url}/query",
                                         data={"q": f'CREATE DATABASE "{name}"'}) as resp:
                text = await resp.text(errors="replace")
        except _NETWORK_ERRORS as exc:
            raise SinkUnreachable(f"InfluxDB {self.url} unreachable: {exc!r}") from exc
        if resp.status != 200 or '"error"' in text:
            raise InfluxError(f"CREATE DATABASE {self.database!r} failed with HTTP "
                              f"{resp.status}: {text.strip()[:300]}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
