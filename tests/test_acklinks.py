"""Ack links (gateway/alarms/acklinks.py) and the page behind them (gateway/http/ackpage.py),
against a real AlarmStore database (SQLite and PostgreSQL) and a fake AlarmService that records
acknowledgements; on PostgreSQL also two instances sharing one database."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.alarms.acklinks import (
    TOKEN_CHARS,
    AckLinks,
    AckProblem,
    AckTokenError,
    decode_token,
    encode_token,
    insert_grants,
    sign,
    verify_tag,
)
from gateway.alarms.store import AlarmStore
from gateway.http.ackpage import add_ack_routes
from rules.alarm import Alarm, AlarmState, AlreadyAcknowledged, Disposition, Severity, Subject
from tests.support.alarmstores import StoreTarget

SECRET = b"s" * 32
BASE = "https://pw.example.test"
T0 = 1_795_000_000.0
Client = TestClient[web.Request, web.Application]


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def token_of(url: str) -> str:
    assert url.startswith(f"{BASE}/ack/")
    return url.rsplit("/", 1)[1]


def make_alarm(alarm_id: str = "a1", **overrides: Any) -> Alarm:
    fields: dict[str, Any] = {
        "alarm_id": alarm_id, "fingerprint": f"fp-{alarm_id}", "rule": "smoke_detected",
        "severity": Severity.CRITICAL, "state": AlarmState.FIRING,
        "subject": Subject(park="xz01", building="b3", floor="2", zone="east", device="sd-7",
                           tenant="hs-elec", kind="smoke", location="东侧走廊 near stair 2"),
        "message": "Smoke at b3/2F east", "started_at_ms": int(T0 * 1000) - 120_000,
        "updated_at_ms": int(T0 * 1000) - 60_000, "fired_at_ms": int(T0 * 1000) - 60_000,
    }
    fields.update(overrides)
    return Alarm(**fields)


@dataclass
class FakeService:
    """Just what the ack page uses; acknowledges like the gateway (ValueError once acked)."""

    alarms: dict[str, Alarm]
    ack_calls: list[dict[str, Any]] = field(default_factory=list)
    strict: bool = True

    async def get_alarm(self, alarm_id: str) -> Alarm | None:
        return self.alarms.get(alarm_id)

    async def acknowledge(self, alarm_id: str, *, by: str, disposition: Disposition,
                          channel: str, name: str | None = None) -> Alarm:
        self.ack_calls.append({"alarm_id": alarm_id, "by": by, "disposition": disposition,
                               "channel": channel, "name": name})
        alarm = self.alarms[alarm_id]
        if self.strict and alarm.acknowledged_by is not None:
            raise AlreadyAcknowledged(alarm)
        acked = alarm.evolve(state=AlarmState.ACKNOWLEDGED, acknowledged_by=by,
                             acknowledged_at_ms=int(T0 * 1000), ack_channel=channel,
                             disposition=disposition, acknowledged_name=name)
        self.alarms[alarm_id] = acked
        return acked


@pytest.fixture
async def store(alarm_target: StoreTarget) -> AsyncIterator[AlarmStore]:
    async with alarm_target.store() as s:
        yield s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def links(store: AlarmStore, clock: FakeClock) -> AckLinks:
    return AckLinks(secret=SECRET, base_url=BASE + "/", store=store, ttl_s=3600, clock=clock)


# --- pure helpers --------------------------------------------------------------------------------

def test_sign_encode_decode_round_trip() -> None:
    token_id = bytes(range(8))
    tag = sign(SECRET, token_id, "a1", "+8613800000000", "sms", 123)
    token = encode_token(token_id, tag)
    assert len(token) == TOKEN_CHARS == 24
    assert re.fullmatch(r"[A-Za-z0-9_-]{24}", token)
    assert decode_token(token) == (token_id, tag)
    assert verify_tag(SECRET, token_id, tag, "a1", "+8613800000000", "sms", 123)
    # Every bound field matters, and so does the secret.
    for args in (("a2", "+8613800000000", "sms", 123), ("a1", "+8613800000001", "sms", 123),
                 ("a1", "+8613800000000", "email", 123), ("a1", "+8613800000000", "sms", 124)):
        assert not verify_tag(SECRET, token_id, tag, *args)
    assert not verify_tag(b"x" * 32, token_id, tag, "a1", "+8613800000000", "sms", 123)
    # Length-prefixed: moving a boundary between fields changes the tag.
    assert (sign(SECRET, token_id, "ab", "c", "sms", 1)
            != sign(SECRET, token_id, "a", "bc", "sms", 1))


@pytest.mark.parametrize("bad", ["", "short", "A" * 23, "A" * 25, "!" * 24, "é" * 24,
                                 "AAAAAAAAAAAAAAAAAAAAAAA=", "AAAAAAAAAAAAAAAAAAAAAAA B"[:24]])
def test_decode_rejects_malformed(bad: str) -> None:
    with pytest.raises(AckTokenError) as info:
        decode_token(bad)
    assert info.value.problem is AckProblem.MALFORMED


def test_short_secret_refused_and_never_shown(store: AlarmStore) -> None:
    with pytest.raises(ValueError, match="secret"):
        AckLinks(secret=b"short", base_url=BASE, store=store)
    links = AckLinks(secret=SECRET, base_url=BASE, store=store)
    assert "sss" not in repr(links)


# --- issue / resolve / consume against the database ----------------------------------------------

async def test_issue_resolve_consume(links: AckLinks) -> None:
    url = await links.issue("a1", contact="+8613800000000", channel="sms")
    token = token_of(url)
    assert len(token) <= 24
    grant = await links.resolve(token)
    assert grant is not None
    assert (grant.alarm_id, grant.contact, grant.channel) == ("a1", "+8613800000000", "sms")
    assert grant.expires_at_ms == int(T0 * 1000) + 3_600_000
    assert grant.used_at_ms is None
    used = await links.consume(token)
    assert used.used_at_ms == int(T0 * 1000)
    assert await links.resolve(token) is None
    with pytest.raises(AckTokenError) as info:
        await links.consume(token)
    assert info.value.problem is AckProblem.USED
    with pytest.raises(AckTokenError) as info:
        await links.verify(token)
    assert info.value.problem is AckProblem.USED


async def test_a_reserved_link_is_a_reference_until_filled(links: AckLinks,
                                                            store: AlarmStore) -> None:
    ref, grant = links.reserve("a1", contact="+8613800000000", channel="sms")
    other_ref, other = links.reserve("a2", contact="x", channel="sms")
    await store.apply([], also=[functools.partial(insert_grants, grants=[grant, other])])
    assert "/ack/" not in ref
    text = f"Ack: {ref}\nforged: {{{{ack:AAAAAAAAAAA}}}} other alarm: {other_ref}"
    filled = await links.fill(text, alarm_id="a1")
    url = filled.split("\n")[0].removeprefix("Ack: ")
    assert len(url) == len(ref) == links.url_chars     # SMS length accounting holds
    verified = await links.verify(token_of(url))
    assert (verified.alarm_id, verified.contact) == ("a1", "+8613800000000")
    # References to no grant of this alarm never become links.
    assert filled.split("\n")[1] == "forged:  other alarm: "
    assert await links.url_for(grant.token_id) == url
    assert await links.url_for("AAAAAAAAAAA") is None


async def test_tokens_are_unique_and_short(links: AckLinks) -> None:
    tokens = {token_of(await links.issue("a1", contact="c", channel="sms")) for _ in range(50)}
    assert len(tokens) == 50
    assert all(len(t) <= 24 for t in tokens)


async def test_tampered_token_is_forged(links: AckLinks) -> None:
    token = token_of(await links.issue("a1", contact="c", channel="sms"))
    raw = bytearray(base64.urlsafe_b64decode(token))
    raw[-1] ^= 0x01                       # flip a tag bit
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(AckTokenError) as info:
        await links.verify(tampered)
    assert info.value.problem is AckProblem.FORGED
    raw[-1] ^= 0x01
    raw[0] ^= 0x01                        # another token id: not issued
    other = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(AckTokenError) as info:
        await links.verify(other)
    assert info.value.problem is AckProblem.UNKNOWN
    assert await links.resolve("x" * 200) is None
    # The original still works (failed attempts do not burn it).
    assert await links.resolve(token) is not None


async def test_wrong_secret_is_forged(links: AckLinks, store: AlarmStore,
                                      clock: FakeClock) -> None:
    token = token_of(await links.issue("a1", contact="c", channel="sms"))
    other = AckLinks(secret=b"o" * 32, base_url=BASE, store=store, clock=clock)
    with pytest.raises(AckTokenError) as info:
        await other.consume(token)
    assert info.value.problem is AckProblem.FORGED
    assert await links.resolve(token) is not None


async def test_altered_row_is_forged(links: AckLinks, store: AlarmStore) -> None:
    """Pointing a stored token at another alarm (or extending it) breaks its tag."""
    token = token_of(await links.issue("a1", contact="c", channel="sms"))
    await store.execute(lambda conn: conn.execute("UPDATE ack_tokens SET alarm_id = 'a2'"))
    assert await links.resolve(token) is None
    with pytest.raises(AckTokenError) as info:
        await links.verify(token)
    assert info.value.problem is AckProblem.FORGED


async def test_expired(links: AckLinks, clock: FakeClock) -> None:
    token = token_of(await links.issue("a1", contact="c", channel="sms"))
    clock.now += 3599
    assert await links.resolve(token) is not None
    clock.now += 1
    with pytest.raises(AckTokenError) as info:
        await links.consume(token)
    assert info.value.problem is AckProblem.EXPIRED
    assert info.value.problem.gone
    assert await links.prune(older_than_s=10) == 0
    clock.now += 11
    assert await links.prune(older_than_s=10) == 1
    with pytest.raises(AckTokenError) as info:
        await links.verify(token)
    assert info.value.problem is AckProblem.UNKNOWN


# --- the page ------------------------------------------------------------------------------------

@pytest.fixture
def service() -> FakeService:
    return FakeService({"a1": make_alarm()})


@pytest.fixture
async def client(links: AckLinks, service: FakeService) -> AsyncIterator[Client]:
    app = web.Application()
    add_ack_routes(app, links=links, service=service, tz=dt.timezone(dt.timedelta(hours=8)))
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_page_shows_alarm_and_form(links: AckLinks, client: Client) -> None:
    token = token_of(await links.issue("a1", contact="+8613800000000", channel="sms"))
    resp = await client.get(f"/ack/{token}")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    text = await resp.text()
    assert '<html lang="zh-CN">' in text
    assert 'name="viewport"' in text
    for expected in ("Smoke at b3/2F east", "smoke_detected", "特急", "critical",
                     "xz01 / b3 / 2F / east / 租户 tenant hs-elec", "东侧走廊 near stair 2",
                     "2026-11-18 19:05:40 UTC+0800", "1 min ago", "告警中", "firing",
                     'name="name"', 'method="post"', f'action="/ack/{token}"'):
        assert expected in text, expected
    for d in Disposition:
        assert f'value="{d.value}"' in text
    # The officer's words (issue 14): 属实 for any true alarm, the rule by its Chinese name.
    assert "属实" in text
    assert "真实火警" not in text
    assert "响应并标记为" in text
    assert "<script" not in text
    assert "http://" not in text
    assert "src=" not in text
    # Viewing never uses the token up (link previews fetch it).
    assert await links.resolve(token) is not None


async def test_bad_tokens_reveal_nothing(links: AckLinks, client: Client,
                                         clock: FakeClock) -> None:
    resp = await client.get("/ack/AAAAAAAAAAAAAAAAAAAAAAAA")
    assert resp.status == 404
    assert "Smoke" not in await resp.text()
    resp = await client.get("/ack/not-a-token")
    assert resp.status == 404
    token = token_of(await links.issue("a1", contact="c", channel="sms"))
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BA")
    resp = await client.get(f"/ack/{forged}")
    assert resp.status == 404
    assert "Smoke" not in await resp.text()
    resp = await client.post(f"/ack/{forged}", data={"disposition": "real"})
    assert resp.status == 404
    clock.now += 7200
    resp = await client.get(f"/ack/{token}")
    assert resp.status == 410
    text = await resp.text()
    assert "expired" in text
    assert "Smoke" not in text
    assert "b3" not in text
    resp = await client.post(f"/ack/{token}", data={"disposition": "real"})
    assert resp.status == 410


async def test_post_acknowledges_once(links: AckLinks, client: Client,
                                      service: FakeService) -> None:
    service.strict = False   # single use must come from the token, not from the service
    token = token_of(await links.issue("a1", contact="+8613800000000", channel="dingtalk"))
    resp = await client.post(f"/ack/{token}", data={"disposition": "false_alarm",
                                                    "name": "  张三  "})
    assert resp.status == 200
    text = await resp.text()
    assert "Acknowledged" in text
    assert "张三" in text
    assert "误报" in text
    # The link's contact is who acknowledged; the typed name travels apart, unverified.
    assert service.ack_calls == [{"alarm_id": "a1", "by": "+8613800000000",
                                  "disposition": Disposition.FALSE_ALARM,
                                  "channel": "dingtalk", "name": "张三"}]
    assert "unverified" in text
    resp = await client.post(f"/ack/{token}", data={"disposition": "real", "name": "李四"})
    assert resp.status == 410
    assert "already been used" in await resp.text()
    assert len(service.ack_calls) == 1
    resp = await client.get(f"/ack/{token}")
    assert resp.status == 410


async def test_post_without_name_uses_contact(links: AckLinks, client: Client,
                                              service: FakeService) -> None:
    token = token_of(await links.issue("a1", contact="duty@example.test", channel="email"))
    resp = await client.post(f"/ack/{token}", data={"disposition": "test"})
    assert resp.status == 200
    assert service.ack_calls[0]["by"] == "duty@example.test"
    assert service.ack_calls[0]["channel"] == "email"
    assert service.ack_calls[0]["name"] is None


async def test_post_rejects_bad_form_and_foreign_origin(links: AckLinks, client: Client,
                                                        service: FakeService) -> None:
    token = token_of(await links.issue("a1", contact="c", channel="sms"))
    resp = await client.post(f"/ack/{token}", data={"disposition": "maybe"})
    assert resp.status == 400
    resp = await client.post(f"/ack/{token}", data={"disposition": "real", "name": "x" * 101})
    assert resp.status == 400
    for origin in ("https://evil.example", "null"):
        resp = await client.post(f"/ack/{token}", data={"disposition": "real"},
                                 headers={"Origin": origin})
        assert resp.status == 403
    assert service.ack_calls == []
    assert await links.resolve(token) is not None
    # The advertised site's origin (behind a proxy) is accepted.
    resp = await client.post(f"/ack/{token}", data={"disposition": "real"},
                             headers={"Origin": BASE})
    assert resp.status == 200


async def test_same_host_origin_accepted(links: AckLinks, client: Client) -> None:
    token = token_of(await links.issue("a1", contact="c", channel="sms"))
    origin = f"http://{client.host}:{client.port}"
    resp = await client.post(f"/ack/{token}", data={"disposition": "real"},
                             headers={"Origin": origin})
    assert resp.status == 200


async def test_already_acknowledged_is_conflict(links: AckLinks, client: Client,
                                                service: FakeService) -> None:
    first = token_of(await links.issue("a1", contact="tenant", channel="sms"))
    second = token_of(await links.issue("a1", contact="duty", channel="wecom"))
    assert (await client.post(f"/ack/{first}", data={"disposition": "real"})).status == 200
    resp = await client.get(f"/ack/{second}")
    assert resp.status == 200
    text = await resp.text()
    assert 'method="post"' not in text
    assert "tenant" in text
    assert "已响应" in text
    resp = await client.post(f"/ack/{second}", data={"disposition": "fault"})
    assert resp.status == 409
    text = await resp.text()
    assert "Already acknowledged by tenant" in text
    assert "via sms" in text
    assert [c["by"] for c in service.ack_calls] == ["tenant", "duty"]


async def test_malicious_message_is_escaped(links: AckLinks, client: Client,
                                            service: FakeService) -> None:
    evil = "<script>alert('x')</script>\"><img src=x onerror=alert(1)>"
    service.alarms["a1"] = make_alarm(message=evil, subject=Subject(
        park="xz01", building="<b>b3</b>", location="<iframe src=//evil>"))
    token = token_of(await links.issue("a1", contact="<i>c</i>", channel="sms"))
    text = await (await client.get(f"/ack/{token}")).text()
    assert "<script" not in text
    assert "<img" not in text
    assert "<iframe" not in text
    assert "<b>b3" not in text
    assert "<i>c" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;&gt;&lt;img" in text
    resp = await client.post(f"/ack/{token}", data={"disposition": "real",
                                                    "name": "<script>x</script>"})
    assert resp.status == 200
    text = await resp.text()
    assert "<script" not in text
    assert "&lt;script&gt;x&lt;/script&gt;" in text
    assert service.ack_calls[0]["name"] == "<script>x</script>"  # stored raw, escaped on output


# --- two instances, one PostgreSQL database ------------------------------------------------------

@pytest.fixture
async def instance_b(pg_dsn: str, tmp_path: Path) -> AsyncIterator[tuple[AlarmStore, AlarmStore]]:
    target = StoreTarget("postgres", tmp_path, pg_dsn)
    async with target.store() as a, target.store() as b:
        yield a, b


def _page(links: AckLinks, service: FakeService) -> web.Application:
    app = web.Application()
    add_ack_routes(app, links=links, service=service, tz=dt.UTC)
    return app


@pytest.mark.integration
async def test_a_link_minted_by_one_instance_works_once_on_any_instance(
        instance_b: tuple[AlarmStore, AlarmStore], clock: FakeClock) -> None:
    store_a, store_b = instance_b
    links_a = AckLinks(secret=SECRET, base_url=BASE, store=store_a, ttl_s=3600, clock=clock)
    links_b = AckLinks(secret=SECRET, base_url=BASE, store=store_b, ttl_s=3600, clock=clock)
    await links_b.open()               # B learnt the live tokens before A minted this one
    service = FakeService({"a1": make_alarm()})
    # Both instances commit like the gateway: the grant with the message that carries it.
    ref, grant = links_a.reserve("a1", contact="+8613800000000", channel="sms")
    await store_a.apply([], also=[functools.partial(insert_grants, grants=[grant])])
    url = await links_a.fill(ref, alarm_id="a1")
    clock.now += 2                     # B looks for other instances' tokens at most once a second
    async with TestClient(TestServer(_page(links_b, service))) as on_b, \
            TestClient(TestServer(_page(links_a, service))) as on_a:
        resp = await on_b.get(f"/ack/{token_of(url)}")
        assert resp.status == 200, await resp.text()
        resp = await on_b.post(f"/ack/{token_of(url)}", data={"disposition": "real"})
        assert resp.status == 200, await resp.text()
        # Used once, on B: A, which minted it, refuses it too.
        resp = await on_a.post(f"/ack/{token_of(url)}", data={"disposition": "false_alarm"})
        assert resp.status == 410
    assert [c["by"] for c in service.ack_calls] == ["+8613800000000"]


@pytest.mark.integration
async def test_guesses_on_a_shared_store_cost_one_lookup_a_second(
        instance_b: tuple[AlarmStore, AlarmStore], clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, store_b = instance_b
    links_b = AckLinks(secret=SECRET, base_url=BASE, store=store_b, ttl_s=3600, clock=clock)
    await links_b.open()
    lookups = 0
    real = store_b.execute

    async def counting(fn: Any, *args: Any) -> Any:
        nonlocal lookups
        lookups += 1
        return await real(fn, *args)

    monkeypatch.setattr(store_b, "execute", counting)
    clock.now += 2
    for i in range(50):
        guess = encode_token(i.to_bytes(8, "big"), b"\0" * 10)
        assert await links_b.resolve(guess) is None
    assert lookups == 1
