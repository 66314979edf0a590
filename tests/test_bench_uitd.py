"""bench/uitd.py: the UITD load harness runs, and what it writes a gateway can load."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import pytest

from bench import uitd as bench
from sensors.gb26875.adu import Adu, ComponentStatus, parse_adu
from sensors.gb26875.frame import Frame
from sensors.pointmap import load_point_map
from sensors.registry import load_registry
from tests.support.uitd_centre import FakeCentre


def test_smoke_two_seconds_five_clients_against_the_fake_centre(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = bench.main(["--self-test", "--clients", "5", "--duration", "2", "--rate", "10",
                       "--heartbeat", "0.5"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "| fire frames at 10/s for 2 s | 20 sent" in out
    assert "20 ACKed, 0 resent, 0 lost" in out
    assert "fire frame → ACK p50 / p95 / p99 / max" in out


def test_written_site_loads_as_a_registry_and_point_map(tmp_path: Path) -> None:
    assert bench.main(["--write-site", str(tmp_path), "--clients", "20", "--rate", "50",
                       "--duration", "4"]) == 0
    registry = load_registry(tmp_path / "registry.yaml")
    points = load_point_map(tmp_path / "points.csv", registry)
    assert len(registry) == 20
    assert len(points) == 20 * 10                       # 200 fire frames, each a new point
    assert len({p.location for p in points}) == len(points)
    panel = bench.make_site(20, 10)[3]
    assert points.panel_for_uitd(panel.address) == panel.device


async def test_frame_to_webhook_is_matched_per_point() -> None:
    panels = bench.make_site(4, 3)
    by_address = {p.address: p for p in panels}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        hook_port = s.getsockname()[1]
    posts: set[asyncio.Task[None]] = set()

    async def post(frame: Frame) -> None:
        # What the gateway's catch-all webhook would send for a fire on this point.
        parsed = parse_adu(frame.adu)
        if not isinstance(parsed, Adu):
            return
        panel = by_address[frame.source]
        for obj in parsed.objects:
            assert isinstance(obj, ComponentStatus)
            point = next(p for p in panel.points if p.comp_addr == obj.comp_addr)
            async with aiohttp.ClientSession() as session:
                await session.post(f"http://127.0.0.1:{hook_port}/hook", json={
                    "rule": "fire_alarm", "state": "firing", "device": panel.device,
                    "location": point.location})

    def tap(frame: Frame) -> bool:
        task = asyncio.get_running_loop().create_task(post(frame))
        posts.add(task)
        task.add_done_callback(posts.discard)
        return False                                        # ACK every frame

    async with FakeCentre(withhold=tap) as centre:
        result = await bench._against(centre.target, panels,
                                      bench.Load(4, 0.5, 10, 1.2, drain_s=5),
                                      f"127.0.0.1:{hook_port}")
    assert result["alarms"] == 12
    assert result["webhook_matched"] == 12
    assert all(0 < x < 1 for x in result["webhook"])
