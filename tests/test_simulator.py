"""The sample park and the simulator: every payload it makes is one the gateway accepts, every
garbage message is refused for its declared reason, and scenarios unfold on simulated time."""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.ingest.validate import Validator
from gateway.tools.devservices import Mosquitto
from gateway.tools.simulator.runner import (
    SimStats,
    add_arguments,
    iter_messages,
    main_from_args,
    run_simulation,
)
from gateway.tools.simulator.scenarios import build_scenarios, garbage_messages
from gateway.tools.simulator.traffic import Message, PayloadShape, payload_shape
from sensors.base import Event, Rejection, RejectReason, Telemetry, TimeContext
from sensors.catalogue import KIND_BY_NAME
from sensors.decode import decode_event, decode_status, decode_telemetry
from sensors.registry import CSV_HEADER, Registry, load_registry
from tests.support.ids import unique
from tests.support.paths import ROOT, SAMPLE_REGISTRY
from tests.support.waiting import wait_for

T0 = 1764059400.0  # 2025-11-25 16:30 in the park's time zone
SH = ZoneInfo("Asia/Shanghai")
Timed = tuple[float, Message]


def _ctx(wall: float) -> TimeContext:
    return TimeContext(received_at_ms=round((T0 + wall) * 1000), timezone=SH)


def _decode(registry: Registry, wall: float, msg: Message) -> Telemetry | Event | None:
    """Decode as the gateway does; raises Rejection."""
    device = registry.devices[msg.device]
    if msg.channel == "telemetry":
        return decode_telemetry(msg.payload, KIND_BY_NAME[device.kind], _ctx(wall))
    if msg.channel == "event":
        return decode_event(msg.payload, _ctx(wall))
    decode_status(msg.payload)
    return None


def _run(registry: Registry, scenarios: Iterable[str] = ("normal",), *, seconds: float,
         **kwargs: Any) -> list[Timed]:
    return list(iter_messages(registry, scenarios=list(scenarios), start_ts=T0,
                              duration_s=seconds, **kwargs))


# --------------------------------------------------------------------------- sample registry


def test_sample_park_is_one_park_three_buildings_every_kind(sample_registry: Registry) -> None:
    devices = list(sample_registry)
    assert len(devices) >= 60
    assert sample_registry.parks() == {"xz01"}
    assert {d.building for d in devices} == {"b1", "b2", "b3"}
    assert {d.kind for d in devices} == set(KIND_BY_NAME)
    panels = Counter(d.building for d in devices if d.kind == "fire_panel")
    assert panels == {"b1": 1, "b2": 1, "b3": 1}
    doors = [d for d in devices if d.kind == "fire_door"]
    assert {d.mode for d in doors} == {"normally_open", "normally_closed"}
    assert any(d.limits for d in devices if d.kind == "water_pressure")
    assert any(d.limits for d in devices if d.kind == "water_level")
    assert all(5 <= d.report_interval_s <= 60 for d in devices)  # short enough for a live demo


def test_sample_topics_resolve_to_the_right_buildings(sample_registry: Registry) -> None:
    samples = Path("/work/shared/samples/valid")
    expected = {"wp-0017": "b3", "wp-0018": "b3", "wp-0019": "b3", "ef-0003": "b1",
                "fd-0007": "b1", "fp-0001": "b1", "sm-0420": "b2", "gs-0101": "b2"}
    found = {d: dev.building for d in expected if (dev := sample_registry.get(d)) is not None}
    assert found == expected
    if samples.is_dir():  # the shared samples are outside the repository
        for path in samples.glob("*.txt"):
            _, park, building, device, _ = path.read_text().splitlines()[0].split("/")
            registered = sample_registry.get(device)
            assert registered is not None, path.name
            assert (registered.park, registered.building) == (park, building)


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "registry_to_csv", ROOT / "scripts" / "registry_to_csv.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_csv_is_generated_from_the_yaml_and_says_the_same() -> None:
    csv_path = SAMPLE_REGISTRY.with_suffix(".csv")
    text = csv_path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == ",".join(CSV_HEADER)
    assert _load_script().render_csv(SAMPLE_REGISTRY) == text, \
        "run: uv run python scripts/registry_to_csv.py config/sample-park/registry.yaml"
    from_yaml = load_registry(SAMPLE_REGISTRY)
    from_csv = load_registry(csv_path)
    assert list(from_csv.devices) == list(from_yaml.devices)
    for device in from_yaml:
        # CSV has no columns for limits, mode, supply, heat_class or display names; everything
        # else must be identical.
        assert from_csv.devices[device.device] == device.model_copy(
            update={"limits": {}, "mode": None, "supply": None, "heat_class": None,
                    "building_name": "", "floor_name": "", "zone_name": ""}), device.device


