"""Topic routing, registry lookup, spoofing guard and line-protocol output — no broker needed."""

from __future__ import annotations

import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.ingest.validate import MessageType, Validator
from rules.observation import DeviceEvent
from sensors.base import Rejection, RejectReason
from sensors.registry import Registry, build_registry

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
def validator() -> Validator:
    return Validator(registry=_registry(), root="parks", timezones={}, default_timezone=SH,
                  max_payload_bytes=65536, max_age_s=7 * 86400, max_future_s=300)


def test_subscription_covers_the_whole_root_so_bad_topics_are_seen(validator: Validator) -> None:
    assert validator.subscriptions() == ["parks/#"]


def test_telemetry_becomes_one_line_with_tags_fields_and_ms_time(validator: Validator) -> None:
    validated = validator.validate("parks/xz01/b3/wp-0017/telemetry",
                          b'{"ts": 1764059400.123, "seq": 1234, "values": {"pressure_mpa": 0.32},'
                          b' "battery_pct": 87, "rssi_dbm": -71}', RECEIVED_MS)
    assert validated.type is MessageType.TELEMETRY
    assert validated.lines == [
        "water_pressure,building=b3,device=wp-0017,floor=2,park=xz01,tenant=hs-elec,zone=east "
        "pressure_mpa=0.32,battery_pct=87.0,rssi_dbm=-71.0,seq=1234i 1764059400123"]


def test_batch_form_gives_one_line_per_reading(validator: Validator) -> None:
    readings = [{"ts": 1764059400 + 60 * i, "values": {"pressure_mpa": 0.3}} for i in range(10)]
    validated = validator.validate("parks/xz01/b3/wp-0017/telemetry",
                          json.dumps({"seq": 77, "readings": readings}).encode(), RECEIVED_MS)
    assert len(validated.lines) == 10
    assert validated.samples == 10
    assert all(",seq=77i " in line for line in validated.lines)


def test_event_line_has_kind_and_type_tags_and_string_fields(validator: Validator) -> None:
    validated = validator.validate("parks/xz01/b1/fp-0001/event",
                          b'{"ts": "2025-11-25T16:30:00+08:00", "seq": 5512, "type": "fire_alarm",'
                          b' "point": "1-02-034", "detail": "loop 2 \\"addr\\" 34"}', RECEIVED_MS)
    assert validated.lines == [
        "events,building=b1,device=fp-0001,floor=1,kind=fire_panel,park=xz01,type=fire_alarm,"
        'zone=ctl detail="loop 2 \\"addr\\" 34",point="1-02-034",seq=5512i 1764059400000']


def test_status_is_an_observation_and_leaves_the_line_to_liveness(validator: Validator) -> None:
    # device_status points are written by the liveness tracker (gateway/runtime/liveness.py).
    live = validator.validate("parks/xz01/b2/sm-0420/status", b"offline", RECEIVED_MS)
    old = validator.validate("parks/xz01/b2/sm-0420/status", b"online", RECEIVED_MS, retained=True)
    assert live.lines == []
    assert old.lines == []
    assert live.latest == {"online": False}
    assert len(live.observations) == 1
    assert old.observations == ()


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
def test_topic_rejections(validator: Validator, topic: str, reason: RejectReason) -> None:
    with pytest.raises(Rejection) as info:
        validator.validate(topic, b'{"values": {"pressure_mpa": 0.3}}', RECEIVED_MS)
    assert info.value.reason is reason


@pytest.mark.parametrize("case", sorted(p.name for p in GOLDEN_TOPIC.iterdir() if p.is_dir()))
def test_golden_topic_cases(validator: Validator, case: str) -> None:
    folder = GOLDEN_TOPIC / case
    expected = json.loads((folder / "error.json").read_text())
    with pytest.raises(Rejection) as info:
        validator.validate((folder / "topic").read_text().strip(),
                           (folder / "payload").read_bytes(), RECEIVED_MS)
    assert info.value.reason.value == expected["reason"]
    assert expected["detail_contains"] in info.value.detail


def test_oversize_checked_before_decoding(validator: Validator) -> None:
    with pytest.raises(Rejection) as info:
        validator.validate("parks/xz01/b3/wp-0017/telemetry", b"{" + b" " * 70000 + b"}",
                           RECEIVED_MS)
    assert info.value.reason is RejectReason.OVERSIZE


