"""The liveness tracker (gateway/runtime/liveness.py) with an injected clock: times are plain
milliseconds passed in, so every transition is exact."""

from __future__ import annotations

from pathlib import Path

from gateway.runtime.liveness import (
    DEFAULT_FACTOR,
    Change,
    Liveness,
    LivenessFeed,
    Saved,
    Source,
    silence_factor,
)
from rules.loader import load_rules
from sensors.registry import Device
from tests.support.alarmstores import StoreTarget

T0 = 1_800_000_000_000
ROOT = Path(__file__).resolve().parent.parent


def dev(name: str, interval_s: float = 10.0, kind: str = "water_pressure") -> Device:
    return Device(device=name, park="p1", building="b1", floor="1", zone="z", kind=kind,
                  tenant="t1", report_interval_s=interval_s)


def tracker(*devices: Device, factor: float = 3.0, start: int = T0) -> Liveness:
    return Liveness(devices, factor=factor, started_ms=start)


def test_traffic_makes_a_device_online_and_silence_takes_it_offline_after_its_allowance() -> None:
    live = tracker(dev("a"), dev("b", interval_s=20.0))
    assert live.heard("a", T0 + 1_000) == [Change("a", True, T0 + 1_000, Source.TRAFFIC,
                                                  "heard", never_seen=True)]
    assert live.heard("a", T0 + 2_000) == []                 # no change, no point
    assert live.tick(T0 + 31_999) == []
    # a: last heard T0+2 s, allowance 3 x 10 s: offline stamped when it ran out.
    # b: never heard since start, allowance 3 x 20 s: not judged yet.
    assert live.tick(T0 + 33_000) == [Change("a", False, T0 + 32_000, Source.TRAFFIC, "silent",
                                             never_seen=False)]
    assert live.online("b") is None
    assert live.tick(T0 + 40_000) == []
    assert live.heard("a", T0 + 41_000)[0].online is True


def test_a_never_seen_device_is_offline_after_its_allowance_and_marked() -> None:
    live = tracker(dev("a"))
    assert live.snapshot(T0 + 1) == []                      # not judged within its allowance
    assert live.tick(T0 + 30_000) == [Change("a", False, T0 + 30_000, Source.STARTUP,
                                             "never_seen", never_seen=True)]
    assert live.snapshot(T0 + 60_000) == [Change("a", False, T0 + 60_000, Source.SNAPSHOT,
                                                 "never_seen", never_seen=True)]
    first = live.heard("a", T0 + 61_000)
    assert first == [Change("a", True, T0 + 61_000, Source.TRAFFIC, "heard", never_seen=True)]
    assert live.snapshot(T0 + 62_000)[0].never_seen is False


def test_a_will_flips_at_once_and_a_retained_online_is_no_sign_of_life() -> None:
    live = tracker(dev("a"))
    live.heard("a", T0)
    assert live.status("a", False, T0 + 500, retained=False) == [
        Change("a", False, T0 + 500, Source.WILL, "reported", never_seen=False)]
    assert live.status("a", False, T0 + 600, retained=True) == []       # already offline
    assert live.status("a", True, T0 + 700, retained=True) == []
    assert live.online("a") is False
    assert live.tick(T0 + 100_000) == []                    # no second offline from silence
    assert live.status("a", True, T0 + 800, retained=False) == [
        Change("a", True, T0 + 800, Source.STATUS, "reported", never_seen=False)]


def test_a_retained_will_of_a_device_saved_online_is_the_truth() -> None:
    live = tracker(dev("a"))
    live.restore([Saved("a", T0 - 5_000, True, "heard")])
    assert live.status("a", False, T0 + 10, retained=True) == [
        Change("a", False, T0 + 10, Source.WILL, "retained", never_seen=False)]


def test_a_restart_within_the_grace_keeps_states_and_the_grace_then_expires() -> None:
    live = tracker(dev("on"), dev("off"), dev("quiet"), dev("new"))
    # Saved long ago: without the grace "on" would be offline at once.
    live.restore([Saved("on", T0 - 3_600_000, True, "heard"),
                  Saved("off", T0 - 3_600_000, False, "silent"),
                  Saved("quiet", T0 - 3_600_000, True, "heard"),
                  Saved("gone", T0, True, "heard")])        # no longer registered: ignored
    assert [(c.device, c.online, c.reason) for c in live.snapshot(T0)] == [
        ("on", True, "heard"), ("off", False, "silent"), ("quiet", True, "heard")]
    assert live.tick(T0 + 29_999) == []
    assert live.heard("on", T0 + 20_000) == []              # still online: no transition
    assert live.tick(T0 + 30_000) == [
        Change("quiet", False, T0 + 30_000, Source.STARTUP, "grace_expired", never_seen=False),
        Change("new", False, T0 + 30_000, Source.STARTUP, "never_seen", never_seen=True)]
    assert live.online("on") is True
    assert live.tick(T0 + 50_000)[0].device == "on"


def test_late_messages_do_not_move_the_clock_back() -> None:
    live = tracker(dev("a"))
    live.heard("a", T0 + 10_000)
    live.heard("a", T0 + 5_000)
    assert live.tick(T0 + 39_999) == []
    assert live.tick(T0 + 40_000)[0].at_ms == T0 + 40_000


def test_changed_devices_are_saved_and_a_chatty_one_once_per_allowance() -> None:
    live = tracker(dev("a"), dev("b"))
    live.heard("a", T0)
    assert live.take_dirty() == [Saved("a", T0, True, "heard")]
    assert live.take_dirty() == []
    live.heard("a", T0 + 1)
    assert live.take_dirty() == []
    live.heard("a", T0 + 30_000)
    assert live.take_dirty() == [Saved("a", T0 + 30_000, True, "heard")]
    live.tick(T0 + 60_000)
    assert live.take_dirty() == [Saved("a", T0 + 30_000, False, "silent"),
                                 Saved("b", None, False, "never_seen")]


def test_the_factor_is_the_rule_packs() -> None:
    pack = load_rules(ROOT / "config" / "rules")
    assert silence_factor(pack) == 3.0
    assert silence_factor(None) == DEFAULT_FACTOR


def test_lines_carry_the_device_tags_kind_source_and_never_seen() -> None:
    feed = LivenessFeed([dev("a")], factor=3.0, started_ms=T0)
    assert feed.heard("a", T0 + 1) == [
        "device_status,building=b1,device=a,floor=1,kind=water_pressure,park=p1,tenant=t1,zone=z "
        f'online=true,reason="heard",source="traffic",never_seen=true {T0 + 1}']
    assert feed.heard("unknown", T0) == []


async def test_liveness_rows_survive_in_the_alarm_store(alarm_target: StoreTarget) -> None:
    async with alarm_target.store() as store:
        await store.save_liveness([("a", T0, True, "heard"), ("b", None, False, "never_seen")])
        await store.save_liveness([("a", T0 + 5, False, "silent")])
    async with alarm_target.store() as store:
        assert sorted(await store.load_liveness(), key=str) == [
            ("a", T0 + 5, False, "silent"), ("b", None, False, "never_seen")]