# --------------------------------------------------------------------------- normal traffic


def test_every_normal_message_decodes_without_rejection(sample_registry: Registry) -> None:
    messages = _run(sample_registry, seconds=300)
    channels: Counter[str] = Counter()
    kinds: set[str] = set()
    for wall, msg in messages:
        try:
            _decode(sample_registry, wall, msg)
        except Rejection as exc:
            pytest.fail(f"{msg.topic} {msg.payload!r}: {exc}")
        channels[msg.channel] += 1
        if msg.channel == "telemetry":
            kinds.add(msg.kind)
    assert kinds == set(KIND_BY_NAME)
    assert channels["status"] == len(sample_registry)  # one retained 'online' each, first
    assert all(m.channel == "status" and m.retain for _, m in messages[:len(sample_registry)])
    assert channels["event"] == 0  # nothing happens in a normal park
    shapes = {payload_shape(d) for d in sample_registry}
    assert shapes == set(PayloadShape)


# Where a healthy device of each kind sits (fire-safety brief §1), with room for the noise.
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "pressure_mpa": (0.28, 0.47), "level_m": (2.9, 6.1), "residual_current_ma": (60, 200),
    "temp_l1_c": (28, 47), "temp_l2_c": (28, 47), "temp_l3_c": (28, 47), "temp_n_c": (26, 40),
    "lel_pct": (0, 3), "co_ppm": (0, 10), "temperature_c": (17, 31), "humidity_pct": (37, 73),
    "obscuration_pct_m": (0, 0.3), "voltage_v": (220, 240), "power_factor": (0.8, 0.99),
    "frequency_hz": (49.8, 50.2), "current_a": (0, 45), "power_kw": (0, 12),
    "energy_kwh": (0, 1e6),
}
#: A 380 V three-phase meter reports line-to-line voltage and three phases' power.
PLAUSIBLE_THREE_PHASE: dict[str, tuple[float, float]] = {
    "voltage_v": (385, 406), "power_kw": (0, 30)}


def test_normal_values_are_plausible_and_energy_only_grows(sample_registry: Registry) -> None:
    energy: dict[str, list[float]] = defaultdict(list)
    doors: dict[str, list[bool]] = defaultdict(list)
    for wall, msg in _run(sample_registry, seconds=600):
        decoded = _decode(sample_registry, wall, msg)
        if not isinstance(decoded, Telemetry):
            continue
        for sample in decoded.samples:
            for metric, value in sample.values.items():
                if metric == "open":
                    doors[msg.device].append(bool(value))
                    continue
                device = sample_registry.get(msg.device)
                three_phase = device is not None and device.supply == "three_phase_380"
                low, high = (PLAUSIBLE_THREE_PHASE.get(metric) if three_phase else None) \
                    or PLAUSIBLE[metric]
                assert low <= float(value) <= high, (msg.device, metric, value)
            if "energy_kwh" in sample.values:
                energy[msg.device].append(float(sample.values["energy_kwh"]))
        if decoded.battery_pct is not None:
            assert 5 <= decoded.battery_pct <= 100
        if decoded.rssi_dbm is not None:
            assert -120 <= decoded.rssi_dbm <= -40
    assert energy
    assert all(series == sorted(series) for series in energy.values())
    for device_id, states in doors.items():
        normally_open = sample_registry.devices[device_id].mode == "normally_open"
        assert Counter(states).most_common(1)[0][0] is normally_open, device_id


