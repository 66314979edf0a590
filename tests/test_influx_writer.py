"""WAL → InfluxWriter → InfluxDB: against a real influxd, and against a local fake server that
answers with whatever failure a test needs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.metrics import Metrics
from gateway.storage.influx.factory import make_sink
from gateway.storage.influx.sink import Sink, SinkUnreachable
from gateway.storage.influx.v1 import InfluxV1Sink
from gateway.storage.influx.v2 import InfluxV2Sink
from gateway.storage.influx.writer import InfluxWriter
from gateway.storage.wal import Wal
from gateway.storage.walstreams import WalStreams
from gateway.tools.devservices import Influxd, free_port
from sensors.errors import ConfigError

_db_counter = iter(range(1_000_000))


def unique_db(prefix: str) -> str:
    return f"{prefix}_{time.monotonic_ns()}_{next(_db_counter)}"


def points(series: str, start: int, n: int) -> list[str]:
    return [f"t,dev={series} v={i}.5,seq={i}i {1_700_000_000_000 + i}"
            for i in range(start, start + n)]


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def wait_until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def pipeline(tmp_path: Path, sink: Sink, **writer_args: Any,
                   ) -> AsyncIterator[tuple[Wal, InfluxWriter, Metrics]]:
    """A WAL and a running writer; the sink is closed at the end."""
    metrics = Metrics()
    args: dict[str, Any] = {"flush_interval_s": 0.01, "max_backoff_s": 0.05} | writer_args
    async with Wal(tmp_path / "wal", metrics=metrics) as wal:
        writer = InfluxWriter(wal=wal, sink=sink, metrics=metrics, **args)
        task = asyncio.create_task(writer.run(), name="influx-writer")
        try:
            yield wal, writer, metrics
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await sink.close()


# ---- a fake InfluxDB ---------------------------------------------------------------------------

Reply = tuple[int, dict[str, str], str]


@dataclass
class FakeInflux:
    """Answers ``/write`` and ``/api/v2/write`` with ``reply(n, lines)``; 2xx stores the lines."""

    reply: Callable[[int, list[str]], Reply] = lambda n, lines: (204, {}, "")
    version: str = "1.8.10"
    query_status: int = 403
    requests: list[web.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)

    async def write(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp has already undone any Content-Encoding: gzip
        self.requests.append(request)
        self.bodies.append(body)
        self.times.append(time.monotonic())
        lines = body.decode().split("\n")
        status, headers, text = self.reply(len(self.requests) - 1, lines)
        if 200 <= status < 300:
            self.stored += lines
        return web.Response(status=status, headers=headers, text=text)

    async def query(self, request: web.Request) -> web.Response:
        return web.Response(status=self.query_status, text='{"error":"not allowed"}')

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={"X-Influxdb-Version": self.version})


@asynccontextmanager
async def fake_influx(fake: FakeInflux, port: int | None = None) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/write", fake.write)
    app.router.add_post("/api/v2/write", fake.write)
    app.router.add_get("/ping", fake.ping)
    app.router.add_post("/query", fake.query)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def v1(url: str) -> InfluxV1Sink:
    return InfluxV1Sink(url=url, database="db", timeout_s=5)


# ---- against a real influxd --------------------------------------------------------------------

def count_by_series(influxd: Influxd, db: str) -> dict[str, int]:
    result: Any = influxd.query('SELECT count("v") FROM "t" GROUP BY "dev"', db)
    series = result["results"][0].get("series", [])
    return {s["tags"]["dev"]: s["values"][0][1] for s in series}


@pytest.mark.integration
async def test_10k_points_land_exactly(tmp_path: Path, influxd: Influxd) -> None:
    db = unique_db("tenk")
    sink = InfluxV1Sink(url=influxd.url, database=db, create_database=True)
    await sink.ensure_database()
    async with pipeline(tmp_path, sink) as (wal, writer, metrics):
        for start in range(0, 10_000, 100):
            await wal.append(points("a", start, 100))
        assert await writer.flush(60)
    assert count_by_series(influxd, db) == {"a": 10_000}
    result: Any = influxd.query('SELECT sum("v"), sum("seq"), max("seq") FROM "t"', db)
    _, sum_v, sum_seq, max_seq = result["results"][0]["series"][0]["values"][0]
    assert (sum_v, sum_seq, max_seq) == (sum(i + 0.5 for i in range(10_000)),
                                          sum(range(10_000)), 9_999)
    assert sample(metrics, "parkwatch_points_written_total") == 10_000
    assert sample(metrics, "parkwatch_influx_reachable") == 1


@pytest.mark.integration
async def test_influxd_outage_heals_without_help(tmp_path: Path) -> None:
    server = Influxd(tmp_path / "influxd")
    server.start()
    try:
        db = unique_db("outage")
        sink = InfluxV1Sink(url=server.url, database=db, create_database=True)
        async with pipeline(tmp_path, sink, max_backoff_s=0.3) as (wal, writer, metrics):
            await wal.append(points("a", 0, 500))  # the first write creates the database (404)
            assert await writer.flush(30)
            await asyncio.to_thread(server.stop)
            for start in range(500, 3000, 250):
                await wal.append(points("a", start, 250))
                await wal.append(points("b", start, 250))
            await wait_until(lambda: sample(metrics, "parkwatch_influx_reachable") == 0)
            assert not await writer.flush(0.2)
            await asyncio.to_thread(server.start)
            assert await writer.flush(60)
            assert sample(metrics, "parkwatch_write_retries_total", cause="network") > 0
            assert sample(metrics, "parkwatch_influx_reachable") == 1
        # Distinct timestamps per series: every point once, none missing.
        assert count_by_series(server, db) == {"a": 3000, "b": 2500}
    finally:
        server.stop()


@pytest.mark.integration
async def test_type_conflict_is_rejected_and_counted(tmp_path: Path, influxd: Influxd) -> None:
    db = unique_db("conflict")
    sink = InfluxV1Sink(url=influxd.url, database=db, create_database=True)
    await sink.ensure_database()
    async with pipeline(tmp_path, sink) as (wal, writer, metrics):
        await wal.append(points("a", 0, 3))
        assert await writer.flush(30)
        await wal.append(['t,dev=a v="text" 1700000000100', *points("a", 3, 2)])
        assert await writer.flush(30)
        assert sample(metrics, "parkwatch_points_rejected_total") == 1
        assert sample(metrics, "parkwatch_points_written_total") == 5
    # Field types are per shard in 1.x: the conflicting point is in the same week (shard).
    assert count_by_series(influxd, db) == {"a": 5}


# ---- against the fake server -------------------------------------------------------------------

async def test_413_splits_until_batches_fit(tmp_path: Path) -> None:
    fake = FakeInflux(reply=lambda n, lines: (413, {}, "too big") if len(lines) > 10
                      else (204, {}, ""))
    async with fake_influx(fake) as url, pipeline(tmp_path, v1(url)) as (wal, writer, metrics):
        sent = points("a", 0, 100)
        await wal.append(sent)
        assert await writer.flush(10)
        assert fake.stored == sent  # each line once, in order
        assert fake.bodies[0].count(b"\n") == 99  # one request first, then halves
        assert sample(metrics, "parkwatch_points_written_total") == 100


async def test_a_single_point_too_large_is_rejected(tmp_path: Path) -> None:
    fake = FakeInflux(reply=lambda n, lines: (413, {}, "too big") if "huge" in lines[0]
                      else (204, {}, ""))
    async with fake_influx(fake) as url, pipeline(tmp_path, v1(url)) as (wal, writer, metrics):
        await wal.append(['t,dev=huge v=1.0 1', *points("a", 0, 3)])
        assert await writer.flush(10)
        assert fake.stored == points("a", 0, 3)
        assert sample(metrics, "parkwatch_points_rejected_total") == 1


async def test_5xx_is_retried_and_delivered_once(tmp_path: Path) -> None:
    fake = FakeInflux(reply=lambda n, lines: (500, {}, "boom") if n < 4 else (204, {}, ""))
    async with fake_influx(fake) as url, pipeline(tmp_path, v1(url)) as (wal, writer, metrics):
        sent = points("a", 0, 50)
        await wal.append(sent)
        assert await writer.flush(10)
        assert fake.stored == sent
        assert len(fake.requests) == 5
        assert sample(metrics, "parkwatch_write_retries_total", cause="server") == 4
        assert sample(metrics, "parkwatch_write_batches_total") == 5


async def test_429_retry_after_is_honoured(tmp_path: Path) -> None:
    fake = FakeInflux(reply=lambda n, lines: (429, {"Retry-After": "1"}, "slow down") if n == 0
                      else (204, {}, ""))
    async with fake_influx(fake) as url, pipeline(tmp_path, v1(url)) as (wal, writer, metrics):
        await wal.append(points("a", 0, 5))
        assert await writer.flush(10)
        assert fake.times[1] - fake.times[0] >= 0.95  # not the 0.05 s backoff cap
        assert sample(metrics, "parkwatch_write_retries_total", cause="throttled") == 1


async def test_400_is_counted_and_the_writer_moves_on(tmp_path: Path) -> None:
    def reply(n: int, lines: list[str]) -> Reply:
        if any("bad" in line for line in lines):
            return 400, {}, '{"error":"unable to parse \'bad\': invalid field format"}'
        return 204, {}, ""

    fake = FakeInflux(reply=reply)
    async with fake_influx(fake) as url, pipeline(tmp_path, v1(url)) as (wal, writer, metrics):
        await wal.append(["bad", "bad too"])
        assert await writer.flush(10)
        await wal.append(points("a", 0, 3))
        assert await writer.flush(10)
        assert fake.stored == points("a", 0, 3)
        assert sample(metrics, "parkwatch_points_rejected_total") == 2
        assert sample(metrics, "parkwatch_points_written_total") == 3


async def test_401_flags_auth_and_keeps_retrying(tmp_path: Path) -> None:
    state = {"auth_ok": False}
    fake = FakeInflux(reply=lambda n, lines: (204, {}, "") if state["auth_ok"]
                      else (401, {}, '{"error":"authorization failed"}'))
    async with fake_influx(fake) as url, pipeline(tmp_path, v1(url)) as (wal, writer, metrics):
        await wal.append(points("a", 0, 5))
        await wait_until(lambda: sample(metrics, "parkwatch_write_retries_total",
                                        cause="auth") >= 3)
        assert sample(metrics, "parkwatch_influx_auth_ok") == 0
        assert sample(metrics, "parkwatch_influx_reachable") == 1
        state["auth_ok"] = True  # an operator fixed the credentials
        assert await writer.flush(10)
        assert sample(metrics, "parkwatch_influx_auth_ok") == 1
        assert fake.stored == points("a", 0, 5)


async def test_v1_sends_db_rp_precision_and_basic_auth(tmp_path: Path) -> None:
    fake = FakeInflux()
    async with fake_influx(fake) as url:
        sink = InfluxV1Sink(url=url, database="park watch", retention_policy="one_year",
                            username="gw", password="s3cret", timeout_s=5)
        try:
            response = await sink.write(b"m v=1.0 1")
            assert response.status == 204
            assert await sink.ping()
            assert "s3cret" not in repr(sink)
        finally:
            await sink.close()
    request = fake.requests[0]
    assert dict(request.query) == {"db": "park watch", "precision": "ms", "rp": "one_year"}
    assert request.headers["Authorization"].startswith("Basic ")
    assert fake.bodies == [b"m v=1.0 1"]


async def test_missing_database_that_cannot_be_created_is_retried(tmp_path: Path) -> None:
    state = {"created": False}
    fake = FakeInflux(reply=lambda n, lines: (204, {}, "") if state["created"]
                      else (404, {}, '{"error":"database not found: \\"db\\""}'))
    sink = InfluxV1Sink(url="", database="db", create_database=True)
    async with fake_influx(fake) as url:
        sink.url = url
        async with pipeline(tmp_path, sink) as (wal, writer, metrics):
            await wal.append(points("a", 0, 2))
            await wait_until(lambda: sample(metrics, "parkwatch_write_retries_total",
                                            cause="not_found") >= 2)
            state["created"] = True  # an operator created it
            assert await writer.flush(10)
    assert fake.stored == points("a", 0, 2)


# ---- the 2.x adapter ---------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True])
async def test_v2_posts_the_body_exactly(tmp_path: Path, compress: bool) -> None:
    fake = FakeInflux(version="v2.7.4")
    async with fake_influx(fake) as url:
        sink = InfluxV2Sink(url=url, org="acme", bucket="parkwatch", token="tok123",
                            timeout_s=5, gzip=compress)
        async with pipeline(tmp_path, sink) as (wal, writer, _):
            sent = ['m,zone=Z\\ 1 s="é \\"q\\"",v=1.5 1', *points("a", 0, 3)]
            await wal.append(sent)
            assert await writer.flush(10)
    request = fake.requests[0]
    assert request.path == "/api/v2/write"
    assert request.headers["Authorization"] == "Token tok123"
    assert dict(request.query) == {"org": "acme", "bucket": "parkwatch", "precision": "ms"}
    assert (request.headers.get("Content-Encoding") == "gzip") == compress
    assert fake.bodies == ["\n".join(sent).encode()]


async def test_v2_errors_reach_the_classifier(tmp_path: Path) -> None:
    replies: list[Reply] = [(503, {"Retry-After": "0.3"}, '{"code":"unavailable"}'),
                            (401, {}, '{"code":"unauthorized"}'),
                            (204, {}, "")]
    fake = FakeInflux(reply=lambda n, lines: replies[min(n, 2)])
    async with fake_influx(fake) as url:
        sink = InfluxV2Sink(url=url, org="o", bucket="b", token="t", timeout_s=5)
        response = await sink.write(b"m v=1.0 1")
        assert (response.status, response.headers["retry-after"]) == (503, "0.3")
        assert "unavailable" in response.text
        async with pipeline(tmp_path, sink) as (wal, writer, metrics):
            await wal.append(points("a", 0, 2))
            assert await writer.flush(10)
            assert sample(metrics, "parkwatch_write_retries_total", cause="auth") == 1
        assert fake.stored == points("a", 0, 2)


async def test_unreachable_server_raises_sink_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for sink in (InfluxV1Sink(url=url, database="d", timeout_s=2),
                 InfluxV2Sink(url=url, org="o", bucket="b", token="t", timeout_s=2)):
        try:
            with pytest.raises(SinkUnreachable):
                await sink.write(b"m v=1.0 1")
            assert not await sink.ping()
        finally:
            await sink.close()


async def test_writer_waits_for_a_server_that_is_not_there_yet(tmp_path: Path) -> None:
    port = free_port()
    fake = FakeInflux()
    sink = v1(f"http://127.0.0.1:{port}")
    async with pipeline(tmp_path, sink) as (wal, writer, metrics):
        await wal.append(points("a", 0, 3))
        await wait_until(lambda: sample(metrics, "parkwatch_write_retries_total",
                                        cause="network") >= 2)
        assert sample(metrics, "parkwatch_influx_reachable") == 0
        async with fake_influx(fake, port=port):
            assert await writer.flush(10)
    assert fake.stored == points("a", 0, 3)


# ---- the factory -------------------------------------------------------------------------------

def sink_args(url: str, **overrides: Any) -> dict[str, Any]:
    return {"url": url, "version": "auto", "database": "d", "retention_policy": None,
            "username": None, "password": None, "org": None, "bucket": None, "token": None,
            "timeout_s": 2.0} | overrides


@pytest.mark.parametrize(("version", "expected"), [
    ("1.8.10", InfluxV1Sink), ("v2.7.4", InfluxV2Sink), ("3.0.1", InfluxV2Sink)])
async def test_factory_detects_the_version(version: str, expected: type) -> None:
    async with fake_influx(FakeInflux(version=version)) as url:
        sink = await make_sink(**sink_args(url, org="o", bucket="b", token="t"))
        try:
            assert isinstance(sink, expected)
        finally:
            await sink.close()


def test_factory_falls_back_when_influx_is_down() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    async def build(**overrides: Any) -> Sink:
        sink = await make_sink(**sink_args(url, **overrides))
        await sink.close()
        return sink

    assert isinstance(asyncio.run(build()), InfluxV1Sink)
    assert isinstance(asyncio.run(build(token="t", org="o", bucket="b")), InfluxV2Sink)
    # create_database while down is not fatal: the sink creates it on the first 404.
    assert isinstance(asyncio.run(build(create_database=True)), InfluxV1Sink)
    with pytest.raises(ConfigError, match="needs org, bucket"):
        asyncio.run(build(version="2", token="t"))


@pytest.mark.integration
async def test_factory_against_real_influxd(influxd: Influxd) -> None:
    db = unique_db("factory")
    sink = await make_sink(**sink_args(influxd.url, database=db), create_database=True)
    try:
        assert isinstance(sink, InfluxV1Sink)
        assert (await sink.write(b"m v=1.0 1")).status == 204
    finally:
        await sink.close()
    result: Any = influxd.query('SELECT count("v") FROM "m"', db)
    assert result["results"][0]["series"][0]["values"][0][1] == 1



# ---- several streams: priority first, bigger batches for a backlog ------------------------------

ALARM_LINE = 'alarms,device=wp-1,rule=low alarm_id="a{}",state="firing" {}'


async def test_priority_stream_is_drained_before_a_telemetry_backlog(tmp_path: Path) -> None:
    down = True
    fake = FakeInflux(reply=lambda n, lines: (503, {}, "down") if down else (204, {}, ""))
    alarms = [ALARM_LINE.format(i, 1_700_000_000_000 + i) for i in range(3)]
    async with fake_influx(fake) as url:
        metrics = Metrics()
        sink = v1(url)
        async with WalStreams(tmp_path / "wal", metrics=metrics) as wal:
            writer = InfluxWriter(wal=wal, sink=sink, metrics=metrics, batch_lines=500,
                                  flush_interval_s=0.01, max_backoff_s=0.05)
            task = asyncio.create_task(writer.run())
            try:
                for start in range(0, 20_000, 1000):   # an outage's worth of telemetry
                    await wal.append(points("a", start, 1000))
                await wal.append(alarms)
                await wait_until(lambda: len(fake.bodies) > 2)
                down = False
                assert await writer.flush(30)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await sink.close()
    # The alarms were written after 20 000 telemetry lines but overtake all of them except the
    # one batch already in flight when they arrived; telemetry keeps its order.
    at = fake.stored.index(alarms[0])
    assert fake.stored[at:at + 3] == alarms
    assert at <= 1000   # one batch: whole records, and one append here is 1000 lines
    assert fake.stored[:at] + fake.stored[at + 3:] == points("a", 0, 20_000)
    # The backlog went out in requests larger than batch_lines (backlog_factor times).
    assert max(len(b.split(b"\n")) for b in fake.bodies) == 2000
