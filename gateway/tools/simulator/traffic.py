"""Realistic telemetry, events and status messages for registered devices (docs/device-protocol.md).

Each device gets its own deterministic random stream (seeded by the run seed and the device ID),
a baseline drawn once (this hydrant riser sits at 0.38 MPa, that tank at 4.2 m), Gaussian noise
per reading, a battery that drains slowly, and a ``seq`` that starts at a random value and goes up
by one per message. Values are produced in canonical units; scenarios (``scenarios.py``) bend them
through an *overlay* hook, and only then is the payload encoded in the device's shape.

Most devices send the canonical shape. A few, chosen by a stable hash of the device ID so the same
units misbehave in every run, send what real vendors send: water pressure in kPa with a naive
local time, or in bar with epoch-millisecond timestamps, and some sampling devices upload batches.

Time: ``t`` is simulated seconds since the start of the run; the device timestamp is
``start_ts + t / speed``, i.e. ``speed`` makes devices report more often without making their
clocks run ahead of the gateway's (which would mark them untrusted).
"""

from __future__ import annotations

import enum
import json
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sensors.registry import Device, Registry

__all__ = [
    "BATTERY_KINDS",
    "EVENT_ONLY_KINDS",
    "Message",
    "Overlay",
    "PayloadShape",
    "TrafficGenerator",
    "Values",
    "payload_shape",
    "topic_for",
]

Values = dict[str, float | bool]
#: ``(device, t, values) -> (values, scenario names that changed them)``; see scenarios.py.
Overlay = Callable[[Device, float, Values], tuple[Values, tuple[str, ...]]]

#: Kinds running on a battery (wireless units); the rest are mains- or loop-powered.
BATTERY_KINDS = frozenset({"smoke", "heat", "water_pressure", "water_level", "environment"})
#: Kinds with a radio link that reports signal strength (NB-IoT / 4G / LoRa).
_RADIO_KINDS = BATTERY_KINDS | {"gas", "co", "electrical_fire", "fire_panel"}
#: Kinds whose telemetry is only a heartbeat; their news are events
#: (docs/device-protocol.md, "Metrics per kind").
EVENT_ONLY_KINDS = frozenset({"manual_call_point", "fire_panel"})

_BATCH_READINGS = 5
_SHANGHAI = ZoneInfo("Asia/Shanghai")


class PayloadShape(enum.StrEnum):
    CANONICAL = "canonical"
    BATCH = "batch"     # {"seq": .., "readings": [{"ts", "values"}, ...]}
    VENDOR_KPA = "kpa"  # {"time": "YYYY-MM-DD HH:MM:SS", "pressure": kPa, "unit": "kPa", "bat": V}
    VENDOR_BAR = "bar"  # {"ts": epoch ms, "press_bar": bar}


def payload_shape(device: Device) -> PayloadShape:
    """The shape a device sends: a stable hash of its ID, so runs and restarts agree.

    About one pressure transmitter in six sends each vendor shape and one in six uploads batches
    (the modulus happens to give the sample devices wp-0018 kPa and wp-0019 bar, as in
    /samples); three water-level or environment units in ten upload batches.
    """
    bucket = zlib.crc32(device.device.encode())
    if device.kind == "water_pressure":
        return _PRESSURE_SHAPES.get(bucket % 6, PayloadShape.CANONICAL)
    if device.kind in ("water_level", "environment") and bucket % 10 < 3:
        return PayloadShape.BATCH
    return PayloadShape.CANONICAL


_PRESSURE_SHAPES = {0: PayloadShape.VENDOR_KPA, 4: PayloadShape.VENDOR_BAR, 2: PayloadShape.BATCH}