def test_seq_goes_up_by_one_per_message_per_device(sample_registry: Registry) -> None:
    seqs: dict[str, list[int]] = defaultdict(list)
    for _, msg in _run(sample_registry, ["fire"], seconds=120):
        if msg.channel in ("telemetry", "event"):
            seq = json.loads(msg.payload).get("seq")
            if seq is not None:  # the vendor shapes carry none
                seqs[msg.device].append(seq)
    assert len(seqs) > 50
    for device, series in seqs.items():
        assert series == list(range(series[0], series[0] + len(series))), device
    assert len({s[0] for s in seqs.values()}) > 40  # random starting points, not all 0


def test_same_seed_same_traffic_other_seed_other_traffic(sample_registry: Registry) -> None:
    first = _run(sample_registry, ["fire", "garbage"], seconds=60, seed=7)
    assert first == _run(sample_registry, ["fire", "garbage"], seconds=60, seed=7)
    assert first != _run(sample_registry, ["fire", "garbage"], seconds=60, seed=8)


def test_rate_mode_round_robins_at_the_aggregate_rate(sample_registry: Registry) -> None:
    n = len(sample_registry)
    messages = list(iter_messages(sample_registry, scenarios=["normal"], start_ts=T0,
                                  rate=1000.0, count=n * 20, include_status=False))
    assert len(messages) == n * 20
    assert [w for w, _ in messages[:3]] == [0.0, 0.001, 0.002]
    assert set(Counter(m.device for _, m in messages).values()) == {20}


def test_count_includes_the_status_messages(sample_registry: Registry) -> None:
    assert len(list(iter_messages(sample_registry, start_ts=T0, count=10))) == 10


# --------------------------------------------------------------------------- garbage


@pytest.fixture
def validator(sample_registry: Registry) -> Validator:
    return Validator(registry=sample_registry, root="parks", timezones={}, default_timezone=SH,
                  max_payload_bytes=65536, max_age_s=7 * 86400, max_future_s=300)


def test_garbage_covers_every_reason_and_each_is_refused_for_it(
        sample_registry: Registry, validator: Validator) -> None:
    cases = garbage_messages(sample_registry, "parks")
    # rate_limited takes a flood, not one message (tests/test_hostile_input.py);
    # other_partition takes a partitioned gateway (tests/test_partitions.py).
    assert sorted(reason for _, _, reason in cases) == sorted(
        set(RejectReason) - {RejectReason.RATE_LIMITED, RejectReason.OTHER_PARTITION})
    for topic, payload, reason in cases:
        with pytest.raises(Rejection) as caught:
            validator.validate(topic, payload, round(T0 * 1000))
        assert caught.value.reason is reason, (topic, payload[:80])


def test_garbage_payload_reasons_come_from_the_decoder(sample_registry: Registry) -> None:
    topic_level = {RejectReason.BAD_TOPIC, RejectReason.BAD_ID, RejectReason.UNKNOWN_DEVICE,
                   RejectReason.TOPIC_MISMATCH}
    pressure = KIND_BY_NAME["water_pressure"]
    for topic, payload, reason in garbage_messages(sample_registry, "parks"):
        parts = topic.split("/")
        if reason in topic_level:
            assert parts[0] == "parks"
            assert len(parts) == 5
            continue
        with pytest.raises(Rejection) as caught:
            decode_telemetry(payload, pressure, _ctx(0))
        assert caught.value.reason is reason


def test_garbage_scenario_repeats_the_set_every_period(sample_registry: Registry) -> None:
    garbage = [m for _, m in _run(sample_registry, ["garbage"], seconds=30)
               if m.channel == "garbage"]
    # All but rate_limited (a flood) and other_partition (a partitioned gateway).
    per_set = len(RejectReason) - 2
    assert len(garbage) == 3 * per_set  # bursts at 3, 13 and 23 s
    assert all(m.scenarios == ("garbage",) for m in garbage)


