"""Topic routing, registry lookup, spoofing guard and line-protocol output — no broker needed."""

from __future__ import annotations

import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.registry import Registry, build_registry
from gateway.router import MessageType, Router
from sensors.base import Rejection, RejectReason

GOLDEN_TOPIC = Path(__file__).parent / "golden" / "_topic"
RECEIVED_MS = 1764059460000
SH = ZoneInfo("Asia/Shanghai")


def _registry() -> Registry:
    rows = [
        (1, {"device": "wp-0017", "park": "xz01", "building": "b3", "floor": "2", "zone": "east",
             "kind": "water_pressure", "tenant": "hs-elec", "location": "2F east riser"}),
        (2, {"device": "fp-0001", "park": "xz01", "building": "b1", "floor": "1", "zone": "ctl",
             "kind": "fire_panel"}),
        (3, {"device": "sm-0420", "park": "xz01", "building": "b2", "floor": "3", "zone": "w",
             "kind": "smoke"}),
    ]
    return build_registry(rows, source="test")


@pytest.fixture
def router() -> Router:
    return Router(registry=_registry(), root="parks", timezones={}, default_timezone=SH,
                  max_payload_bytes=65536, max_age_s=7 * 86400, max_future_s=300)


def test_subscription_covers_the_whole_root_so_bad_topics_are_seen(router: Router) -> None:
    assert router.subscriptions() == ["parks/#"]


def test_telemetry_becomes_one_line_with_tags_fields_and_ms_time(router: Router) -> None:
    routed = router.route("parks/xz01/b3/wp-0017/telemetry",
                          b'{"ts": 1764059400.123, "seq": 1234, "values": {"pressure_mpa": 0.32},'
                          b' "battery_pct": 87, "rssi_dbm": -71}', RECEIVED_MS)
    assert routed.type is MessageType.TELEMETRY
    assert routed.lines == [
        "water_pressure,building=b3,device=wp-0017,floor=2,park=xz01,tenant=hs-elec,zone=east "
        "pressure_mpa=0.32,battery_pct=87.0,rssi_dbm=-71.0,seq=1234i 1764059400123"]


def test_batch_form_gives_one_line_per_reading(router: Router) -> None:
    readings = [{"ts": 1764059400 + 60 * i, "values": {"pressure_mpa": 0.3}} for i in range(10)]
    routed = router.route("parks/xz01/b3/wp-0017/telemetry",
                          json.dumps({"seq": 77, "readings": readings}).encode(), RECEIVED_MS)
    assert len(routed.lines) == 10
    assert routed.samples == 10
    assert all(",seq=77i " in line for line in routed.lines)


def test_event_line_has_kind_and_type_tags_and_string_fields(router: Router) -> None:
    routed = router.route("parks/xz01/b1/fp-0001/event",
                          b'{"ts": "2025-11-25T16:30:00+08:00", "seq": 5512, "type": "fire_alarm",'
                          b' "point": "1-02-034", "detail": "loop 2 \\"addr\\" 34"}', RECEIVED_MS)
    assert routed.lines == [
        "events,building=b1,device=fp-0001,floor=1,kind=fire_panel,park=xz01,type=fire_alarm,"
        'zone=ctl detail="loop 2 \\"addr\\" 34",point="1-02-034",seq=5512i 1764059400000']


def test_status_line_marks_retained_announcements(router: Router) -> None:
    live = router.route("parks/xz01/b2/sm-0420/status", b"offline", RECEIVED_MS)
    old = router.route("parks/xz01/b2/sm-0420/status", b"online", RECEIVED_MS, retained=True)
    assert live.lines[0].endswith(f'online=false,reason="reported" {RECEIVED_MS}')
    assert 'online=true,reason="retained"' in old.lines[0]
    assert live.lines[0].startswith("device_status,")
    assert ",kind=smoke," in live.lines[0]


@pytest.mark.parametrize(("topic", "reason"), [
    ("other/xz01/b3/wp-0017/telemetry", RejectReason.BAD_TOPIC),
    ("parks/xz01/b3/wp-0017", RejectReason.BAD_TOPIC),
    ("parks/xz01/b3/wp-0017/telemetry/extra", RejectReason.BAD_TOPIC),
    ("parks/xz01/b3/wp-0017/command", RejectReason.BAD_TOPIC),
    ("parks/xz01/b3/wp 0017/telemetry", RejectReason.BAD_ID),
    ("parks/xz01/b=3/wp-0017/telemetry", RejectReason.BAD_ID),
    ("parks/xz01/b3/wp-9999/telemetry", RejectReason.UNKNOWN_DEVICE),
    ("parks/xz02/b3/wp-0017/telemetry", RejectReason.TOPIC_MISMATCH),
    ("parks/xz01/b1/wp-0017/event", RejectReason.TOPIC_MISMATCH),
])
def test_topic_rejections(router: Router, topic: str, reason: RejectReason) -> None:
    with pytest.raises(Rejection) as info:
        router.route(topic, b'{"values": {"pressure_mpa": 0.3}}', RECEIVED_MS)
    assert info.value.reason is reason


@pytest.mark.parametrize("case", sorted(p.name for p in GOLDEN_TOPIC.iterdir() if p.is_dir()))
def test_golden_topic_cases(router: Router, case: str) -> None:
    folder = GOLDEN_TOPIC / case
    expected = json.loads((folder / "error.json").read_text())
    with pytest.raises(Rejection) as info:
        router.route((folder / "topic").read_text().strip(), (folder / "payload").read_bytes(),
                     RECEIVED_MS)
    assert info.value.reason.value == expected["reason"]
    assert expected["detail_contains"] in info.value.detail


def test_oversize_checked_before_decoding(router: Router) -> None:
    with pytest.raises(Rejection) as info:
        router.route("parks/xz01/b3/wp-0017/telemetry", b"{" + b" " * 70000 + b"}", RECEIVED_MS)
    assert info.value.reason is RejectReason.OVERSIZE


def test_tag_values_are_escaped_in_lines() -> None:
    # IDs are validated, but location-free tags such as zone could still carry odd characters
    # in a future registry; the encoder, not the validator, is what keeps lines intact.
    rows = [(1, {"device": "wp-1", "park": "xz01", "building": "b3", "floor": "2",
                 "zone": "east", "kind": "water_pressure"})]
    r = Router(registry=build_registry(rows, source="t"), root="a/b", timezones={},
               default_timezone=SH, max_payload_bytes=65536, max_age_s=1e9, max_future_s=300)
    routed = r.route("a/b/xz01/b3/wp-1/telemetry", b'{"values": {"pressure_mpa": 1}}',
                     RECEIVED_MS)
    assert routed.lines[0].startswith("water_pressure,building=b3,device=wp-1,")
    assert "pressure_mpa=1.0 " in routed.lines[0]


def test_untrusted_batch_readings_keep_distinct_ordered_times(router: Router) -> None:
    # A device whose clock says 1970 flushes a buffer: the readings get the receive time, but
    # must not collapse onto one timestamp (InfluxDB would keep only the last).
    readings = [{"ts": 100 + i, "values": {"pressure_mpa": 0.3 + i / 100}} for i in range(5)]
    routed = router.route("parks/xz01/b3/wp-0017/telemetry",
                          json.dumps({"readings": readings}).encode(), RECEIVED_MS)
    stamps = [int(line.rsplit(" ", 1)[1]) for line in routed.lines]
    assert stamps == [RECEIVED_MS - 4 + i for i in range(5)]
    assert routed.untrusted == 5
