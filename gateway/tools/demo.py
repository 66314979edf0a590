"""``parkwatch demo``: the sample park, end to end, on one machine, with nothing to configure.

Starts a private mosquitto (127.0.0.1:18830) and InfluxDB 1.x (127.0.0.1:18086) with their data
in ``.demo/``, then the gateway (status on 127.0.0.1:18080) with the example config, and the
simulator playing the sample park. When the gateway has its GB/T 26875.3 listener (the ``uitd``
settings), it listens on 127.0.0.1:18900 with the sample park's point map and a second simulator
plays the park's three fire-panel UITDs against it (``simulate --uitd``): a panel fire in one
zone, a fault, a 屏蔽, analog pressure and a reset, every five minutes. Every few minutes the
MQTT simulator restarts with a new seed, so a fire, a pipe burst, an electrical fault, a silent
device and garbage payloads keep recurring in different places. The live view runs in the
foreground; Ctrl-C stops everything it started, gateway first so it drains into InfluxDB.
Closing the terminal (SIGHUP) and SIGTERM do the same: the children run in sessions of their
own, so nothing else would ever stop them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from gateway.tools.devservices import Influxd, Mosquitto, ServiceError
from gateway.tools.top import run_top

MQTT_PORT = 18830
INFLUX_PORT = 18086
HTTP_PORT = 18080
UITD_PORT = 18900
POINTS = Path("config/sample-park/points.csv")
TENANTS = Path("config/sample-park/tenants.yaml")
CONFIG = Path("config/parkwatch.example.yaml")
NOTIFY_CONFIG = Path("config/notify.example.yaml")
SCENARIO_PERIOD_S = 300.0
SCENARIOS = ("normal", "fire", "pipe-burst", "electrical-fault", "garbage")
#: What stops the demo in order: Ctrl-C, kill, and a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _say(text: str) -> None:
    # After the terminal is gone a write fails (EIO); stopping the children matters more.
    with contextlib.suppress(OSError, ValueError):
        print(f"demo: {text}", file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """Before the event loop runs (mosquitto and InfluxDB starting), a stop signal unwinds
    ``run_demo`` as Ctrl-C does, so its ``finally`` stops what was started; SIGHUP's default
    would end the process at once and leave both running."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _interrupt)


def _busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_demo(*, data_dir: Path, duration: float | None) -> int:
    if not CONFIG.is_file():
        _say(f"run me from the repository root ({CONFIG} not found)")
        return 2
    busy = [p for p in (MQTT_PORT, INFLUX_PORT, HTTP_PORT, UITD_PORT) if _busy(p)]
    if busy:
        _say(f"port(s) {busy} already in use: is another demo running? Stop it first.")
        return 1
    data_dir = data_dir.resolve()
    _stop_on_signals()
    broker = Mosquitto(data_dir / "mosquitto", port=MQTT_PORT)
    influx = Influxd(data_dir / "influxdb", port=INFLUX_PORT)
    try:
        _say(f"starting mosquitto on 127.0.0.1:{MQTT_PORT} and InfluxDB on "
             f"127.0.0.1:{INFLUX_PORT} (data in {data_dir})")
        broker.start()
        influx.start()
        return asyncio.run(_run(data_dir, duration))
    except ServiceError as exc:
        _say(str(exc))
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # A second signal while stopping must not cut the stop short.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        _say("stopping InfluxDB and mosquitto")
        influx.stop()
        broker.stop()


def _env(data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PARKWATCH_MQTT__URL": f"mqtt://127.0.0.1:{MQTT_PORT}",
        "PARKWATCH_INFLUX__URL": f"http://127.0.0.1:{INFLUX_PORT}",
        "PARKWATCH_INFLUX__VERSION": "1",
        "PARKWATCH_STATE_DIR": str(data_dir / "state"),
        "PARKWATCH_HTTP__PORT": str(HTTP_PORT),
        "PARKWATCH_OBSERVE__GATEWAY_INTERVAL_S": "5",
        # The worked routing example, in dry run: every message the park's people would get is
        # planned, grouped, escalated and audited, and logged instead of sent (gateway.log).
        "PARKWATCH_NOTIFY__CONFIG": str(NOTIFY_CONFIG),
        "PARKWATCH_NOTIFY__DRY_RUN": "true",
        "PARKWATCH_NOTIFY__ACK_SECRET": secrets.token_hex(16),
        # The sample park's tenants: routing pages their 消防安全管理人 (and 责任人 when critical).
        "PARKWATCH_TENANTS": str(TENANTS),
        "PYTHONUNBUFFERED": "1",
        **_uitd_env(),
    }