# --------------------------------------------------------------------------- scenarios


def test_fire_in_one_zone_within_the_first_minute(sample_registry: Registry) -> None:
    messages = _run(sample_registry, ["fire"], seconds=60)
    fire = build_scenarios(["fire"], sample_registry).scenarios[0]
    building, floor, zone = fire.zone  # type: ignore[attr-defined]
    in_zone = {d.device for d in sample_registry
               if (d.building, d.floor, d.zone) == (building, floor, zone)}
    seen: set[str] = set()
    for wall, msg in messages:
        assert wall <= 60
        device = sample_registry.devices.get(msg.device)
        if device is None or device.building != building:
            continue
        decoded = _decode(sample_registry, wall, msg)
        if isinstance(decoded, Event) and decoded.type.value == "fire_alarm":
            if device.kind == "fire_panel":
                assert decoded.point
                assert decoded.detail
                seen.add("panel fire_alarm")
            elif msg.device in in_zone:
                seen.add(f"{device.kind} fire_alarm")
        elif isinstance(decoded, Telemetry) and msg.device in in_zone:
            values = decoded.samples[-1].values
            if device.kind == "smoke" and float(values.get("obscuration_pct_m", 0)) > 5:
                seen.add("smoke obscuration")
            if device.kind == "heat" and float(values["temperature_c"]) > 70:
                seen.add("heat over 70 C")
    assert seen >= {"smoke obscuration", "heat over 70 C", "manual_call_point fire_alarm",
                    "panel fire_alarm", "smoke fire_alarm"}


def _pressures(registry: Registry, messages: list[Timed], device: str) -> list[tuple[float, float]]:
    out = []
    for wall, msg in messages:
        if msg.device == device and msg.channel == "telemetry":
            decoded = _decode(registry, wall, msg)
            assert isinstance(decoded, Telemetry)
            out.append((wall, float(decoded.samples[-1].values["pressure_mpa"])))
    return out


def test_pipe_burst_collapses_one_point_and_dips_its_neighbours(
        sample_registry: Registry) -> None:
    messages = _run(sample_registry, ["pipe-burst"], seconds=90)
    burst = build_scenarios(["pipe-burst"], sample_registry).scenarios[0]
    target = burst.target.device  # type: ignore[attr-defined]
    series = _pressures(sample_registry, messages, target)
    before = [p for t, p in series if t < 10]
    after = [p for t, p in series if t >= 45]
    assert before
    assert all(p > 0.25 for p in before)
    assert after
    assert all(p < 0.05 for p in after)
    assert len([t for t, _ in series if 10 <= t <= 40]) >= 10  # it reports fast meanwhile
    for neighbour in burst.neighbours:  # type: ignore[attr-defined]
        dipped = [p for t, p in _pressures(sample_registry, messages, neighbour) if 35 <= t <= 60]
        assert dipped
        assert max(dipped) < 0.40


def test_electrical_fault_passes_alarm_thresholds_within_a_minute(
        sample_registry: Registry) -> None:
    messages = _run(sample_registry, ["electrical-fault"], seconds=80)
    fault = build_scenarios(["electrical-fault"], sample_registry).scenarios[0]
    target = fault.target.device  # type: ignore[attr-defined]
    readings = [(wall, _decode(sample_registry, wall, msg)) for wall, msg in messages
                if msg.device == target and msg.channel == "telemetry"]
    peak = [t.samples[-1].values for w, t in readings if isinstance(t, Telemetry) and w >= 72]
    assert peak
    assert all(float(v["residual_current_ma"]) > 500 for v in peak)
    assert all(float(v["temp_l1_c"]) > 85 for v in peak)


