"""Guessing ack tokens is throttled and cheap (issue 13, point 10): random tokens never reach the
alarm store (whose worker the commits share), and each client gets a few tries a minute."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.alarms.acklinks import KEEP_EXPIRED_MS, AckLinks, AckProblem, AckTokenError
from gateway.alarms.store import AlarmStore
from gateway.http.ackpage import ACK_BURST, add_ack_routes
from gateway.http.throttle import ClientThrottle
from rules.alarm import Alarm, Disposition
from tests.support.alarms import make_alarm

SECRET = b"s" * 32
BASE = "https://pw.example.test"
Client = TestClient[web.Request, web.Application]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_795_000_000.0

    def __call__(self) -> float:
        return self.now


class OneAlarm:
    """The ack page's service; no test here gets as far as acknowledging."""

    async def get_alarm(self, alarm_id: str) -> Alarm | None:
        return make_alarm(alarm_id)

    async def acknowledge(self, alarm_id: str, *, by: str, disposition: Disposition,
                          channel: str, name: str | None = None) -> Alarm:
        raise AssertionError("a guessed token must never acknowledge")


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


class CountingStore(AlarmStore):
    """A real store that counts the work queued on its worker."""

    calls = 0

    async def execute(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.calls += 1
        return await super().execute(fn, *args)


def random_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(18)).rstrip(b"=").decode()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    store = CountingStore(tmp_path / "alarms.db")
    async with store:
        yield store


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def links(store: CountingStore, clock: FakeClock) -> AckLinks:
    links = AckLinks(secret=SECRET, base_url=BASE, store=store, ttl_s=3600, clock=clock)
    await links.issue("a1", contact="+8613800000000", channel="sms")
    return links


async def test_ten_thousand_random_tokens_never_touch_the_store(
        links: AckLinks, store: CountingStore) -> None:
    await links.open()
    store.calls = 0
    for _ in range(10_000):
        with pytest.raises(AckTokenError) as info:
            await links.verify(random_token())
        assert info.value.problem is AckProblem.UNKNOWN
    assert store.calls == 0


async def test_live_ids_come_from_the_store_and_real_tokens_still_work(
        links: AckLinks, store: CountingStore, clock: FakeClock) -> None:
    token = token_of(await links.issue("a1", contact="c", channel="sms"))
    fresh = AckLinks(secret=SECRET, base_url=BASE, store=store, ttl_s=3600, clock=clock)
    assert (await fresh.verify(token)).alarm_id == "a1"     # learnt at open (here: lazily)
    _, grant = fresh.mint("a2", contact="c", channel="sms")  # minted links count at once
    assert fresh.live_count == 3
    assert grant.token_id
    await fresh.consume(token)
    with pytest.raises(AckTokenError) as info:
        await fresh.verify(token)
    assert info.value.problem is AckProblem.USED             # the store still decides that


async def test_expired_is_refused_without_the_store_and_forgotten_later(
        links: AckLinks, store: CountingStore, clock: FakeClock) -> None:
    token = token_of(await links.issue("a1", contact="c", channel="sms"))
    await links.open()
    clock.now += 3600
    store.calls = 0
    with pytest.raises(AckTokenError) as info:
        await links.verify(token)
    assert info.value.problem is AckProblem.EXPIRED
    assert store.calls == 0
    clock.now += KEEP_EXPIRED_MS / 1000 + 61
    links.mint("a3", contact="c", channel="sms")
    assert links.live_count == 1                              # memory holds live links only


@pytest.fixture
async def client(links: AckLinks) -> AsyncIterator[Client]:
    app = web.Application()
    add_ack_routes(app, links=links, service=OneAlarm(),
                   tz=dt.timezone(dt.timedelta(hours=8)))
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_guessing_over_http_is_throttled_and_cheap(
        client: Client, links: AckLinks, store: CountingStore) -> None:
    await links.open()
    store.calls = 0
    statuses = []
    for i in range(200):
        method = client.get if i % 2 else client.post
        async with method(f"/ack/{random_token()}", data={"disposition": "real"}) as resp:
            statuses.append(resp.status)
            if resp.status == 429:
                assert int(resp.headers["Retry-After"]) >= 1
                assert "text/html" in resp.headers["Content-Type"]
    assert statuses[:ACK_BURST] == [404] * ACK_BURST
    assert statuses[ACK_BURST:] == [429] * (200 - ACK_BURST)
    assert store.calls == 0
    # Another client (behind a reverse proxy on this machine) is not held back by the first.
    async with client.get(f"/ack/{random_token()}",
                          headers={"X-Forwarded-For": "198.51.100.7"}) as resp:
        assert resp.status == 404


def test_throttle_memory_is_bounded_and_refills() -> None:
    now = [0.0]
    throttle = ClientThrottle(rate_per_s=0.5, burst=2, max_clients=100, clock=lambda: now[0])
    for i in range(10_000):
        assert throttle.retry_after(f"10.0.{i // 256}.{i % 256}") == 0
    assert len(throttle) == 100
    assert throttle.retry_after("a") == 0
    assert throttle.retry_after("a") == 0
    assert throttle.retry_after("a") == 2
    now[0] += 2.0
    assert throttle.retry_after("a") == 0