def test_tag_values_are_escaped_in_lines() -> None:
    # IDs are validated, but location-free tags such as zone could still carry odd characters
    # in a future registry; the encoder, not the validator, is what keeps lines intact.
    rows = [(1, {"device": "wp-1", "park": "xz01", "building": "b3", "floor": "2",
                 "zone": "east", "kind": "water_pressure"})]
    r = Validator(registry=build_registry(rows, source="t"), root="a/b", timezones={},
               default_timezone=SH, max_payload_bytes=65536, max_age_s=1e9, max_future_s=300)
    validated = r.validate("a/b/xz01/b3/wp-1/telemetry", b'{"values": {"pressure_mpa": 1}}',
                     RECEIVED_MS)
    assert validated.lines[0].startswith("water_pressure,building=b3,device=wp-1,")
    assert "pressure_mpa=1.0 " in validated.lines[0]


def test_untrusted_batch_readings_keep_distinct_ordered_times(validator: Validator) -> None:
    # A device whose clock says 1970 flushes a buffer: the readings get the receive time, but
    # must not collapse onto one timestamp (InfluxDB would keep only the last).
    readings = [{"ts": 100 + i, "values": {"pressure_mpa": 0.3 + i / 100}} for i in range(5)]
    validated = validator.validate("parks/xz01/b3/wp-0017/telemetry",
                          json.dumps({"readings": readings}).encode(), RECEIVED_MS)
    stamps = [int(line.rsplit(" ", 1)[1]) for line in validated.lines]
    assert stamps == [RECEIVED_MS - 4 + i for i in range(5)]
    assert validated.untrusted == 5


# --------------------------------------------------------------------------- hostile input

WP = "parks/xz01/b3/wp-0017/telemetry"


def _reason(validator: Validator, topic: str | bytes, payload: bytes) -> RejectReason:
    with pytest.raises(Rejection) as info:
        validator.validate(topic, payload, RECEIVED_MS)
    return info.value.reason


@pytest.mark.parametrize("bad", [
    "wp,0017", "wp 0017", "wp=0017", 'wp"0017', "wp'0017", "wp\\0017", "wp\n0017", "wp\r0017",
    "wp\t0017", "wp+", "+", "#", "wp#", "", "-wp", ".wp", "w" * 65, "wp\x000017", "wp\u00a00017",
    "wp\u20280017", "wp\u0430017", "wp;drop", "wp*", "wp$", "wp%2C0017",
])
@pytest.mark.parametrize("level", [0, 1, 2])
def test_injection_ids_in_any_topic_level_never_route(validator: Validator, bad: str,
                                                      level: int) -> None:
    parts = ["xz01", "b3", "wp-0017"]
    parts[level] = bad
    topic = "parks/" + "/".join(parts) + "/telemetry"
    assert _reason(validator, topic, b'{"values": {"pressure_mpa": 0.3}}') is RejectReason.BAD_ID


def test_an_id_of_exactly_64_characters_is_valid_but_unknown(validator: Validator) -> None:
    assert _reason(validator, "parks/xz01/b3/" + "w" * 64 + "/telemetry",
                   b"{}") is RejectReason.UNKNOWN_DEVICE


@pytest.mark.parametrize("topic", [
    b"parks/xz01/b3/wp-0017\xff/telemetry", b"parks/\xc3\x28/b3/wp-0017/telemetry",
    b"\xed\xa0\x80parks/xz01/b3/wp-0017/telemetry", b"parks/xz01/b3/wp-0017/telemetry\x80",
])
def test_topic_bytes_that_are_not_utf8_are_bad_utf8(validator: Validator, topic: bytes) -> None:
    assert _reason(validator, topic, b'{"values": {"pressure_mpa": 0.3}}') is RejectReason.BAD_UTF8


def test_topic_bytes_that_are_utf8_route_like_text(validator: Validator) -> None:
    validated = validator.validate(WP.encode(), b'{"values": {"pressure_mpa": 0.3}}', RECEIVED_MS)
    assert validated.device.device == "wp-0017"


def test_a_topic_paho_could_not_decode_is_bad_utf8(validator: Validator) -> None:
    # gateway/ingest/mqtt.py decodes an invalid topic with errors="replace".
    topic = b"parks/xz01/b3/wp-0017\xff/telemetry".decode("utf-8", "replace")
    assert _reason(validator, topic, b"{}") is RejectReason.BAD_UTF8


@pytest.mark.parametrize(("topic", "payload"), [
    ("parks/xz02/b3/wp-0017/telemetry", b'{"values": {"pressure_mpa": 0.3}}'),
    ("parks/xz01/b2/wp-0017/telemetry", b'{"values": {"pressure_mpa": 0.3}}'),
    ("parks/xz01/b2/wp-0017/event", b'{"type": "fire_alarm"}'),
    ("parks/xz01/b3/fp-0001/event", b'{"type": "fire_alarm"}'),
    ("parks/xz01/b3/sm-0420/status", b"offline"),
])
def test_a_device_publishing_under_another_building_is_topic_mismatch(
        validator: Validator, topic: str, payload: bytes) -> None:
    assert _reason(validator, topic, payload) is RejectReason.TOPIC_MISMATCH