def topic_for(root: str, device: Device, channel: str) -> str:
    return f"{root}/{device.park}/{device.building}/{device.device}/{channel}"


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message to publish, with what the statistics need to know about it."""

    topic: str
    payload: bytes
    device: str = ""
    kind: str = ""
    channel: str = "telemetry"       # telemetry | event | status | garbage
    scenarios: tuple[str, ...] = ()  # the overlays that produced or altered it
    qos: int = 1
    retain: bool = False


@dataclass(slots=True)
class _DeviceState:
    rng: random.Random
    seq: int
    baseline: dict[str, float]
    battery: float
    rssi: float
    energy_kwh: float = 0.0
    last_t: float | None = None
    analog: bool = False  # smoke detectors that also report obscuration and temperature


def _baseline(kind: str, rng: random.Random) -> dict[str, float]:
    """Per-device operating point (brief §1 values: where a healthy unit of this kind sits)."""
    u = rng.uniform
    if kind == "water_pressure":
        return {"pressure_mpa": u(0.30, 0.45)}
    if kind == "water_level":
        return {"level_m": u(3.0, 6.0)}
    if kind == "electrical_fire":
        return {"residual_current_ma": u(80, 180), "temp_l1_c": u(30, 45), "temp_l2_c": u(30, 45),
                "temp_l3_c": u(30, 45), "temp_n_c": u(28, 38)}
    if kind == "gas":
        return {"lel_pct": u(0.2, 1.5)}
    if kind == "co":
        return {"co_ppm": u(1, 5)}
    if kind in ("environment", "heat", "smoke"):
        return {"temperature_c": u(18, 30), "humidity_pct": u(40, 70)}
    if kind == "power_meter":
        return {"current_a": u(5, 40), "energy_kwh": u(1_000, 50_000)}
    return {}


class TrafficGenerator:
    """Builds the messages of every device; pure apart from its seeded random streams."""

    def __init__(self, registry: Registry, *, root: str = "parks", seed: int = 1,
                 start_ts: float, speed: float = 1.0, timezone: ZoneInfo = _SHANGHAI,
                 overlay: Overlay | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.registry = registry
        self.root = root.rstrip("/")
        self.start_ts = start_ts
        self.speed = speed
        self.timezone = timezone
        self.overlay = overlay
        self._states = {d.device: self._new_state(d, seed) for d in registry}

    @staticmethod
    def _new_state(device: Device, seed: int) -> _DeviceState:
        rng = random.Random(f"{seed}:{device.device}")  # str seeds are stable across processes
        state = _DeviceState(rng=rng, seq=rng.randrange(0, 100_000),
                             baseline=_baseline(device.kind, rng), battery=rng.uniform(55, 100),
                             rssi=rng.uniform(-105, -60))
        state.energy_kwh = state.baseline.pop("energy_kwh", 0.0)
        state.analog = device.kind == "smoke" and zlib.crc32(device.device.encode()) % 4 == 0
        return state

    def ts_at(self, t: float) -> float:
        """Device clock (epoch seconds) at simulated time ``t``."""
        return self.start_ts + t / self.speed

    # ------------------------------------------------------------------ messages

    def telemetry(self, device: Device, t: float) -> Message:
        st = self._states[device.device]
        shape = payload_shape(device)
        touched: set[str] = set()
        if shape is PayloadShape.BATCH:
            step = device.report_interval_s / _BATCH_READINGS
            times = [t - step * (_BATCH_READINGS - 1 - i) for i in range(_BATCH_READINGS)]
        else:
            times = [t]
        readings = []
        for ti in times:
            values = self.normal_values(device, ti)
            if self.overlay is not None:
                values, names = self.overlay(device, ti, values)
                touched.update(names)
            readings.append((self.ts_at(ti), values))
        st.seq += 1
        st.battery = max(5.0, st.battery - 0.002)
        obj = self._encode(device, st, shape, readings)
        return Message(topic_for(self.root, device, "telemetry"), _dumps(obj), device.device,
                       device.kind, "telemetry", tuple(sorted(touched)))

    def event(self, device: Device, t: float, event_type: str, *, point: str = "",
              detail: str = "", scenario: str = "") -> Message:
        st = self._states[device.device]
        st.seq += 1  # events and telemetry share the device's counter (see the samples)
        ts = self.ts_at(t)
        obj: dict[str, object] = {"ts": self._event_ts(device, ts), "seq": st.seq,
                                  "type": event_type}
        if point:
            obj["point"] = point
        if detail:
            obj["detail"] = detail
        return Message(topic_for(self.root, device, "event"), _dumps(obj), device.device,
                       device.kind, "event", (scenario,) if scenario else ())

    def status(self, device: Device, *, online: bool = True) -> Message:
        return Message(topic_for(self.root, device, "status"),
                       b"online" if online else b"offline", device.device, device.kind,
                       "status", retain=True)

    def _event_ts(self, device: Device, ts: float) -> float | str:
        # Panel protocol converters stamp RFC 3339 local time (docs/device-protocol.md, Events);
        # the rest send epoch seconds.
        if device.kind == "fire_panel":
            return datetime.fromtimestamp(ts, self.timezone).isoformat(timespec="milliseconds")
        return round(ts, 3)

    # ------------------------------------------------------------------ values

    def normal_values(self, device: Device, t: float) -> Values:
        """One healthy reading of ``device`` at ``t``, in canonical units."""
        st = self._states[device.device]
        g, base = st.rng.gauss, st.baseline
        kind = device.kind
        if kind == "water_pressure":
            return {"pressure_mpa": round(base["pressure_mpa"] + g(0, 0.004), 3)}
        if kind == "water_level":
            return {"level_m": round(base["level_m"] + g(0, 0.01), 2)}
        if kind == "electrical_fire":
            return {k: round(max(0.0, v + g(0, 4 if k.startswith("res") else 0.3)), 1)
                    for k, v in base.items()}
        if kind == "gas":
            return {"lel_pct": round(min(3.0, max(0.0, base["lel_pct"] + g(0, 0.3))), 1)}
        if kind == "co":
            return {"co_ppm": round(min(10.0, max(0.0, base["co_ppm"] + g(0, 1.0))), 1)}
        if kind == "environment":
            return {"temperature_c": round(base["temperature_c"] + g(0, 0.2), 1),
                    "humidity_pct": round(min(100.0, base["humidity_pct"] + g(0, 0.8)), 1)}
        if kind == "heat":
            return {"temperature_c": round(base["temperature_c"] + g(0, 0.2), 1)}
        if kind == "smoke":
            if not st.analog:
                return {}  # an NB-IoT heartbeat carries only battery and signal
            return {"obscuration_pct_m": round(abs(g(0.05, 0.03)), 2),
                    "temperature_c": round(base["temperature_c"] + g(0, 0.2), 1)}
        if kind == "fire_door":
            normally_open = device.mode == "normally_open"
            # Someone walks through a closed door now and then; hold-open doors rarely close.
            return {"open": normally_open != (st.rng.random() < 0.03)}
        if kind == "power_meter":
            return self._power(st, t, device.supply == "three_phase_380")
        return {}  # manual call points and panels: heartbeat only

    def _power(self, st: _DeviceState, t: float, three_phase: bool) -> Values:
        g = st.rng.gauss
        # A three-phase meter reports line-to-line voltage (registry supply), so a healthy
        # 380 V supply reads ~395 V, inside the GB/T 12325 band the rules use for it.
        volts = g(395.0, 2.5) if three_phase else g(230.0, 1.5)
        amps = max(0.0, st.baseline["current_a"] + g(0, 0.5))
        pf = min(0.99, g(0.90, 0.015))
        kw = (3 ** 0.5 if three_phase else 1.0) * volts * amps * pf / 1000.0
        if st.last_t is not None and t > st.last_t:
            st.energy_kwh += kw * (t - st.last_t) / self.speed / 3600.0  # device clock hours
        st.last_t = t
        return {"voltage_v": round(volts, 1), "current_a": round(amps, 2), "power_kw": round(kw, 3),
                "energy_kwh": round(st.energy_kwh, 2), "power_factor": round(pf, 3),
                "frequency_hz": round(g(50.0, 0.02), 2)}

    # ------------------------------------------------------------------ shapes

    def _encode(self, device: Device, st: _DeviceState, shape: PayloadShape,
                readings: list[tuple[float, Values]]) -> dict[str, object]:
        ts, values = readings[-1]
        if shape is PayloadShape.VENDOR_KPA:
            local = datetime.fromtimestamp(ts, self.timezone).strftime("%Y-%m-%d %H:%M:%S")
            return {"time": local, "pressure": round(float(values["pressure_mpa"]) * 1000, 1),
                    "unit": "kPa", "bat": round(3.0 + st.battery / 100 * 0.65, 2)}
        if shape is PayloadShape.VENDOR_BAR:
            bar = float(values["pressure_mpa"]) * 10
            return {"ts": round(ts * 1000), "press_bar": round(bar, 3)}
        obj: dict[str, object]
        if shape is PayloadShape.BATCH:
            obj = {"seq": st.seq, "readings": [{"ts": round(rt, 3), "values": rv}
                                               for rt, rv in readings]}
        else:
            obj = {"ts": round(ts, 3), "seq": st.seq, "values": values}
        if device.kind in BATTERY_KINDS:
            obj["battery_pct"] = round(st.battery, 1)
        if device.kind in _RADIO_KINDS:
            obj["rssi_dbm"] = int(min(-40, max(-120, st.rng.gauss(st.rssi, 3))))
        return obj


def _dumps(obj: object) -> bytes:
    # allow_nan=False: a NaN here is a simulator bug, not traffic (garbage builds its own bytes).
    return json.dumps(obj, separators=(", ", ": "), allow_nan=False).encode()
