"""Partitions by park (issue 16, point 1): who owns a park, what an instance subscribes to,
and how a message or a UITD of another partition is refused (never as unknown)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from pydantic import ValidationError

from gateway.cluster.partitions import (
    Partition,
    hash_slot,
    priority_filters,
    topic_filters,
)
from gateway.config import ClusterSettings, Settings
from gateway.ingest.validate import Validator
from sensors.base import Rejection, RejectReason
from sensors.errors import ConfigError
from sensors.registry import Registry, load_registry

SH = ZoneInfo("Asia/Shanghai")
PAYLOAD = b'{"ts": 1764059400, "values": {"pressure_mpa": 0.32}}'


def _s(**doc: Any) -> Settings:
    return Settings(**doc)


def _registry(tmp_path: Path, parks: list[str]) -> Registry:
    rows = [{"device": f"wp-{park}", "park": park, "building": "b1", "floor": "1",
             "zone": "z1", "kind": "water_pressure"} for park in parks]
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"devices": rows}))
    return load_registry(path)


def test_hash_slot_is_sha256_and_stable_across_processes() -> None:
    # Fixed values: Python's hash() is salted per process and would fail this in CI.
    assert [hash_slot(p, 4) for p in ("xz01", "xz02", "hq", "park-17")] == \
        [hash_slot(p, 4) for p in ("xz01", "xz02", "hq", "park-17")]
    assert hash_slot("xz01", 1) == 0
    assert hash_slot("xz01", 1000) == int.from_bytes(
        hashlib.sha256(b"xz01").digest()[:8], "big") % 1000


def test_hash_assignment_gives_every_park_exactly_one_owner() -> None:
    parks = [f"p{i:03d}" for i in range(200)]
    owners = {p: [i for i in range(3)
                  if Partition("x", slots=(3, i)).owns(p)] for p in parks}
    assert all(len(o) == 1 for o in owners.values())
    counts = [sum(1 for o in owners.values() if o == [i]) for i in range(3)]
    assert min(counts) > 40, counts     # roughly even


def test_listed_partition_and_the_single_box() -> None:
    single = Partition.from_settings(ClusterSettings())
    assert single.whole
    assert single.owns("anything")
    listed = Partition.from_settings(ClusterSettings(partition="a", parks=["xz01", "xz02"]))
    assert listed.owns("xz01")
    assert not listed.owns("xz03")


def test_topic_filters_follow_the_device_contract() -> None:
    assert topic_filters("parks", ["xz01", "xz02"]) == ["parks/xz01/#", "parks/xz02/#"]
    assert priority_filters("root/parks/", ["xz01"]) == [
        "root/parks/xz01/+/+/event", "root/parks/xz01/+/+/status"]


@pytest.mark.parametrize(("cluster", "message"), [
    ({"parks": ["xz01"]}, "need cluster.partition"),
    ({"partition": "a"}, "owns no park"),
    ({"partition": "a", "parks": ["xz01"], "partitions": 2, "index": 0}, "not both"),
    ({"partition": "a", "partitions": 2}, "needs both"),
    ({"partition": "a", "partitions": 2, "index": 2}, "not below"),
    ({"partition": "a", "parks": ["xz01"], "lease_s": 4, "renew_s": 3}, "at most half"),
    ({"partition": "a", "parks": ["xz01", "xz01"]}, "listed twice"),
])
def test_cluster_settings_errors_say_what_to_do(cluster: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ClusterSettings(**cluster)


def test_a_partition_needs_a_lease_database() -> None:
    with pytest.raises(ValidationError, match="needs a PostgreSQL lease"):
        _s(cluster={"partition": "a", "parks": ["xz01"]})
    s = _s(cluster={"partition": "a", "parks": ["xz01"],
                          "lease_dsn": "postgresql://pw@db/pw"})
    assert s.lease_dsn() == "postgresql://pw@db/pw"
    shared = _s(cluster={"partition": "a", "parks": ["xz01"]},
                alarms={"backend": "postgres", "postgres_dsn": "postgresql://pw@db/alarms"})
    assert shared.lease_dsn() == "postgresql://pw@db/alarms"


def test_active_and_standby_share_the_partitions_client_id() -> None:
    def settings(instance: str) -> Settings:
        return _s(instance=instance, cluster={
            "partition": "north", "parks": ["xz01"], "lease_dsn": "postgresql://pw@db/pw"})
    assert settings("gw1").client_id == settings("gw2").client_id == "parkwatch-north"
    assert _s(instance="gw1").client_id == "parkwatch-gw1"


def test_ack_after_influx_refuses_an_evicting_wal_and_warns_on_a_small_window() -> None:
    with pytest.raises(ValidationError, match="full_policy: block"):
        _s(ingest={"ack_after": "influx"}, wal={"full_policy": "drop_oldest_telemetry"})
    s = _s(ingest={"ack_after": "influx"}, mqtt={"receive_maximum": 100})
    assert any("receive_maximum" in w for w in s.startup_warnings())
    assert _s(ingest={"ack_after": "influx"},
                    mqtt={"receive_maximum": 10000}).startup_warnings() == []


def test_another_partitions_device_is_other_partition_not_unknown(tmp_path: Path) -> None:
    registry = _registry(tmp_path, ["xz01", "xz02"])
    part = Partition("a", listed=frozenset({"xz01"}))
    v = Validator(registry=registry, root="parks", timezones={}, default_timezone=SH,
                  max_payload_bytes=65536, max_age_s=7 * 86400, max_future_s=300,
                  owns_park=part.owns)
    assert v.validate("parks/xz01/b1/wp-xz01/telemetry", PAYLOAD, 1764059400000).samples == 1
    with pytest.raises(Rejection) as caught:
        v.validate("parks/xz02/b1/wp-xz02/telemetry", PAYLOAD, 1764059400000)
    assert caught.value.reason is RejectReason.OTHER_PARTITION
    with pytest.raises(Rejection) as unknown:
        v.validate("parks/xz02/b1/nobody/telemetry", PAYLOAD, 1764059400000)
    assert unknown.value.reason is RejectReason.UNKNOWN_DEVICE


def test_a_partition_that_watches_nothing_or_a_typo_does_not_start(tmp_path: Path) -> None:
    from gateway.runtime.gateway import Gateway

    registry = _registry(tmp_path, ["xz01", "xz02"])
    base: dict[str, Any] = {"state_dir": str(tmp_path / "s"), "alarms": {"enabled": False},
                            "registry": str(tmp_path / "registry.yaml")}
    lease = {"lease_dsn": "postgresql://pw@db/pw"}
    typo = _s(**base, cluster={"partition": "a", "parks": ["xz01", "xz99"], **lease})
    with pytest.raises(ConfigError, match="xz99"):
        Gateway(settings=typo, registry=registry)
    empty = next(_s(**base, cluster={"partition": "a", "partitions": 50, "index": i,
                                           **lease})
                 for i in range(50)
                 if not any(hash_slot(p, 50) == i for p in ("xz01", "xz02")))
    with pytest.raises(ConfigError, match="owns none"):
        Gateway(settings=empty, registry=registry)
    ok = _s(**base, cluster={"partition": "a", "parks": ["xz02"], **lease})
    gw = Gateway(settings=ok, registry=registry)
    assert gw.parks == ["xz02"]
    assert gw._subscriptions()[0] == "parks/xz02/#"


def test_the_engine_covers_only_the_partitions_devices(tmp_path: Path) -> None:
    """Another partition's devices are never heard here: if this engine covered them, its
    silence rules would raise their offline alarms (and a second active alarm for the same
    fingerprint in the shared store, next to their own partition's)."""
    from gateway.runtime.gateway import Gateway

    registry = _registry(tmp_path, ["xz01", "xz02"])
    settings = _s(state_dir=str(tmp_path / "s"), registry=str(tmp_path / "registry.yaml"),
                  cluster={"partition": "a", "parks": ["xz02"],
                           "lease_dsn": "postgresql://pw@db/pw"})
    gw = Gateway(settings=settings, registry=registry)
    assert [d.device for d in gw.owned] == ["wp-xz02"]
    assert gw.device_count() == 1
    assert gw.alarms is not None
    assert [d.device for d in gw.alarms.registry] == ["wp-xz02"]
    # Validation still knows every device (other_partition, not unknown_device).
    assert gw.registry.get("wp-xz01") is not None


async def test_a_standby_says_so_on_healthz_and_is_not_active() -> None:
    import aiohttp

    from gateway.cluster.standby import Role
    from gateway.http.app import start_standby_http
    from gateway.tools.devservices import free_port

    role = Role(partition="north", holder="gw2@host:1", held_by="gw1@host:7", held_for_s=4.2)
    port = free_port()
    runner = await start_standby_http(role, "127.0.0.1", port)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                body = await r.json()
                assert r.status == 200            # a waiting standby is healthy
            assert body["cluster"]["role"] == "standby"
            assert body["cluster"]["held_by"] == "gw1@host:7"
            async with http.get(f"http://127.0.0.1:{port}/active") as r:
                assert r.status == 503            # a load balancer sends nothing here
            async with http.get(f"http://127.0.0.1:{port}/alarms") as r:
                assert r.status == 404            # the API belongs to the active
    finally:
        await runner.cleanup()


@pytest.mark.integration
async def test_a_moved_park_follows_the_partitions_resumed_session(
        tmp_path: Path, mosquitto: Any, influxd: Any) -> None:
    """Moving a park (stop → reassign → start): the partition's persistent session is resumed
    with the subscriptions it had; the gateway drops the park it gave away and subscribes to
    the one it took, or the taken park would never be heard."""
    from tests.support.gateway import make_settings, running_gateway
    from tests.support.readings import publish
    from tests.support.waiting import wait_for

    registry = _registry(tmp_path, ["xz01", "xz02"])
    base = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                         registry=str(tmp_path / "registry.yaml"), alarms={"enabled": False},
                         cluster={"partition": f"mv{tmp_path.name[-12:]}", "parks": ["xz01"],
                                  "lease_dsn": "postgresql://unused@127.0.0.1/x"})
    root = base.mqtt.topic_root

    def msg(park: str) -> tuple[str, bytes]:
        return f"{root}/{park}/b1/wp-{park}/telemetry", PAYLOAD

    async with running_gateway(base, registry) as gw:
        await publish(mosquitto.port, [msg("xz01")])
        await wait_for(lambda: gw.metrics.value("parkwatch_messages_accepted_total",
                                                type="telemetry") == 1,
                       timeout_s=10, what="xz01 heard before the move")
    moved = base.model_copy(update={"cluster": base.cluster.model_copy(
        update={"parks": ["xz02"]})})
    async with running_gateway(moved, registry) as gw:
        await asyncio.sleep(0.5)                 # the subscription sync's round trip
        await publish(mosquitto.port, [msg("xz01"), msg("xz02")])
        await wait_for(lambda: gw.metrics.value("parkwatch_messages_accepted_total",
                                                type="telemetry") == 1,
                       timeout_s=10, what="xz02 heard after the move")
        await asyncio.sleep(0.5)
        # The park given away is not even received (not subscribed), let alone refused.
        assert gw.metrics.value("parkwatch_messages_rejected_total",
                                reason="other_partition") == 0
