"""Closing the demo's terminal stops everything it started, as Ctrl-C does (issue 14).

The demo runs on a pseudo-terminal; the test closes the terminal's master side (so every later
write to it fails with EIO, as after a closed window) and sends SIGHUP, then checks that
mosquitto, InfluxDB, the gateway and both simulators are gone.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.tools import demo

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]


def _busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid``, found through /proc (children leave the session)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, parent in parents.items() if parent == p}
        todo += sorted(kids - found)
        found |= kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _cmdlines(pids: set[int]) -> list[str]:
    out = []
    for p in pids:
        try:
            out.append(Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return out


@pytest.mark.skipif(not (shutil.which("mosquitto", path="/usr/sbin:/usr/bin")
                         and shutil.which("influxd")), reason="needs mosquitto and influxd")
def test_sighup_stops_every_child(tmp_path: Path) -> None:
    ports = (demo.MQTT_PORT, demo.INFLUX_PORT, demo.HTTP_PORT, demo.UITD_PORT)
    if any(_busy(p) for p in ports):
        pytest.skip(f"a demo port of {ports} is in use (another demo running?)")
    kids: set[int] = set()
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.tools.cli", "demo", "--data-dir", str(tmp_path / "demo"),
         "--duration", "120"],
        cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        # Wait for all five: mosquitto, influxd, the gateway and both simulators.
        deadline = time.monotonic() + 90
        while True:
            kids = _children(proc.pid)
            lines = _cmdlines(kids)
            have = {name: any(name in line for line in lines)
                    for name in ("mosquitto", "influxd", " run ", "--uitd", "--scenario")}
            if all(have.values()):
                break
            assert proc.poll() is None, "the demo ended before it was running"
            assert time.monotonic() < deadline, f"demo did not start: {have}"
            _drain(master, 0.5)
        os.close(master)                        # the window is gone: writes now fail
        master = -1
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=90) == 0
        deadline = time.monotonic() + 10
        while any(_alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = {k for k in kids if _alive(k)}
        assert not left, _cmdlines(left)
        assert not any(_busy(p) for p in ports)
    finally:
        # Whatever the outcome, leave nothing running: the processes this test saw, by id.
        if master >= 0:
            os.close(master)
        for k in _children(proc.pid) | kids if proc.poll() is None else kids:
            if _alive(k):
                os.kill(k, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _drain(fd: int, wait_s: float) -> None:
    """Read the terminal so the demo's live view never blocks on a full pty buffer."""
    if select.select([fd], [], [], wait_s)[0]:
        os.read(fd, 65536)