@pytest.mark.parametrize("payload", [
    b'{"device": "sm-0420", "values": {"pressure_mpa": 0.3}}',
    b'{"device": "sm-0420", "pressure_mpa": 0.3}',
    b'{"park": "xz02", "building": "b9", "values": {"pressure_mpa": 0.3}}',
    b'{"tags": {"device": "x"}, "values": {"pressure_mpa": 0.3}}',
])
def test_identity_in_the_payload_is_refused_never_believed(validator: Validator,
                                                           payload: bytes) -> None:
    # Only the topic (checked against the registry) says who is speaking.
    assert _reason(validator, WP, payload) in {RejectReason.SCHEMA, RejectReason.UNKNOWN_METRIC}


@pytest.mark.parametrize("template", [
    '{"values": {"pressure_mpa": X}}', '{"pressure_mpa": X}', '{"press_bar": X}',
    '{"pressure": X, "unit": "kPa"}', '{"values": {"pressure_mpa": 0.3}, "battery_pct": X}',
    '{"values": {"pressure_mpa": 0.3}, "rssi_dbm": X}',
    '{"readings": [{"values": {"pressure_mpa": X}}]}',
])
@pytest.mark.parametrize("literal", [
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "true", "false", "1" + "0" * 400,
    "1" + "0" * 5000, '"0.3"', "[0.3]", "{}",
])
def test_no_non_finite_or_non_number_passes_in_any_numeric_position(
        validator: Validator, template: str, literal: str) -> None:
    payload = template.replace("X", literal).encode()
    # Which reason depends on where the value sits; that it is refused is the point.
    assert _reason(validator, WP, payload) in {RejectReason.NAN, RejectReason.TYPE,
                                            RejectReason.RANGE, RejectReason.BAD_JSON}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
def test_non_finite_values_are_nan(validator: Validator, literal: str) -> None:
    for template in ('{"values": {"pressure_mpa": X}}', '{"pressure_mpa": X}',
                     '{"pressure": X, "unit": "kPa"}', '{"ts": X, "values": {"pressure_mpa": 1}}',
                     '{"values": {"pressure_mpa": 1}, "battery_pct": X}'):
        payload = template.replace("X", literal).encode()
        assert _reason(validator, WP, payload) is RejectReason.NAN, payload


@pytest.mark.parametrize("literal", ["NaN", "1e400", "true"])
@pytest.mark.parametrize("key", ["ts", "seq", "point", "detail"])
def test_event_fields_refuse_non_finite_and_wrong_types(validator: Validator, literal: str,
                                                        key: str) -> None:
    payload = f'{{"type": "fire_alarm", "{key}": {literal}}}'.encode()
    assert _reason(validator, "parks/xz01/b1/fp-0001/event", payload) in {
        RejectReason.NAN, RejectReason.TYPE, RejectReason.SCHEMA}


# --------------------------------------------------------------------------- size limits


def _validator(**kwargs: float) -> Validator:
    args: dict[str, object] = {"max_payload_bytes": 65536, **kwargs}
    return Validator(registry=_registry(), root="parks", timezones={}, default_timezone=SH,
                  max_age_s=7 * 86400, max_future_s=300, **args)  # type: ignore[arg-type]


def _batch(n: int) -> bytes:
    return json.dumps({"readings": [{"ts": 1764059400 + i, "values": {"pressure_mpa": 0.3}}
                                    for i in range(n)]}).encode()


def test_batch_limit_is_configurable_and_oversize() -> None:
    small = _validator(max_batch=10)
    assert len(small.validate(WP, _batch(10), RECEIVED_MS).lines) == 10
    with pytest.raises(Rejection) as info:
        small.validate(WP, _batch(11), RECEIVED_MS)
    assert info.value.reason is RejectReason.OVERSIZE
    assert "11 items > 10" in info.value.detail


def test_default_batch_limit_is_1000(validator: Validator) -> None:
    assert len(validator.validate(WP, _batch(1000), RECEIVED_MS).lines) == 1000
    assert _reason(validator, WP, _batch(1001)) is RejectReason.OVERSIZE


def test_any_long_array_is_oversize_not_validated_item_by_item(validator: Validator) -> None:
    payload = b'{"values": {"pressure_mpa": [' + b",".join([b"1"] * 5000) + b"]}}"
    assert _reason(validator, WP, payload) is RejectReason.OVERSIZE


