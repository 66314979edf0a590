"""``parkwatch simulate --uitd``: the simulated UITDs against a fake centre over real sockets.

The fake centre (tests/support/uitd_centre.py) deframes with the project's codec and ACKs with
``ack_for``, so what passes here is what a centre speaking the standard sees.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.tools.simulator import uitdadu
from gateway.tools.simulator.uitd import build_timeline, run_uitd_simulation, split_hostport
from gateway.tools.simulator.uitdclient import UitdClient
from sensors.gb26875.adu import (
    Adu,
    AduType,
    AnalogValue,
    ComponentStatus,
    FacilityOperation,
    Heartbeat,
    UitdOperation,
    duty_check_adu,
    parse_adu,
)
from sensors.gb26875.bits import (
    ComponentStatusBits,
    FacilityOperationFlags,
    UitdOperationFlags,
    is_fire,
)
from sensors.gb26875.frame import Command, Frame, encode
from sensors.pointmap import PointMap, load_point_map
from sensors.registry import load_registry
from tests.support.paths import ROOT, SAMPLE_REGISTRY
from tests.support.uitd_centre import CENTRE, FakeCentre
from tests.support.waiting import wait_for

SAMPLE_POINTS = ROOT / "config" / "sample-park" / "points.csv"
FP1 = bytes.fromhex("790300000000")
WHEN = datetime(2026, 12, 3, 21, 15, 7)


@pytest.fixture(scope="module")
def points() -> PointMap:
    return load_point_map(SAMPLE_POINTS, load_registry(SAMPLE_REGISTRY))


# ---------------------------------------------------------------- ADU builders round-trip


def test_component_status_adu_parses_back_with_its_description() -> None:
    c = uitdadu.Component(1, 1, 42, 65546)
    parsed = parse_adu(uitdadu.component_status_adu([(c, 0x0002, "L1-D023 2层东区贴片线")], WHEN))
    assert isinstance(parsed, Adu)
    (obj,) = parsed.objects
    assert isinstance(obj, ComponentStatus)
    assert (obj.comp_type, obj.comp_addr, obj.status, obj.time) == (42, 65546, 2, WHEN)
    assert obj.description == "L1-D023 2层东区贴片线"


def test_description_is_cut_at_a_character_boundary() -> None:
    raw = uitdadu.description_bytes("东" * 40)
    assert len(raw) == 31
    assert raw.rstrip(b"\x00").decode("gb18030") == "东" * 15


def test_analog_facility_and_uitd_operation_adus_parse_back() -> None:
    c = uitdadu.Component(1, 1, 99, 262146)
    analog = parse_adu(uitdadu.analog_adu(c, 5, 352.4, WHEN))
    assert isinstance(analog, Adu)
    assert isinstance(analog.objects[0], AnalogValue)
    assert (analog.objects[0].value, analog.objects[0].unit) == (352.4, "kPa")
    reset = parse_adu(uitdadu.facility_operation_adu(1, 1, FacilityOperationFlags.RESET, 1, WHEN))
    assert isinstance(reset, Adu)
    assert isinstance(reset.objects[0], FacilityOperation)
    assert reset.objects[0].flags == FacilityOperationFlags.RESET
    answer = parse_adu(uitdadu.uitd_operation_adu(UitdOperationFlags.DUTY_CHECK_ANSWER, 1, WHEN))
    assert isinstance(answer, Adu)
    assert isinstance(answer.objects[0], UitdOperation)
    assert answer.objects[0].flags & UitdOperationFlags.DUTY_CHECK_ANSWER


def test_split_hostport() -> None:
    assert split_hostport("127.0.0.1:18900") == ("127.0.0.1", 18900)
    assert split_hostport("9000") == ("127.0.0.1", 9000)
    with pytest.raises(ValueError, match="HOST:PORT"):
        split_hostport("host:port")


def test_timeline_plays_every_scenario_on_the_sample_park(points: PointMap) -> None:
    steps = build_timeline(points, ("fire", "fault", "isolate", "analog", "reset", "restore"))
    assert {s.scenario for s in steps} == {"fire", "fault", "isolate", "analog", "reset",
                                           "restore"}
    assert [s.at_s for s in steps] == sorted(s.at_s for s in steps)


# ---------------------------------------------------------------- against the fake centre


def _components(centre: FakeCentre) -> list[tuple[bytes, ComponentStatus]]:
    out = []
    for frame in centre.uploads():
        parsed = parse_adu(frame.adu)
        if isinstance(parsed, Adu) and parsed.type_flag is AduType.COMPONENT_STATUS:
            out += [(frame.source, o) for o in parsed.objects if isinstance(o, ComponentStatus)]
    return out


async def test_heartbeats_arrive_from_every_uitd_with_fresh_serials(points: PointMap) -> None:
    async with FakeCentre() as centre:
        stats = await run_uitd_simulation(points, "127.0.0.1", centre.port, scenarios=(),
                                          heartbeat_s=(0.1, 0.15), duration_s=1.0)
    beats = [f for f in centre.uploads() if isinstance(parse_adu(f.adu), Heartbeat)]
    sources = {f.source for f in beats}
    assert sources == {bytes.fromhex(a) for a in ("790300000000", "790300000001",
                                                  "790300000002")}
    for source in sources:
        serials = [f.serial for f in beats if f.source == source]
        assert len(serials) >= 3
        assert serials == sorted(set(serials))           # a fresh serial per frame
    assert all(f.destination == CENTRE and f.version == (1, 1) for f in beats)
    assert sum(s.acked for s in stats.clients.values()) == len(beats)
    assert sum(s.resent for s in stats.clients.values()) == 0


async def test_fire_scenario_sends_two_fire_points_of_one_zone(points: PointMap) -> None:
    async with FakeCentre() as centre:
        # speed 20: the fire's frames at 0.25 s and 0.75 s instead of 5 s and 15 s.
        await run_uitd_simulation(points, "127.0.0.1", centre.port, scenarios=("fire",),
                                  speed=20, heartbeat_s=(60, 60), duration_s=1.2)
    fires = [(src, o) for src, o in _components(centre) if is_fire(o.status)]
    assert len(fires) == 2
    placed = [points.by_address(src, o.sys_type, o.sys_addr, o.comp_addr) for src, o in fires]
    assert [(p.panel, p.point) for p in placed if p] == [("fp-0001", "L1-D023"),
                                                          ("fp-0001", "L1-D024")]
    assert len({(p.building, p.zone) for p in placed if p}) == 1
    assert all(o.flags & ComponentStatusBits.FIRE for _, o in fires)
    times = [r.at for r in centre.received if is_fire_frame(r.frame)]
    assert 0.3 < times[1] - times[0] < 0.8                 # about 10 s apart at speed 20


def is_fire_frame(frame: Frame) -> bool:
    parsed = parse_adu(frame.adu)
    return isinstance(parsed, Adu) and any(
        isinstance(o, ComponentStatus) and is_fire(o.status) for o in parsed.objects)


async def test_other_scenarios_send_fault_isolate_analog_reset_and_restore(
        points: PointMap) -> None:
    async with FakeCentre() as centre:
        await run_uitd_simulation(points, "127.0.0.1", centre.port, speed=100,
                                  heartbeat_s=(60, 60), duration_s=1.3)
    statuses = {o.status for _, o in _components(centre)}
    assert {0x0002, 0x0004, 0x0008, 0x0001} <= statuses
    types = {parse_adu(f.adu).type_flag for f in centre.uploads()  # type: ignore[union-attr]
             if isinstance(parse_adu(f.adu), Adu)}
    assert {AduType.ANALOG_VALUE, AduType.FACILITY_OPERATION} <= types


async def test_a_withheld_ack_causes_identical_resends_then_a_loss() -> None:
    async with FakeCentre(withhold=lambda f: f.serial == 1) as centre:
        client = UitdClient(FP1, "127.0.0.1", centre.port, centre=CENTRE, tz=_tz(),
                            ack_timeout_s=0.2, retries=3)
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        await client.connected.wait()
        assert await client.send(b"", "heartbeat")                      # serial 0, ACKed
        assert not await client.send(_fire_adu(), "fire")               # serial 1, never ACKed
        assert await client.send(b"", "heartbeat")                      # serial 2, ACKed
        stop.set()
        await task
    withheld = [r for r in centre.received if r.frame.serial == 1]
    assert len(withheld) == 4                                           # 1 + 3 retries
    assert len({encode(r.frame) for r in withheld}) == 1                # the very same bytes
    gaps = [b.at - a.at for a, b in itertools.pairwise(withheld)]
    assert all(g >= 0.18 for g in gaps)
    assert (client.stats.sent, client.stats.resent, client.stats.lost) == (3, 3, 1)


async def test_a_late_ack_stops_the_resends() -> None:
    tries: list[int] = []

    def withhold(frame: Frame) -> bool:
        tries.append(frame.serial)
        return len(tries) < 2            # the first try goes unanswered, the resend is ACKed

    async with FakeCentre(withhold=withhold) as centre:
        client = UitdClient(FP1, "127.0.0.1", centre.port, centre=CENTRE, tz=_tz(),
                            ack_timeout_s=0.2)
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        await client.connected.wait()
        assert await client.send(_fire_adu(), "fire")
        stop.set()
        await task
    assert tries == [0, 0]
    assert (client.stats.resent, client.stats.acked, client.stats.lost) == (1, 1, 0)


async def test_a_duty_check_is_confirmed_and_answered(points: PointMap) -> None:
    async with FakeCentre() as centre:
        stop = asyncio.Event()
        sim = asyncio.create_task(run_uitd_simulation(
            points, "127.0.0.1", centre.port, scenarios=(), heartbeat_s=(0.05, 0.05),
            stop=stop))
        await wait_for(lambda: FP1 in centre.connected(), timeout_s=5, what="fp-0001's UITD")
        check = await centre.control(FP1, duty_check_adu())

        def answers() -> list[UitdOperation]:
            out = []
            for f in centre.uploads():
                parsed = parse_adu(f.adu)
                if isinstance(parsed, Adu) and parsed.type_flag is AduType.UITD_OPERATION:
                    out += [o for o in parsed.objects if isinstance(o, UitdOperation)]
            return out

        await wait_for(lambda: bool(answers()), timeout_s=5, what="the duty-check answer")
        stop.set()
        stats = await sim
    assert answers()[0].flags & UitdOperationFlags.DUTY_CHECK_ANSWER
    confirms = [r.frame for r in centre.received if r.frame.command == Command.CONFIRM]
    assert [(c.serial, c.source, c.destination) for c in confirms] == [
        (check.serial, FP1, CENTRE)]
    assert stats.clients["790300000000"].duty_checks == 1


def _fire_adu() -> bytes:
    return uitdadu.component_status_adu(
        [(uitdadu.Component(1, 1, 42, 65546), 0x0002, "L1-D023")], WHEN)


def _tz() -> ZoneInfo:
    return ZoneInfo("Asia/Shanghai")


# ---------------------------------------------------------------- the command and the demo


async def test_simulate_uitd_command_runs_against_the_centre() -> None:
    async with FakeCentre() as centre:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.tools.cli", "simulate", "--config",
            str(ROOT / "config" / "parkwatch.example.yaml"), "--uitd", centre.target,
            "--points", str(SAMPLE_POINTS), "--speed", "20", "--duration", "2",
            "--uitd-scenario", "fire", cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    log = err.decode()
    assert proc.returncode == 0, log
    assert "type 2 FIRE fp-0001/L1-D023" in log
    assert "done. 3 UITD(s)" in log
    assert sum(is_fire_frame(f) for f in centre.uploads()) == 2


def test_simulate_uitd_without_a_point_map_is_a_usage_error() -> None:
    from gateway.tools.cli import main

    assert main(["simulate", "--config", str(ROOT / "config" / "parkwatch.example.yaml"),
                 "--uitd", "127.0.0.1:1"]) == 2


def test_demo_runs_the_gateway_with_the_uitd_listener_and_the_sample_points() -> None:
    from gateway.tools import demo
    from gateway.tools.cli import _parser

    env = demo._env(ROOT / ".demo")
    assert env["PARKWATCH_UITD__LISTEN"] == f"127.0.0.1:{demo.UITD_PORT}"
    assert env["PARKWATCH_UITD__POINTS"] == "config/sample-park/points.csv"
    args = _parser().parse_args(demo.uitd_simulator_args())
    assert args.uitd == f"127.0.0.1:{demo.UITD_PORT}"