def test_silent_devices_and_buildings_stop_publishing(sample_registry: Registry) -> None:
    messages = _run(sample_registry, ["silent"], seconds=200, silent_devices=["wp-0017"],
                    silent_buildings=["b2"])
    late = {m.device for w, m in messages if w > 20}
    early = {m.device for w, m in messages if w <= 20 and m.channel == "telemetry"}
    assert "wp-0017" not in late
    assert not any(d.startswith(("sm-042", "gs-01")) for d in late)
    assert early & {"sm-0420", "gs-0101", "wp-0017"}  # they were alive before going quiet
    assert {d.building for d in sample_registry if d.device in late} == {"b1", "b3"}


def test_unknown_scenario_targets_are_refused_before_anything_runs(
        sample_registry: Registry) -> None:
    with pytest.raises(ValueError, match="zz-1"):
        iter_messages(sample_registry, scenarios=["silent"], silent_devices=["zz-1"])
    with pytest.raises(ValueError, match="unknown scenario"):
        iter_messages(sample_registry, scenarios=["meteor"])


def test_scenarios_combine(sample_registry: Registry) -> None:
    tags: Counter[str] = Counter()
    for _, msg in _run(sample_registry, ["fire", "pipe-burst", "electrical-fault", "garbage"],
                       seconds=60):
        tags.update(msg.scenarios)
    assert set(tags) == {"fire", "pipe-burst", "electrical-fault", "garbage"}


# --------------------------------------------------------------------------- live


@pytest.mark.integration
async def test_run_simulation_publishes_to_a_broker(sample_registry: Registry,
                                                    mosquitto: Mosquitto) -> None:
    root = unique("sim") + "/parks"
    received: list[paho.MQTTMessage] = []
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("simsub"))
    sub.on_message = lambda _c, _u, msg: received.append(msg)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe(f"{root}/#", qos=1)
    sub.loop_start()
    progress: list[SimStats] = []
    total = 900  # 74 statuses at once, then 250 msg/s: about 3.3 s
    try:
        await wait_for(lambda: sub.is_connected(), timeout_s=10, what="subscriber connected")
        stats = await run_simulation(registry=sample_registry, mqtt_host="127.0.0.1",
                                     mqtt_port=mosquitto.port, root=root, rate=250.0,
                                     duration_s=None, count=total, scenarios=["garbage"],
                                     progress=progress.append)
        assert stats.sent == stats.acked == stats.generated == total
        assert sum(stats.per_kind.values()) == total
        # One burst, at 3 s: a message per reason but rate_limited, which takes a flood.
        assert stats.per_scenario["garbage"] == len(RejectReason) - 2
        assert 3.0 < stats.elapsed_s < 6.0  # paced at the rate, not flat out
        assert progress, "progress is reported about once a second"
        await wait_for(lambda: len(received) >= total, timeout_s=20, what="all messages received")
        statuses = [m for m in received if m.topic.endswith("/status")]
        assert len(statuses) == len(sample_registry)
        assert all(m.payload == b"online" for m in statuses)
    finally:
        sub.disconnect()
        sub.loop_stop()


@pytest.mark.integration
async def test_cli_entry_point_runs_and_summarises(sample_registry: Registry, mosquitto: Mosquitto,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--mqtt-url", mosquitto.url, "--root", unique("cli") + "/parks",
                              "--rate", "1000", "--count", "200", "--scenario", "fire",
                              "--scenario", "garbage", "--qos", "0"])
    assert await main_from_args(args, sample_registry) == 0
    err = capsys.readouterr().err
    assert "simulate: done." in err
    assert "sent 200" in err


async def test_cli_refuses_a_bad_url_and_an_unknown_silent_device(
        sample_registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    bad_url = parser.parse_args(["--mqtt-url", "http://x"])
    assert await main_from_args(bad_url, sample_registry) == 2
    unknown = parser.parse_args(["--mqtt-url", "mqtt://127.0.0.1:1", "--silent-device", "zz-1"])
    assert await main_from_args(unknown, sample_registry) == 2
    assert "zz-1" in capsys.readouterr().err
