"""The chaos suite, CI size: 524 devices, every fault once, then the proof.

The driver is tests/support/chaos.py.

Faults: kill -9 of the gateway; broker restart; network cut and network stall between gateway
and broker; InfluxDB stopped for 60 s with a kill -9 of the gateway in the middle; the InfluxDB
link stalled while the broker link is cut. Proven afterwards: every PUBACKed message is in
InfluxDB exactly once with its device's seq contiguous, every fire alarm fired (and resolved)
exactly once, and every alarm change was notified exactly once. The longer run is
``python -m bench.soak``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.chaos import Chaos, ChaosConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[Chaos]:
    harness = Chaos(tmp_path, ChaosConfig(), say=print)
    yield harness
    # A timeout ends the test without unwinding its event loop; the services must still go.
    harness.emergency_stop()


@pytest.mark.timeout(900)
async def test_faults_in_combination_lose_nothing_and_double_nothing(chaos: Chaos) -> None:
    async with chaos:
        report = await chaos.run()
    print(report.render())
    assert report.telemetry_sent > 0
    assert report.alarms_fired >= ChaosConfig().alarm_devices
    # Every fault was survived without the harness having to rescue the gateway.
    assert [f.finding for f in report.faults if f.finding] == []
    assert report.problems == []