def _uitd_env() -> dict[str, str]:
    """The fire panels' GB/T 26875.3 listener and the sample park's point map."""
    return {"PARKWATCH_UITD__LISTEN": f"127.0.0.1:{UITD_PORT}",
            "PARKWATCH_UITD__POINTS": str(POINTS)}


def uitd_simulator_args() -> list[str]:
    """``parkwatch simulate --uitd``: the sample park's fire-panel UITDs against the gateway."""
    return ["simulate", "--config", str(CONFIG), "--uitd", f"127.0.0.1:{UITD_PORT}",
            "--points", str(POINTS)]


async def _spawn(args: list[str], log: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        # A session of its own: Ctrl-C reaches only us, and we stop children in order.
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.tools.cli", *args, stdout=out, stderr=out,
            stdin=asyncio.subprocess.DEVNULL, env=env, start_new_session=True)


async def _stop(proc: asyncio.subprocess.Process | None, name: str, timeout_s: float) -> None:
    if proc is None or proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        _say(f"{name} did not stop in {timeout_s:.0f}s; killing it")
        proc.kill()
        await proc.wait()


def _healthy() -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/healthz", timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


async def _run(data_dir: Path, duration: float | None) -> int:
    # Ctrl-C, SIGTERM and a closed terminal (SIGHUP) all mean "stop in order", even when
    # started in the background (where a shell leaves SIGINT ignored).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    env = _env(data_dir)
    gateway_log = data_dir / "gateway.log"
    gateway = await _spawn(["run", "--config", str(CONFIG)], gateway_log, env)
    simulator: asyncio.subprocess.Process | None = None
    uitd_sim: asyncio.subprocess.Process | None = None
    cycle: asyncio.Task[None] | None = None
    try:
        _say(f"starting the gateway (log: {gateway_log})")
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(_healthy):
            if gateway.returncode is not None or time.monotonic() > deadline:
                _say("the gateway did not become healthy; last log lines:")
                print(_tail(gateway_log), file=sys.stderr)
                return 1
            await asyncio.sleep(0.2)
        _say(f"gateway healthy; status at http://127.0.0.1:{HTTP_PORT}/status; starting the "
             f"simulator (log: {data_dir / 'simulator.log'})")
        _say(f"notifications run dry (routing: {NOTIFY_CONFIG}): each message is logged in "
             f"{gateway_log} as 'dry run: would send via …', with its acknowledge link")

        async def cycle_simulator() -> None:
            nonlocal simulator
            seed = 1
            while True:
                args = ["simulate", "--config", str(CONFIG), "--seed", str(seed),
                        "--duration", str(SCENARIO_PERIOD_S), "--silent-device", "sm-0105"]
                for name in SCENARIOS:
                    args += ["--scenario", name]
                simulator = await _spawn(args, data_dir / "simulator.log", env)
                await simulator.wait()
                seed += 1

        cycle = asyncio.create_task(cycle_simulator(), name="demo-simulator")
        uitd_log = data_dir / "uitd-simulator.log"
        _say(f"fire panels: the gateway takes GB/T 26875.3 on 127.0.0.1:{UITD_PORT}; the "
             f"UITD simulator plays {POINTS} (log: {uitd_log})")
        uitd_sim = await _spawn(uitd_simulator_args(), uitd_log, env)
        top = asyncio.create_task(run_top(f"http://127.0.0.1:{HTTP_PORT}"), name="demo-top")
        stopping = asyncio.create_task(stop.wait(), name="demo-stop")
        await asyncio.wait({top, cycle, stopping}, timeout=duration,
                           return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        top.cancel()
        # The live view fails with EIO once its terminal is closed: that is a stop, not a crash.
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await top
        return 0
    finally:
        if cycle is not None:
            cycle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cycle
        _say("stopping the simulator and the gateway (draining into InfluxDB)")
        await _stop(simulator, "simulator", 10)
        await _stop(uitd_sim, "UITD simulator", 10)
        await _stop(gateway, "gateway", 30)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