def test_deep_nesting_is_oversize(validator: Validator) -> None:
    payload = b'{"values": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}"
    assert _reason(validator, WP, payload) is RejectReason.OVERSIZE
    recursion = b'{"values": ' + b"[" * 60000 + b"]" * 60000 + b"}"
    assert _reason(_validator(max_payload_bytes=1 << 20), WP, recursion) is RejectReason.OVERSIZE


@pytest.mark.parametrize("where", ["top", "values", "nested"])
def test_objects_with_too_many_keys_are_oversize(validator: Validator, where: str) -> None:
    many = {f"k{i}": 1 for i in range(65)}
    docs: dict[str, object] = {"top": many, "values": {"values": many},
                               "nested": {"values": {"pressure_mpa": 0.3}, "x": {"y": many}}}
    doc = docs[where]
    assert _reason(validator, WP, json.dumps(doc).encode()) is RejectReason.OVERSIZE


def test_64_keys_are_not_a_size_problem(validator: Validator) -> None:
    doc = {"values": {f"k{i}": 1 for i in range(64)}}
    assert _reason(validator, WP, json.dumps(doc).encode()) is RejectReason.UNKNOWN_METRIC


def test_overlong_event_text_is_cut_so_a_fire_alarm_is_never_lost(validator: Validator) -> None:
    payload = json.dumps({"type": "fire_alarm", "point": "p" * 500,
                          "detail": "d\n" * 5000}).encode()
    validated = validator.validate("parks/xz01/b1/fp-0001/event", payload, RECEIVED_MS)
    assert len(validated.lines) == 1
    assert "\n" not in validated.lines[0]
    assert ",type=fire_alarm," in validated.lines[0]
    event = validated.observations[0]
    assert isinstance(event, DeviceEvent)
    assert len(event.point) == 64
    assert event.point.endswith("\u2026")
    assert len(event.detail) == 256


@pytest.mark.parametrize("bad", ["\x1b[2J", "\x9b31m", "\x07", "\x7f", "\u202e", "\u2066",
                                 "\u200f", "\x00"])
def test_event_text_loses_control_characters_and_bidi_overrides(validator: Validator,
                                                               bad: str) -> None:
    # A device must not clear an operator's terminal or make a URL read backwards.
    payload = json.dumps({"type": "fire_alarm", "point": f"L1{bad}D2",
                          "detail": f"[\u786e\u8ba4](http://evil){bad}\tloop 2\naddr"}).encode()
    event = validator.validate("parks/xz01/b1/fp-0001/event", payload,
                               RECEIVED_MS).observations[0]
    assert isinstance(event, DeviceEvent)
    for text in (event.point, event.detail):
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u202e\u2066\u200f"
                       for c in text), repr(text)
    assert event.point == "L1" + "".join(c for c in bad if c.isprintable()) + "D2"
    assert event.detail.endswith("loop 2 addr")


def test_rejection_details_stay_short_whatever_the_input(validator: Validator) -> None:
    topic = "parks/xz01/b3/wp-0017/" + "t" * 60000
    with pytest.raises(Rejection) as info:
        validator.validate(topic, b"{}", RECEIVED_MS)
    assert info.value.reason is RejectReason.BAD_TOPIC
    assert len(info.value.detail) <= 300


# --------------------------------------------------------------------------- rate limit

OK = b'{"values": {"pressure_mpa": 0.3}}'


def test_a_flooding_device_is_rate_limited_and_others_are_not() -> None:
    r = _validator(device_rate_per_s=1, device_burst=5)
    flood = {"ok": 0, "rate_limited": 0}
    for second in range(20):
        now = RECEIVED_MS + 1000 * second
        for _ in range(10):
            try:
                r.validate(WP, OK, now)
                flood["ok"] += 1
            except Rejection as rejection:
                flood[rejection.reason.value] += 1
        # Another device at an honest pace, in the middle of the flood: always accepted.
        honest = r.validate("parks/xz01/b2/sm-0420/telemetry", b'{"values": {}, "seq": 1}', now)
        assert honest.device.device == "sm-0420"
    assert flood == {"ok": 5 + 19, "rate_limited": 200 - 24}


def test_tokens_come_back_with_time() -> None:
    r = _validator(device_rate_per_s=2, device_burst=2)
    r.validate(WP, OK, RECEIVED_MS)
    r.validate(WP, OK, RECEIVED_MS)
    assert _reason(r, WP, OK) is RejectReason.RATE_LIMITED
    # Half a second at 2 per second is one token: one message passes, the next does not.
    assert len(r.validate(WP, OK, RECEIVED_MS + 500).lines) == 1
    with pytest.raises(Rejection, match="rate_limited"):
        r.validate(WP, OK, RECEIVED_MS + 500)


