"""Replay tests/fuzz/ through the validator: each nasty payload gets its documented verdict, and on
every other topic a Validated or a Rejection, never another exception."""

from __future__ import annotations

import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.ingest.validate import Validated, Validator
from sensors.base import Rejection, RejectReason
from sensors.registry import Registry, load_registry
from tests.support.paths import SAMPLE_REGISTRY

CORPUS = Path(__file__).parent / "fuzz"
RECEIVED_MS = 1764059460000
#: One topic per message type and a few kinds, all of devices in the sample park.
TOPICS = (
    "parks/xz01/b3/wp-0017/telemetry",
    "parks/xz01/b2/sm-0420/telemetry",
    "parks/xz01/b1/fd-0005/telemetry",
    "parks/xz01/b1/ef-0001/telemetry",
    "parks/xz01/b1/fp-0001/telemetry",
    "parks/xz01/b1/fp-0001/event",
    "parks/xz01/b1/mc-0101/event",
    "parks/xz01/b2/sm-0420/status",
)
_LINE = re.compile(r"^- `(?P<file>[^`]+)` (?P<verdict>[a-z_0-9]+): ")


def _documented() -> dict[str, str]:
    verdicts: dict[str, str] = {}
    for line in (CORPUS / "README.md").read_text().splitlines():
        match = _LINE.match(line)
        if match:
            verdicts[match["file"]] = match["verdict"]
    return verdicts


VERDICTS = _documented()
CASES = sorted(p.name for p in CORPUS.glob("*.bin"))


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(SAMPLE_REGISTRY)


@pytest.fixture
def validator(registry: Registry) -> Validator:
    return Validator(registry=registry, root="parks", timezones={},
                  default_timezone=ZoneInfo("Asia/Shanghai"), max_payload_bytes=65536,
                  max_age_s=7 * 86400, max_future_s=300, device_rate_per_s=20,
                  device_burst=200)


def test_every_case_is_documented_and_every_line_has_a_file() -> None:
    assert CASES, "empty corpus"
    assert set(CASES) == set(VERDICTS)
    for verdict in VERDICTS.values():
        assert verdict == "accepted" or verdict in {r.value for r in RejectReason}, verdict


def _route(validator: Validator, topic: str, payload: bytes) -> Validated | Rejection:
    try:
        return validator.validate(topic, payload, RECEIVED_MS)
    except Rejection as rejection:
        return rejection


@pytest.mark.parametrize("case", CASES)
def test_case_gets_its_documented_verdict(validator: Validator, case: str) -> None:
    outcome = _route(validator, TOPICS[0], (CORPUS / case).read_bytes())
    got = outcome.reason.value if isinstance(outcome, Rejection) else "accepted"
    assert got == VERDICTS[case], getattr(outcome, "detail", "")


@pytest.mark.parametrize("case", CASES)
def test_case_on_every_topic_is_routed_or_rejected(validator: Validator, case: str) -> None:
    payload = (CORPUS / case).read_bytes()
    for topic in TOPICS:
        outcome = _route(validator, topic, payload)
        if isinstance(outcome, Rejection):
            assert len(outcome.detail) <= 300
            continue
        for line in outcome.lines:
            # One point per line, whatever the payload held (a raw CR inside a quoted string
            # field is legal line protocol; InfluxDB stores it as sent).
            assert "\n" not in line
            assert line.count(" ") >= 2