def test_events_are_never_rate_limited() -> None:
    r = _validator(device_rate_per_s=1, device_burst=1)
    accepted = 0
    for seq in range(500):
        for topic in ("parks/xz01/b1/fp-0001/event", "parks/xz01/b2/sm-0420/event"):
            event = r.validate(topic, b'{"type": "fire_alarm", "seq": %d}' % seq, RECEIVED_MS)
            assert event.type is MessageType.EVENT
            accepted += len(event.lines)
    assert accepted == 1000
    # ...and they do not use up the device's telemetry allowance either: its one token is left.
    telemetry = "parks/xz01/b2/sm-0420/telemetry"
    assert r.validate(telemetry, b'{"values": {}, "seq": 1}', RECEIVED_MS).type is (
        MessageType.TELEMETRY)
    assert _reason(r, telemetry, b'{"values": {}, "seq": 2}') is RejectReason.RATE_LIMITED


def test_status_messages_are_rate_limited() -> None:
    r = _validator(device_rate_per_s=1, device_burst=2)
    r.validate("parks/xz01/b2/sm-0420/status", b"online", RECEIVED_MS)
    r.validate("parks/xz01/b2/sm-0420/status", b"offline", RECEIVED_MS)
    assert _reason(r, "parks/xz01/b2/sm-0420/status", b"online") is RejectReason.RATE_LIMITED


def test_a_backlog_with_device_timestamps_replays_in_full() -> None:
    # An hour of 10 s readings held by the broker while ParkWatch was down, delivered at once.
    r = _validator(device_rate_per_s=1, device_burst=5)
    start = RECEIVED_MS // 1000 - 3600
    stamps = []
    for i in range(360):
        payload = b'{"ts": %d, "values": {"pressure_mpa": 0.3}}' % (start + 10 * i)
        validated = r.validate(WP, payload, RECEIVED_MS)
        assert validated.untrusted == 0
        stamps += [int(line.rsplit(" ", 1)[1]) for line in validated.lines]
    # Every reading stored, at its own device time.
    assert stamps == [(start + 10 * i) * 1000 for i in range(360)]


def test_old_timestamps_out_of_order_earn_nothing() -> None:
    r = _validator(device_rate_per_s=1, device_burst=3)
    ts = [RECEIVED_MS // 1000 - 100, RECEIVED_MS // 1000 - 3000] * 4
    outcomes = []
    for t in ts:
        try:
            r.validate(WP, b'{"ts": %d, "values": {"pressure_mpa": 0.3}}' % t, RECEIVED_MS)
            outcomes.append(True)
        except Rejection:
            outcomes.append(False)
    assert outcomes == [True] * 3 + [False] * 5


def test_refused_messages_do_not_use_tokens() -> None:
    r = _validator(device_rate_per_s=1, device_burst=2)
    for _ in range(10):
        assert _reason(r, WP, b'{"values": {"pressure_mpa": 99}}') is RejectReason.RANGE
    # The whole burst of two is still there, and no more.
    assert len(r.validate(WP, OK, RECEIVED_MS).lines) == 1
    assert len(r.validate(WP, OK, RECEIVED_MS).lines) == 1
    assert _reason(r, WP, OK) is RejectReason.RATE_LIMITED


def test_rate_zero_disables_the_limit() -> None:
    r = _validator(device_rate_per_s=0, device_burst=1)
    accepted = sum(len(r.validate(WP, OK, RECEIVED_MS).lines) for _ in range(1000))
    assert accepted == 1000
    assert len(r.limiter) == 0


def test_a_receive_clock_stepping_back_does_not_lock_a_device_out() -> None:
    r = _validator(device_rate_per_s=1, device_burst=2)
    assert len(r.validate(WP, OK, RECEIVED_MS).lines) == 1
    stepped = RECEIVED_MS - 3_600_000  # NTP stepped the gateway clock back an hour
    assert len(r.validate(WP, OK, stepped).lines) == 1
    with pytest.raises(Rejection, match="rate_limited"):
        r.validate(WP, OK, stepped)
    # A second later there is a token, not an hour later.
    assert len(r.validate(WP, OK, stepped + 1000).lines) == 1


def test_unknown_devices_create_no_buckets() -> None:
    r = _validator(device_rate_per_s=1, device_burst=1)
    for i in range(1000):
        with pytest.raises(Rejection):
            r.validate(f"parks/xz01/b3/x{i}/telemetry", OK, RECEIVED_MS)
    assert len(r.limiter) == 0
